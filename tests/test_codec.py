"""Public G.711 wrappers: input kinds, return kinds, out=, native == reference, validation."""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
from helpers import RecordingProxy

from sis_stream import _backend
from sis_stream.audio import codec
from sis_stream.errors import AudioFormatError

with warnings.catch_warnings():  # deprecated in 3.11-3.12 (pyproject filters it in tests)
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # stdlib up to 3.12, the audioop-lts package (test extra) from 3.13

LAWS = ("ulaw", "alaw")
LENGTHS = (0, 1, 159, 160, 161)


def _enc(law):
    return getattr(codec, f"{law}_encode")


def _dec(law):
    return getattr(codec, f"{law}_decode")


def _pcm(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-32768, 32768, n).astype(np.int16)


def _codes(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, n).astype(np.uint8)


def _call_all_kinds(law: str, n: int) -> dict[str, bytes]:
    """Every way of calling both wrappers of one law; results normalised to bytes."""
    pcm, codes = _pcm(n, seed=n), _codes(n, seed=n + 1)
    pcm_b, codes_b = pcm.astype("<i2").tobytes(), codes.tobytes()
    enc, dec = _enc(law), _dec(law)
    ro_pcm, ro_codes = pcm.copy(), codes.copy()
    ro_pcm.flags.writeable = False
    ro_codes.flags.writeable = False
    res = {
        "enc bytes": enc(pcm_b),
        "enc bytearray": enc(bytearray(pcm_b)),
        "enc memoryview": enc(memoryview(pcm_b)),
        "enc memoryview h": enc(memoryview(pcm_b).cast("h")),
        "enc array": enc(pcm).tobytes(),
        "enc read-only array": enc(ro_pcm).tobytes(),
        "enc out array": enc(pcm, out=np.empty(n, np.uint8)).tobytes(),
        "enc bytes out bytearray": bytes(enc(pcm_b, out=bytearray(n))),
        "dec bytes": dec(codes_b),
        "dec bytearray": dec(bytearray(codes_b)),
        "dec memoryview": dec(memoryview(codes_b)),
        "dec array": dec(codes).astype("<i2").tobytes(),
        "dec read-only array": dec(ro_codes).astype("<i2").tobytes(),
        "dec out array": dec(codes, out=np.empty(n, np.int16)).astype("<i2").tobytes(),
        "dec bytes out bytearray": bytes(dec(codes_b, out=bytearray(2 * n))),
        "dec bytes out memoryview": bytes(dec(codes_b, out=memoryview(bytearray(2 * n)))),
    }
    return res


@pytest.mark.skipif(_backend.NO_EXTENSIONS, reason="SIS_STREAM_NO_EXTENSIONS=1: native not used")
@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("law", LAWS)
def test_every_wrapper_native_equals_reference(monkeypatch, law, n):
    # Same bytes from both backends for every input kind, random data, awkward lengths.
    results = {}
    for kind in ("native", "reference"):
        monkeypatch.setattr(_backend, "g711", _backend.load(kind).g711)
        results[kind] = _call_all_kinds(law, n)
    assert results["native"] == results["reference"]
    # All input kinds agree with each other too.
    for prefix in ("enc", "dec"):
        values = {v for k, v in results["native"].items() if k.startswith(prefix)}
        assert len(values) == 1, prefix
    assert len(results["native"]["enc bytes"]) == n
    assert len(results["native"]["dec bytes"]) == 2 * n


@pytest.mark.parametrize("law", LAWS)
def test_decode_bytes_equals_audioop(backend, law):
    codes = _codes(1000, seed=3).tobytes()
    assert _dec(law)(codes) == getattr(audioop, f"{law}2lin")(codes, 2)


@pytest.mark.parametrize("law", LAWS)
def test_return_kinds(backend, law):
    # bytes-like in -> bytes out; array in -> array of the same shape; out= is returned itself.
    pcm = _pcm(12).reshape(3, 4)
    assert type(_enc(law)(pcm.tobytes())) is bytes
    assert type(_enc(law)(bytearray(pcm.tobytes()))) is bytes
    assert type(_enc(law)(memoryview(pcm.tobytes()))) is bytes
    codes = _enc(law)(pcm)
    assert isinstance(codes, np.ndarray) and codes.dtype == np.uint8 and codes.shape == (3, 4)
    back = _dec(law)(codes)
    assert back.dtype == np.int16 and back.shape == (3, 4)
    assert type(_dec(law)(codes.tobytes())) is bytes
    out = np.empty((3, 4), np.uint8)
    assert _enc(law)(pcm, out=out) is out
    np.testing.assert_array_equal(out, codes)
    buf = bytearray(24)
    assert _dec(law)(codes.tobytes(), out=buf) is buf
    assert bytes(buf) == back.astype("<i2").tobytes()


