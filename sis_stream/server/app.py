"""The aiohttp application of the SIS-compatible local server: ``create_app(settings)``.

Shared state, for every route module (REST engineers: read these, do not rebuild them)
-------------------------------------------------------------------------------------
All live in the application under typed :class:`aiohttp.web.AppKey` keys defined here:

==================  =====================================  ==========================================
key                 type                                   what
==================  =====================================  ==========================================
``SETTINGS``        :class:`.settings.ServerSettings`      the configuration (``clock``, ``data_dir``...)
``METRICS``         :class:`.metrics.Metrics`              ``app[METRICS].observe(...)``; ``/metrics``
``ENGINES``         ``EngineRegistry``                     property -> shared engine (``engine_for``)
``POOL``            ``EngineExecutor``                     bounded thread pool for engine work
``CREDENTIALS``     ``CredentialStore``                    AK/SK pairs and IAM users
``AUTHENTICATOR``   ``Authenticator`` or None              None in ``no_auth`` mode
``TOKENS``          ``TokenService``                       ``POST /v3/auth/tokens`` logic
``SESSIONS``        :class:`SessionLimiter`                concurrency limit + live websocket list
``HOT_WORDS``       callable or absent                     ``(project_id, vocabulary_id) -> list[str]``
                                                           or None (unknown id); set by the vocabulary
                                                           module so RASR START can use ``vocabulary_id``
==================  =====================================  ==========================================

Request keys set by the middleware (:mod:`.auth`): ``request["principal"]`` (a
:class:`~sis_stream.protocol.Principal`), ``request["interface"]``, ``request["request_id"]``;
a handler may set ``request["audio_ms"]`` for usage accounting. Decorate handlers with
:func:`.auth.route` to name their metrics interface (``@route(interface="asr.short-audio")``)
or make them public. Raise :class:`~sis_stream.errors.RequestRejected` (e.g. from
``sis_stream.protocol.reject("SIS.0032", field="data")``) to answer a SIS error body.

Engine work never runs on the event loop: ``await app[POOL].run(fn, ...)`` (rejects at once with
``EngineOverloadedError`` when the bounded queue is full: answer SIS.0312/503 then).

Routes of this module: ``GET /`` (root JSON: version, modes, what each property maps to),
``GET /metrics`` (Prometheus text), ``GET /healthz``. :mod:`.iam` adds ``POST /v3/auth/tokens``,
:mod:`.rasr` the websocket endpoints, and ``sis_stream.server.rest.setup_rest_routes`` (when
present) the REST API.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from ..engines.base import available_cores
from ..engines.pool import EngineExecutor
from ..engines.registry import EngineRegistry
from ..protocol import (
    Authenticator,
    CredentialStore,
    Mode,
    SignatureVerifier,
    TokenIssuer,
    TokenService,
)
from .auth import METRICS_DONE, _put, route, sis_middleware
from .metrics import Metrics
from .settings import ServerSettings

if TYPE_CHECKING:
    from .rasr import RasrConnection

__all__ = [
    "AUTHENTICATOR",
    "CREDENTIALS",
    "ENGINES",
    "HOT_WORDS",
    "METRICS",
    "POOL",
    "SERVER_NAME",
    "SESSIONS",
    "SETTINGS",
    "TOKENS",
    "SessionLimiter",
    "create_app",
]

logger = logging.getLogger(__name__)

SERVER_NAME: Final = "sis-stream"

SETTINGS: Final = web.AppKey("sis_settings", ServerSettings)
METRICS: Final = web.AppKey("sis_metrics", Metrics)
ENGINES: Final = web.AppKey("sis_engines", EngineRegistry)
POOL: Final = web.AppKey("sis_pool", EngineExecutor)
CREDENTIALS: Final = web.AppKey("sis_credentials", CredentialStore)
AUTHENTICATOR: Final = web.AppKey("sis_authenticator", object)  # Authenticator | None
TOKENS: Final = web.AppKey("sis_tokens", TokenService)
SESSIONS: Final = web.AppKey("sis_sessions", object)  # SessionLimiter
#: Optional: ``(project_id, vocabulary_id) -> list of hot words, or None for an unknown id``.
#: Without it a START naming a vocabulary_id is answered SIS.0201 (not found).
HOT_WORDS: Final = web.AppKey("sis_hot_words", object)
_OWNS_REGISTRY: Final = web.AppKey("sis_owns_registry", bool)


class SessionLimiter:
    """The concurrency limit (SIS.0312) and the set of live websocket connections.

    Parameters
    ----------
    limit : int
        Recognition sessions (START accepted .. END sent) allowed at once.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self.peak = 0
        self.rejected = 0
        self.connections: weakref.WeakSet[RasrConnection] = weakref.WeakSet()
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    def try_acquire(self) -> bool:
        """Take a session slot; False when the limit is reached or the server is draining."""
        if self.draining or self.active >= self.limit:
            self.rejected += 1
            return False
        self.active += 1
        self.peak = max(self.peak, self.active)
        return True

    def release(self) -> None:
        """Give a slot back."""
        self.active = max(0, self.active - 1)

    def add(self, conn: RasrConnection) -> None:
        """Track a live websocket connection."""
        self.connections.add(conn)
        self._idle.clear()

    def discard(self, conn: RasrConnection) -> None:
        """Forget a connection that closed."""
        self.connections.discard(conn)
        if not self.connections:
            self._idle.set()

    async def drain(self, timeout_s: float) -> int:
        """Graceful shutdown: refuse new sessions, end every open one (END to the client), close.

        Returns
        -------
        int
            Connections still open when `timeout_s` ran out (closed forcibly after that).
        """
        self.draining = True
        conns = list(self.connections)
        if conns:
            logger.info("draining %d websocket connection(s)", len(conns))
        await asyncio.gather(*(c.shutdown() for c in conns), return_exceptions=True)
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except asyncio.TimeoutError:
            pass
        left = list(self.connections)
        for c in left:
            await c.force_close()
        return len(left)


