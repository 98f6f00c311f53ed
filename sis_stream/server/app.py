"""The assembler of the SIS-compatible local server: ``create_app(settings)``.

This module only builds the application: it fills the shared state (the keys of :mod:`.state`),
installs the middleware (:mod:`.auth`) and registers the routes of every route module. Route
modules read the state from :mod:`.state` and never import this module.

Routes
------
:mod:`.status`: ``GET /`` (root JSON), ``GET /metrics`` (Prometheus text), ``GET /healthz``;
:mod:`.iam`: ``POST /v3/auth/tokens``; :mod:`.rasr`: the websocket endpoints. With
``settings.rest_routes`` (default), :func:`setup_rest_routes` adds the REST API
(sis-protocol.md §11):

=========================================================  ==================================
route                                                      Cloud Eye ``interface`` (metrics)
=========================================================  ==================================
``POST /v1/{project_id}/asr/short-audio``                  ``sentence-transcription``
``POST /v1.0/voice/asr/sentence`` (legacy, seed 003)       ``sentence-transcription``
``POST /v1/{project_id}/asr/transcriber/jobs``             ``long-audio-transcription-post``
``GET /v1/{project_id}/asr/transcriber/jobs/{job_id}``     ``long-audio-transcription-get``
``POST /v1/{project_id}/tts``, ``POST /v1.0/voice/tts``     ``text-to-speech-customization``
``POST /v1/{project_id}/asr/flash``                        ``flash-transcription`` (ours)
``GET /v1/{project_id}/rtts`` (websocket)                  ``real-time-text-to-speech`` (ours)
``/v1/{project_id}/asr/vocabularies[/{id}]``               ``vocabulary-create/-list/-get/-update/-delete`` (ours)
=========================================================  ==================================

The first four names are the ones the seeds list ("查询SIS监控维度指标信息"); the others are ours,
because the docs name no more. Authentication, error bodies and metrics come from the shared
middleware (:mod:`.auth`): handlers are declared with ``route`` and raise
:class:`~sis_stream.errors.RequestRejected`. The REST state (:mod:`.rest`) is opened at startup
and closed at cleanup.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

from aiohttp import web

from ..engines.base import available_cores
from ..engines.batcher import DecodeBatcher
from ..engines.pool import EngineExecutor
from ..engines.registry import EngineRegistry
from ..protocol import Authenticator, SignatureVerifier, TokenIssuer, TokenService
from . import flash, iam, rasr, rest_short, rtts, status, transcriber, tts, vocab
from .admission import AdmissionController
from .auth import route, sis_middleware
from .console.routes import setup_console
from .engine_metrics import EngineMetrics
from .guard import track_websocket
from .metrics import Metrics
from .recognizer import wire_decoding
from .redis_vocab import RedisVocabularyStore
from .rest import (
    JOBS,
    REST_SETTINGS,
    VOCABULARIES,
    close_data_dir,
    open_data_dir,
    rest_settings_from,
)
from .settings import ServerSettings
from .state import (
    ADMISSION,
    AUTHENTICATOR,
    BATCHER,
    CREDENTIALS,
    ENGINE_METRICS,
    ENGINES,
    HOT_WORDS,
    METRICS,
    POOL,
    SESSIONS,
    SETTINGS,
    TOKENS,
    SessionLimiter,
)
from .transcriber import make_job_manager
from .vocab_store import VocabularyStore, hot_words_lookup

__all__ = ["create_app", "setup_rest_routes"]

logger = logging.getLogger(__name__)

_OWNS_REGISTRY: Final = web.AppKey("sis_owns_registry", bool)
#: Longest wait for the decode threads at cleanup (seconds).
_BATCHER_JOIN_S: Final = 5.0


def create_app(settings: ServerSettings | None = None) -> web.Application:
    """Build the server application.

    Parameters
    ----------
    settings : ServerSettings, optional
        Default ``ServerSettings()``.

    Returns
    -------
    aiohttp.web.Application
        With the shared state of :mod:`.state` and every route installed. The engine executor
        and the decode batcher are shut down (and an owned engine registry closed) on cleanup.

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
    app[METRICS] = Metrics(gauges=status.engine_gauges(app))
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
    limiter = app[SESSIONS]  # admission: measured decode budget per decode worker, then SIS.0312
    app[ADMISSION] = AdmissionController(settings.decode_workers or available_cores(),
                                         ttf_bound_ms=settings.ttf_bound_ms,
                                         sessions=lambda: limiter.active, clock=settings.clock)
    app[ENGINE_METRICS] = EngineMetrics([app[ADMISSION]])
    app[METRICS].add_collector(app[ENGINE_METRICS].render)
    # Batched decoding of finals and interims across sessions (engines.batcher), beside the pool.
    decode_workers = settings.decode_workers or available_cores()
    engine_metrics = app.get(ENGINE_METRICS)
    app[BATCHER] = DecodeBatcher(decode_workers, window_ms=settings.batch_window_ms, max_batch=settings.max_batch,
                                 max_queued=max(256 * decode_workers, 4 * settings.max_sessions),
                                 observer=getattr(engine_metrics, "on_batch", None))
    wire_decoding(app[POOL], batcher=app[BATCHER], ttf_observer=getattr(engine_metrics, "observe_ttf", None))

    status.setup_routes(app)
    iam.setup_routes(app)
    rasr.setup_routes(app)
    if settings.rest_routes:
        setup_rest_routes(app)
    setup_console(app)  # /console/ and /console/monitor (the browser console)

    app.on_response_prepare.append(track_websocket)  # errors after an upgrade: guard.py
    app.on_shutdown.append(_on_shutdown)
    app.on_cleanup.append(_on_cleanup)
    return app


