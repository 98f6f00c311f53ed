"""The local server's REST APIs (sis-protocol.md §11): route table, shared helpers, app state.

:func:`setup_rest_routes` is called by ``create_app``; it registers

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
middleware (``server/auth.py``): handlers declare their interface with ``route`` and raise
:class:`~sis_stream.errors.RequestRejected`.

The REST state (vocabulary store, transcriber job manager, fetch policy) is created at app
startup from :class:`RestSettings`, derived from the server settings by
:func:`rest_settings_from`; tests may put their own ``RestSettings`` in ``app[REST_SETTINGS]``
before the app starts.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from ..errors import RequestRejected
from ..protocol.errors import reject
from .fetch import FetchPolicy, default_allow_hosts, parse_fetch_allow

__all__ = [
    "FETCH_POLICY",
    "INTERFACES",
    "JOBS",
    "REST_SETTINGS",
    "VOCABULARIES",
    "RestSettings",
    "json_response",
    "read_json",
    "rest_settings_from",
    "setup_rest_routes",
]

logger = logging.getLogger(__name__)

#: Cloud Eye interface names of the REST routes (the first four from the seeds).
INTERFACES: Final = {
    "short_audio": "sentence-transcription",
    "transcriber_post": "long-audio-transcription-post",
    "transcriber_get": "long-audio-transcription-get",
    "tts": "text-to-speech-customization",
    "flash": "flash-transcription",
    "rtts": "real-time-text-to-speech",
}


@dataclass(frozen=True)
class RestSettings:
    """Knobs of the REST modules.

    Parameters
    ----------
    data_dir : Path, optional
        Directory for ``vocabularies.sqlite3``, ``jobs.sqlite3`` and the flash store; None makes a
        temporary one (deleted at shutdown: nothing survives a restart).
    fetch_allow : tuple of str
        Hosts ``data_dir``/``url`` downloads may use (``--fetch-allow``).
    flash_store : Path, optional
        Folder standing in for OBS in flash ASR (``obs_bucket_name`` = sub-folder,
        ``obs_object_key`` = file); default ``<data_dir>/obs``.
    transcriber_workers : int
        Jobs processed at once.
    max_waiting_jobs : int
        Jobs queued (WAITING) per server; beyond: ``SIS.0536``.
    job_retention_s : float
        How long finished jobs are kept (72 h).
    callback_attempts : int
        POST attempts per callback.
    callback_backoff_s : float
        First retry delay (doubles per attempt).
    callback_timeout_s : float
        Timeout of one callback POST.
    max_vocabularies, max_vocabulary_words : int
        Hot-word limits (``SIS.0208``).
    legacy_property_8k, legacy_property_16k : str
        The model the legacy ``/v1.0/voice/asr/sentence`` API (which has no ``property``) uses
        for ``sample_rate`` ``"8k"`` / ``"16k"``. Default the Mandarin common models, as the
        cloud API; set English ones (``english_16k_common``) for an English-only engine setup.
    """

    data_dir: Path | None = None
    fetch_allow: tuple[str, ...] = ()
    flash_store: Path | None = None
    transcriber_workers: int = 1
    max_waiting_jobs: int = 1000
    job_retention_s: float = 72 * 3600.0
    callback_attempts: int = 5
    callback_backoff_s: float = 1.0
    callback_timeout_s: float = 10.0
    max_vocabularies: int = 100
    max_vocabulary_words: int = 10000
    legacy_property_8k: str = "chinese_8k_common"
    legacy_property_16k: str = "chinese_16k_common"

    def __post_init__(self) -> None:
        for name in ("data_dir", "flash_store"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, Path):
                object.__setattr__(self, name, Path(v))
        object.__setattr__(self, "fetch_allow", parse_fetch_allow(self.fetch_allow))
        for name in ("transcriber_workers", "max_waiting_jobs", "callback_attempts",
                     "max_vocabularies", "max_vocabulary_words"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        for name in ("job_retention_s", "callback_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not self.callback_backoff_s >= 0:
            raise ValueError(f"callback_backoff_s must be >= 0, got {self.callback_backoff_s!r}")


def rest_settings_from(settings: Any) -> RestSettings:
    """Derive :class:`RestSettings` from the server's ``ServerSettings``.

    Reads ``data_dir`` and ``host``; ``fetch_allow``, ``flash_store`` and
    ``transcriber_workers`` when the server settings have them (else the defaults: loopback hosts
    when the server listens on loopback, nothing otherwise).
    """
    host = getattr(settings, "host", "127.0.0.1")
    allow = getattr(settings, "fetch_allow", None)
    kwargs: dict[str, Any] = {
        "data_dir": getattr(settings, "data_dir", None),
        "fetch_allow": default_allow_hosts(host) if allow is None else parse_fetch_allow(allow),
    }
    for name in ("flash_store", "transcriber_workers", "legacy_property_8k", "legacy_property_16k"):
        v = getattr(settings, name, None)
        if v is not None:
            kwargs[name] = v
    return RestSettings(**kwargs)


REST_SETTINGS: Final = web.AppKey("rest_settings", RestSettings)
VOCABULARIES: Final = web.AppKey("vocabularies", object)
JOBS: Final = web.AppKey("transcriber_jobs", object)
FETCH_POLICY: Final = web.AppKey("fetch_policy", FetchPolicy)
_DATA_DIR: Final = web.AppKey("rest_data_dir", Path)
_TEMP_DIR: Final = web.AppKey("rest_temp_dir", object)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON answer, UTF-8, non-ASCII kept as is."""
    return web.Response(status=status, body=json.dumps(body, ensure_ascii=False).encode("utf-8"),
                        content_type="application/json", charset="utf-8", headers=headers)


