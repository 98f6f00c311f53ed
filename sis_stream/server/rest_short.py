"""Short-audio recognition over REST: ``POST /v1/{project_id}/asr/short-audio`` (§11.1) and the
legacy ``POST /v1.0/voice/asr/sentence`` (§11.2, seed 003).

The audio is decoded by :mod:`.decode` (formats, ``SIS.0602`` for undecodable audio) and
recognised as one utterance by :func:`.recognize.recognize_pcm` on the shared engine executor
(``app[POOL]``), never on the event loop; the text is post-processed as on the RASR websocket.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import uuid
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from ..audio.formats import AudioFormat
from ..protocol.errors import reject
from ..protocol.properties import Interface, lookup_property
from .auth import record_audio
from .decode import COMPRESSED_FORMATS, RAW_FORMATS, check_rate, decode_audio, to_engine_pcm
from .fetch import fetch_url
from .recognize import recognize_pcm, word_info_json
from .rest import FETCH_POLICY, REST_SETTINGS, json_response, read_json
from .vocab_store import get_vocabulary_words

__all__ = [
    "MAX_DATA_BASE64_BYTES",
    "MAX_SHORT_AUDIO_MS",
    "MAX_USER_WORDS",
    "ROUTES",
    "ShortAudioRequest",
    "decode_base64",
    "handle_legacy_sentence",
    "handle_short_audio",
    "parse_short_audio",
    "yes_no",
]

logger = logging.getLogger(__name__)

#: ``data`` limit: 4 MB after base64 encoding (§11.1, seed 003).
MAX_DATA_BASE64_BYTES: Final = 4 * 1024 * 1024
#: Most ``user_words`` accepted (the same cap as the websocket START config).
MAX_USER_WORDS: Final = 10000
#: Longest short audio (1 minute).
MAX_SHORT_AUDIO_MS: Final = 60_000

#: Cloud Eye interfaces of these routes.
INTERFACE: Final = "sentence-transcription"


def yes_no(config: dict[str, Any], key: str, default: str = "no", code: str = "SIS.0032") -> bool:
    """Read a ``"yes"``/``"no"`` config field (``SIS.0032 '<key>' is invalid`` otherwise)."""
    value = config.get(key, default)
    if value not in ("yes", "no"):
        raise reject(code, f"'{key}' is invalid: expected 'yes' or 'no', got {value!r}")
    return value == "yes"


def decode_base64(data: object, *, field: str = "data", limit: int = MAX_DATA_BASE64_BYTES) -> bytes:
    """Decode the base64 ``data`` of a request.

    Raises
    ------
    RequestRejected
        ``SIS.0012`` missing, ``SIS.0604`` over `limit` encoded bytes, ``SIS.0601`` not base64.
    """
    if data is None or data == "":
        raise reject("SIS.0012", field=field)
    if not isinstance(data, str):
        raise reject("SIS.0601", f"'{field}' is invalid: expected a base64 string, got {type(data).__name__}")
    if len(data) > limit:
        raise reject("SIS.0604", f"'{field}' is too large: {len(data)} bytes of base64, at most {limit}")
    try:
        return base64.b64decode(data.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise reject("SIS.0601", f"'{field}' is invalid: not base64") from None


# -- request parsing --------------------------------------------------------------------------

_SHORT_CONFIG_KEYS: Final = frozenset({
    "audio_format", "property", "add_punc", "digit_norm", "need_word_info", "vocabulary_id",
    "auto_language_detect", "user_words",
})


@dataclass(frozen=True)
class ShortAudioRequest:
    """A validated ``POST /v1/{project_id}/asr/short-audio`` body."""

    audio: bytes
    audio_format: str
    property: str
    rate_hz: int
    add_punc: bool
    digit_norm: bool
    need_word_info: bool
    vocabulary_id: str | None
    user_words: tuple[str, ...]


def parse_short_audio(body: object) -> ShortAudioRequest:
    """Validate a v1 short-audio body (§11.1).

    Raises
    ------
    RequestRejected
        ``SIS.0601`` (body shape, bad base64), ``SIS.0012`` (missing ``data``/``config``/
        ``audio_format``/``property``), ``SIS.0031`` (unknown config key), ``SIS.0032`` (bad
        value), ``SIS.0604`` (over 4 MB).
    """
    if not isinstance(body, dict):
        raise reject("SIS.0601", f"the request body must be a JSON object, got {type(body).__name__}")
    config = body.get("config")
    if config is None:
        raise reject("SIS.0012", field="config")
    if not isinstance(config, dict):
        raise reject("SIS.0032", field="config")
    for key in config:
        if key not in _SHORT_CONFIG_KEYS:
            raise reject("SIS.0031", field=key)
    for key in ("audio_format", "property"):
        if key not in config:
            raise reject("SIS.0012", field=key)
    audio_format = config["audio_format"]
    if not isinstance(audio_format, str) or (audio_format not in RAW_FORMATS and audio_format != "wav"
                                             and audio_format not in COMPRESSED_FORMATS):
        raise reject("SIS.0032", "'audio_format' is invalid")
    info = lookup_property(Interface.SHORT_AUDIO, config["property"])
    if info is None:
        raise reject("SIS.0032", f"'property' is invalid: {config['property']!r} is not a short-audio property")
    if audio_format in RAW_FORMATS and AudioFormat.from_sis(audio_format).rate_hz != info.rate_hz:
        raise reject("SIS.0301")
    add_punc = yes_no(config, "add_punc")
    digit_norm = yes_no(config, "digit_norm", "yes")
    yes_no(config, "auto_language_detect")
    need_word_info = yes_no(config, "need_word_info")
    vid = config.get("vocabulary_id")
    if vid is not None and not isinstance(vid, str):
        raise reject("SIS.0032", field="vocabulary_id")
    user_words = config.get("user_words", [])
    if (not isinstance(user_words, list) or len(user_words) > MAX_USER_WORDS
            or not all(isinstance(w, str) and w.strip() for w in user_words)):
        raise reject("SIS.0032", f"'user_words' is invalid: expected a list of at most {MAX_USER_WORDS} words")
    audio = decode_base64(body.get("data"))
    return ShortAudioRequest(audio, audio_format, info.name, info.rate_hz, add_punc, digit_norm, need_word_info,
                             vid or None, tuple(w.strip() for w in user_words))


async def _short_audio_pcm(data: bytes, audio_format: str, rate_hz: int | None) -> tuple[np.ndarray, int]:
    audio = await asyncio.to_thread(decode_audio, data, audio_format, max_ms=MAX_SHORT_AUDIO_MS)
    if rate_hz is not None:
        check_rate(audio, rate_hz, audio_format)
    if audio.container in ("raw", "wav") and audio.n_channels != 1:
        raise reject("SIS.0602", f"short audio must be mono, got {audio.n_channels} channels")
    if audio.duration_ms > MAX_SHORT_AUDIO_MS:
        raise reject("SIS.0604", f"the audio is too long: {audio.duration_ms} ms, at most {MAX_SHORT_AUDIO_MS} ms")
    pcm = await asyncio.to_thread(to_engine_pcm, audio)
    return pcm, audio.duration_ms


async def handle_short_audio(request: Any) -> Any:
    """``POST /v1/{project_id}/asr/short-audio``."""
    body = await read_json(request, code="SIS.0601")
    req = parse_short_audio(body)
    project_id = request.match_info["project_id"]
    words = get_vocabulary_words(request.app, project_id, req.vocabulary_id) + list(req.user_words)
    pcm, duration_ms = await _short_audio_pcm(req.audio, req.audio_format, req.rate_hz)
    hyp = await recognize_pcm(request.app, pcm, prop=req.property, hot_words=words,
                              word_info=req.need_word_info, add_punc=req.add_punc, digit_norm=req.digit_norm)
    record_audio(request, duration_ms)
    result: dict[str, Any] = {"text": hyp.text, "score": hyp.score}
    if req.need_word_info:
        result["word_info"] = word_info_json(hyp)
    return json_response({"trace_id": str(uuid.uuid4()), "result": result})


_LEGACY_ENCODE_TYPES: Final = ("wav", "mp3", "wma", "amr", "ac3", "ogg", "aac", "m4a", "opus")


async def handle_legacy_sentence(request: Any) -> Any:
    """``POST /v1.0/voice/asr/sentence`` (seed 003): ``data`` or ``url``, ``encode_type``,
    ``sample_rate`` (``"8k"`` default / ``"16k"``) -> ``{"result": {"words": ...}}``."""
    body = await read_json(request, code="SIS.0601")
    if not isinstance(body, dict):
        raise reject("SIS.0601", "the request body must be a JSON object")
    encode_type = body.get("encode_type", "wav")
    if encode_type not in _LEGACY_ENCODE_TYPES:
        raise reject("SIS.0032", f"'encode_type' is invalid: expected one of {', '.join(_LEGACY_ENCODE_TYPES)}")
    sample_rate = body.get("sample_rate", "8k")
    if sample_rate not in ("8k", "16k"):
        raise reject("SIS.0032", f"'sample_rate' is invalid: expected '8k' or '16k', got {sample_rate!r}")
    rate_hz = 8000 if sample_rate == "8k" else 16000
    if body.get("data") not in (None, ""):  # data wins over url (seed 003)
        audio = decode_base64(body["data"])
    elif body.get("url") not in (None, ""):
        audio = await fetch_url(body["url"], request.app[FETCH_POLICY], too_large_code="SIS.0604")
        if len(audio) > MAX_DATA_BASE64_BYTES * 3 // 4:
            raise reject("SIS.0604", f"the audio is too large: {len(audio)} bytes, at most "
                                     f"{MAX_DATA_BASE64_BYTES * 3 // 4}")
    else:
        raise reject("SIS.0012", "'data' or 'url' is required")
    rs = request.app[REST_SETTINGS]
    prop = rs.legacy_property_8k if rate_hz == 8000 else rs.legacy_property_16k
    # sample_rate describes wav audio; other encodings carry their own rate.
    pcm, duration_ms = await _short_audio_pcm(audio, encode_type, rate_hz if encode_type == "wav" else None)
    hyp = await recognize_pcm(request.app, pcm, prop=prop, add_punc=True)
    record_audio(request, duration_ms)
    return json_response({"result": {"words": hyp.text}})


ROUTES: Final = (
    ("POST", "/v1/{project_id}/asr/short-audio", handle_short_audio, INTERFACE),
    ("POST", "/v1.0/voice/asr/sentence", handle_legacy_sentence, INTERFACE),
)
