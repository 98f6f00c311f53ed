"""``sis-stream bench``: a quick, bounded throughput check of the audio core against anchors.

Every case processes 10 s of seeded synthetic audio and reports how many times faster than real
time it runs (best of the repeats that fit in the time budget), next to the anchor library when
it is installed (audioop for G.711, soxr and scipy for resampling, webrtcvad for the VAD). The
full benchmark suite (pytest-benchmark, ``benchmarks/``) gives the careful numbers; this is the
two-second look.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TextIO

import numpy as np

from ._common import EXIT_OK, EXIT_USAGE, CliError, add_debug_flag, guarded

__all__ = ["CASES", "HELP", "NAME", "Case", "Row", "build", "run", "run_cases"]

NAME: Final = "bench"
HELP: Final = "quick throughput check: G.711, resampler and VAD vs audioop/soxr/scipy/webrtcvad"
#: Seconds of audio each case processes per call.
AUDIO_S: Final = 10.0
_SEED: Final = 20240611


@dataclass(frozen=True)
class Row:
    """One result: our speed, the anchor's, and their ratio (x real time; higher is faster)."""

    case: str
    ours_x: float
    anchor: str | None
    anchor_x: float | None

    @property
    def ratio(self) -> float | None:
        """ours / anchor (> 1: we are faster)."""
        if self.anchor_x is None or self.anchor_x == 0:
            return None
        return self.ours_x / self.anchor_x

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"case": self.case, "ours_x_realtime": round(self.ours_x, 1), "anchor": self.anchor,
                "anchor_x_realtime": None if self.anchor_x is None else round(self.anchor_x, 1),
                "ratio": None if self.ratio is None else round(self.ratio, 3)}


@dataclass(frozen=True)
class Case:
    """A benchmark case: ``setup() -> (ours, {anchor name: anchor})`` of zero-argument calls,
    each processing :data:`AUDIO_S` seconds of audio. An anchor is None when not installed."""

    name: str
    setup: Callable[[], tuple[Callable[[], Any], dict[str, Callable[[], Any] | None]]]


def _speech_like(rate_hz: int, seconds: float = AUDIO_S) -> np.ndarray:
    # Seeded: bursts of a harmonic tone with noise, separated by quiet gaps (VAD has work to do).
    rng = np.random.default_rng(_SEED)
    n = int(rate_hz * seconds)
    t = np.arange(n) / rate_hz
    voiced = (np.sin(2 * np.pi * 1.3 * t) > 0.1).astype(np.float64)
    x = voiced * (0.3 * np.sin(2 * np.pi * 180 * t) + 0.15 * np.sin(2 * np.pi * 900 * t))
    x += rng.normal(0, 0.01, n)
    return np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)