async def read_json(request: web.Request, *, allow_empty: bool = False,
                    code: str = "SIS.0032") -> Any:
    """Parse the request body as JSON.

    Parameters
    ----------
    request : aiohttp.web.Request
    allow_empty : bool
        Return None for an empty body instead of rejecting it.
    code : str
        Error code for a malformed body (``SIS.0032`` by default; TTS uses ``SIS.0415``,
        the transcriber ``SIS.0534``).

    Raises
    ------
    RequestRejected
        Empty (unless allowed) or malformed body.
    """
    raw = await request.read()
    if not raw.strip():
        if allow_empty:
            return None
        raise reject(code, "the request body is empty: expected a JSON object")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise reject(code, f"the request body is not valid JSON: {exc}") from None


def data_dir(app: web.Application) -> Path:
    """The REST data directory (created at startup)."""
    return app[_DATA_DIR]


async def _on_startup(app: web.Application) -> None:
    from .transcriber import make_job_manager
    from .vocab import VocabularyStore

    rs = app[REST_SETTINGS]
    if rs.data_dir is None:
        tmp = tempfile.mkdtemp(prefix="sis-stream-data-")
        app[_TEMP_DIR] = tmp
        root = Path(tmp)
        logger.warning("no --data-dir: vocabularies and transcriber jobs live in %s and are deleted at "
                       "shutdown", root)
    else:
        root = rs.data_dir
        root.mkdir(parents=True, exist_ok=True)
    app[_DATA_DIR] = root
    app[FETCH_POLICY] = FetchPolicy(allow_hosts=rs.fetch_allow, data_dir=root)
    app[VOCABULARIES] = VocabularyStore(root / "vocabularies.sqlite3", max_tables=rs.max_vocabularies,
                                        max_words=rs.max_vocabulary_words)
    manager = make_job_manager(app, root / "jobs.sqlite3", rs)
    app[JOBS] = manager
    await manager.start()


async def _on_cleanup(app: web.Application) -> None:
    manager = app.get(JOBS)
    if manager is not None:
        await manager.stop()
    store = app.get(VOCABULARIES)
    if store is not None:
        store.close()
    tmp = app.get(_TEMP_DIR)
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)


def setup_rest_routes(app: web.Application) -> None:
    """Register every REST route, the RTTS websocket and the REST state's startup/cleanup hooks,
    and publish the vocabulary lookup for the RASR websocket as ``app[HOT_WORDS]``.

    Parameters
    ----------
    app : aiohttp.web.Application
        The server app (``create_app`` has set ``app[SETTINGS]``); an ``app[REST_SETTINGS]``
        already present is kept (tests).
    """
    from . import flash, rest_short, rtts, transcriber, tts, vocab
    from .auth import route

    if REST_SETTINGS not in app:
        from .app import SETTINGS

        app[REST_SETTINGS] = rest_settings_from(app[SETTINGS])
    table: list[tuple[str, str, Any, str]] = [
        *rest_short.ROUTES, *transcriber.ROUTES, *tts.ROUTES, *flash.ROUTES, *vocab.ROUTES, *rtts.ROUTES,
    ]
    for method, path, handler, interface in table:
        app.router.add_route(method, path, route(interface=interface)(handler))
    rtts.setup(app)
    from .app import HOT_WORDS

    def hot_words(project_id: str, vocabulary_id: str) -> list[str] | None:
        # For the RASR websocket (app[HOT_WORDS] contract): None = unknown id (it answers SIS.0201).
        try:
            return vocab.get_vocabulary_words(app, project_id, vocabulary_id)
        except RequestRejected:
            return None

    app[HOT_WORDS] = hot_words
    app.on_startup.append(_on_startup)
    app.on_cleanup.append(_on_cleanup)
