"""Resampler speed and quality: sis_stream vs soxr (HQ) and scipy, side by side in one run.

Streaming: 60 s of audio in 20 ms chunks through ``StreamResampler`` vs
``soxr.ResampleStream(quality="HQ")``, int16 and float32, for 8k->16k, 16k->8k and 48k->16k
(one round = the whole 60 s, 3000 ``process`` calls). One-shot: 60 s through ``resample`` vs
``soxr.resample(..., "HQ")`` and ``scipy.signal.resample_poly``. A ratio table (anchor time /
ours; above 1 we are faster) and a quality table (same measurement for both, see
``sis_stream._filters.measure``) print at the end.

Run: ``/work/venv/bin/python -m pytest benchmarks/bench_resample.py -q``
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")

from _ratios import Comparison, ratio_fixture

from sis_stream import _backend
from sis_stream._filters import measure
from sis_stream.resample import StreamResampler, resample

soxr = pytest.importorskip("soxr")
signal = pytest.importorskip("scipy.signal")

SECONDS = 60
STREAM_PAIRS = [(8000, 16000), (16000, 8000), (48000, 16000)]
ONESHOT_PAIRS = [(48000, 16000), (8000, 16000), (16000, 8000)]
DTYPES = {"int16": np.int16, "float32": np.float32}
OURS = f"sis_stream[{_backend.BACKEND}]"
# The targets: streaming 8k <-> 16k >= 3x soxr HQ, one-shot 48k -> 16k >= 1x.
STREAM_TARGET = {(8000, 16000): 3.0, (16000, 8000): 3.0}
ONESHOT_TARGET = {(48000, 16000): 1.0}


def _g(kind: str, pair: tuple[int, int], dt: str = "") -> str:
    return f"{kind} {pair[0] // 1000}k->{pair[1] // 1000}k {dt}".strip()


ratios = ratio_fixture(
    "resample",
    [Comparison(_g("stream 20ms", p, d), OURS, "soxr HQ", STREAM_TARGET.get(p))
     for p in STREAM_PAIRS for d in DTYPES]
    + [Comparison(_g("one-shot 60s", p, d), OURS, a, ONESHOT_TARGET.get(p) if a == "soxr HQ"
                  else None)
       for p in ONESHOT_PAIRS for d in DTYPES for a in ("soxr HQ", "scipy resample_poly")],
)


def _speechlike(n: int, rate: int, dtype) -> np.ndarray:
    rng = np.random.default_rng(rate)
    t = np.arange(n) / rate
    env = 0.05 + np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 2
    x = 0.3 * env * (np.sin(2 * np.pi * 220 * t) + 0.5 * rng.standard_normal(n))
    return (x * 32767).astype(np.int16) if dtype == np.int16 else x.astype(np.float32)


def _chunks(pair, dtype):
    x = _speechlike(SECONDS * pair[0], pair[0], dtype)
    n = pair[0] // 50
    return [x[i : i + n] for i in range(0, len(x), n)]


def _run_ours(pair, dtype, chunks):
    rs = StreamResampler(*pair, "hq", dtype)
    for c in chunks:
        rs.process(c)
    rs.flush()


def _run_soxr(pair, dtype, chunks):
    rs = soxr.ResampleStream(*pair, 1, dtype=dtype, quality="HQ")
    for c in chunks:
        rs.resample_chunk(c)
    rs.resample_chunk(chunks[0][:0], last=True)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("pair", STREAM_PAIRS, ids=lambda p: f"{p[0]}-{p[1]}")
@pytest.mark.parametrize("who", [OURS, "soxr HQ"])
def bench_stream_20ms(benchmark, ratios, who, pair, dt):
    dtype = DTYPES[dt]
    chunks = _chunks(pair, dtype)
    benchmark.group = _g("stream 20ms", pair, dt)
    fn = _run_ours if who == OURS else _run_soxr
    benchmark.pedantic(fn, args=(pair, dtype, chunks), rounds=7, warmup_rounds=1)
    ratios.record(benchmark, who)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("pair", ONESHOT_PAIRS, ids=lambda p: f"{p[0]}-{p[1]}")
@pytest.mark.parametrize("who", [OURS, "soxr HQ", "scipy resample_poly"])
def bench_oneshot_60s(benchmark, ratios, who, pair, dt):
    dtype = DTYPES[dt]
    x = _speechlike(SECONDS * pair[0], pair[0], dtype)
    benchmark.group = _g("one-shot 60s", pair, dt)
    if who == OURS:
        fn = lambda: resample(x, *pair)  # noqa: E731
    elif who == "soxr HQ":
        fn = lambda: soxr.resample(x, *pair, "HQ")  # noqa: E731
    else:
        # resample_poly works in float64; int16 input is converted as part of the call.
        fn = lambda: signal.resample_poly(x.astype(np.float32), pair[1], pair[0])  # noqa: E731
    benchmark.pedantic(fn, rounds=5, warmup_rounds=1)
    ratios.record(benchmark, who)


QUALITY_PAIRS = [(8000, 16000), (16000, 8000), (48000, 16000), (44100, 16000)]


def bench_quality_table(capsys):
    # Not a timing: the quality figures of both resamplers, measured the same way, as a table.
    rows = []
    for pair in QUALITY_PAIRS:
        for dt, dtype in DTYPES.items():
            for who, fn in [("sis_stream hq", lambda x, a, b: resample(x, a, b)),
                            ("soxr HQ", lambda x, a, b: soxr.resample(x, a, b, "HQ"))]:
                r = measure(fn, *pair, dtype)
                rows.append((f"{pair[0]}->{pair[1]}", dt, who, r))
    def fmt(v, digits=1):
        return "-" if v is None else f"{v:.{digits}f}"
    lines = ["resample quality (tones at -6 dBFS; dB):",
             f"{'pair':12} {'dtype':8} {'who':14} {'ripple<=0.8':>12} {'gain@0.9':>9} "
             f"{'alias':>7} {'image':>7} {'1kHz res':>8}"]
    for pair, dt, who, r in rows:
        lines.append(f"{pair:12} {dt:8} {who:14} {fmt(r['ripple_db'], 5):>12} "
                     f"{fmt(r['gain_09_db'], 3):>9} {fmt(r['alias_db']):>7} "
                     f"{fmt(r['image_db']):>7} {fmt(r['snr_1k_db']):>8}")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
