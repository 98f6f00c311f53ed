"""The server's own routes: ``GET /`` (root JSON), ``GET /metrics`` (Prometheus text),
``GET /healthz``; and the engine/session gauges ``/metrics`` shows.

Root JSON: server name, version, auth mode, the websocket paths, what each property maps to (engine,
the model behind it, language, status), a note that dialect accuracy is unmeasured, the loaded
engines and the limits. ``/healthz`` answers 200 ``{"status": "ok", "sessions": N, "capacity": M,
"admission": {...}}`` (the admission controller's figures, :mod:`.admission`),
or 503 ``draining`` from the moment a graceful shutdown begins (SIGTERM; see ``drain_grace_s``),
so a load balancer checking it stops sending new sessions while open ones finish. All three are
public and not counted in the metrics.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any, Final

from aiohttp import web

from .. import __version__
from ..protocol import Mode
from ..protocol.properties import Interface, properties_for
from .auth import mark_metrics_done, route
from .state import ADMISSION, ENGINES, METRICS, POOL, SESSIONS, SETTINGS

__all__ = ["DRAINING", "SERVER_NAME", "admission_gauges", "engine_gauges", "healthz", "metrics_handler", "root", "setup_routes"]

logger = logging.getLogger(__name__)

SERVER_NAME: Final = "sis-stream"
#: Set (an :class:`asyncio.Event`) when the process begins draining: ``/healthz`` answers 503.
DRAINING: Final = web.AppKey("sis_draining", asyncio.Event)
#: What ``GET /`` says about the dialect properties.
DIALECT_ACCURACY: Final = ("unmeasured: sichuan_*, cantonese_* and shanghai_* properties are served by the "
                           "Mandarin model (Whisper base, language 'zh'); Whisper base has no Cantonese token")


def engine_gauges(app: web.Application) -> Callable[[], Iterable[tuple[str, str, dict[str, str], float]]]:
    """The gauges of the engine executor and the session limiter, for :class:`.metrics.Metrics`.

    Parameters
    ----------
    app : aiohttp.web.Application
        Read at each scrape (``app[POOL]``, ``app[SESSIONS]``; absent ones are skipped).

    Returns
    -------
    callable
        Yields ``(name, help, labels, value)`` per gauge.
    """
    def gauges():
        pool = app.get(POOL)
        if pool is not None:
            st = pool.stats()
            yield ("sis_engine_queue_depth", "Engine tasks queued, not started.", {}, st.queued)
            yield ("sis_engine_running", "Engine tasks running now.", {}, st.running)
            yield ("sis_engine_queue_limit", "Bound on queued engine tasks.", {}, st.max_queued)
            yield ("sis_engine_workers", "Engine worker threads.", {}, st.workers)
            yield ("sis_engine_rejected", "Engine tasks rejected or skipped (queue full).", {}, st.rejected)
        lim = app.get(SESSIONS)
        if lim is not None:
            yield ("sis_sessions_limit", "Concurrency limit (SIS.0312 beyond).", {}, lim.limit)
            yield ("sis_connections_open", "Websocket connections open.", {}, len(lim.connections))
            yield ("sis_sessions_rejected_concurrency", "STARTs refused by the concurrency limit.", {},
                   lim.rejected)
        adm = app.get(ADMISSION)
        if adm is not None:
            yield from admission_gauges(adm.figures())
    return gauges


def admission_gauges(f: Any) -> Iterable[tuple[str, str, dict[str, str], float]]:
    """The ``sis_admission_*`` gauges of an :class:`~.admission.AdmissionFigures` (figures not
    measured yet are left out)."""
    yield ("sis_admission_decode_workers", "Decode workers: the decode budget in decode-seconds per second.", {},
           f.workers)
    yield ("sis_admission_ttf_bound_seconds", "Time-to-final bound new sessions are admitted against.", {},
           f.ttf_bound_s)
    for name, help_, value in (
            ("sis_admission_decode_utilisation", "Decode seconds / (workers x wall time) over the window.",
             f.utilisation),
            ("sis_admission_session_cost", "Decode seconds per session-second (EWMA).", f.session_cost),
            ("sis_admission_capacity_sessions", "Sessions the decode budget allows at the headroom.", f.capacity),
            ("sis_admission_ttf_p95_seconds", "p95 time-to-final over the window.", f.ttf_p95_s)):
        if value is not None:
            yield name, help_, {}, value
    yield ("sis_admission_ttf_samples", "Finals in the admission window.", {}, f.ttf_samples)
    yield ("sis_admission_refused", "STARTs refused by admission control, by rule.", {"rule": "budget"},
           f.refused_budget)
    yield ("sis_admission_refused", "STARTs refused by admission control, by rule.", {"rule": "ttf"},
           f.refused_ttf)


@route(interface="root", public=True)
async def root(request: web.Request) -> web.Response:
    """Root JSON: server name, version, modes, and what each property maps to."""
    app = request.app
    registry = app[ENGINES]
    loop = asyncio.get_running_loop()
    # describe() may read model files to tell multilingual from English-only: off the loop.
    properties = await loop.run_in_executor(None, registry.describe)
    for row in properties:
        # Which SIS interfaces accept the property (the cloud's own lists): english_8k_* is for
        # short audio and the transcriber only; real-time English is 16 kHz, so a client sends
        # 8 kHz phone audio as pcm16k16bit (sis_stream's client transcodes it).
        row["interfaces"] = [i.value for i in Interface if i is not Interface.TTS
                             and row["property"] in properties_for(i)]
    settings = app[SETTINGS]
    body: dict[str, Any] = {
        "server": SERVER_NAME,
        "version": __version__,
        "auth": "none" if settings.no_auth else "aksk+token",
        "websocket": {m.value: m.path("{project_id}") for m in Mode},
        "iam": "/v3/auth/tokens",
        "metrics": "/metrics",
        "properties": properties,
        "dialect_accuracy": DIALECT_ACCURACY,
        "interfaces_note": ("a property is accepted only by the interfaces listed in its row; real-time "
                            "English is 16 kHz only (send 8 kHz phone audio as pcm16k16bit)"),
        "engines": {name: eng.description for name, eng in registry.loaded().items()},
        "limits": {"max_sessions": settings.max_sessions, "idle_timeout_s": settings.idle_timeout_s},
    }
    return web.json_response(body)


@route(interface="metrics", public=True)
async def metrics_handler(request: web.Request) -> web.Response:
    """Prometheus text exposition."""
    mark_metrics_done(request)
    text = request.app[METRICS].render()
    return web.Response(text=text, content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


@route(interface="healthz", public=True)
async def healthz(request: web.Request) -> web.Response:
    """Liveness and capacity: 200 unless draining (503)."""
    mark_metrics_done(request)
    lim = request.app[SESSIONS]
    ev = request.app.get(DRAINING)
    draining = lim.draining or (ev is not None and ev.is_set())
    body: dict[str, Any] = {"status": "draining" if draining else "ok", "sessions": lim.active,
                            "connections": len(lim.connections), "capacity": lim.limit}
    adm = request.app.get(ADMISSION)
    if adm is not None:
        body["admission"] = adm.figures().as_dict()
    return web.json_response(body, status=503 if draining else 200)


def setup_routes(app: web.Application) -> None:
    """Install ``GET /``, ``GET /metrics`` and ``GET /healthz``."""
    app[DRAINING] = asyncio.Event()
    app.router.add_get("/", root)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", healthz)