def _optional(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def _g711_encode() -> tuple[Callable[[], Any], dict[str, Callable[[], Any] | None]]:
    from ..audio.codec import ulaw_encode

    pcm = _speech_like(8000).tobytes()
    audioop = _optional("audioop")
    return (lambda: ulaw_encode(pcm)), {"audioop": (lambda: audioop.lin2ulaw(pcm, 2)) if audioop else None}


def _g711_decode() -> tuple[Callable[[], Any], dict[str, Callable[[], Any] | None]]:
    from ..audio.codec import ulaw_decode, ulaw_encode

    codes = ulaw_encode(_speech_like(8000).tobytes())
    audioop = _optional("audioop")
    return (lambda: ulaw_decode(codes)), {"audioop": (lambda: audioop.ulaw2lin(codes, 2)) if audioop else None}


def _resample(in_rate: int, out_rate: int) -> Callable[[], tuple[Callable[[], Any], dict[str, Callable[[], Any] | None]]]:
    def setup() -> tuple[Callable[[], Any], dict[str, Callable[[], Any] | None]]:
        from ..audio.resample import resample

        x = _speech_like(in_rate)
        soxr = _optional("soxr")
        signal = _optional("scipy.signal")
        from math import gcd

        g = gcd(in_rate, out_rate)
        return (lambda: resample(x, in_rate, out_rate)), {
            "soxr HQ": (lambda: soxr.resample(x, in_rate, out_rate, quality="HQ")) if soxr else None,
            "scipy resample_poly": (lambda: signal.resample_poly(x, out_rate // g, in_rate // g))
            if signal else None,
        }

    return setup


def _vad() -> tuple[Callable[[], Any], dict[str, Callable[[], Any] | None]]:
    from ..audio.vad import EnergyVad

    pcm = _speech_like(16000)
    webrtcvad = _optional("webrtcvad")

    def ours() -> Any:
        return EnergyVad(16000, 10).process(pcm)

    anchors: dict[str, Callable[[], Any] | None] = {"webrtcvad (mode 2)": None}
    if webrtcvad is not None:
        raw = pcm.tobytes()
        frame = 320  # bytes in 10 ms at 16 kHz

        def theirs() -> Any:
            v = webrtcvad.Vad(2)
            return [v.is_speech(raw[i : i + frame], 16000) for i in range(0, len(raw) - frame + 1, frame)]

        anchors["webrtcvad (mode 2)"] = theirs
    return ours, anchors


#: The cases, in order.
CASES: Final = (
    Case("G.711 u-law encode, 8 kHz", _g711_encode),
    Case("G.711 u-law decode, 8 kHz", _g711_decode),
    Case("resample 48 kHz -> 16 kHz", _resample(48000, 16000)),
    Case("resample 8 kHz -> 16 kHz", _resample(8000, 16000)),
    Case("VAD 16 kHz, 10 ms frames", _vad),
)


def _speed(fn: Callable[[], Any], budget_s: float, clock: Callable[[], float]) -> float:
    """Times faster than real time: best call of those fitting in `budget_s` (at least 2 calls)."""
    best = float("inf")
    spent = 0.0
    calls = 0
    while calls < 2 or (spent < budget_s and calls < 1000):
        t0 = clock()
        fn()
        dt = clock() - t0
        best = min(best, dt)
        spent += dt
        calls += 1
    return AUDIO_S / max(best, 1e-9)


def run_cases(budget_s: float = 0.15, select: str | None = None,
              clock: Callable[[], float] = time.perf_counter) -> list[Row]:
    """Run every case (or those whose name contains `select`); a bounded total time.

    Cases whose module is missing (e.g. the resampler in an old build) are skipped.
    """
    rows: list[Row] = []
    for case in CASES:
        if select and select.lower() not in case.name.lower():
            continue
        try:
            ours, anchors = case.setup()
        except ImportError:
            continue
        ours_x = _speed(ours, budget_s, clock)
        if not anchors:
            rows.append(Row(case.name, ours_x, None, None))
        for name, fn in anchors.items():
            rows.append(Row(case.name, ours_x, name, None if fn is None else _speed(fn, budget_s, clock)))
    return rows


def _print_table(out: TextIO, rows: list[Row], backend: str) -> None:
    out.write(f"sis_stream audio core, backend {backend}; x real time on {AUDIO_S:g} s of audio "
              "(higher is faster)\n")
    w = max([len(r.case) for r in rows] + [4])
    aw = max([len(r.anchor or "") for r in rows] + [6])
    out.write(f"{'case':<{w}}  {'ours':>10}  {'anchor':<{aw}}  {'anchor':>10}  {'ratio':>7}\n")
    for r in rows:
        anchor_x = "n/a" if r.anchor_x is None else f"{r.anchor_x:,.0f}x"
        ratio = "n/a" if r.ratio is None else f"{r.ratio:.2f}"
        anchor = r.anchor or "-"
        if r.anchor is not None and r.anchor_x is None:
            anchor += " (not installed)"
        out.write(f"{r.case:<{w}}  {r.ours_x:>9,.0f}x  {anchor:<{aw}}  {anchor_x:>10}  {ratio:>7}\n")


def build(p: argparse.ArgumentParser) -> None:
    """Add the ``bench`` arguments to `p`."""
    p.add_argument("--budget", type=float, default=0.15, metavar="S",
                   help="seconds spent per measurement (default 0.15; the whole run stays a few s)")
    p.add_argument("--only", metavar="TEXT", help="run only the cases whose name contains TEXT")
    p.add_argument("--json", action="store_true", help="print JSON rows")
    add_debug_flag(p)



def bench_main(args: argparse.Namespace, *, stdout: TextIO | None = None) -> int:
    """The body of ``sis-stream bench``."""
    from .._backend import BACKEND

    out = sys.stdout if stdout is None else stdout
    if not 0 < args.budget <= 10:
        raise CliError(f"--budget must lie in (0, 10] seconds, got {args.budget}", EXIT_USAGE)
    rows = run_cases(args.budget, args.only)
    if not rows:
        raise CliError(f"no benchmark case matches {args.only!r}", EXIT_USAGE)
    if args.json:
        out.write(json.dumps({"backend": BACKEND, "audio_s": AUDIO_S,
                              "rows": [r.to_dict() for r in rows]}) + "\n")
    else:
        _print_table(out, rows, BACKEND)
    out.flush()
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    return bench_main(args)


run = guarded(NAME, _run)
run.__doc__ = """Run ``sis-stream bench``; returns the exit code."""
