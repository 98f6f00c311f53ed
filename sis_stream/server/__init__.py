"""The SIS-compatible local server (aiohttp): RASR websockets, IAM tokens, metrics, REST routes.

Start it with ``sis-stream serve`` (:mod:`sis_stream.cli.main`), :func:`serve.run`, or build the
application with :func:`create_app` (:mod:`.app`, the assembler; the shared state route modules
use is in :mod:`.state`).
"""

from __future__ import annotations

from .app import create_app
from .metrics import Metrics, Usage
from .settings import ServerSettings, load_credentials
from .state import (
    AUTHENTICATOR,
    CREDENTIALS,
    ENGINES,
    METRICS,
    POOL,
    SESSIONS,
    SETTINGS,
    TOKENS,
    SessionLimiter,
)

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