def setup_rest_routes(app: web.Application) -> None:
    """Register every REST route, the RTTS websocket and the REST state's startup/cleanup hooks,
    and publish the vocabulary lookup for the RASR websocket as ``app[HOT_WORDS]``.

    Parameters
    ----------
    app : aiohttp.web.Application
        The server app (``create_app`` has set ``app[SETTINGS]``); an ``app[REST_SETTINGS]``
        already present is kept (tests).
    """
    if REST_SETTINGS not in app:
        app[REST_SETTINGS] = rest_settings_from(app[SETTINGS])
    table: list[tuple[str, str, Any, str]] = [
        *rest_short.ROUTES, *transcriber.ROUTES, *tts.ROUTES, *flash.ROUTES, *vocab.ROUTES, *rtts.ROUTES,
    ]
    for method, path, handler, interface in table:
        app.router.add_route(method, path, route(interface=interface)(handler))
    rtts.setup(app)
    app[HOT_WORDS] = hot_words_lookup(app)
    app.on_startup.append(_on_rest_startup)
    app.on_cleanup.append(_on_rest_cleanup)


async def _on_rest_startup(app: web.Application) -> None:
    rs = app[REST_SETTINGS]
    root = open_data_dir(app)
    if app[SETTINGS].redis_url is not None:  # shared with every process using this Redis
        app[VOCABULARIES] = RedisVocabularyStore(app[SETTINGS].redis_url, max_tables=rs.max_vocabularies,
                                                 max_words=rs.max_vocabulary_words)
    else:
        app[VOCABULARIES] = VocabularyStore(root / "vocabularies.sqlite3", max_tables=rs.max_vocabularies,
                                            max_words=rs.max_vocabulary_words)
    manager = make_job_manager(app, root / "jobs.sqlite3", rs)
    app[JOBS] = manager
    await manager.start()


async def _on_rest_cleanup(app: web.Application) -> None:
    manager = app.get(JOBS)
    if manager is not None:
        await manager.stop()
    store = app.get(VOCABULARIES)
    if store is not None:
        store.close()
    close_data_dir(app)


async def _on_shutdown(app: web.Application) -> None:
    left = await app[SESSIONS].drain(app[SETTINGS].shutdown_timeout_s)
    if left:
        logger.warning("%d websocket connection(s) closed forcibly at shutdown", left)


async def _on_cleanup(app: web.Application) -> None:
    app[POOL].shutdown(wait=False)
    # Cancels queued decodes; joins the decode threads (a batch being decoded finishes first).
    await asyncio.to_thread(app[BATCHER].shutdown, timeout_s=_BATCHER_JOIN_S)
    if app[_OWNS_REGISTRY]:
        app[ENGINES].close()
