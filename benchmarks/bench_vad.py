"""VAD accuracy (frame P/R/F1, SIS endpoint error) and speed, sis_stream EnergyVad vs webrtcvad 0-3.

Run: ``/work/venv/bin/python -m pytest benchmarks/bench_vad.py -q -s`` (prints the tables).
The labelled set is built by ``benchmarks/_speechset.py`` (espeak-ng speech, four noises, four
SNRs, 8 and 16 kHz, plus a u-law round-tripped copy fed to our VAD as u-law codes).
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")
sys.path.insert(0, str(Path(__file__).parent))

import _speechset as S  # noqa: E402

from sis_stream import codec  # noqa: E402
from sis_stream.endpoint import Endpointer, SegmentClosed  # noqa: E402
from sis_stream.vad import EnergyVad  # noqa: E402

try:
    webrtcvad = S.import_webrtcvad()
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


# --- speed: 20 ms frames, 10 s of audio per round ------------------------------------------------


def _signal(rate: int) -> np.ndarray:
    return S.mix(S.track("en", rate), "white", 10)[: rate * 10]


@pytest.mark.parametrize("rate", [8000, 16000])
def bench_vad_ours_batch_20ms(benchmark, backend, rate):
    if backend.kind != "native":
        pytest.skip("speed is measured for the native backend")
    x = _signal(rate)
    benchmark.group = f"vad-20ms-{rate}"
    benchmark.extra_info["frames"] = len(x) // (rate // 50)
    benchmark.pedantic(lambda: EnergyVad(rate, 20).process(x), rounds=20, iterations=1)
    _RESULTS[f"ours_batch_{rate}"] = benchmark.stats.stats.min / benchmark.extra_info["frames"]


@pytest.mark.parametrize("rate", [8000, 16000])
def bench_vad_ours_per_frame_20ms(benchmark, rate):
    x = _signal(rate)
    L = rate // 50
    frames = [x[i * L : (i + 1) * L] for i in range(len(x) // L)]
    benchmark.group = f"vad-20ms-{rate}"

    def run():
        v = EnergyVad(rate, 20)
        for f in frames:
            v.process(f)

    benchmark.pedantic(run, rounds=5, iterations=1)
    _RESULTS[f"ours_per_frame_{rate}"] = benchmark.stats.stats.min / len(frames)


@pytest.mark.parametrize("rate", [8000, 16000])
def bench_vad_webrtc_20ms(benchmark, rate):
    if webrtcvad is None:
        pytest.skip("webrtcvad not installed")
    x = _signal(rate)
    L = rate // 50
    b = x.tobytes()
    frames = [b[2 * i * L : 2 * (i + 1) * L] for i in range(len(x) // L)]
    benchmark.group = f"vad-20ms-{rate}"

    def run():
        v = webrtcvad.Vad(2)
        for f in frames:
            v.is_speech(f, rate)

    benchmark.pedantic(run, rounds=20, iterations=1)
    _RESULTS[f"webrtc_{rate}"] = benchmark.stats.stats.min / len(frames)


def teardown_module(module):
    lines = ["\nVAD summary:"]
    for rate in (8000, 16000):
        w = _RESULTS.get(f"webrtc_{rate}")
        for key in (f"ours_batch_{rate}", f"ours_per_frame_{rate}"):
            o = _RESULTS.get(key)
            if w and o:
                lines.append(f"  {key}: {o * 1e6:.3f} us/frame ({1 / o:,.0f} frames/s), "
                             f"webrtcvad {w * 1e6:.3f} us/frame -> {w / o:.1f}x")
    for k in ("f1_target_met", "median_endpoint_err_10db"):
        if k in _RESULTS:
            lines.append(f"  {k}: {_RESULTS[k]}")
    print("\n".join(lines))
