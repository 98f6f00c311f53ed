"""Bridge metrics: per listener and per active call, in Prometheus text format (``/metrics``).

Per listener (``source`` label): calls active and total, audio seconds, lost milliseconds,
finals, errors, time to final (histogram, ms from the moment the segment's last audio arrived to
the final), and for AudioSocket the silence clock's lateness (histogram, ms). Per active call
(``call_id``, ``source``, ``channel`` labels, so the label set is bounded by the calls in
progress): audio seconds and lost milliseconds.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = ["FINAL_BUCKETS_MS", "LATENESS_BUCKETS_MS", "BridgeMetrics", "Histogram", "ListenerMetrics"]

#: Time-to-final buckets (ms).
FINAL_BUCKETS_MS: Final = (50, 100, 250, 500, 1000, 2000, 5000, 10000, 30000)
#: Silence-clock lateness buckets (ms).
LATENESS_BUCKETS_MS: Final = (0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 100, 250, 1000)


class Histogram:
    """Cumulative histogram with fixed upper bounds (plus ``+Inf``), sum and count."""

    __slots__ = ("bounds", "count", "counts", "max", "sum")

    def __init__(self, bounds: Iterable[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0
        self.max = 0.0

    def observe(self, v: float) -> None:
        self.counts[bisect_left(self.bounds, v)] += 1
        self.sum += v
        self.count += 1
        self.max = max(self.max, v)

    def render(self, name: str, labels: str) -> list[str]:
        sep = "," if labels else ""
        out = []
        acc = 0
        for b, c in zip(self.bounds, self.counts):
            acc += c
            out.append(f'{name}_bucket{{{labels}{sep}le="{b:g}"}} {acc}')
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        lab = "{" + labels + "}" if labels else ""
        out.append(f"{name}_sum{lab} {self.sum:.3f}")
        out.append(f"{name}_count{lab} {self.count}")
        return out


@dataclass
class ListenerMetrics:
    """Counters of one listener."""

    source: str
    calls_active: int = 0
    calls_total: int = 0
    sessions_active: int = 0
    audio_ms: float = 0.0
    lost_ms: float = 0.0
    finals: int = 0
    partials: int = 0
    errors: int = 0
    silence_frames: int = 0
    silence_skipped: int = 0
    time_to_final: Histogram = field(default_factory=lambda: Histogram(FINAL_BUCKETS_MS))
    silence_lateness: Histogram = field(default_factory=lambda: Histogram(LATENESS_BUCKETS_MS))


def _esc(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class BridgeMetrics:
    """All listeners' metrics plus the per-call gauges of the calls in progress."""

    def __init__(self) -> None:
        self.listeners: dict[str, ListenerMetrics] = {}
        #: (call_id, source, channel) -> object with ``audio_ms`` and ``lost_ms`` attributes.
        self.active: dict[tuple[str, str, str], Any] = {}

    def listener(self, source: str) -> ListenerMetrics:
        m = self.listeners.get(source)
        if m is None:
            m = self.listeners[source] = ListenerMetrics(source)
        return m

    def render(self) -> str:
        """Prometheus text exposition (version 0.0.4)."""
        lines: list[str] = []

        def family(name: str, kind: str, help_: str, attr: str, scale: float = 1.0) -> None:
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} {kind}")
            for m in self.listeners.values():
                lines.append(f'{name}{{source="{m.source}"}} {getattr(m, attr) * scale:g}')

        family("sis_bridge_calls_active", "gauge", "Calls in progress.", "calls_active")
        family("sis_bridge_calls_total", "counter", "Calls accepted.", "calls_total")
        family("sis_bridge_sessions_active", "gauge", "SIS sessions in progress (one per channel).",
               "sessions_active")
        family("sis_bridge_audio_seconds_total", "counter", "Telephony audio received.", "audio_ms", 0.001)
        family("sis_bridge_lost_ms_total", "counter",
               "Audio that never reached SIS (bounded queue drops, replay gaps, failed sessions).", "lost_ms")
        family("sis_bridge_finals_total", "counter", "Final results.", "finals")
        family("sis_bridge_partials_total", "counter", "Interim results.", "partials")
        family("sis_bridge_errors_total", "counter", "Error events.", "errors")
        family("sis_bridge_silence_frames_total", "counter", "AudioSocket silence frames sent.", "silence_frames")
        family("sis_bridge_silence_skipped_total", "counter",
               "AudioSocket silence frames skipped because the peer's socket was not writable.",
               "silence_skipped")
        for name, attr, help_ in (
                ("sis_bridge_time_to_final_ms", "time_to_final",
                 "From the arrival of a segment's last audio to its final result (ms)."),
                ("sis_bridge_silence_lateness_ms", "silence_lateness",
                 "Lateness of the AudioSocket 20 ms silence clock (ms).")):
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} histogram")
            for m in self.listeners.values():
                lines.extend(getattr(m, attr).render(name, f'source="{m.source}"'))
        for name, attr, scale, help_ in (
                ("sis_bridge_call_audio_seconds", "audio_ms", 0.001, "Audio received by a call in progress."),
                ("sis_bridge_call_lost_ms", "lost_ms", 1.0, "Audio lost by a call in progress (ms).")):
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} gauge")
            for (cid, src, ch), leg in self.active.items():
                lines.append(f'{name}{{call_id="{_esc(cid)}",source="{src}",channel="{_esc(ch)}"}} '
                             f"{getattr(leg, attr) * scale:g}")
        return "\n".join(lines) + "\n"
