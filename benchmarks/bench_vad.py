"""VAD accuracy (frame P/R/F1, SIS endpoint error) and speed, sis_stream EnergyVad vs webrtcvad 0-3.

Run: ``/work/venv/bin/python -m pytest benchmarks/bench_vad.py -q -s`` (prints the tables and,
at the end, the speed ratios). The labelled set is built by ``benchmarks/_speechset.py``
(espeak-ng speech, four noises, four SNRs, 8 and 16 kHz, plus a u-law round-tripped copy fed to
our VAD as u-law codes). webrtcvad comes from the ``webrtcvad-wheels`` distribution (the bench
extra); it is imported as ``webrtcvad``.

Speed: every detector decides the same audio (an English track in white noise at 10 dB, the
whole track, about 30 s) in 20 ms frames: our batch API (``EnergyVad.process`` on the whole
buffer), our per-frame call (``EnergyVad.process`` once per 20 ms frame) and webrtcvad's
``Vad.is_speech`` once per frame (its only API). Ratios use each benchmark's fastest round
(the least disturbed by other processes on a shared machine) and, in brackets, the medians.
"""

from __future__ import annotations

import functools
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")
sys.path.insert(0, str(Path(__file__).parent))

import _speechset as S

from sis_stream.audio import codec
from sis_stream.audio.endpoint import Endpointer, SegmentClosed
from sis_stream.audio.vad import EnergyVad

try:
    import webrtcvad  # the webrtcvad-wheels distribution
except ImportError:  # pragma: no cover
    webrtcvad = None

FRAME_MS = 20
DETECTORS = ("sis_stream", "webrtc0", "webrtc1", "webrtc2", "webrtc3")
_RESULTS: dict[str, object] = {}


class WebrtcFrameVad:
    """webrtcvad as a FrameVad (for the Endpointer): buffers partial frames like EnergyVad."""

    def __init__(self, rate_hz: int, frame_ms: int, mode: int) -> None:
        self.rate_hz = rate_hz
        self.frame_len = rate_hz * frame_ms // 1000
        self.mode = mode
        self.reset()

    def reset(self) -> None:
        self._vad = webrtcvad.Vad(self.mode)
        self._pending = np.zeros(0, np.int16)

    def process(self, x: np.ndarray) -> np.ndarray:
        x = np.concatenate((self._pending, x))
        n = len(x) // self.frame_len
        self._pending = x[n * self.frame_len :]
        b = x[: n * self.frame_len].tobytes()
        step = 2 * self.frame_len
        return np.array([self._vad.is_speech(b[i * step : (i + 1) * step], self.rate_hz)
                         for i in range(n)], bool)


def _decide(det: str, pcm: np.ndarray, rate: int, codes: np.ndarray | None = None) -> np.ndarray:
    if det == "sis_stream":
        if codes is not None:
            return EnergyVad(rate, FRAME_MS, encoding="ulaw").process(codes)
        return EnergyVad(rate, FRAME_MS).process(pcm)
    return WebrtcFrameVad(rate, FRAME_MS, int(det[-1])).process(pcm)


def _counts(pred: np.ndarray, lab: np.ndarray) -> np.ndarray:
    n = min(len(pred), len(lab))
    p, t = pred[:n], lab[:n]
    return np.array([np.sum(p & t), np.sum(p & ~t), np.sum(~p & t)], float)


def _f1(c: np.ndarray) -> tuple[float, float, float]:
    tp, fp, fn = c
    return tp / max(tp + fp, 1), tp / max(tp + fn, 1), 2 * tp / max(2 * tp + fp + fn, 1)


