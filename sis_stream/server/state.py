"""The shared state of the server application: its typed keys and the session limiter.

Every route module reads the state through these keys; none of them imports the assembler
(:mod:`.app`), which fills them in ``create_app``:

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
                                                           or None (unknown id); set with the REST
                                                           routes so RASR START can use ``vocabulary_id``
``ENGINE_METRICS``  ``engine_metrics.EngineMetrics``       decode/time-to-final histograms (``/metrics``):
                                                           the batcher's observer, ``observe_ttf``
``ADMISSION``       ``admission.AdmissionController``      refuses a START (SIS.0312) when the measured
                                                           decode budget is used up
``BATCHER``         ``DecodeBatcher``                      server-wide batched decoding of finals and
                                                           interims (``engines.batcher``)
==================  =====================================  ==========================================

Request keys set by the middleware (:mod:`.auth`): ``request["principal"]`` (a
:class:`~sis_stream.protocol.Principal`), ``request["interface"]``, ``request["request_id"]``;
a handler may set ``request["audio_ms"]`` for usage accounting. Decorate handlers with
:func:`.auth.route` to name their metrics interface (``@route(interface="asr.short-audio")``)
or make them public. Raise :class:`~sis_stream.errors.RequestRejected` (e.g. from
``sis_stream.protocol.reject("SIS.0032", field="data")``) to answer a SIS error body.

Engine work never runs on the event loop: ``await app[POOL].run(fn, ...)`` (rejects at once with
``EngineOverloadedError`` when the bounded queue is full: answer SIS.0312/503 then).

The REST routes' own keys (``REST_SETTINGS``, ``VOCABULARIES``, ``JOBS``, ``FETCH_POLICY``) are
in :mod:`.rest`.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Final, Protocol

from aiohttp import web

from ..engines.batcher import DecodeBatcher
from ..engines.pool import EngineExecutor
from ..engines.registry import EngineRegistry
from ..protocol import CredentialStore, TokenService
from .admission import AdmissionController
from .engine_metrics import EngineMetrics
from .metrics import Metrics
from .settings import ServerSettings

__all__ = [
    "ADMISSION",
    "AUTHENTICATOR",
    "BATCHER",
    "CREDENTIALS",
    "ENGINES",
    "ENGINE_METRICS",
    "HOT_WORDS",
    "METRICS",
    "POOL",
    "SESSIONS",
    "SETTINGS",
    "TOKENS",
    "SessionLimiter",
]

logger = logging.getLogger(__name__)

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
#: The engine's histograms (time-to-final, decode time, batch size, queue wait) shown in ``/metrics``.
ENGINE_METRICS: Final = web.AppKey("sis_engine_metrics", EngineMetrics)
#: Admission control from the measured decode budget (checked at START after ``--max-sessions``).
ADMISSION: Final = web.AppKey("sis_admission", AdmissionController)
#: The decode batcher (created beside ``POOL``; shut down at cleanup).
BATCHER: Final = web.AppKey("sis_batcher", DecodeBatcher)


class DrainableConnection(Protocol):
    """What :class:`SessionLimiter` needs of a live websocket connection (a RASR websocket
    connection)."""

    async def shutdown(self) -> None:
        """End the open session (END to the client) and close."""

    async def force_close(self) -> None:
        """Close at once."""


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
        self.connections: weakref.WeakSet[DrainableConnection] = weakref.WeakSet()
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

    def add(self, conn: DrainableConnection) -> None:
        """Track a live websocket connection."""
        self.connections.add(conn)
        self._idle.clear()

    def discard(self, conn: DrainableConnection) -> None:
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
