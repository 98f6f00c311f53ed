"""FreeSWITCH mod_audio_fork listener (websocket; FreeSWITCH is the client).

``uuid_audio_fork <uuid> start ws://HOST:PORT/PATH <mono|mixed|stereo> <8k|16k|...> [bug] [metadata]``
connects with the subprotocol ``audio.drachtio.org`` (echoed), sends the metadata argument as
one TEXT frame, then BINARY L16 little-endian frames of any size. A zero-length BINARY frame
(``graceful-shutdown``) asks for the final results: the bridge sends END, forwards the last
finals in-band and closes.

The sample rate and channel layout come from the metadata JSON (``sampleRate``: any multiple of
8000; ``mixType``: ``mono``, ``mixed`` or ``stereo``) or else from the URL path (segments such
as ``/16000`` or ``/16k`` and ``/stereo``); default 8000 mono. ``stereo`` = two SIS sessions,
channel 0 (left, caller) and 1 (right, callee). The call id is the metadata's ``uuid`` (or
``callId`` / ``call_id``), else a generated one. SIS settings in the metadata
(:data:`~sis_stream.bridges.session.OVERRIDE_KEYS`) override the listener's.

In-band: each SIS RESULT goes back as ``{"type": "transcription", "data": <the SIS RESULT>}``
(``data`` also carries ``channel``), errors as ``{"type": "error", "data": {"code", "message",
"channel"}}``; FreeSWITCH raises them as ``mod_audio_fork::transcription`` / ``::error`` events.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any, Final

import numpy as np
from aiohttp import WSCloseCode, WSMsgType, web

from ..audio.formats import AudioFormat
from ..errors import RequestRejected
from .session import Call
from .wslistener import Outbox, WsListener, receive_first

__all__ = ["METADATA_TIMEOUT_S", "SUBPROTOCOL", "AudioForkListener", "parse_layout"]

#: The websocket subprotocol mod_audio_fork asks for.
SUBPROTOCOL: Final = "audio.drachtio.org"
#: Seconds FreeSWITCH may take to send the metadata frame.
METADATA_TIMEOUT_S: Final = 10.0
_MIX: Final = ("mono", "mixed", "stereo")


def parse_layout(path: str, metadata: dict[str, Any]) -> tuple[int, str]:
    """``(rate_hz, mix)`` from the metadata, else the URL path, else ``(8000, "mono")``.

    Raises
    ------
    ValueError
        A rate that is not a positive multiple of 8000, or an unknown mix type.
    """
    rate: Any = None
    mix: Any = None
    for seg in path.strip("/").split("/"):
        s = seg.lower()
        m = re.fullmatch(r"(\d+)(k?)", s)
        if m:
            rate = int(m.group(1)) * (1000 if m.group(2) else 1)
        elif s in _MIX:
            mix = s
    for key in ("sampleRate", "sample_rate", "rate"):
        if key in metadata:
            rate = metadata[key]
            break
    for key in ("mixType", "mix_type", "mix"):
        if key in metadata:
            mix = metadata[key]
            break
    if isinstance(rate, str) and re.fullmatch(r"\d+k?", rate.strip().lower()):
        r = rate.strip().lower()
        rate = int(r[:-1]) * 1000 if r.endswith("k") else int(r)
    rate = 8000 if rate is None else rate
    if type(rate) is not int or rate <= 0 or rate % 8000:
        raise ValueError(f"sample rate must be a multiple of 8000 (8000, 16000, 24000, ...), got {rate!r}")
    mix = "mono" if mix is None else mix
    if mix not in _MIX:
        raise ValueError(f"mix type must be one of {', '.join(_MIX)}, got {mix!r}")
    return rate, mix


class AudioForkListener(WsListener):
    """Accepts mod_audio_fork websockets on ``host:port`` (any path)."""

    source = "audio_fork"
    protocols = (SUBPROTOCOL,)

    async def handle(self, request: web.Request, ws: web.WebSocketResponse) -> None:
        peer = request.remote or "?"
        first = await receive_first(ws, METADATA_TIMEOUT_S)
        if first is None or first.type != WSMsgType.TEXT:
            got = "nothing" if first is None else ("a zero-length binary frame" if first.type == WSMsgType.BINARY
                                                   and not first.data else first.type.name)
            msg = f"missing metadata: the first frame must be the TEXT metadata frame, got {got}"
            self.error(f"audio_fork-{peer}", 0, "no_metadata", msg, peer=peer)
            await _reject(ws, "no_metadata", msg)
            return
        text = first.data
        try:
            metadata = json.loads(text) if text.strip() else {}
        except ValueError:
            metadata = None
        if not isinstance(metadata, dict):
            metadata = {"metadata": text}
        call_id = str(metadata.get("uuid") or metadata.get("callId") or metadata.get("call_id")
                      or f"af-{uuid.uuid4().hex}")
        try:
            rate, mix = parse_layout(request.path, metadata)
            settings = self.settings.with_overrides(metadata)
            channels = (0, 1) if mix == "stereo" else (0,)
            outbox = Outbox(ws)
            call = Call(self.ctx, self.source, call_id, channels, AudioFormat(rate, "pcm", 2), settings,
                        inband=outbox.put, info={"peer": peer, "sample_rate": rate, "mix": mix})
        except (ValueError, RequestRejected) as exc:
            self.error(call_id, 0, "bad_config", f"bad call setup: {exc}", peer=peer)
            await _reject(ws, "bad_config", f"bad call setup: {exc}")
            return
        call.start()
        reason = await self._pump(ws, call, 4 if mix == "stereo" else 2)
        await call.finish(reason)
        await outbox.drain()
        if not ws.closed:
            await ws.close()

    async def _pump(self, ws: web.WebSocketResponse, call: Call, block: int) -> str:
        legs = call.legs
        carry = b""
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                data = msg.data
                if not data:
                    return "hangup"
                if carry:
                    data = carry + data
                cut = len(data) - len(data) % block
                carry = data[cut:]
                if not cut:
                    continue
                call.mark_audio()
                if block == 2:
                    legs[0].push(data[:cut] if carry else data)
                else:
                    pcm = np.frombuffer(data, "<i2", cut // 2)
                    legs[0].push(pcm[0::2].tobytes())
                    legs[1].push(pcm[1::2].tobytes())
            elif msg.type == WSMsgType.TEXT:
                continue  # e.g. the optional text of `uuid_audio_fork ... stop <text>`
            else:
                break
        return "shutdown" if self.ctx.draining else "peer_closed"


async def _reject(ws: web.WebSocketResponse, code: str, message: str) -> None:
    if not ws.closed:
        try:
            await ws.send_str(json.dumps({"type": "error", "data": {"code": code, "message": message}}))
        except (ConnectionError, RuntimeError):
            pass
        await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=code.encode())
