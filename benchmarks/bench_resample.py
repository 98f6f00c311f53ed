"""Resampler speed and quality: sis_stream vs soxr (HQ) and scipy, interleaved in the same rounds.

The box these run on is shared and noisy, so every comparison is *paired*: each round runs
ours and the anchor back to back (the order alternates from round to round) on the same data,
and the ratio anchor/ours is taken per round. The table reports the median of those per-round
ratios (robust to load that drifts between rounds), the ratio of the best rounds (min of
rounds, each side's least disturbed run), and the same median on process CPU time (blind to
time spent descheduled). pytest-benchmark times the pair (its own table is the pair time).

Streaming: 60 s of audio in 20 ms chunks through ``StreamResampler`` vs
``soxr.ResampleStream(quality="HQ")`` (3000 ``process`` calls a round), int16 and float32.
One-shot: 60 s through ``resample`` vs ``soxr.resample(..., "HQ")`` and
``scipy.signal.resample_poly``. A quality table (same measurement for both resamplers, see
``sis_stream.audio._filters.measure``) prints at the end.

Run: ``/work/venv/bin/python -m pytest benchmarks/bench_resample.py -q``
(``SIS_BENCH_ROUNDS=<n>`` changes the rounds per comparison; default 15).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")

from sis_stream import _backend
from sis_stream.audio._filters import measure
from sis_stream.audio.resample import _PHASE, StreamResampler, resample

soxr = pytest.importorskip("soxr")
signal = pytest.importorskip("scipy.signal")

SECONDS = 60
ROUNDS = int(os.environ.get("SIS_BENCH_ROUNDS", "15"))
STREAM_PAIRS = [(8000, 16000), (16000, 8000), (48000, 16000), (44100, 16000), (22050, 16000),
                (11025, 8000), (48000, 8000)]
ONESHOT_PAIRS = [(48000, 16000), (8000, 16000), (16000, 8000), (44100, 16000)]
DTYPES = {"int16": np.int16, "float32": np.float32}
OURS = f"sis_stream[{_backend.BACKEND}]"
# The targets: streaming 8k <-> 16k >= 3x soxr HQ, one-shot 48k -> 16k >= 1x.
STREAM_TARGET = {(8000, 16000): 3.0, (16000, 8000): 3.0}
ONESHOT_TARGET = {(48000, 16000): 1.0}

_ROWS: list[dict] = []


def _g(kind: str, pair: tuple[int, int], dt: str = "") -> str:
    def k(rate: int) -> str:
        return f"{rate // 1000}k" if rate % 1000 == 0 else f"{rate / 1000:g}k"

    return f"{kind} {k(pair[0])}->{k(pair[1])} {dt}".strip()


def _paired(group: str, ours: Callable[[], object], anchor: Callable[[], object],
            anchor_name: str, target: float | None):
    # One round: both sides back to back, order alternating; returns the round function and
    # records wall and CPU times per side.
    times: dict[str, list[tuple[float, float]]] = {"ours": [], "anchor": []}
    state = {"round": 0}

    def timed(side: str, fn: Callable[[], object]) -> None:
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        t1, c1 = time.perf_counter(), time.process_time()
        times[side].append((t1 - t0, c1 - c0))

    def one_round() -> None:
        first = state["round"] % 2 == 0
        state["round"] += 1
        for side, fn in ((("ours", ours), ("anchor", anchor)) if first
                         else (("anchor", anchor), ("ours", ours))):
            timed(side, fn)

    def finish() -> None:
        o, a = times["ours"], times["anchor"]
        wall = [ta[0] / to[0] for to, ta in zip(o, a)]
        cpu = [ta[1] / to[1] for to, ta in zip(o, a) if to[1] > 0 and ta[1] > 0]
        _ROWS.append({
            "group": group, "anchor": anchor_name, "rounds": len(o),
            "ours_min_ms": min(t[0] for t in o) * 1e3, "anchor_min_ms": min(t[0] for t in a) * 1e3,
            "ratio_median": statistics.median(wall),
            "ratio_min": min(t[0] for t in a) / min(t[0] for t in o),
            "ratio_cpu_median": statistics.median(cpu) if cpu else float("nan"),
            "target": target,
        })

    return one_round, finish


@pytest.fixture(scope="module", autouse=True)
def _report(request):
    # The ratio table, printed once the module's benchmarks have run.
    yield
    if not _ROWS:
        return
    lines = [f"resample speed: anchor time / {OURS} time per paired round (> 1: ours faster)",
             (f"{'group':31} {'anchor':20} {'n':>3} {'ours best':>10} {'anchor best':>11} "
             f"{'x median':>8} {'x best':>7} {'x cpu':>6}  target")]
    for r in _ROWS:
        t = r["target"]
        verdict = "-" if t is None else f">= {t:g}x {'ok' if r['ratio_median'] >= t else 'MISSED'}"
        lines.append(
            f"{r['group']:31} {r['anchor']:20} {r['rounds']:>3} {r['ours_min_ms']:>8.2f}ms "
            f"{r['anchor_min_ms']:>9.2f}ms {r['ratio_median']:>8.2f} {r['ratio_min']:>7.2f} "
            f"{r['ratio_cpu_median']:>6.2f}  {verdict}"
        )
    capman = request.config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled():
        print("\n" + "\n".join(lines))


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
def bench_stream_20ms(benchmark, pair, dt):
    dtype = DTYPES[dt]
    chunks = _chunks(pair, dtype)
    benchmark.group = _g("stream 20ms", pair, dt)
    one_round, finish = _paired(
        benchmark.group, lambda: _run_ours(pair, dtype, chunks),
        lambda: _run_soxr(pair, dtype, chunks), "soxr HQ", STREAM_TARGET.get(pair),
    )
    benchmark.pedantic(one_round, rounds=ROUNDS, warmup_rounds=1)
    finish()


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("pair", ONESHOT_PAIRS, ids=lambda p: f"{p[0]}-{p[1]}")
@pytest.mark.parametrize("anchor", ["soxr HQ", "scipy resample_poly"])
def bench_oneshot_60s(benchmark, anchor, pair, dt):
    dtype = DTYPES[dt]
    x = _speechlike(SECONDS * pair[0], pair[0], dtype)
    benchmark.group = _g("one-shot 60s", pair, dt)
    if anchor == "soxr HQ":
        theirs = lambda: soxr.resample(x, *pair, "HQ")
    else:
        # resample_poly works in float64; int16 input is converted as part of the call.
        theirs = lambda: signal.resample_poly(x.astype(np.float32), pair[1], pair[0])
    one_round, finish = _paired(
        benchmark.group, lambda: resample(x, *pair), theirs, anchor,
        ONESHOT_TARGET.get(pair) if anchor == "soxr HQ" else None,
    )
    benchmark.pedantic(one_round, rounds=ROUNDS, warmup_rounds=1)
    finish()


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


PROFILE_PAIRS = [(8000, 16000), (16000, 8000), (48000, 16000), (44100, 16000)]


def _profile_call(pair: tuple[int, int]) -> tuple[int, dict[str, float]]:
    # CPU us per call of each part (see bench_call_profile); internals on purpose.
    n = pair[0] // 50
    x = _speechlike(n, pair[0], np.int16)
    rs = StreamResampler(*pair, dtype=np.int16)
    for _ in range(3):
        rs.process(x)  # steady state: the phase repeats every call
    kern = _backend.resample
    stages = [*rs._pre, rs]
    calls = []
    xin = x
    for st in stages:
        if st is rs:
            f, hist, scratch = rs._filter, rs._history.copy(), rs._scratch
            phase = rs._state[_PHASE]
            dt_out = np.int16
        else:
            f, hist, scratch, phase, dt_out = st.filter, st.history.copy(), st.scratch, \
                st.phase, np.float32
        span = len(xin) * f.up - phase
        n_out = (span + f.down - 1) // f.down if span > 0 else 0
        out = np.empty(n_out, dt_out)
        calls.append((xin, f, hist, scratch, phase, out))
        # real samples for the next stage (np.empty garbage may hold slow denormals)
        kern.polyphase_process(xin, f.taps, hist.copy(), scratch, phase, f.up, f.down, out)
        xin = out.copy()

    def kernels():
        for xi, f, hist, scratch, phase, out in calls:
            kern.polyphase_process(xi, f.taps, hist, scratch, phase, f.up, f.down, out)

    xi0, f0, hist0, scratch0, _, out0 = calls[0]
    sx = soxr.ResampleStream(*pair, 1, dtype=np.int16, quality="HQ")
    n_last = len(calls[-1][5])
    timings = {
        "process()": lambda: rs.process(x),
        "kernel calls": kernels,
        "kernel entry": lambda: kern.polyphase_process(
            xi0[:0], f0.taps, hist0, scratch0, 0, f0.up, f0.down, out0[:0]),
        "np.empty(out)": lambda: np.empty(n_last, np.int16),
        "soxr chunk": lambda: sx.resample_chunk(x),
    }
    row = {}
    for name, fn in timings.items():
        best = float("inf")
        for _ in range(7):
            c0 = time.process_time()
            for _ in range(2000):
                fn()
            best = min(best, (time.process_time() - c0) / 2000)
        row[name] = best * 1e6
    return len(stages), row


def bench_call_profile(capsys):
    # Not a pytest-benchmark timing: where one 20 ms int16 call goes (CPU time, best of 7 runs
    # of 2000 calls each): StreamResampler.process in total, the kernel calls alone (the same
    # arguments process passes, in steady state, through the kernel's Python entry), the
    # kernel entry alone (an empty chunk: argument parsing and the five array views), the
    # output allocation, and soxr's call. process() is the compiled front-end when native.
    rows = []
    for pair in PROFILE_PAIRS:
        n_stages, row = _profile_call(pair)
        rows.append((_g("", pair).strip(), n_stages, row))
    header = f"{'pair':10} {'stages':>6} " + " ".join(f"{k:>14}" for k in rows[0][2])
    lines = ["one 20 ms int16 call, CPU us (best of 7 x 2000 calls):", header]
    for name, n_st, row in rows:
        lines.append(f"{name:10} {n_st:>6} " + " ".join(f"{v:>14.2f}" for v in row.values()))
    with capsys.disabled():
        print("\n" + "\n".join(lines))