@pytest.mark.parametrize("law", LAWS)
def test_round_trip_through_wrappers(backend, law):
    # decode(encode(decode(c))) == decode(c): decoded levels are fixed points of the codec.
    levels = _dec(law)(np.arange(256, dtype=np.uint8))
    np.testing.assert_array_equal(_dec(law)(_enc(law)(levels)), levels)


def test_silence_constants(backend):
    assert codec.ULAW_SILENCE == 0xFF and codec.ALAW_SILENCE == 0xD5
    assert codec.ulaw_encode(bytes(320)) == bytes([codec.ULAW_SILENCE]) * 160
    assert codec.alaw_encode(bytes(320)) == bytes([codec.ALAW_SILENCE]) * 160
    assert codec.ulaw_decode(bytes([codec.ULAW_SILENCE]) * 160) == bytes(320)


def test_encode_decode_dispatch_by_encoding(backend):
    pcm = _pcm(10).tobytes()
    assert codec.encode(pcm, "pcm") is pcm and codec.decode(pcm, "pcm") is pcm
    assert codec.encode(pcm, "ulaw") == codec.ulaw_encode(pcm)
    assert codec.decode(codec.encode(pcm, "alaw"), "alaw") == codec.alaw_decode(
        codec.alaw_encode(pcm)
    )
    with pytest.raises(AudioFormatError, match="'pcm', 'ulaw' or 'alaw', got 'mp3'"):
        codec.encode(pcm, "mp3")
    with pytest.raises(AudioFormatError, match="'pcm', 'ulaw' or 'alaw', got 'g722'"):
        codec.decode(pcm, "g722")


# --- validation: every branch -----------------------------------------------------------------


@pytest.mark.parametrize("law", LAWS)
@pytest.mark.parametrize("bad", [[1, 2], "ab", 3, None])
def test_rejects_unsupported_input_types(backend, law, bad):
    with pytest.raises(
        TypeError, match=f"{law}_encode expects PCM as bytes, bytearray, memoryview"
    ):
        _enc(law)(bad)
    with pytest.raises(TypeError, match=f"{law}_decode expects codes as bytes, bytearray"):
        _dec(law)(bad)


@pytest.mark.parametrize("law", LAWS)
@pytest.mark.parametrize("data", [b"abc", bytearray(b"a"), memoryview(b"abcde")])
def test_rejects_odd_length_pcm_bytes(backend, law, data):
    with pytest.raises(
        AudioFormatError, match=r"whole 2-byte samples, got \d bytes \(odd length\)"
    ):
        _enc(law)(data)


@pytest.mark.parametrize("law", LAWS)
@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.uint16, ">i2"])
def test_encode_rejects_wrong_dtype(backend, law, dtype):
    with pytest.raises(TypeError, match=r"expects PCM samples as int16 .*got an array of dtype"):
        _enc(law)(np.zeros(4, dtype=dtype))


@pytest.mark.parametrize("law", LAWS)
@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.float64])
def test_decode_rejects_wrong_dtype(backend, law, dtype):
    with pytest.raises(TypeError, match=r"expects codes as uint8 .*got an array of dtype"):
        _dec(law)(np.zeros(4, dtype=dtype))


@pytest.mark.parametrize("law", LAWS)
def test_rejects_non_contiguous_arrays(backend, law):
    with pytest.raises(TypeError, match=r"C-contiguous array, got strides \(4,\)"):
        _enc(law)(np.zeros(8, np.int16)[::2])
    with pytest.raises(TypeError, match=r"C-contiguous array, got strides"):
        _dec(law)(np.zeros((4, 4), np.uint8).T)


