"""Flash ASR (sis-protocol.md §11.4): ``POST /v1/{project_id}/asr/flash?...``, reading the object
from a local folder standing in for OBS.

``obs_bucket_name`` names a sub-folder of the flash store (``RestSettings.flash_store``, default
``<data-dir>/obs``) and ``obs_object_key`` a file inside it (URL-decoded, ``/`` allowed); the
resolved path must stay inside the bucket folder (``SIS.0608`` otherwise). A missing object is
``SIS.30002`` (404). Every parameter is in the query string (the SDK's ``?&audio_format=...``
leading ``&`` included); the body is ignored.

Parameters: ``property`` (the flash list, plus routed properties as a local extension),
``audio_format`` (``wav``, ``mp3``, ``m4a``, ``aac``, ``opus``, plus ``auto`` and the raw SIS
formats), ``add_punc``, ``digit_norm``, ``need_word_info``, ``vocabulary_id``,
``first_channel_only`` (``yes``/``no``, default ``no``). Limits: 100 MB, 30 min (``SIS.0537``).

Answer: ``{"trace_id", "audio_duration", "flash_result": [{"channel_id", "sentences": [{"start_time",
"end_time", "result": {"text", "score", "word_info"?}}]}]}``, one entry per channel (only channel 0
with ``first_channel_only=yes``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import uuid
from pathlib import Path
from typing import Any, Final

from ..errors import RequestRejected
from ..protocol.errors import reject
from ..protocol.properties import Interface
from .auth import record_audio
from .decode import check_rate, decode_audio, to_engine_pcm
from .recognize import check_property, engine_for, on_pool, transcribe_pcm, word_info_json
from .rest import REST_SETTINGS, data_dir, json_response
from .vocab_store import get_vocabulary_words

__all__ = [
    "MAX_FLASH_AUDIO_MS",
    "MAX_FLASH_BYTES",
    "ROUTES",
    "flash_store",
    "handle_flash",
    "resolve_object",
]

logger = logging.getLogger(__name__)

MAX_FLASH_BYTES: Final = 100 * 1024 * 1024
MAX_FLASH_AUDIO_MS: Final = 30 * 60 * 1000
INTERFACE: Final = "flash-transcription"
_FORMATS: Final = ("wav", "mp3", "m4a", "aac", "opus", "auto", "pcm16k16bit", "pcm8k16bit", "ulaw16k8bit",
                   "ulaw8k8bit", "alaw16k8bit", "alaw8k8bit")
_BUCKET_RE: Final = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_PARAMS: Final = frozenset({"property", "audio_format", "obs_bucket_name", "obs_object_key", "add_punc",
                            "digit_norm", "need_word_info", "vocabulary_id", "first_channel_only"})


def flash_store(app: Any) -> Path:
    """The folder standing in for OBS."""
    rs = app[REST_SETTINGS]
    return rs.flash_store if rs.flash_store is not None else data_dir(app) / "obs"


def resolve_object(store: Path, bucket: object, key: object) -> Path:
    """The file for (``obs_bucket_name``, ``obs_object_key``) inside `store`.

    Raises
    ------
    RequestRejected
        ``SIS.0012`` missing, ``SIS.0032`` malformed names, ``SIS.0608`` a key escaping the bucket,
        ``SIS.30002`` no such object.
    """
    for name, value in (("obs_bucket_name", bucket), ("obs_object_key", key)):
        if value is None or value == "":
            raise reject("SIS.0012", field=name)
    assert isinstance(bucket, str) and isinstance(key, str)
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise reject("SIS.0032", f"'obs_bucket_name' is invalid: 3-63 lower-case letters, digits, '.' or '-', "
                                 f"got {bucket!r}")
    if len(key) >= 1024 or "\x00" in key:
        raise reject("SIS.0032", "'obs_object_key' is invalid: at most 1023 characters")
    root = Path(os.path.realpath(store / bucket))
    path = Path(os.path.realpath(root / key.lstrip("/")))
    if root not in path.parents:
        raise reject("SIS.0608", f"illegal object key {key!r}: it leaves the bucket")
    if not path.is_file():
        raise reject("SIS.30002", f"the OBS audio does not exist: {bucket}/{key}")
    return path


def _read(path: Path) -> bytes:
    size = path.stat().st_size
    if size > MAX_FLASH_BYTES:
        raise reject("SIS.0537", f"the audio file is too large: {size} bytes, at most {MAX_FLASH_BYTES}")
    return path.read_bytes()


async def handle_flash(request: Any) -> Any:
    """``POST /v1/{project_id}/asr/flash?...``."""
    q = {k: v for k, v in request.query.items() if k}  # the SDK's '?&...' gives an empty key
    for key in q:
        if key not in _PARAMS:
            raise reject("SIS.0031", field=key)
    for key in ("property", "audio_format"):
        if not q.get(key):
            raise reject("SIS.0012", field=key)
    try:
        prop, rate_hz = check_property(request.app, q["property"], Interface.FLASH)
    except RequestRejected as exc:
        raise reject("SIS.0032", f"'property' is invalid: {q['property']!r}") from exc
    fmt = q["audio_format"]
    if fmt not in _FORMATS:
        raise reject("SIS.0032", "'audio_format' is invalid")
    flags: dict[str, bool] = {}
    for key, default in (("add_punc", "no"), ("digit_norm", "yes"), ("need_word_info", "no"),
                         ("first_channel_only", "no")):
        v = q.get(key, default)
        if v not in ("yes", "no"):
            raise reject("SIS.0032", f"'{key}' is invalid: expected 'yes' or 'no', got {v!r}")
        flags[key] = v == "yes"
    project_id = request.match_info["project_id"]
    words = get_vocabulary_words(request.app, project_id, q.get("vocabulary_id"))
    path = resolve_object(flash_store(request.app), q.get("obs_bucket_name"), q.get("obs_object_key"))
    data = await asyncio.to_thread(_read, path)
    audio = await asyncio.to_thread(decode_audio, data, fmt, unsupported_code="SIS.0535",
                                    max_ms=MAX_FLASH_AUDIO_MS)
    del data
    check_rate(audio, rate_hz, fmt)
    if audio.duration_ms > MAX_FLASH_AUDIO_MS:
        raise reject("SIS.0537", f"the audio is too long: {audio.duration_ms} ms, at most 30 min")
    engine, route = await on_pool(request.app, engine_for, request.app, prop)
    channels = [0] if flags["first_channel_only"] else list(range(audio.n_channels))
    flash_result = []
    for ch in channels:
        pcm = await asyncio.to_thread(to_engine_pcm, audio, ch)
        hyps = await on_pool(request.app, transcribe_pcm, engine, route.language, pcm, hot_words=words,
                              word_info=flags["need_word_info"], add_punc=flags["add_punc"],
                              digit_norm=flags["digit_norm"])
        sentences = []
        for h in hyps:
            result: dict[str, Any] = {"text": h.text, "score": h.score}
            if flags["need_word_info"]:
                result["word_info"] = word_info_json(h)
            sentences.append({"start_time": h.start_ms, "end_time": h.end_ms, "result": result})
        flash_result.append({"channel_id": ch, "sentences": sentences})
    record_audio(request, float(audio.duration_ms) * len(channels))
    return json_response({"trace_id": str(uuid.uuid4()), "audio_duration": audio.duration_ms,
                          "flash_result": flash_result})


ROUTES: Final = (
    ("POST", "/v1/{project_id}/asr/flash", handle_flash, INTERFACE),
)
