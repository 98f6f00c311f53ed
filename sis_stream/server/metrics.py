"""Server metrics: the SIS Cloud Eye metrics in Prometheus text format, plus usage accounting.

Cloud Eye (sis-protocol.md §12) publishes, per ``interface`` dimension:
``successful_calls_of_service``, ``api_calls_with_4xx_response``, ``api_calls_with_5xx_response``
(counts) and ``average_delay`` (ms). :class:`Metrics` keeps the same names (cumulative since the
server started, as Prometheus counters; ``average_delay`` is the mean over all observed calls),
and adds sessions, audio seconds, engine queue depth and per-project usage.

Usage accounting follows the SIS billing rules (seed "计费说明"): one-sentence recognition and TTS
are billed per call, real-time and file recognition per audio duration; **failed calls are not
counted**; hot-word calls are not billed. So every successful call increments
``sis_usage_calls_total{project_id,interface}`` and adds its audio to
``sis_usage_audio_seconds_total{project_id,interface}``; failures only reach the 4xx/5xx counters.

Other modules report with one call::

    app[METRICS].observe("asr.short-audio", 200, latency_ms=12.5, project_id=pid, audio_ms=3200)

Label values are bounded: at most ``max_label_values`` distinct interfaces and projects are
tracked; further ones are folded into ``"_other"`` (overflow policy "fold").

Other components add their own metric families to the same ``/metrics`` page with
:meth:`Metrics.add_collector` (the engine's decode histograms, :mod:`.engine_metrics`);
:class:`Histogram` is the fixed-bucket Prometheus histogram they use.
"""

from __future__ import annotations

import bisect
import itertools
import math
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

__all__ = ["CLOUD_EYE_METRICS", "OTHER_LABEL", "Histogram", "Metrics", "Usage", "bounded_label", "format_value",
           "render_labels"]

#: The four Cloud Eye metric names (§12).
CLOUD_EYE_METRICS: Final = (
    "successful_calls_of_service",
    "api_calls_with_4xx_response",
    "api_calls_with_5xx_response",
    "average_delay",
)
#: Label value used once ``max_label_values`` distinct values were seen.
OTHER_LABEL: Final = "_other"
#: Latency histogram buckets (ms).
LATENCY_BUCKETS_MS: Final = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_labels(labels: dict[str, str]) -> str:
    """``{a="x",b="y"}`` in Prometheus text syntax (values escaped); ``""`` for no labels."""
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items()) + "}"


def _num(v: float) -> str:
    if isinstance(v, int):
        return str(v)
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


def bounded_label(value: str, seen: set[str], limit: int) -> str:
    """`value` itself while it is one of the first `limit` distinct values (recorded in `seen`),
    else :data:`OTHER_LABEL`: bounds a label's cardinality."""
    if value in seen:
        return value
    if len(seen) < limit:
        seen.add(value)
        return value
    return OTHER_LABEL


def format_value(v: float) -> str:
    """A sample value in Prometheus text syntax (ints as ints, ``+Inf``/``-Inf``, floats by repr)."""
    return _num(v)


