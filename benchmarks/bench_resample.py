"""Resampler speed and quality: sis_stream vs soxr and scipy, interleaved in the same rounds.

The box these run on is shared and noisy, so every comparison is *paired* (``_ratios.Paired``):
each round runs ours and the anchor back to back (the order alternates from round to round) on
the same data, and the ratio anchor/ours is taken per round. The table reports the median of
those per-round ratios (robust to load that drifts between rounds; targets are judged on it),
the ratio of the best rounds (min of rounds, each side's least disturbed run), and the same
median on process CPU time (blind to time spent descheduled). pytest-benchmark times the pair
(its own table is the pair time).

Streaming: 60 s of audio in 20 ms chunks through ``StreamResampler`` vs
``soxr.ResampleStream`` (3000 ``process`` calls a round), int16 and float32.
One-shot: 60 s through ``resample`` vs ``soxr.resample`` and ``scipy.signal.resample_poly``.

Like for like: in int16 both resamplers sit at the int16 quantisation floor (about -87 dB), so
soxr HQ is the matched anchor. In float32 soxr HQ is 25-40 dB cleaner than ours (stopband about
-130 dB against our -103 dB), so float32 rows are reported against both soxr HQ and soxr MQ
(the cheaper preset with the same flat pass band, still 13-18 dB cleaner than ours; LQ would
match our stopband but drops 20 dB at 0.9 x Nyquist, and python-soxr offers presets only),
with the measured stopband of each side in the row's note; the float32 target is judged
against soxr MQ, the HQ row is information. A quality table (same measurement for every
resampler, see ``sis_stream.audio._filters.measure``) prints at the end.

Run: ``python -m pytest benchmarks/bench_resample.py -q``
(``SIS_BENCH_ROUNDS=<n>`` changes the rounds per comparison; default 15).
"""

from __future__ import annotations

import functools
import os
import time

import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")  # the bench extra

import scipy.signal as signal  # the test extra
import soxr  # the test extra
from _ratios import paired_fixture

from sis_stream import _backend
from sis_stream.audio._filters import measure
from sis_stream.audio.resample import _PHASE, StreamResampler, resample

SECONDS = 60
ROUNDS = int(os.environ.get("SIS_BENCH_ROUNDS", "15"))
STREAM_PAIRS = [(8000, 16000), (16000, 8000), (48000, 16000), (44100, 16000), (22050, 16000),
                (11025, 8000), (48000, 8000)]
ONESHOT_PAIRS = [(48000, 16000), (8000, 16000), (16000, 8000), (44100, 16000)]
DTYPES = {"int16": np.int16, "float32": np.float32}
OURS = f"sis_stream[{_backend.BACKEND}]"
# The targets: streaming 8k <-> 16k >= 3x soxr, one-shot 48k -> 16k >= 1x, judged
# against the matched anchor (soxr HQ for int16, soxr MQ for float32).
STREAM_TARGET = {(8000, 16000): 3.0, (16000, 8000): 3.0}
ONESHOT_TARGET = {(48000, 16000): 1.0}
MATCHED = {"int16": "HQ", "float32": "MQ"}

paired = paired_fixture(f"resample speed, {OURS}")


def _g(kind: str, pair: tuple[int, int], dt: str = "") -> str:
    def k(rate: int) -> str:
        return f"{rate // 1000}k" if rate % 1000 == 0 else f"{rate / 1000:g}k"

    return f"{kind} {k(pair[0])}->{k(pair[1])} {dt}".strip()


def _soxr_oneshot(quality: str):
    return lambda x, a, b: soxr.resample(x, a, b, quality)


@functools.lru_cache(maxsize=None)
def _stopband_db(who: str, pair: tuple[int, int], dt: str) -> float:
    """Worst alias (down) or image (up) level of a resampler, dB (``_filters.measure``)."""
    fn = (lambda x, a, b: resample(x, a, b)) if who == "ours" else _soxr_oneshot(who)
    r = measure(fn, *pair, DTYPES[dt])
    return r["alias_db"] if r["alias_db"] is not None else r["image_db"]


def _anchors(dt: str) -> list[str]:
    return ["HQ", "MQ"] if dt == "float32" else ["HQ"]


def _note(pair: tuple[int, int], dt: str, quality: str) -> str:
    return (f"stopband ours {_stopband_db('ours', pair, dt):.0f} dB, "
            f"soxr {quality} {_stopband_db(quality, pair, dt):.0f} dB")


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


