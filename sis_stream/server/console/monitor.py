"""The monitor page's data: a snapshot of the server's metrics and a ring of past snapshots.

:func:`snapshot` reads what ``/metrics`` shows (the public Prometheus rendering of
``app[METRICS]``, so this module depends on nothing inside :class:`~..metrics.Metrics`) plus the
transcriber job counts, and returns plain JSON: per Cloud Eye ``interface`` the successful,
4xx and 5xx calls, the mean delay and the 95th-percentile delay (the upper edge of the
``sis_call_delay_ms`` histogram bucket that holds it), sessions against capacity, engine queue
depth, jobs waiting/running and the billable audio seconds per project.

:class:`MonitorRing` samples :func:`snapshot` every ``interval_s`` (default 10 s) into a
bounded deque holding ``span_s`` (default one hour) of samples (overflow policy
``drop_oldest``), so the page can draw sparklines of the last hour from the server alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Final

from aiohttp import web

from ..rest import JOBS
from ..state import METRICS

__all__ = ["MONITOR", "MonitorRing", "parse_prometheus", "snapshot"]

logger = logging.getLogger(__name__)

_LINE: Final = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)$")
_LABEL: Final = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def _unescape(v: str) -> str:
    return v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")


def parse_prometheus(text: str) -> Iterator[tuple[str, dict[str, str], float]]:
    """Yield ``(name, labels, value)`` for every sample line of Prometheus text format 0.0.4.

    Comment lines and lines that do not parse are skipped.
    """
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if m is None:
            continue
        name, labels_s, value_s = m.groups()
        try:
            value = float(value_s)
        except ValueError:
            continue
        labels = {k: _unescape(v) for k, v in _LABEL.findall(labels_s or "")}
        yield name, labels, value


def _p95(buckets: list[tuple[float, float]], count: float) -> float | None:
    if count <= 0:
        return None
    target = 0.95 * count
    for le, cum in sorted(buckets):
        if cum >= target:
            return le
    return math.inf


def _job_counts(app: web.Application) -> dict[str, int] | None:
    manager = app.get(JOBS)
    store = getattr(manager, "store", None)
    db = getattr(store, "db", None)
    if db is None:
        return None
    try:
        rows = db.query("SELECT state, COUNT(*) AS n FROM jobs WHERE state IN ('WAITING', 'RUNNING') GROUP BY state")
    except Exception:  # noqa: BLE001 - a closed store at shutdown: no job counts
        return None
    counts = {"waiting": 0, "running": 0}
    for r in rows:
        counts[str(r["state"]).lower()] = int(r["n"])
    return counts


def snapshot(app: web.Application, *, now: Callable[[], float] = time.time) -> dict[str, Any]:
    """The monitor data of this moment (JSON-ready; see the module docstring).

    Returns
    -------
    dict
        ``{"t", "interfaces": {name: {"ok", "c4xx", "c5xx", "count", "sum_ms", "avg_ms",
        "p95_ms"}}, "sessions": {"active", "limit", "connections"}, "engine": {"queue_depth",
        "running", "queue_limit", "workers", "rejected"}, "jobs": {"waiting", "running"} or None,
        "usage": [{"project_id", "interface", "calls", "audio_s"}]}``. ``p95_ms`` is None
        without calls and ``"inf"`` beyond the last bucket.
    """
    ifaces: dict[str, dict[str, Any]] = {}
    buckets: dict[str, list[tuple[float, float]]] = {}
    sessions = {"active": 0, "limit": 0, "connections": 0}
    engine = {"queue_depth": 0, "running": 0, "queue_limit": 0, "workers": 0, "rejected": 0}
    usage: dict[tuple[str, str], dict[str, Any]] = {}
    field = {"successful_calls_of_service": "ok", "api_calls_with_4xx_response": "c4xx",
             "api_calls_with_5xx_response": "c5xx", "sis_call_delay_ms_sum": "sum_ms",
             "sis_call_delay_ms_count": "count"}
    gauge = {"sis_engine_queue_depth": "queue_depth", "sis_engine_running": "running",
             "sis_engine_queue_limit": "queue_limit", "sis_engine_workers": "workers",
             "sis_engine_rejected": "rejected"}
    for name, labels, value in parse_prometheus(app[METRICS].render()):
        iface = labels.get("interface")
        if name in field and iface is not None:
            row = ifaces.setdefault(iface, {"ok": 0, "c4xx": 0, "c5xx": 0, "count": 0, "sum_ms": 0.0})
            row[field[name]] = value if field[name] == "sum_ms" else int(value)
        elif name == "sis_call_delay_ms_bucket" and iface is not None:
            le = labels.get("le", "+Inf")
            buckets.setdefault(iface, []).append((math.inf if le == "+Inf" else float(le), value))
        elif name == "sis_sessions_active":
            sessions["active"] += int(value)
        elif name == "sis_sessions_limit":
            sessions["limit"] = int(value)
        elif name == "sis_connections_open":
            sessions["connections"] = int(value)
        elif name in gauge:
            engine[gauge[name]] = int(value)
        elif name in ("sis_usage_calls_total", "sis_usage_audio_seconds_total"):
            key = (labels.get("project_id", ""), iface or "")
            u = usage.setdefault(key, {"project_id": key[0], "interface": key[1], "calls": 0, "audio_s": 0.0})
            if name == "sis_usage_calls_total":
                u["calls"] = int(value)
            else:
                u["audio_s"] = round(value, 3)
    for iface, row in ifaces.items():
        row["avg_ms"] = round(row["sum_ms"] / row["count"], 2) if row["count"] else 0.0
        p95 = _p95(buckets.get(iface, []), row["count"])
        row["p95_ms"] = "inf" if p95 == math.inf else p95
        row["sum_ms"] = round(row["sum_ms"], 3)
    return {"t": round(now(), 3), "interfaces": dict(sorted(ifaces.items())), "sessions": sessions,
            "engine": engine, "jobs": _job_counts(app), "usage": sorted(usage.values(),
                                                                       key=lambda u: (u["project_id"], u["interface"]))}


class MonitorRing:
    """Samples of :func:`snapshot` taken every `interval_s`, the last `span_s` of them kept.

    Parameters
    ----------
    app : aiohttp.web.Application
    interval_s : float
        Time between samples.
    span_s : float
        History kept (the ring holds ``ceil(span_s / interval_s)`` samples; older ones are
        dropped: overflow policy ``drop_oldest``).
    """

    def __init__(self, app: web.Application, *, interval_s: float = 10.0, span_s: float = 3600.0) -> None:
        if not interval_s > 0 or not span_s >= interval_s:
            raise ValueError(f"need interval_s > 0 and span_s >= interval_s, got {interval_s!r}, {span_s!r}")
        self.app = app
        self.interval_s = float(interval_s)
        self.span_s = float(span_s)
        self.samples: deque[dict[str, Any]] = deque(maxlen=math.ceil(span_s / interval_s))
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> dict[str, Any]:
        """Take one sample now, append it to the ring and return it."""
        s = snapshot(self.app)
        self.samples.append(s)
        return s

    async def start(self) -> None:
        """Start the sampling task (one sample at once)."""
        self.sample()
        self._task = asyncio.create_task(self._run(), name="sis-console-monitor")

    async def stop(self) -> None:
        """Stop sampling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                self.sample()
            except Exception:
                logger.exception("console monitor: sampling failed")


#: ``app[MONITOR]``: the ring, set by the console's ``setup_console``.
MONITOR: Final = web.AppKey("sis_console_monitor", MonitorRing)