def _endpoint_errors(det: str, noisy: np.ndarray, tr: S.Track) -> list[float]:
    """Sentence-mode sessions, one per utterance: |start error| and |end error| in ms."""
    errs = []
    rate = tr.rate_hz
    for u in tr.utterances:
        a = max(0, u.start - rate)  # 1 s of noise before, 1.5 s after
        b = min(len(noisy), u.stop + rate * 3 // 2)
        vad = None if det == "sis_stream" else WebrtcFrameVad(rate, FRAME_MS, int(det[-1]))
        ep = Endpointer("sentence", rate, frame_ms=FRAME_MS, vad=vad, include_audio=False)
        ev = ep.process(noisy[a:b]) + ep.flush()
        closed = [e for e in ev if isinstance(e, SegmentClosed)]
        off = a * 1000 // rate
        if not closed:
            errs += [np.inf, np.inf]
            continue
        c = closed[0]
        errs += [abs(c.start_ms + off - u.speech_start_ms), abs(c.end_ms + off - u.speech_end_ms)]
    return errs


@pytest.fixture(scope="module")
def quality():
    if webrtcvad is None:
        pytest.skip("webrtcvad not installed")
    counts: dict = defaultdict(lambda: np.zeros(3))
    ep_err: dict = defaultdict(list)
    for rate in S.RATES:
        for lang in S.LANGUAGES:
            tr = S.track(lang, rate)
            lab = S.labels(tr, FRAME_MS)
            for kind in S.NOISES:
                for snr in S.SNRS_DB:
                    x = S.mix(tr, kind, snr)
                    codes = S.g711_roundtrip(x)
                    x711 = codec.ulaw_decode(codes)
                    for det in DETECTORS:
                        c = _counts(_decide(det, x, rate), lab)
                        c711 = _counts(_decide(det, x711, rate, codes if det == "sis_stream" else None), lab)
                        for key in ((snr,), (snr, kind), (snr, "g711")):
                            counts[key + (det,)] += c711 if key[-1] == "g711" else c
                        if snr == 10 or snr == 5:
                            ep_err[(snr, det)] += _endpoint_errors(det, x, tr)
    return counts, ep_err


def test_frame_f1_per_snr(quality):
    counts, _ = quality
    lines = [f"\nFrame P/R/F1 ({FRAME_MS} ms frames, en+zh, 8+16 kHz, all noises):",
             "SNR  " + "  ".join(f"{d:>19}" for d in DETECTORS)]
    ok = True
    for snr in S.SNRS_DB:
        cells = []
        f1s = {}
        for d in DETECTORS:
            p, r, f = _f1(counts[(snr, d)])
            f1s[d] = f
            cells.append(f"{p:.3f}/{r:.3f}/{f:.3f}")
        best = max(f1s[d] for d in DETECTORS[1:])
        if snr >= 5:
            ok &= f1s["sis_stream"] >= best
        lines.append(f"{snr:>3}  " + "  ".join(f"{c:>19}" for c in cells)
                     + f"   ours-best={f1s['sis_stream'] - best:+.3f}")
        for kind in (*S.NOISES, "g711"):
            f = [_f1(counts[(snr, kind, d)])[2] for d in DETECTORS]
            lines.append(f"     {kind:>6} F1: " + " ".join(f"{v:.3f}" for v in f))
    print("\n".join(lines))
    _RESULTS["f1_target_met"] = ok


def test_endpoint_error(quality):
    _, ep_err = quality
    lines = ["\nSIS sentence-mode endpoint error, ms (start and end of each utterance):",
             "SNR  detector     median    p90   missed"]
    for snr in (10, 5):
        for d in DETECTORS:
            e = np.array(ep_err[(snr, d)])
            fin = e[np.isfinite(e)]
            lines.append(f"{snr:>3}  {d:<11} {np.median(e):7.1f} {np.percentile(fin, 90):7.1f} "
                         f"{np.sum(~np.isfinite(e)) // 2:5d}")
    print("\n".join(lines))
    _RESULTS["median_endpoint_err_10db"] = float(np.median(ep_err[(10, "sis_stream")]))


# --- speed: 20 ms frames, the same audio for every detector ---------------------------------------


#: Rounds of the timed loops. The same for our batch call and webrtcvad's frame loop, so both
#: minima get the same chances to land in a quiet moment of a shared machine.
ROUNDS_LOOP = 40


@functools.cache
def _signal(rate: int) -> np.ndarray:
    return S.mix(S.track("en", rate), "white", 10)


def _record(benchmark, key: str, n_frames: int) -> None:
    st = benchmark.stats.stats
    benchmark.extra_info["frames"] = n_frames
    benchmark.extra_info["us_per_frame_min"] = st.min / n_frames * 1e6
    _RESULTS[key] = (st.min / n_frames, st.median / n_frames)


@pytest.mark.parametrize("rate", [8000, 16000])
def bench_vad_ours_batch_20ms(benchmark, backend, rate):
    x = _signal(rate)
    n = len(x) // (rate // 50)
    vad = EnergyVad(rate, 20)
    benchmark.group = f"vad-20ms-{rate}"

    def run():
        vad.reset()
        return vad.process(x)

    rounds = ROUNDS_LOOP if backend.kind == "native" else 3
    assert len(benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=2)) == n
    _record(benchmark, f"{backend.kind}_batch_{rate}", n)