def _engine_gauges(app: web.Application):
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
    return gauges


@route(interface="root", public=True)
async def root(request: web.Request) -> web.Response:
    """Root JSON: server name, version, modes, and what each property maps to."""
    from .. import __version__ as version

    app = request.app
    registry = app[ENGINES]
    loop = asyncio.get_running_loop()
    # describe() may read model files to tell multilingual from English-only: off the loop.
    properties = await loop.run_in_executor(None, registry.describe)
    settings = app[SETTINGS]
    body: dict[str, Any] = {
        "server": SERVER_NAME,
        "version": version,
        "auth": "none" if settings.no_auth else "aksk+token",
        "websocket": {m.value: m.path("{project_id}") for m in Mode},
        "iam": "/v3/auth/tokens",
        "metrics": "/metrics",
        "properties": properties,
        "engines": {name: eng.description for name, eng in registry.loaded().items()},
        "limits": {"max_sessions": settings.max_sessions, "idle_timeout_s": settings.idle_timeout_s},
    }
    return web.json_response(body)


@route(interface="metrics", public=True)
async def metrics_handler(request: web.Request) -> web.Response:
    """Prometheus text exposition."""
    _put(request, METRICS_DONE, True)
    text = request.app[METRICS].render()
    return web.Response(text=text, content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


@route(interface="healthz", public=True)
async def healthz(request: web.Request) -> web.Response:
    """Liveness: 200 unless draining (503)."""
    _put(request, METRICS_DONE, True)
    lim = request.app[SESSIONS]
    status = 503 if lim.draining else 200
    return web.json_response({"status": "draining" if lim.draining else "ok",
                              "sessions": lim.active}, status=status)


def create_app(settings: ServerSettings | None = None) -> web.Application:
    """Build the server application.

    Parameters
    ----------
    settings : ServerSettings, optional
        Default ``ServerSettings()``.

    Returns
    -------
    aiohttp.web.Application
        With the shared state of the module docstring and every route installed. The engine
        executor is shut down (and an owned engine registry closed) on cleanup.

    Raises
    ------
    EngineConfigError
        Bad engine overrides/options.
    ValueError, FileNotFoundError
        Bad or missing credentials file.
    """
    settings = ServerSettings() if settings is None else settings
    app = web.Application(middlewares=[sis_middleware], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[METRICS] = Metrics(gauges=_engine_gauges(app))
    if settings.registry is not None:
        app[ENGINES] = settings.registry
        app[_OWNS_REGISTRY] = False
    else:
        app[ENGINES] = EngineRegistry(settings.engine_overrides or None, engine_options=settings.engine_options)
        app[_OWNS_REGISTRY] = True
    creds = settings.load_credentials()
    app[CREDENTIALS] = creds
    issuer = TokenIssuer(settings.secret())
    app[TOKENS] = TokenService(creds, issuer)
    if settings.no_auth:
        app[AUTHENTICATOR] = None
    else:
        verifier = SignatureVerifier(creds, max_skew_s=settings.max_skew_s)
        app[AUTHENTICATOR] = Authenticator(verifier, issuer)
    workers = settings.engine_workers or available_cores()
    # Default bound: room for a few queued tasks per admitted session (each stream batches its
    # audio into ~5 accept calls per second of audio), and never below the pool's own default.
    queued = settings.engine_queue or max(64 * workers, 4 * settings.max_sessions)
    app[POOL] = EngineExecutor(workers, max_queued=queued)
    app[SESSIONS] = SessionLimiter(settings.max_sessions)

    app.router.add_get("/", root)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", healthz)
    from . import iam, rasr

    iam.setup_routes(app)
    rasr.setup_routes(app)
    if settings.rest_routes:
        try:
            from .rest import setup_rest_routes
        except ImportError:
            logger.debug("sis_stream.server.rest not available: REST routes not installed")
        else:
            setup_rest_routes(app)

    app.on_shutdown.append(_on_shutdown)
    app.on_cleanup.append(_on_cleanup)
    return app


async def _on_shutdown(app: web.Application) -> None:
    left = await app[SESSIONS].drain(app[SETTINGS].shutdown_timeout_s)
    if left:
        logger.warning("%d websocket connection(s) closed forcibly at shutdown", left)


async def _on_cleanup(app: web.Application) -> None:
    app[POOL].shutdown(wait=False)
    if app[_OWNS_REGISTRY]:
        app[ENGINES].close()