@pytest.mark.parametrize("law", LAWS)
def test_rejects_bad_memoryviews(backend, law):
    with pytest.raises(TypeError, match="C-contiguous memoryview, got a non-contiguous one"):
        _enc(law)(memoryview(bytes(8))[::2])
    with pytest.raises(TypeError, match="format B or b or c or h, got format 'f'"):
        _enc(law)(memoryview(np.zeros(2, np.float32)))
    with pytest.raises(TypeError, match="format B or b or c, got format 'h'"):
        _dec(law)(memoryview(np.zeros(2, np.int16)))


@pytest.mark.parametrize("law", LAWS)
def test_rejects_bad_out(backend, law):
    enc, pcm = _enc(law), _pcm(4)
    with pytest.raises(TypeError, match="out must have dtype uint8, got dtype int16"):
        enc(pcm, out=np.empty(4, np.int16))
    with pytest.raises(TypeError, match="out must be C-contiguous, got strides"):
        enc(pcm, out=np.empty(8, np.uint8)[::2])
    ro = np.empty(4, np.uint8)
    ro.flags.writeable = False
    with pytest.raises(TypeError, match="out must be writable, got a read-only array"):
        enc(pcm, out=ro)
    with pytest.raises(
        AudioFormatError, match=r"out must hold 4 items of uint8 \(4 bytes\), got 5 items"
    ):
        enc(pcm, out=np.empty(5, np.uint8))
    with pytest.raises(TypeError, match="out must be a writable numpy array .* got bytes"):
        enc(pcm, out=bytes(4))
    with pytest.raises(TypeError, match="out must be writable, got a read-only memoryview"):
        enc(pcm, out=memoryview(bytes(4)))
    with pytest.raises(
        TypeError, match="out must be C-contiguous, got a non-contiguous memoryview"
    ):
        enc(pcm, out=memoryview(bytearray(8))[::2])
    with pytest.raises(
        AudioFormatError, match=r"out must hold 4 items of uint8 \(4 bytes\), got 3 bytes"
    ):
        enc(pcm.tobytes(), out=bytearray(3))
    dec = _dec(law)
    with pytest.raises(
        AudioFormatError, match=r"out must hold 4 items of int16 \(8 bytes\), got 4 bytes"
    ):
        dec(bytes(4), out=bytearray(4))
    with pytest.raises(TypeError, match="out must have dtype int16, got dtype uint8"):
        dec(np.zeros(4, np.uint8), out=np.empty(4, np.uint8))


# --- compiled front-ends (native/g711.pyx) vs the pure-Python wrappers ------------------------
FUNCS = ("ulaw_encode", "ulaw_decode", "alaw_encode", "alaw_decode")


def _outcome(fn, *args, **kwargs):
    """Result (normalised to bytes) or the exception's type and message."""
    try:
        res = fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - compared, not swallowed
        return ("raised", type(exc), str(exc))
    if isinstance(res, np.ndarray):
        return ("array", res.dtype.str, res.shape, res.tobytes())
    return (type(res), bytes(res))


def _front_cases(func: str) -> list[tuple[tuple, dict]]:
    enc = func.endswith("encode")
    data = _pcm(161, seed=3).astype("<i2").tobytes() if enc else _codes(161, seed=4).tobytes()
    arr = _pcm(160, seed=5) if enc else _codes(160, seed=6)
    out_len = 80 if enc else 320
    return [
        ((data,), {}),
        ((data[:320],), {}),
        ((b"",), {}),
        ((data[:3],), {}),  # odd PCM length: AudioFormatError from the wrapper (decode: 6 bytes)
        ((data[:320],), {"out": None}),
        ((), {"pcm" if enc else "codes": data[:320]}),
        ((bytearray(data[:320]),), {}),
        ((memoryview(data[:320]),), {}),
        ((arr,), {}),
        ((arr.reshape(16, 10),), {}),
        ((data[:160],), {"out": bytearray(out_len)}),
        ((data[:160], bytearray(out_len)), {}),
        ((data[:160],), {"out": bytearray(out_len + 1)}),  # wrong size: AudioFormatError
        ((arr.astype(np.float32),), {}),  # wrong dtype: TypeError
        (("text",), {}),  # unsupported type: TypeError
        ((None,), {}),
    ]


