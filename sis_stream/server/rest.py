"""What every REST route shares (sis-protocol.md §11): the REST settings, the REST state's app
keys, the data directory, and the JSON request/answer helpers.

The REST state (vocabulary store, transcriber job manager, fetch policy) is created at app
startup (by the assembler, :func:`.app.setup_rest_routes`) from :class:`RestSettings`, derived
from the server settings by :func:`rest_settings_from`; tests may put their own ``RestSettings``
in ``app[REST_SETTINGS]`` before the app starts.

=====================  ===========================================================================
key                    what
=====================  ===========================================================================
``REST_SETTINGS``      :class:`RestSettings`
``VOCABULARIES``       the hot-word tables (:class:`.vocab_store.VocabularyStore`)
``JOBS``               the transcriber's :class:`.jobs.JobManager`
``FETCH_POLICY``       :class:`.fetch.FetchPolicy` for ``data_url``/``url``/callbacks
=====================  ===========================================================================

:data:`INTERFACES` lists the Cloud Eye ``interface`` names of the REST routes.
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

from ..protocol.errors import reject
from .fetch import FetchPolicy, parse_fetch_allow
from .intake import loads_json, read_body

__all__ = [
    "FETCH_POLICY",
    "INTERFACES",
    "JOBS",
    "REST_SETTINGS",
    "VOCABULARIES",
    "RestSettings",
    "close_data_dir",
    "data_dir",
    "json_response",
    "open_data_dir",
    "read_json",
    "rest_settings_from",
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
        Hosts ``data_url``/``url`` downloads may use (``--fetch-allow``; none by default).
    fetch_dir : Path, optional
        The local input directory ``file://`` URLs may name (``--fetch-dir``; none by default).
    flash_store : Path, optional
        Folder standing in for OBS in flash ASR (``obs_bucket_name`` = sub-folder,
        ``obs_object_key`` = file); default ``<data_dir>/obs``.
    transcriber_workers : int
        Jobs processed at once (default 2); waiting jobs are taken round-robin across projects.
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
    fetch_dir: Path | None = None
    flash_store: Path | None = None
    transcriber_workers: int = 2
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
        for name in ("data_dir", "flash_store", "fetch_dir"):
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

    Reads ``data_dir``; ``fetch_allow``, ``fetch_dir``, ``flash_store`` and
    ``transcriber_workers`` when the server settings have them (else the defaults: no host and no
    directory may be fetched from).
    """
    allow = getattr(settings, "fetch_allow", None)
    kwargs: dict[str, Any] = {
        "data_dir": getattr(settings, "data_dir", None),
        "fetch_allow": () if allow is None else parse_fetch_allow(allow),
    }
    for name in ("fetch_dir", "flash_store", "transcriber_workers", "legacy_property_8k", "legacy_property_16k"):
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
        Empty (unless allowed) or malformed body (not JSON, ``NaN``/``Infinity``, lone
        surrogates, nested too deeply: :func:`.intake.loads_json`); 408 for a body that arrives
        too slowly (:func:`.intake.read_body`).
    """
    raw = await read_body(request)
    if not raw.strip():
        if allow_empty:
            return None
        raise reject(code, "the request body is empty: expected a JSON object")
    return loads_json(raw, code)


def data_dir(app: web.Application) -> Path:
    """The REST data directory (created at startup)."""
    return app[_DATA_DIR]


def open_data_dir(app: web.Application) -> Path:
    """Create the REST data directory (``RestSettings.data_dir``, else a temporary one) and the
    fetch policy ``app[FETCH_POLICY]``; returns the directory (see :func:`data_dir`)."""
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
    app[FETCH_POLICY] = FetchPolicy(allow_hosts=rs.fetch_allow, input_dir=rs.fetch_dir)
    return root


def close_data_dir(app: web.Application) -> None:
    """Delete the temporary data directory, if :func:`open_data_dir` made one."""
    tmp = app.get(_TEMP_DIR)
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)