@pytest.mark.parametrize("rate", [8000, 16000])
def bench_vad_ours_per_frame_20ms(benchmark, rate):
    x = _signal(rate)
    L = rate // 50
    frames = [x[i * L : (i + 1) * L] for i in range(len(x) // L)]
    vad = EnergyVad(rate, 20)
    benchmark.group = f"vad-20ms-{rate}"

    def run():
        vad.reset()
        for f in frames:
            vad.process(f)

    benchmark.pedantic(run, rounds=ROUNDS_LOOP, iterations=1, warmup_rounds=1)
    _record(benchmark, f"native_per_frame_{rate}", len(frames))


@pytest.mark.parametrize("rate", [8000, 16000])
def bench_vad_webrtc_20ms(benchmark, rate):
    if webrtcvad is None:
        pytest.skip("webrtcvad not installed")
    x = _signal(rate)
    L = rate // 50
    b = x.tobytes()
    frames = [b[2 * i * L : 2 * (i + 1) * L] for i in range(len(x) // L)]
    vad = webrtcvad.Vad(3)
    benchmark.group = f"vad-20ms-{rate}"

    def run():
        for f in frames:
            vad.is_speech(f, rate)

    benchmark.pedantic(run, rounds=ROUNDS_LOOP, iterations=1, warmup_rounds=1)
    _record(benchmark, f"webrtc_{rate}", len(frames))


def teardown_module(module):
    lines = ["\nVAD speed, 20 ms frames (same audio; fastest round [median]):",
             "  rate   detector                 us/frame         frames/s          vs webrtcvad"]
    for rate in (8000, 16000):
        w = _RESULTS.get(f"webrtc_{rate}")
        for key, label in ((f"native_batch_{rate}", "EnergyVad batch"),
                           (f"native_per_frame_{rate}", "EnergyVad per frame"),
                           (f"reference_batch_{rate}", "EnergyVad batch (numpy)"),
                           (f"webrtc_{rate}", "webrtcvad is_speech")):
            o = _RESULTS.get(key)
            if not o:
                continue
            ratio = f"{w[0] / o[0]:6.1f}x [{w[1] / o[1]:5.1f}x]" if w else ""
            lines.append(f"  {rate:5d}  {label:<24} {o[0] * 1e6:7.3f} [{o[1] * 1e6:6.3f}]  "
                         f"{1 / o[0]:>10,.0f}  {ratio}")
        if w and f"native_batch_{rate}" in _RESULTS:
            _RESULTS[f"batch_ratio_{rate}"] = w[0] / _RESULTS[f"native_batch_{rate}"][0]
    for k in ("f1_target_met", "median_endpoint_err_10db", "batch_ratio_8000", "batch_ratio_16000"):
        if k in _RESULTS:
            lines.append(f"  {k}: {_RESULTS[k]}")
    print("\n".join(lines))