@pytest.mark.parametrize("func", FUNCS)
def test_public_is_compiled_front_end_iff_native_g711(func):
    public, wrapper = getattr(codec, func), codec._PY_WRAPPERS[func]
    if _backend.NO_EXTENSIONS or "g711" in _backend.NATIVE_IMPORT_ERRORS:
        assert public is wrapper
    else:
        assert public is getattr(_backend.load("native").g711, f"_{func}_front")
        assert public.__name__ == func and public.__module__ == "sis_stream.audio.codec"
        assert public.__doc__ == wrapper.__doc__
    assert inspect.signature(public) == inspect.signature(wrapper)


@pytest.mark.parametrize("func", FUNCS)
def test_front_end_matches_python_wrapper_on_every_backend(backend, func):
    # Same results and the same exception types and messages, input kind by input kind.
    public, wrapper = getattr(codec, func), codec._PY_WRAPPERS[func]
    if public is wrapper:
        pytest.skip("no compiled front-end in use (SIS_STREAM_NO_EXTENSIONS=1 or no native g711): "
                    "the public function is the Python wrapper, comparing it with itself proves "
                    "nothing")
    for args, kwargs in _front_cases(func):
        assert _outcome(public, *args, **kwargs) == _outcome(wrapper, *args, **kwargs), (
            args,
            kwargs,
        )


@pytest.mark.parametrize("func", FUNCS)
def test_swapped_backend_reaches_its_bytes_kernel(backend, monkeypatch, func):
    # Whatever the public function is, bytes input must run on the backend _backend holds now:
    # a recording proxy (not the native module) must see the call, with the right result.
    calls: list[str] = []
    real = backend.g711

    monkeypatch.setattr(_backend, "g711", RecordingProxy(real, calls))
    data = bytes(range(160)) * 2
    assert getattr(codec, func)(data) == getattr(real, f"{func}_bytes")(data)
    assert calls == [f"{func}_bytes"]


@pytest.mark.skipif(_backend.NO_EXTENSIONS, reason="SIS_STREAM_NO_EXTENSIONS=1: native not used")
def test_front_end_hot_path_stays_in_c_and_delegates_the_rest():
    # Re-bind the native front-ends to recording wrappers: bytes without out= never reaches
    # them while native g711 is selected; every other call does, once, with the same arguments.
    native = _backend.load("native").g711
    calls: list[tuple[str, object, object]] = []

    def recorder(name):
        def record(x, out=None):
            calls.append((name, type(x).__name__, out))
            return codec._PY_WRAPPERS[name](x, out)

        return record

    native._bind_front_ends(_backend.__dict__, native, *(recorder(n) for n in FUNCS))
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(_backend, "g711", native)
            for name in FUNCS:
                front = getattr(native, f"_{name}_front")
                assert front(bytes(range(160)) * 2) == getattr(native, f"{name}_bytes")(
                    bytes(range(160)) * 2
                )
                if name.endswith("decode"):  # any length of codes is valid
                    odd = bytes(range(161))
                    assert front(odd) == getattr(native, f"{name}_bytes")(odd)
            assert calls == []  # the hot path (and odd-length decode input) stayed in C
            for name in FUNCS:
                front = getattr(native, f"_{name}_front")
                assert front(bytearray(4)) == codec._PY_WRAPPERS[name](bytearray(4))
                out = bytearray(2 if name.endswith("encode") else 8)
                assert front(bytes(4), out=out) is out
                if name.endswith("encode"):
                    with pytest.raises(AudioFormatError, match="odd length"):
                        front(bytes(3))
            expected = []
            for name in FUNCS:
                expected += [(name, "bytearray", None), (name, "bytes", "out")]
                if name.endswith("encode"):
                    expected.append((name, "bytes", None))
            assert [(n, k, "out" if o is not None else None) for n, k, o in calls] == expected
    finally:
        codec._bind_front_ends(native)


@pytest.mark.skipif(_backend.NO_EXTENSIONS, reason="SIS_STREAM_NO_EXTENSIONS=1: native not used")
def test_unbound_front_end_says_so():
    native = _backend.load("native").g711
    native._bind_front_ends(None, None, None, None, None, None)
    try:
        with pytest.raises(RuntimeError, match="before sis_stream.audio.codec bound them"):
            native._ulaw_decode_front(b"")
    finally:
        codec._bind_front_ends(native)
