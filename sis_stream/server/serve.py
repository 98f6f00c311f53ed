"""Run the server: ``run(settings)`` (blocking) and ``serve(settings)`` (async).

The first line on stdout is ``listening on http://HOST:PORT`` (``https`` with TLS), with the port
actually bound (``port=0`` picks a free one), so scripts can find the server. SIGINT/SIGTERM
drain gracefully: ``/healthz`` answers 503 at once; with ``drain_grace_s`` the server keeps
serving for up to that long while open websockets finish on their own (a load balancer checking
``/healthz`` sends new sessions elsewhere meanwhile); with ``redis_url`` the process publishes its
session capacity (:mod:`.capacity`) and its usage counts (:mod:`.usage_sync`) to Redis; then new STARTs are refused (SIS.0312), every open session gets its finals and END,
connections close with 1001, then the process exits 0.

Before listening, :func:`validate_engines` loads every engine the configuration names (model
files present and loadable, options accepted), so a wrong ``--engine-option
whisper.model_dir=DIR`` is one :class:`~sis_stream.errors.EngineConfigError` at start-up instead
of ``SIS.0100`` on every request. Connections get ``settings.header_timeout_s`` to send a request
head (slow-header clients are dropped); the unread body of a rejected request is discarded for
at most :data:`LINGER_S` seconds, then the connection is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
import sys
from typing import TextIO

from aiohttp import web

from ..errors import EngineConfigError
from .app import create_app
from .capacity import CapacityPublisher
from .redis_jobs import connect_redis
from .settings import ServerSettings
from .state import ENGINES, METRICS, POOL, SESSIONS, SETTINGS
from .status import DRAINING
from .usage_sync import UsagePublisher

__all__ = ["run", "runner_options", "serve", "ssl_context", "validate_engines"]

logger = logging.getLogger(__name__)

#: Seconds an unread request body is drained (discarded) after its answer before closing.
LINGER_S = 5.0

NO_AUTH_WARNING = ("WARNING: authentication is disabled (--no-auth): every request is accepted "
                   "without credentials. Use this for local development only.")


def ssl_context(settings: ServerSettings) -> ssl.SSLContext | None:
    """A server TLS context from ``tls_cert``/``tls_key``, or None without TLS."""
    if settings.tls_cert is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(settings.tls_cert), str(settings.tls_key))
    return ctx


def validate_engines(app: web.Application) -> None:
    """Load every engine the configuration names (blocking: call it off the loop).

    The engines named by ``--engine PROPERTY=ENGINE`` and ``--engine-option ENGINE.OPTION=...``
    are loaded now (model files present and loadable, options accepted), so a mistake there
    fails the start-up instead of every request. Engines only the default property map uses
    keep loading on first use (their models come with the packages; loading all of them would
    cost memory for properties nobody calls). An injected ``settings.registry`` is its owner's
    business and is not checked.

    Raises
    ------
    EngineConfigError
        One line naming the engine, its options and what failed.
    """
    settings = app[SETTINGS]
    if settings.registry is not None:
        return
    registry = app[ENGINES]
    options = dict(settings.engine_options or {})
    explicit = {item.partition("=")[2].strip() for item in settings.engine_overrides} | set(options)
    for name in sorted(explicit):
        try:
            registry.engine(name)
        except EngineConfigError as exc:
            raise EngineConfigError(" ".join(str(exc).split())) from None
        except Exception as exc:  # noqa: BLE001 - any load failure is a configuration error here
            opts = ", ".join(f"{name}.{k}={v}" for k, v in sorted(dict(options.get(name, {})).items()))
            detail = " ".join(str(exc).split()) or type(exc).__name__
            raise EngineConfigError(f"engine {name!r} cannot be loaded"
                                    f"{' with ' + opts if opts else ''}: {detail}") from None


def runner_options(settings: ServerSettings) -> dict[str, float]:
    """``web.AppRunner`` keyword arguments bounding connection time: ``keepalive_timeout`` (also
    the time a new connection has to send its request head) and ``lingering_time``: after a
    request rejected before its body was read, the rest of the body is read and discarded (no
    memory kept) for at most :data:`LINGER_S`, so a well-behaved client can still read the answer,
    then the connection is closed."""
    return {"keepalive_timeout": settings.header_timeout_s, "lingering_time": LINGER_S}


async def serve(settings: ServerSettings, *, stop: asyncio.Event | None = None, out: TextIO | None = None) -> int:
    """Serve until `stop` is set (or SIGINT/SIGTERM when `stop` is None); return an exit code.

    Parameters
    ----------
    settings : ServerSettings
    stop : asyncio.Event, optional
        Set it to stop the server (tests). When None, SIGINT and SIGTERM stop it.
    out : text stream, optional
        Where the ``listening on`` line goes (default stdout).
    """
    out = sys.stdout if out is None else out
    if settings.no_auth:
        logger.warning(NO_AUTH_WARNING)
        print(NO_AUTH_WARNING, file=sys.stderr, flush=True)
    app = create_app(settings)
    try:
        if settings.registry is None:
            # One-time model builds (the Moonshine fold) before listening, not inside a session.
            await asyncio.to_thread(app[ENGINES].prepare)
        if settings.validate_engines:
            await asyncio.to_thread(validate_engines, app)
    except BaseException:
        await _close_app(app)
        raise
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=settings.shutdown_timeout_s,
                           access_log=None, **runner_options(settings))
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, ssl_context=ssl_context(settings))
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    port = sockets[0].getsockname()[1] if sockets else settings.port
    host = settings.host if ":" not in settings.host else f"[{settings.host}]"
    print(f"listening on {settings.scheme}://{host}:{port}", file=out, flush=True)
    logger.info("listening on %s://%s:%d", settings.scheme, host, port)
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    publisher = usage = None
    if settings.redis_url is not None:
        publisher = CapacityPublisher(connect_redis(settings.redis_url), f"{host}:{port}", app[SESSIONS],
                                      app[DRAINING].is_set)
        publisher.start()
        usage = UsagePublisher(publisher.redis, app[METRICS])
        usage.start()
    try:
        await stop.wait()
        await _drain_grace(app, settings.drain_grace_s, publisher)
        logger.info("shutting down: draining sessions")
    finally:
        await runner.cleanup()
        if usage is not None:
            await usage.stop()
        if publisher is not None:
            await publisher.stop()
    return 0


async def _drain_grace(app: web.Application, grace_s: float, publisher: CapacityPublisher | None = None) -> None:
    """``/healthz`` turns 503; keep serving until no websocket is open or `grace_s` ran out."""
    app[DRAINING].set()
    if publisher is not None:
        with contextlib.suppress(Exception):
            await publisher.publish()
    if grace_s <= 0:
        return
    lim = app[SESSIONS]
    logger.info("draining: /healthz answers 503; waiting up to %.0f s for %d connection(s)", grace_s,
                len(lim.connections))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    while lim.connections and loop.time() < deadline:
        await asyncio.sleep(0.1)


async def _close_app(app: web.Application) -> None:
    # The app never started: release what create_app made (engine pool, owned registry).
    app[POOL].shutdown(wait=False)
    if _registry_owned(app):
        app[ENGINES].close()


def _registry_owned(app: web.Application) -> bool:
    """True when the app made its engine registry (not injected by the settings)."""
    return app[SETTINGS].registry is None


def run(settings: ServerSettings) -> int:
    """Blocking :func:`serve` with SIGINT/SIGTERM handling; returns the exit code."""
    return asyncio.run(serve(settings))
