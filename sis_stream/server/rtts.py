"""Real-time TTS websocket (sis-protocol.md §11.6): ``GET /v1/{project_id}/rtts`` (upgrade).

Per connection: the client sends one text frame
``{"command": "START", "text": ..., "config": {"audio_format": "pcm"|"alaw"|"ulaw", "sample_rate",
"property", "speed", "pitch", "volume"}}``; the server answers ``{"resp_type": "START", "trace_id"}``,
then the synthesised audio (the same synthesis as ``POST /tts``, :mod:`.synthesis`) in binary frames of
``FRAME_MS`` each, then ``{"resp_type": "END", "trace_id", "reason": "NORMAL"}``.

Errors: a bad START is answered ``ERROR`` (``error_code``/``error_msg``, the TTS codes) and, since
no task started, nothing else; a START while a task is running or after one finished is ``ERROR
SIS.0418`` (one synthesis task per connection); a synthesis failure after START (espeak-ng
missing: ``SIS.0401``) is ``ERROR`` followed by ``END`` with reason ``ERROR``; no START within the
server's idle timeout (20 s) is ``FATAL_ERROR SIS.0416`` ("waited too long for the text") and the
server closes the connection; a connection left idle that long after its task ended is closed
without a message. Every message carries ``trace_id``. ``subtitle`` is not supported
(``SIS.0415``).

Metrics: one call per synthesis task under ``real-time-text-to-speech`` (status 200, or the
error's HTTP status), reported by this handler (the middleware skips websocket answers).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
import weakref
from typing import Any, Final

from aiohttp import WSMsgType, web

from ..errors import RequestRejected
from ..protocol.errors import CATALOGUE, reject
from .intake import loads_json
from .state import METRICS, SETTINGS
from .synthesis import encode_audio, parse_tts_config, synthesize_pcm
from .wsframes import StrictWebSocketResponse

__all__ = ["FRAME_MS", "ROUTES", "handle_rtts", "setup"]

logger = logging.getLogger(__name__)

#: Audio per binary frame.
FRAME_MS: Final = 100
INTERFACE: Final = "real-time-text-to-speech"
_CONNECTIONS: Final = web.AppKey("rtts_connections", weakref.WeakSet)


async def _send(ws: web.WebSocketResponse, body: dict[str, Any]) -> None:
    await ws.send_str(json.dumps(body, ensure_ascii=False))


def _err(resp_type: str, trace_id: str, exc: RequestRejected) -> dict[str, Any]:
    return {"resp_type": resp_type, "trace_id": trace_id, "error_code": exc.error_code, "error_msg": exc.error_msg}


def _observe(request: web.Request, status: int, t0: float, audio_ms: float = 0.0) -> None:
    request.app[METRICS].observe(INTERFACE, status, (time.perf_counter() - t0) * 1000.0,
                                 request.match_info.get("project_id"), audio_ms)


async def _synthesize(ws: web.WebSocketResponse, request: web.Request, msg: dict[str, Any], trace_id: str) -> bool:
    """Run one START; False if it was rejected before a task started."""
    t0 = time.perf_counter()
    try:
        params = parse_tts_config(msg.get("text"), msg.get("config"), formats=("pcm", "alaw", "ulaw"),
                                  default_format="pcm")
    except RequestRejected as exc:
        await _send(ws, _err("ERROR", trace_id, exc))
        _observe(request, exc.http_status, t0)
        return False
    await _send(ws, {"resp_type": "START", "trace_id": trace_id})
    try:
        pcm = await asyncio.to_thread(synthesize_pcm, params)
    except RequestRejected as exc:
        await _send(ws, _err("ERROR", trace_id, exc))
        await _send(ws, {"resp_type": "END", "trace_id": trace_id, "reason": "ERROR"})
        _observe(request, exc.http_status, t0)
        return True
    step = params.rate_hz * FRAME_MS // 1000
    for i in range(0, len(pcm), step):
        await ws.send_bytes(encode_audio(pcm[i:i + step], params.rate_hz, params.audio_format))
    await _send(ws, {"resp_type": "END", "trace_id": trace_id, "reason": "NORMAL"})
    _observe(request, 200, t0, len(pcm) * 1000.0 / params.rate_hz)
    return True


async def handle_rtts(request: web.Request) -> web.StreamResponse:
    """The RTTS websocket (see the module docstring)."""
    ws = StrictWebSocketResponse(max_msg_size=64 * 1024)
    await ws.prepare(request)
    conns = request.app.get(_CONNECTIONS)
    if conns is not None:
        conns.add(ws)
    trace_id = str(uuid.uuid4())
    idle_s = float(getattr(request.app[SETTINGS], "idle_timeout_s", 20.0))
    started = False
    try:
        while not ws.closed:
            try:
                msg = await asyncio.wait_for(ws.receive(), timeout=idle_s)
            except asyncio.TimeoutError:
                if not started:  # no text came: FATAL_ERROR, then the server closes
                    await _send(ws, {"resp_type": "FATAL_ERROR", "trace_id": trace_id, "error_code": "SIS.0416",
                                     "error_msg": CATALOGUE["SIS.0416"].message})
                await ws.close()  # after a finished task: an idle connection is simply closed
                break
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                break
            if msg.type != WSMsgType.TEXT:
                await _send(ws, _err("ERROR", trace_id, reject("SIS.0032", "binary frames are not accepted: "
                                                                           "send the START command as text")))
                continue
            try:
                body = loads_json(msg.data, "SIS.0032")
            except RequestRejected as exc:
                await _send(ws, _err("ERROR", trace_id, exc))
                continue
            if not isinstance(body, dict) or body.get("command") != "START":
                await _send(ws, _err("ERROR", trace_id, reject("SIS.0032", "'command' is invalid: expected START")))
                continue
            if started:
                await _send(ws, _err("ERROR", trace_id, reject("SIS.0418")))
                continue
            started = await _synthesize(ws, request, body, trace_id)
    finally:
        if conns is not None:
            conns.discard(ws)
    return ws


async def _close_all(app: web.Application) -> None:
    for ws in list(app.get(_CONNECTIONS, ())):
        await ws.close(code=1001, message=b"server shutdown")


def setup(app: web.Application) -> None:
    """Track RTTS connections so a shutdown closes them."""
    app[_CONNECTIONS] = weakref.WeakSet()
    app.on_shutdown.append(_close_all)


ROUTES: Final = (
    ("GET", "/v1/{project_id}/rtts", handle_rtts, INTERFACE),
)
