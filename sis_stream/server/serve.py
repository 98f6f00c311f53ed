"""Run the server: ``run(settings)`` (blocking) and ``serve(settings)`` (async).

The first line on stdout is ``listening on http://HOST:PORT`` (``https`` with TLS), with the port
actually bound (``port=0`` picks a free one), so scripts can find the server. SIGINT/SIGTERM
drain gracefully: new STARTs are refused (SIS.0312), every open session gets its finals and END,
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
import logging
import signal
import ssl
import sys
from typing import TextIO

from aiohttp import web

from ..errors import EngineConfigError
from .app import create_app
from .settings import ServerSettings
from .state import ENGINES, POOL, SETTINGS

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
    if settings.validate_engines:
        try:
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
    try:
        await stop.wait()
        logger.info("shutting down: draining sessions")
    finally:
        await runner.cleanup()
    return 0


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
