"""Twilio Media Streams listener (websocket; Twilio is the client; TEXT JSON frames only).

Messages: ``connected``, ``start`` (``callSid``, ``streamSid``, ``tracks``, ``customParameters``,
``mediaFormat`` = audio/x-mulaw 8000 mono), ``media`` (``track``, base64 ``payload``; numbers are
strings), ``dtmf``, ``mark``, ``stop``. Every track is one SIS session (``both_tracks``: channel
``inbound`` and channel ``outbound``). The u-law bytes pass through untouched as ``ulaw8k8bit``
when the property is an 8 kHz one (otherwise they are decoded and resampled). The call id is the
``callSid``; SIS settings come from ``customParameters`` (Twilio drops query strings from stream
URLs). A BINARY frame, invalid JSON, media before ``start`` or a bad ``mediaFormat`` end the
connection with an ``error`` event and a clean close.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import Any, Final

from aiohttp import WSCloseCode, WSMsgType, web

from ..audio.formats import AudioFormat
from ..errors import RequestRejected
from .session import Call, ChannelLeg
from .wslistener import WsListener

__all__ = ["TwilioListener", "track_name"]

logger = logging.getLogger(__name__)

_ULAW8K: Final = AudioFormat(8000, "ulaw", 1)


def track_name(track: str) -> str:
    """``inbound_track`` -> ``inbound`` (media messages say ``inbound``, dtmf ``inbound_track``)."""
    return track.removesuffix("_track")


class _Bad(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class TwilioListener(WsListener):
    """Accepts Twilio media-stream websockets on ``host:port`` (any path)."""

    source = "twilio"

    async def handle(self, request: web.Request, ws: web.WebSocketResponse) -> None:
        peer = request.remote or "?"
        call: Call | None = None
        legs: dict[str, ChannelLeg] = {}
        reason = "peer_closed"
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    raise _Bad("bad_frame", "binary frame on a Twilio media stream (Twilio sends TEXT JSON only)")
                if msg.type != WSMsgType.TEXT:
                    break
                try:
                    obj = json.loads(msg.data)
                except ValueError:
                    raise _Bad("bad_json", f"a frame that is not JSON: {msg.data[:80]!r}") from None
                if not isinstance(obj, dict) or not isinstance(obj.get("event"), str):
                    raise _Bad("bad_message", "a message without an 'event' string")
                event = obj["event"]
                if event == "media":
                    if call is None:
                        raise _Bad("bad_order", "media before start")
                    media = obj.get("media")
                    if not isinstance(media, dict) or not isinstance(media.get("payload"), str):
                        raise _Bad("bad_message", "media message without media.payload")
                    leg = legs.get(track_name(str(media.get("track", "inbound"))))
                    if leg is None:
                        raise _Bad("bad_message", f"media for track {media.get('track')!r}, which start did not "
                                                  f"announce (tracks: {', '.join(legs)})")
                    try:
                        data = base64.b64decode(media["payload"], validate=True)
                    except (binascii.Error, ValueError):
                        raise _Bad("bad_payload", "media.payload is not valid base64") from None
                    call.mark_audio()
                    leg.push(data)
                elif event == "start":
                    if call is not None:
                        raise _Bad("bad_order", "a second start message")
                    call = self._start(obj, peer, ws)
                    legs = {str(leg.channel): leg for leg in call.legs}
                    call.start()
                elif event == "stop":
                    reason = "hangup"
                    break
                elif event == "dtmf":
                    if call is not None:
                        d = obj.get("dtmf") if isinstance(obj.get("dtmf"), dict) else {}
                        call.dtmf(str(d.get("digit", "")), track_name(str(d.get("track", "inbound"))))
                elif event in ("connected", "mark"):
                    continue
                else:
                    logger.debug("twilio: ignoring event %r", event)
            else:
                reason = "shutdown" if self.ctx.draining else "peer_closed"
        except _Bad as exc:
            cid = call.call_id if call is not None else f"twilio-{peer}"
            self.error(cid, 0, exc.code, str(exc), peer=peer)
            reason = "protocol_error"
            await ws.close(code=WSCloseCode.UNSUPPORTED_DATA if exc.code == "bad_frame"
                           else WSCloseCode.POLICY_VIOLATION, message=exc.code.encode())
        if call is not None:
            await call.finish(reason)
        if not ws.closed:
            await ws.close()

    def _start(self, obj: dict[str, Any], peer: str, ws: web.WebSocketResponse) -> Call:
        start = obj.get("start")
        if not isinstance(start, dict):
            raise _Bad("bad_message", "start message without a start object")
        call_id = str(start.get("callSid") or obj.get("streamSid") or start.get("streamSid") or f"twilio-{peer}")
        fmt = start.get("mediaFormat") or {}
        enc, rate, ch = fmt.get("encoding"), fmt.get("sampleRate"), fmt.get("channels")
        if (enc, str(rate), str(ch)) != ("audio/x-mulaw", "8000", "1"):
            raise _Bad("bad_format", f"mediaFormat must be audio/x-mulaw 8000 Hz 1 channel, got {enc} {rate} Hz "
                                     f"{ch} channel(s)")
        tracks = start.get("tracks") or ["inbound"]
        if not isinstance(tracks, list) or not tracks or len(tracks) > 2:
            raise _Bad("bad_message", f"start.tracks must list 1 or 2 tracks, got {tracks!r}")
        names = [track_name(str(t)) for t in tracks]
        params = start.get("customParameters") or {}
        if not isinstance(params, dict):
            raise _Bad("bad_message", "start.customParameters must be an object")
        try:
            settings = self.settings.with_overrides(params)
            return Call(self.ctx, self.source, call_id, names, _ULAW8K, settings,
                        info={"peer": peer, "stream_sid": str(obj.get("streamSid") or start.get("streamSid") or ""),
                              "tracks": names})
        except (ValueError, RequestRejected) as exc:
            raise _Bad("bad_config", f"bad SIS configuration for this call: {exc}") from None
