"""Run the server: ``run(settings)`` (blocking) and ``serve(settings)`` (async).

The first line on stdout is ``listening on http://HOST:PORT`` (``https`` with TLS), with the port
actually bound (``port=0`` picks a free one), so scripts can find the server. SIGINT/SIGTERM
drain gracefully: new STARTs are refused (SIS.0312), every open session gets its finals and END,
connections close with 1001, then the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import sys
from typing import TextIO

from aiohttp import web

from .app import create_app
from .settings import ServerSettings

__all__ = ["run", "serve", "ssl_context"]

logger = logging.getLogger(__name__)

NO_AUTH_WARNING = ("WARNING: authentication is disabled (--no-auth): every request is accepted "
                   "without credentials. Use this for local development only.")


def ssl_context(settings: ServerSettings) -> ssl.SSLContext | None:
    """A server TLS context from ``tls_cert``/``tls_key``, or None without TLS."""
    if settings.tls_cert is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(settings.tls_cert), str(settings.tls_key))
    return ctx


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
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=settings.shutdown_timeout_s,
                           access_log=None)
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


def run(settings: ServerSettings) -> int:
    """Blocking :func:`serve` with SIGINT/SIGTERM handling; returns the exit code."""
    return asyncio.run(serve(settings))