class Histogram:
    """A Prometheus histogram with fixed upper bucket bounds (``le``).

    Not locked by itself: the owner serialises :meth:`observe` and :meth:`lines` (one lock for
    all of its histograms).

    Parameters
    ----------
    buckets : sequence of float
        Finite upper bounds, strictly increasing; ``+Inf`` is implicit. An int bound keeps its
        int form in the ``le`` label (``le="5"``); anything else becomes a float (``le="5.0"``).

    Raises
    ------
    ValueError
        Empty, unsorted, repeated or non-finite bounds.
    """

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, buckets: Sequence[float]) -> None:
        bounds = tuple(b if type(b) is int else float(b) for b in buckets)
        if not bounds or any(not math.isfinite(b) for b in bounds) \
                or any(b >= c for b, c in itertools.pairwise(bounds)):
            raise ValueError(f"histogram buckets must be finite and strictly increasing, got {tuple(buckets)!r}")
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # per bucket (not cumulative); the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Count one observation (a value equal to a bound falls in that bound's bucket).

        Raises
        ------
        ValueError
            NaN (it would poison ``_sum``).
        """
        value = float(value)
        if math.isnan(value):
            raise ValueError("histogram observation must be a number, got NaN")
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """``[(le, observations <= le), ...]`` ending with ``(inf, count)``."""
        out: list[tuple[float, int]] = []
        acc = 0
        for b, n in zip((*self.bounds, math.inf), self.counts):
            acc += n
            out.append((b, acc))
        return out

    def lines(self, name: str, labels: dict[str, str]) -> list[str]:
        """The ``NAME_bucket``/``NAME_sum``/``NAME_count`` sample lines (no HELP/TYPE)."""
        out = [f"{name}_bucket{render_labels({**labels, 'le': _num(le)})} {n}" for le, n in self.cumulative()]
        out.append(f"{name}_sum{render_labels(labels)} {_num(self.sum)}")
        out.append(f"{name}_count{render_labels(labels)} {self.count}")
        return out


@dataclass
class _CallStats:
    ok: int = 0
    c4xx: int = 0
    c5xx: int = 0
    delay_ms: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_MS))


@dataclass(frozen=True)
class Usage:
    """Billable usage of one project on one interface.

    Attributes
    ----------
    project_id, interface : str
    calls : int
        Successful calls.
    audio_ms : float
        Audio duration of the successful calls, ms.
    """

    project_id: str
    interface: str
    calls: int
    audio_ms: float


class Metrics:
    """Thread-safe counters for ``/metrics`` (Prometheus text format 0.0.4).

    Parameters
    ----------
    max_label_values : int
        Bound on distinct ``interface`` and ``project_id`` label values each (then ``"_other"``).
    gauges : callable, optional
        Called at every render; returns extra ``(name, help, labels, value)`` gauge samples
        (the app uses it for the engine queue depth).
    """

    def __init__(self, *, max_label_values: int = 256,
                 gauges: Callable[[], Iterable[tuple[str, str, dict[str, str], float]]] | None = None) -> None:
        if isinstance(max_label_values, bool) or not isinstance(max_label_values, int) or max_label_values < 1:
            raise ValueError(f"max_label_values must be an int >= 1, got {max_label_values!r}")
        self.max_label_values = max_label_values
        self._lock = threading.Lock()
        self._calls: dict[str, _CallStats] = {}
        self._usage: dict[tuple[str, str], list[float]] = {}
        self._projects: set[str] = set()
        self._sessions_active: dict[str, int] = {}
        self._sessions_total: dict[tuple[str, str], int] = {}
        self._audio_s: dict[str, float] = {}
        self._rejections: dict[str, int] = {}
        self._gauges = gauges
        self._collectors: list[Callable[[], Iterable[str]]] = []

    def add_collector(self, collector: Callable[[], Iterable[str]]) -> None:
        """Add metric families to :meth:`render`.

        Parameters
        ----------
        collector : callable
            Called at every render (outside this object's lock); returns complete lines of
            Prometheus text (``# HELP``/``# TYPE`` and samples) for names no other part renders.
        """
        if not callable(collector):
            raise TypeError(f"collector must be callable, got {type(collector).__name__}")
        self._collectors.append(collector)

    # -- bounded labels -------------------------------------------------------------------------
    def _iface(self, interface: str) -> str:
        if interface in self._calls or len(self._calls) < self.max_label_values:
            return interface
        return OTHER_LABEL

    def _project(self, project_id: str) -> str:
        return bounded_label(project_id, self._projects, self.max_label_values)

    # -- recording API --------------------------------------------------------------------------
    def observe(self, interface: str, http_status: int, latency_ms: float, project_id: str | None = None,
                audio_ms: float = 0.0) -> None:
        """Record one finished call.

        Parameters
        ----------
        interface : str
            The Cloud Eye ``interface`` dimension (e.g. ``"rasr.continue-stream"``, ``"asr.short-audio"``).
        http_status : int
            The call's status: < 400 success, 4xx client failure, >= 500 server failure. Websocket
            sessions report 200 for END(NORMAL/CANCEL), 400/429 for client errors, 500 for
            engine failures.
        latency_ms : float
            The call's delay (REST: request to response; websocket: client END to server END).
        project_id : str, optional
            For usage accounting (successful calls only; ``None`` skips accounting).
        audio_ms : float
            Audio processed by the call (billable for RASR, transcriber, flash).

        Raises
        ------
        TypeError
            Non-int status.
        ValueError
            Negative latency or audio.
        """
        if isinstance(http_status, bool) or not isinstance(http_status, int):
            raise TypeError(f"http_status must be int, got {type(http_status).__name__}")
        if not latency_ms >= 0 or not audio_ms >= 0:
            raise ValueError(f"latency_ms and audio_ms must be >= 0, got {latency_ms!r}, {audio_ms!r}")
        with self._lock:
            iface = self._iface(interface)
            st = self._calls.setdefault(iface, _CallStats())
            if http_status < 400:
                st.ok += 1
            elif http_status < 500:
                st.c4xx += 1
            else:
                st.c5xx += 1
            st.delay_ms.observe(latency_ms)
            if http_status < 400 and project_id is not None:
                u = self._usage.setdefault((self._project(project_id), iface), [0, 0.0])
                u[0] += 1
                u[1] += float(audio_ms)
            if audio_ms:
                self._audio_s[iface] = self._audio_s.get(iface, 0.0) + audio_ms / 1000.0

    def session_opened(self, interface: str) -> None:
        """A websocket recognition session started (START accepted)."""
        with self._lock:
            iface = self._iface(interface)
            self._sessions_active[iface] = self._sessions_active.get(iface, 0) + 1

    def session_closed(self, interface: str, reason: str) -> None:
        """A session ended; ``reason`` e.g. ``NORMAL``, ``CANCEL``, ``ERROR``, ``LOST``, ``FATAL``."""
        with self._lock:
            iface = self._iface(interface)
            self._sessions_active[iface] = max(0, self._sessions_active.get(iface, 0) - 1)
            key = (iface, reason)
            self._sessions_total[key] = self._sessions_total.get(key, 0) + 1

    def rejected(self, reason: str) -> None:
        """Count a rejection (``auth``, ``concurrency``, ``overload``...)."""
        with self._lock:
            self._rejections[reason] = self._rejections.get(reason, 0) + 1

    # -- reading --------------------------------------------------------------------------------
    def usage(self, project_id: str | None = None) -> list[Usage]:
        """Usage rows, optionally of one project, sorted by (project, interface)."""
        with self._lock:
            rows = [Usage(p, i, int(v[0]), float(v[1])) for (p, i), v in self._usage.items()
                    if project_id is None or p == project_id]
        return sorted(rows, key=lambda u: (u.project_id, u.interface))

    def calls(self, interface: str) -> tuple[int, int, int]:
        """``(successful, 4xx, 5xx)`` counts of an interface."""
        with self._lock:
            st = self._calls.get(interface, _CallStats())
            return st.ok, st.c4xx, st.c5xx

    def sessions_active(self, interface: str | None = None) -> int:
        """Sessions open now (of one interface, or all)."""
        with self._lock:
            if interface is None:
                return sum(self._sessions_active.values())
            return self._sessions_active.get(interface, 0)

    def render(self) -> str:
        """The Prometheus text exposition of every metric."""
        out: list[str] = []

        def family(name: str, kind: str, help_: str, samples: Iterable[tuple[dict[str, str], float]]) -> None:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")
            for labels, v in samples:
                out.append(f"{name}{render_labels(labels)} {_num(v)}")

        with self._lock:
            calls = sorted(self._calls.items())
            family("successful_calls_of_service", "counter", "Successful calls (Cloud Eye SYS.SIS).",
                   (({"interface": i}, s.ok) for i, s in calls))
            family("api_calls_with_4xx_response", "counter", "Calls answered with a 4xx error (Cloud Eye SYS.SIS).",
                   (({"interface": i}, s.c4xx) for i, s in calls))
            family("api_calls_with_5xx_response", "counter", "Calls answered with a 5xx error (Cloud Eye SYS.SIS).",
                   (({"interface": i}, s.c5xx) for i, s in calls))
            family("average_delay", "gauge", "Average call delay in ms since start (Cloud Eye SYS.SIS).",
                   (({"interface": i}, (s.delay_ms.sum / s.delay_ms.count) if s.delay_ms.count else 0.0)
                    for i, s in calls))
            out.append("# HELP sis_call_delay_ms Call delay histogram in ms.")
            out.append("# TYPE sis_call_delay_ms histogram")
            for i, s in calls:
                out.extend(s.delay_ms.lines("sis_call_delay_ms", {"interface": i}))
            family("sis_sessions_active", "gauge", "Websocket recognition sessions open now.",
                   (({"interface": i}, n) for i, n in sorted(self._sessions_active.items())))
            family("sis_sessions_total", "counter", "Websocket recognition sessions ended, by END reason.",
                   (({"interface": i, "reason": r}, n) for (i, r), n in sorted(self._sessions_total.items())))
            family("sis_audio_seconds_total", "counter", "Audio processed, seconds.",
                   (({"interface": i}, v) for i, v in sorted(self._audio_s.items())))
            family("sis_rejections_total", "counter", "Requests rejected before processing, by reason.",
                   (({"reason": r}, n) for r, n in sorted(self._rejections.items())))
            usage = sorted(self._usage.items())
            family("sis_usage_calls_total", "counter", "Billable successful calls per project.",
                   (({"project_id": p, "interface": i}, v[0]) for (p, i), v in usage))
            family("sis_usage_audio_seconds_total", "counter", "Billable audio duration per project, seconds.",
                   (({"project_id": p, "interface": i}, v[1] / 1000.0) for (p, i), v in usage))
        if self._gauges is not None:
            by_name: dict[str, tuple[str, list[tuple[dict[str, str], float]]]] = {}
            for name, help_, labels, value in self._gauges():
                by_name.setdefault(name, (help_, []))[1].append((labels, value))
            for name, (help_, samples) in by_name.items():
                family(name, "gauge", help_, samples)
        for collector in self._collectors:
            out.extend(collector())
        return "\n".join(out) + "\n"
