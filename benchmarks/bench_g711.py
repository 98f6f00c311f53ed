"""G.711 encode/decode speed: sis_stream (native and reference) vs audioop and a numpy LUT.

Same run, same data, per group: a 20 ms frame (160 samples at 8 kHz) and a 60 s buffer
(480,000 samples), bytes -> bytes (against ``audioop``) and int16/uint8 arrays (against a
numpy look-up table: ``np.take(table, pcm.view(np.uint16))``, the fastest plain-numpy
formulation). The signal is speech-like (syllable envelope, pauses, Laplacian-distributed
samples at about -26 dBFS), generated with a fixed seed.

Every comparison is *paired* (``_ratios.Paired``): each round times ours and the anchor back to
back on the same data (order alternating), the speed-up is taken per round, and a target is
judged on the median of those per-round ratios. (Unpaired medians of separate benchmarks, timed
minutes apart on a shared machine, gave 31x by best round and 65x by median for one case.)
The ratio table prints at the end of the module.

Run: ``python -m pytest benchmarks/bench_g711.py -q``
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")  # the bench extra

from _ratios import paired_fixture

from sis_stream.audio import codec
from sis_stream._reference import g711 as _ref

with warnings.catch_warnings():  # deprecated in 3.11-3.12
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # stdlib up to 3.12, the audioop-lts package (test extra) from 3.13

RATE_HZ = 8000
SIZES = {"20ms": RATE_HZ // 50, "60s": 60 * RATE_HZ}
LAWS = ("ulaw", "alaw")
NATIVE, REFERENCE = "sis_stream[native]", "sis_stream[reference]"
NATIVE_OUT = "sis_stream[native] out="
# The native bytes kernel called directly (no codec.py wrapper): shows the wrapper's share.
KERNEL = "native kernel, no wrapper"
# codec's pure-Python wrapper over the native kernels: what the public function was before the
# compiled front-ends (native/g711.pyx) took its place; shows what the front-end saves.
PY_WRAPPER = "python wrapper, native kernel"


def _speechlike(n: int, seed: int = 711) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / RATE_HZ
    syllables = np.clip(np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6)), 0, None) ** 2
    pauses = (np.sin(2 * np.pi * 0.3 * t) > -0.6).astype(float)
    envelope = 0.02 + syllables * pauses
    x = rng.laplace(0.0, 1.0, n) * envelope
    x *= 10 ** (-26 / 20) * 32768 / np.sqrt(np.mean(x**2))
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


PCM = {size: _speechlike(n) for size, n in SIZES.items()}
PCM_BYTES = {size: x.astype("<i2").tobytes() for size, x in PCM.items()}
CODES = {
    (law, size): np.take(getattr(_ref, f"_{law.upper()}_ENC"), x.view(np.uint16))
    for law in LAWS
    for size, x in PCM.items()
}
CODE_BYTES = {k: v.tobytes() for k, v in CODES.items()}
# The numpy anchors' tables, built here from audioop itself (independent of sis_stream).
ENC_LUT = {
    law: np.frombuffer(
        getattr(audioop, f"lin2{law}")(np.arange(65536, dtype=np.uint16).tobytes(), 2), np.uint8
    ).copy()
    for law in LAWS
}
DEC_LUT = {
    law: np.frombuffer(getattr(audioop, f"{law}2lin")(bytes(range(256)), 2), np.int16).copy()
    for law in LAWS
}

_TARGETS = {  # (op, size, kind) -> (anchor, minimum speed-up) from issue 3
    ("encode", "60s", "bytes"): ("audioop", 15.0),
    ("encode", "60s", "array"): ("numpy LUT", 1.2),
    ("encode", "20ms", "bytes"): ("audioop", 1.5),
    ("decode", "20ms", "bytes"): ("audioop", 1.0),
    ("decode", "60s", "bytes"): ("audioop", 1.0),
}

paired = paired_fixture("G.711 (8 kHz)")

# Sub-microsecond calls need many iterations per timed block, or the timer's own overhead
# dominates; fixed counts keep every comparison of a group on the same footing.
_PEDANTIC = {"20ms": {"iterations": 2000, "rounds": 40}, "60s": {"iterations": 1, "rounds": 30}}


def _label(backend) -> str:
    return NATIVE if backend.kind == "native" else REFERENCE


def _data(law: str, op: str, size: str, kind: str):
    if op == "encode":
        return PCM_BYTES[size] if kind == "bytes" else PCM[size]
    return CODE_BYTES[(law, size)] if kind == "bytes" else CODES[(law, size)]


def _anchor(law: str, op: str, size: str, kind: str):
    """(name, zero-argument call) of the anchor for this case."""
    data = _data(law, op, size, kind)
    if kind == "bytes":
        fn = getattr(audioop, f"lin2{law}" if op == "encode" else f"{law}2lin")
        return "audioop", lambda: fn(data, 2)
    if op == "encode":
        lut, x = ENC_LUT[law], data.view(np.uint16)
        return "numpy LUT", lambda: np.take(lut, x)
    lut = DEC_LUT[law]
    return "numpy LUT", lambda: np.take(lut, data)


def _expected(law: str, op: str, size: str, kind: str):
    # What ours must return before it is timed: the reference tables' codes (audioop's u-law
    # encoder rounds differently at the segment edges), the anchor's samples for a decode.
    if op == "encode":
        return CODE_BYTES[(law, size)] if kind == "bytes" else CODES[(law, size)]
    return _anchor(law, op, size, kind)[1]()


def _check(got, want) -> None:
    if isinstance(want, bytes):
        assert got == want
    else:
        np.testing.assert_array_equal(got, want)


def _compare(benchmark, paired, law, op, size, kind, ours_name, ours, target=None):
    anchor_name, anchor = _anchor(law, op, size, kind)
    paired.run(benchmark, f"{law} {op} {size} {kind}", ours_name, ours, anchor_name, anchor,
               target=target, **_PEDANTIC[size])


@pytest.mark.parametrize("kind", ["bytes", "array"])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("op", ["encode", "decode"])
@pytest.mark.parametrize("law", LAWS)
def test_codec(benchmark, backend, paired, law, op, size, kind):
    # The public function (per backend) against audioop (bytes) or the numpy LUT (arrays).
    fn, data = getattr(codec, f"{law}_{op}"), _data(law, op, size, kind)
    _check(fn(data), _expected(law, op, size, kind))
    target = _TARGETS.get((op, size, kind), (None, None))[1] if backend.kind == "native" else None
    _compare(benchmark, paired, law, op, size, kind, _label(backend), lambda: fn(data), target)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("op", ["encode", "decode"])
@pytest.mark.parametrize("law", LAWS)
def test_codec_array_out(benchmark, backend, paired, law, op, size):
    if backend.kind != "native":
        pytest.skip("out= is reported for the native backend only")
    fn, data = getattr(codec, f"{law}_{op}"), _data(law, op, size, "array")
    buf = np.empty(SIZES[size], np.uint8 if op == "encode" else np.int16)
    fn(data, out=buf)
    _check(buf, _expected(law, op, size, "array"))
    _compare(benchmark, paired, law, op, size, "array", NATIVE_OUT, lambda: fn(data, out=buf))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("op", ["encode", "decode"])
@pytest.mark.parametrize("law", LAWS)
def test_bytes_kernel_without_wrapper(benchmark, backend, paired, law, op, size):
    if backend.kind != "native":
        pytest.skip("reported for the native backend only")
    fn, data = getattr(backend.g711, f"{law}_{op}_bytes"), _data(law, op, size, "bytes")
    _check(fn(data), _expected(law, op, size, "bytes"))
    _compare(benchmark, paired, law, op, size, "bytes", KERNEL, lambda: fn(data))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("op", ["encode", "decode"])
@pytest.mark.parametrize("law", LAWS)
def test_bytes_python_wrapper(benchmark, backend, paired, law, op, size):
    if backend.kind != "native":
        pytest.skip("reported for the native backend only")
    fn, data = codec._PY_WRAPPERS[f"{law}_{op}"], _data(law, op, size, "bytes")
    _check(fn(data), _expected(law, op, size, "bytes"))
    _compare(benchmark, paired, law, op, size, "bytes", PY_WRAPPER, lambda: fn(data))