def _run_soxr(pair, dtype, chunks, quality):
    rs = soxr.ResampleStream(*pair, 1, dtype=dtype, quality=quality)
    for c in chunks:
        rs.resample_chunk(c)
    rs.resample_chunk(chunks[0][:0], last=True)


def _target(table: dict, pair: tuple[int, int], dt: str, quality: str) -> float | None:
    return table.get(pair) if quality == MATCHED[dt] else None


def _cases(pairs: list[tuple[int, int]], extra: tuple[str, ...] = ()) -> list:
    return [pytest.param(pair, dt, a, id=f"{pair[0]}-{pair[1]}-{dt}-{a.replace(' ', '_')}")
            for pair in pairs for dt in DTYPES
            for a in [*(f"soxr {q}" for q in _anchors(dt)), *extra]]


@pytest.mark.parametrize(("pair", "dt", "anchor"), _cases(STREAM_PAIRS))
def bench_stream_20ms(benchmark, paired, pair, dt, anchor):
    quality = anchor.split()[1]
    dtype = DTYPES[dt]
    chunks = _chunks(pair, dtype)
    paired.run(benchmark, _g("stream 20ms", pair, dt), OURS, lambda: _run_ours(pair, dtype, chunks),
               f"soxr {quality}", lambda: _run_soxr(pair, dtype, chunks, quality),
               target=_target(STREAM_TARGET, pair, dt, quality), rounds=ROUNDS,
               note=_note(pair, dt, quality))


@pytest.mark.parametrize(("pair", "dt", "anchor"), _cases(ONESHOT_PAIRS, ("scipy resample_poly",)))
def bench_oneshot_60s(benchmark, paired, pair, dt, anchor):
    dtype = DTYPES[dt]
    x = _speechlike(SECONDS * pair[0], pair[0], dtype)
    note = ""
    if anchor.startswith("soxr"):
        quality = anchor.split()[1]
        theirs = lambda: soxr.resample(x, *pair, quality)
        target = _target(ONESHOT_TARGET, pair, dt, quality)
        note = _note(pair, dt, quality)
    else:
        # resample_poly works in float64; int16 input is converted as part of the call.
        theirs = lambda: signal.resample_poly(x.astype(np.float32), pair[1], pair[0])
        target = None
    paired.run(benchmark, _g("one-shot 60s", pair, dt), OURS, lambda: resample(x, *pair),
               anchor, theirs, target=target, rounds=ROUNDS, note=note)


QUALITY_PAIRS = [(8000, 16000), (16000, 8000), (48000, 16000), (44100, 16000)]


def bench_quality_table(capsys):
    # Not a timing: the quality figures of both resamplers, measured the same way, as a table.
    rows = []
    for pair in QUALITY_PAIRS:
        for dt, dtype in DTYPES.items():
            for who, fn in [("sis_stream hq", lambda x, a, b: resample(x, a, b)),
                            ("soxr HQ", _soxr_oneshot("HQ")), ("soxr MQ", _soxr_oneshot("MQ"))]:
                r = measure(fn, *pair, dtype)
                rows.append((f"{pair[0]}->{pair[1]}", dt, who, r))

    def fmt(v, digits=1):
        return "-" if v is None else f"{v:.{digits}f}"

    lines = ["resample quality (tones at -6 dBFS; dB):",
             f"{'pair':12} {'dtype':8} {'who':14} {'ripple<=0.8':>12} {'p-p .1-.8':>10} "
             f"{'gain@0.9':>9} {'alias':>7} {'image':>7} {'1kHz res':>8}"]
    for pair, dt, who, r in rows:
        lines.append(f"{pair:12} {dt:8} {who:14} {fmt(r['ripple_db'], 5):>12} "
                     f"{fmt(r['ripple_pp_db'], 5):>10} "
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
    idle = StreamResampler(*pair, dtype=np.int16)
    idle.process(x)  # buffers sized: empty chunks then take the same path as full ones
    empty = x[:0]
    timings = {
        "process()": lambda: rs.process(x),
        "process(empty)": lambda: idle.process(empty),
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
    # of 2000 calls each): StreamResampler.process in total, the same call with an empty chunk
    # (the fixed cost per call: front-end, checks, output allocation), the kernel calls alone
    # (the same arguments process passes, in steady state, through the kernel's Python entry), the
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
