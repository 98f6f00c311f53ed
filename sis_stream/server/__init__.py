"""The SIS-compatible local server (aiohttp): RASR websockets, IAM tokens, metrics, REST routes.

Start it with ``sis-stream serve`` (:mod:`sis_stream.cli.main`), :func:`serve.run`, or build the
application with :func:`create_app` (see :mod:`.app` for the shared state route modules use).
"""

from __future__ import annotations

from .app import (
    AUTHENTICATOR,
    CREDENTIALS,
    ENGINES,
    METRICS,
    POOL,
    SESSIONS,
    SETTINGS,
    TOKENS,
    SessionLimiter,
    create_app,
)
from .metrics import Metrics, Usage
from .settings import ServerSettings, load_credentials

__all__ = [
    "AUTHENTICATOR",
    "CREDENTIALS",
    "ENGINES",
    "METRICS",
    "POOL",
    "SESSIONS",
    "SETTINGS",
    "TOKENS",
    "Metrics",
    "ServerSettings",
    "SessionLimiter",
    "Usage",
    "create_app",
    "load_credentials",
]
