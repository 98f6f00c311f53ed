"""Text to speech (sis-protocol.md §11.5): ``POST /v1/{project_id}/tts`` and the legacy
``POST /v1.0/voice/tts``, with espeak-ng through :mod:`.synthesis` (the parameters, their mapping
onto espeak-ng, and the audio formats are described there).

Without libespeak-ng these routes answer ``SIS.0401`` "speech synthesis is not available: ..."
(HTTP 500) saying how to install it.

Answers: v1 ``{"trace_id", "result": {"data": base64 audio}}``; legacy
``{"result": {"data": base64 wav}}``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid
from typing import Any, Final

from ..protocol.errors import reject
from .rest import json_response, read_json
from .synthesis import TtsParams, encode_audio, parse_legacy_tts, parse_tts_config, synthesize_pcm

__all__ = ["ROUTES", "handle_legacy_tts", "handle_tts"]

logger = logging.getLogger(__name__)

INTERFACE: Final = "text-to-speech-customization"


def _synthesize_encoded(p: TtsParams) -> bytes:
    return encode_audio(synthesize_pcm(p), p.rate_hz, p.audio_format)


async def handle_tts(request: Any) -> Any:
    """``POST /v1/{project_id}/tts``."""
    body = await read_json(request, code="SIS.0415")
    if not isinstance(body, dict):
        raise reject("SIS.0415", "the request body is invalid: expected a JSON object")
    for key in body:
        if key not in ("text", "config"):
            raise reject("SIS.0415", f"the request body is invalid: '{key}' is not supported")
    params = parse_tts_config(body.get("text"), body.get("config"))
    audio = await asyncio.to_thread(_synthesize_encoded, params)
    return json_response({"trace_id": str(uuid.uuid4()),
                          "result": {"data": base64.b64encode(audio).decode("ascii")}})


async def handle_legacy_tts(request: Any) -> Any:
    """``POST /v1.0/voice/tts`` -> ``{"result": {"data": base64 wav}}``."""
    params = parse_legacy_tts(await read_json(request, code="SIS.0415"))
    audio = await asyncio.to_thread(_synthesize_encoded, params)
    return json_response({"result": {"data": base64.b64encode(audio).decode("ascii")}})


ROUTES: Final = (
    ("POST", "/v1/{project_id}/tts", handle_tts, INTERFACE),
    ("POST", "/v1.0/voice/tts", handle_legacy_tts, INTERFACE),
)
