"""G.711 encode/decode speed: sis_stream (native and reference) vs audioop and a numpy LUT.

Same run, same data, per group: a 20 ms frame (160 samples at 8 kHz) and a 60 s buffer
(480,000 samples), bytes -> bytes (against ``audioop``) and int16/uint8 arrays (against a
numpy look-up table: ``np.take(table, pcm.view(np.uint16))``, the fastest plain-numpy
formulation). The signal is speech-like (syllable envelope, pauses, Laplacian-distributed
samples at about -26 dBFS), generated with a fixed seed. The ratio table is printed at the end.

Run: ``/work/venv/bin/python -m pytest benchmarks/bench_g711.py -q``
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")

from _ratios import Comparison, ratio_fixture

from sis_stream.audio import codec
from sis_stream._reference import g711 as _ref

audioop = pytest.importorskip("audioop")

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


def _comparisons() -> list[Comparison]:
    rows = []
    for law in LAWS:
        for op in ("encode", "decode"):
            for size in SIZES:
                for kind, anchor in (("bytes", "audioop"), ("array", "numpy LUT")):
                    group = f"{law} {op} {size} {kind}"
                    target = _TARGETS.get((op, size, kind), (None, None))[1]
                    rows.append(Comparison(group, NATIVE, anchor, target))
                    rows.append(Comparison(group, REFERENCE, anchor))
                    if kind == "array":
                        rows.append(Comparison(group, NATIVE_OUT, anchor))
                    else:
                        rows.append(Comparison(group, KERNEL, anchor))
                        rows.append(Comparison(group, PY_WRAPPER, anchor))
    return rows


ratios = ratio_fixture("G.711 (8 kHz)", _comparisons())


# Sub-microsecond calls need many iterations per timed round, or the timer's own overhead
# dominates; fixed counts also keep every entry of a group on the same footing.
_PEDANTIC = {"20ms": {"iterations": 2000, "rounds": 40}, "60s": {"iterations": 1, "rounds": 30}}


def _run(benchmark, size, fn, *args, **kwargs):
    return benchmark.pedantic(fn, args=args, kwargs=kwargs, warmup_rounds=1, **_PEDANTIC[size])


def _label(backend) -> str:
    return NATIVE if backend.kind == "native" else REFERENCE


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("law", LAWS)
def test_encode_bytes(benchmark, backend, ratios, law, size):
    benchmark.group = f"{law} encode {size} bytes"
    out = _run(benchmark, size, getattr(codec, f"{law}_encode"), PCM_BYTES[size])
    assert out == CODE_BYTES[(law, size)]
    ratios.record(benchmark, _label(backend))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("law", LAWS)
def test_encode_bytes_audioop(benchmark, ratios, law, size):
    benchmark.group = f"{law} encode {size} bytes"
    _run(benchmark, size, getattr(audioop, f"lin2{law}"), PCM_BYTES[size], 2)
    ratios.record(benchmark, "audioop")


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("law", LAWS)
def test_encode_array(benchmark, backend, ratios, law, size):
    benchmark.group = f"{law} encode {size} array"
    out = _run(benchmark, size, getattr(codec, f"{law}_encode"), PCM[size])
    np.testing.assert_array_equal(out, CODES[(law, size)])
    ratios.record(benchmark, _label(backend))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("law", LAWS)
def test_encode_array_out(benchmark, backend, ratios, law, size):
    if backend.kind != "native":
        pytest.skip("out= is reported for the native backend only")
    benchmark.group = f"{law} encode {size} array"
    buf = np.empty(SIZES[size], np.uint8)
    _run(benchmark, size, getattr(codec, f"{law}_encode"), PCM[size], out=buf)
    np.testing.assert_array_equal(buf, CODES[(law, size)])
    ratios.record(benchmark, NATIVE_OUT)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("law", LAWS)
def test_encode_array_numpy_lut(benchmark, ratios, law, size):
    benchmark.group = f"{law} encode {size} array"
    lut, x = ENC_LUT[law], PCM[size]
    _run(benchmark, size, lambda: np.take(lut, x.view(np.uint16)))
    ratios.record(benchmark, "numpy LUT")


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("law", LAWS)
def test_decode_bytes(benchmark, backend, ratios, law, size):
    benchmark.group = f"{law} decode {size} bytes"
    out = _run(benchmark, size, getattr(codec, f"{law}_decode"), CODE_BYTES[(law, size)])
    assert out == getattr(audioop, f"{law}2lin")(CODE_BYTES[(law, size)], 2)
    ratios.record(benchmark, _label(backend))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("law", LAWS)
def test_decode_bytes_audioop(benchmark, ratios, law, size):
    benchmark.group = f"{law} decode {size} bytes"
    _run(benchmark, size, getattr(audioop, f"{law}2lin"), CODE_BYTES[(law, size)], 2)
    ratios.record(benchmark, "audioop")


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("law", LAWS)
def test_decode_array(benchmark, backend, ratios, law, size):
    benchmark.group = f"{law} decode {size} array"
    out = _run(benchmark, size, getattr(codec, f"{law}_decode"), CODES[(law, size)])
    np.testing.assert_array_equal(out, DEC_LUT[law][CODES[(law, size)]])
    ratios.record(benchmark, _label(backend))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("law", LAWS)
def test_decode_array_out(benchmark, backend, ratios, law, size):
    if backend.kind != "native":
        pytest.skip("out= is reported for the native backend only")
    benchmark.group = f"{law} decode {size} array"
    buf = np.empty(SIZES[size], np.int16)
    _run(benchmark, size, getattr(codec, f"{law}_decode"), CODES[(law, size)], out=buf)
    ratios.record(benchmark, NATIVE_OUT)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("law", LAWS)
def test_decode_array_numpy_lut(benchmark, ratios, law, size):
    benchmark.group = f"{law} decode {size} array"
    lut, c = DEC_LUT[law], CODES[(law, size)]
    _run(benchmark, size, lambda: np.take(lut, c))
    ratios.record(benchmark, "numpy LUT")


@pytest.mark.parametrize("op", ["encode", "decode"])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("law", LAWS)
def test_bytes_kernel_without_wrapper(benchmark, backend, ratios, law, size, op):
    if backend.kind != "native":
        pytest.skip("reported for the native backend only")
    benchmark.group = f"{law} {op} {size} bytes"
    data = PCM_BYTES[size] if op == "encode" else CODE_BYTES[(law, size)]
    _run(benchmark, size, getattr(backend.g711, f"{law}_{op}_bytes"), data)
    ratios.record(benchmark, KERNEL)


@pytest.mark.parametrize("op", ["encode", "decode"])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("law", LAWS)
def test_bytes_python_wrapper(benchmark, backend, ratios, law, size, op):
    if backend.kind != "native":
        pytest.skip("reported for the native backend only")
    benchmark.group = f"{law} {op} {size} bytes"
    data = PCM_BYTES[size] if op == "encode" else CODE_BYTES[(law, size)]
    _run(benchmark, size, codec._PY_WRAPPERS[f"{law}_{op}"], data)
    ratios.record(benchmark, PY_WRAPPER)
