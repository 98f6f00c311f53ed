"""A transcriber-only process: ``sis-stream worker --redis URL``.

It builds the same application as ``sis-stream serve`` (engines, engine executor, fetch policy,
the Redis job backend and its callback dispatcher) but opens no listening socket: it only takes
transcriber jobs from Redis, runs them and delivers their callbacks, so engine capacity scales
apart from the API processes. The first line on stdout is ``worker CONSUMER running`` (the
consumer name that ``sis:job:{id}`` records as ``owner``). SIGINT/SIGTERM stop it; a job it was
running is taken over by another process once its lease ran out.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import TextIO

from aiohttp import web

from .app import create_app
from .rest import JOBS
from .serve import validate_engines
from .settings import ServerSettings
from .state import ENGINES, POOL

__all__ = ["run_worker", "work"]

logger = logging.getLogger(__name__)


async def work(settings: ServerSettings, *, stop: asyncio.Event | None = None, out: TextIO | None = None) -> int:
    """Run transcriber jobs from ``settings.redis_url`` until `stop` is set (or SIGINT/SIGTERM).

    Raises
    ------
    ValueError
        ``settings.redis_url`` is not set.
    """
    if settings.redis_url is None:
        raise ValueError("a worker needs a Redis URL (--redis redis://HOST:PORT/DB)")
    settings = settings.with_(rest_routes=True, run_jobs=True)
    out = sys.stdout if out is None else out
    app = create_app(settings)
    if settings.validate_engines:
        try:
            await asyncio.to_thread(validate_engines, app)
        except BaseException:
            app[POOL].shutdown(wait=False)
            if settings.registry is None:
                app[ENGINES].close()
            raise
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()  # runs the startup hooks: the job slots start here; no socket is opened
    print(f"worker {app[JOBS].consumer} running", file=out, flush=True)
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        logger.info("worker stopping")
    finally:
        await runner.cleanup()
    return 0


def run_worker(settings: ServerSettings) -> int:
    """Blocking :func:`work`; returns the exit code."""
    return asyncio.run(work(settings))
