"""``sis-stream vad``: run SIS endpoint detection over a file and show its segments and events."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from dataclasses import dataclass, field
from typing import Any, Final, TextIO

import numpy as np

from ..audio import endpoint as ep
from ..audio.formats import AudioFormat
from .output import format_timestamp
from ..audio.vad import EnergyVad
from ._common import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    add_debug_flag,
    guarded,
    open_audio,
    read_all,
    sis_format_arg,
)
from .convert import convert_bytes

__all__ = ["HELP", "NAME", "VadReport", "analyse", "build", "run"]

NAME: Final = "vad"
HELP: Final = "SIS endpoint detection over a file: speech segments and events as a table or JSON"
_MODES: Final = {"continuous": ep.Mode.CONTINUOUS, "continue": ep.Mode.CONTINUOUS,
                 "sentence": ep.Mode.SENTENCE, "short": ep.Mode.SHORT}
#: Audio given to the Endpointer per call (the result does not depend on it).
_CHUNK_MS: Final = 100


def build(p: argparse.ArgumentParser) -> None:
    """Add the ``vad`` arguments to `p`."""
    p.add_argument("input", metavar="IN", help="WAV file, raw audio with --audio-format, or - for stdin")
    p.add_argument("--audio-format", type=sis_format_arg, metavar="FMT", help="IN is raw audio in this format")
    p.add_argument("--mode", choices=("continuous", "continue", "sentence", "short"), default="continuous",
                   help="SIS mode rules: continuous (default; 'continue' is the same), sentence, short")
    p.add_argument("--vad-head", type=int, default=ep.DEFAULT_VAD_HEAD_MS, metavar="MS",
                   help=f"leading silence limit, ms (default {ep.DEFAULT_VAD_HEAD_MS})")
    p.add_argument("--vad-tail", type=int, default=ep.DEFAULT_VAD_TAIL_MS, metavar="MS",
                   help=f"trailing silence that ends a sentence, ms (default {ep.DEFAULT_VAD_TAIL_MS})")
    p.add_argument("--max-seconds", type=int, default=ep.DEFAULT_MAX_SECONDS, metavar="S",
                   help=f"longest sentence, s (default {ep.DEFAULT_MAX_SECONDS})")
    p.add_argument("--sensitivity", type=float, default=0.5, help="VAD sensitivity 0..1 (default 0.5)")
    p.add_argument("--frame-ms", type=int, choices=(10, 20, 30), default=10, help="VAD frame (10)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--plot", metavar="OUT.png",
                   help="draw waveform, energy and decisions to this image (needs matplotlib)")
    add_debug_flag(p)



@dataclass
class VadReport:
    """Segments and events of one file (times in ms of the input audio)."""

    rate_hz: int
    audio_ms: float
    mode: str
    config: dict[str, Any]
    segments: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def speech_ms(self) -> int:
        """Total speech (sum of segment onset..end spans)."""
        return sum(s["end_ms"] - s["start_ms"] for s in self.segments)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"rate_hz": self.rate_hz, "audio_ms": round(self.audio_ms, 3), "mode": self.mode,
                "config": self.config, "speech_ms": self.speech_ms, "segments": self.segments,
                "events": self.events}


def _analysis_pcm(data: bytes, fmt: AudioFormat) -> tuple[np.ndarray, int]:
    """int16 PCM at 8 or 16 kHz for the Endpointer (converted with our Transcoder if needed)."""
    rate = 8000 if fmt.rate_hz <= 8000 else 16000
    target = AudioFormat(rate, "pcm", 2)
    pcm = convert_bytes(data, fmt, target)
    return np.frombuffer(pcm, "<i2").astype(np.int16), rate


def analyse(pcm: np.ndarray, rate_hz: int, *, mode: str = "continuous", vad_head: int = 10000,
            vad_tail: int = 500, max_seconds: int = 30, sensitivity: float = 0.5,
            frame_ms: int = 10) -> VadReport:
    """Run the :class:`~sis_stream.audio.endpoint.Endpointer` over `pcm` and collect what it reports.

    Raises
    ------
    ValueError
        A parameter outside the SIS range (the message gives the range).
    """
    m = _MODES[mode]
    det = ep.Endpointer(m, rate_hz, vad_head=vad_head, vad_tail=vad_tail, max_seconds=max_seconds,
                        frame_ms=frame_ms, sensitivity=sensitivity, include_audio=False)
    report = VadReport(rate_hz, len(pcm) * 1000 / rate_hz, m.value,
                       {"vad_head": vad_head, "vad_tail": vad_tail, "max_seconds": max_seconds,
                        "sensitivity": sensitivity, "frame_ms": frame_ms})
    step = rate_hz * _CHUNK_MS // 1000
    events: list[ep.EndpointEvent] = []
    for i in range(0, len(pcm), step):
        events.extend(det.process(pcm[i : i + step]))
    events.extend(det.flush())
    for e in events:
        if isinstance(e, ep.SegmentClosed):
            report.segments.append({"index": e.index, "start_ms": e.start_ms, "end_ms": e.end_ms,
                                    "reason": e.reason.value, "audio_start_ms": e.audio_start_ms,
                                    "audio_end_ms": e.audio_end_ms, "detected_ms": e.detected_ms})
        elif isinstance(e, ep.SilenceCut):
            report.events.append({"event": "SILENCE_CUT", "timestamp_ms": e.timestamp_ms,
                                  "start_ms": e.start_ms, "detected_ms": e.detected_ms})
        elif e.sis_event is not None:
            report.events.append({"event": e.sis_event, "timestamp_ms": e.timestamp_ms,
                                  "detected_ms": e.detected_ms})
    return report


def _print_table(out: TextIO, name: str, described: str, r: VadReport) -> None:
    out.write(f"{name}: {described}, {r.audio_ms / 1000:.2f} s; mode {r.mode}, vad_head "
              f"{r.config['vad_head']} ms, vad_tail {r.config['vad_tail']} ms, max_seconds "
              f"{r.config['max_seconds']} s\n")
    if r.segments:
        out.write(f"{'#':>3}  {'start':>9}  {'end':>9}  {'length':>8}  reason\n")
        for s in r.segments:
            length = (s["end_ms"] - s["start_ms"]) / 1000
            out.write(f"{s['index']:>3}  {format_timestamp(s['start_ms'], 'clock'):>9}  "
                      f"{format_timestamp(s['end_ms'], 'clock'):>9}  {length:>6.2f} s  {s['reason']}\n")
    else:
        out.write("no speech segments\n")
    out.writelines(f"event {e['event']} at {format_timestamp(e['timestamp_ms'], 'clock')}\n" for e in r.events)
    share = r.speech_ms / r.audio_ms if r.audio_ms else 0.0
    out.write(f"{len(r.segments)} segment(s), speech {r.speech_ms / 1000:.2f} s "
              f"({share:.0%} of the audio)\n")


def plot(path: str, pcm: np.ndarray, rate_hz: int, report: VadReport) -> None:
    """Draw waveform, frame energy, VAD decisions and the segments to `path` (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame_ms = int(report.config["frame_ms"])
    vad = EnergyVad(rate_hz, frame_ms, float(report.config["sensitivity"]))
    decisions, feats = vad.process_features(pcm)
    t = np.arange(len(pcm)) / rate_hz
    tf = (np.arange(len(decisions)) + 0.5) * frame_ms / 1000
    fig, axes = plt.subplots(3, 1, sharex=True, figsize=(11, 6), constrained_layout=True)
    axes[0].plot(t, pcm / 32768.0, lw=0.5, color="tab:blue")
    axes[0].set_ylabel("waveform")
    axes[1].plot(tf, feats[:, 0], lw=0.8, label="energy (dBFS)")
    axes[1].plot(tf, feats[:, 1], lw=0.8, label="band 300-3400 Hz (dBFS)")
    axes[1].legend(loc="upper right", fontsize=8)
    axes[1].set_ylabel("dBFS")
    axes[2].step(tf, decisions.astype(int), where="mid", lw=0.8, color="tab:gray", label="frame VAD")
    for s in report.segments:
        for ax in axes:
            ax.axvspan(s["start_ms"] / 1000, s["end_ms"] / 1000, color="tab:green", alpha=0.15)
    axes[2].set_ylabel("speech")
    axes[2].set_xlabel("seconds")
    axes[2].set_yticks([0, 1])
    fig.suptitle(f"SIS endpointing ({report.mode}): {len(report.segments)} segment(s) shaded")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def vad_main(args: argparse.Namespace, *, stdin: Any = None, stdout: TextIO | None = None) -> int:
    """The body of ``sis-stream vad``."""
    out = sys.stdout if stdout is None else stdout
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise CliError("--plot needs matplotlib, which is not installed (pip install matplotlib)",
                       EXIT_USAGE)
    source = open_audio(args.input, args.audio_format, stdin=stdin)
    data = read_all(source)
    pcm, rate = _analysis_pcm(data, source.format)
    try:
        report = analyse(pcm, rate, mode=args.mode, vad_head=args.vad_head, vad_tail=args.vad_tail,
                         max_seconds=args.max_seconds, sensitivity=args.sensitivity,
                         frame_ms=args.frame_ms)
    except (ValueError, TypeError) as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    if args.json:
        doc = {"input": source.name, "input_format": source.description, **report.to_dict()}
        out.write(json.dumps(doc) + "\n")
    else:
        _print_table(out, source.name, source.description, report)
    out.flush()
    if args.plot:
        plot(args.plot, pcm, rate, report)
        if not args.json:
            out.write(f"plot written to {args.plot}\n")
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    return vad_main(args)


run = guarded(NAME, _run)
run.__doc__ = """Run ``sis-stream vad``; returns the exit code."""
