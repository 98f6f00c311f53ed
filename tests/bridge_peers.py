"""Fake telephony peers for the bridge tests and benchmark, written from the wire specifications.

- :class:`FakeAsterisk`: an AudioSocket client like Asterisk's ``AudioSocket()`` application:
  the 16-byte UUID frame first, then 320-byte slin frames (kind 0x10) every 20 ms (or as fast as
  possible), optional DTMF (0x03), hangup (0x00); it reads the frames the bridge sends back and
  records when each silence frame arrived.
- :class:`FakeFreeSwitch`: mod_audio_fork: an aiohttp websocket client with the subprotocol
  ``audio.drachtio.org``, one TEXT metadata frame, BINARY L16 frames of varying sizes, the
  zero-length BINARY frame of ``graceful-shutdown``; it collects the in-band JSON messages.
- :class:`FakeTwilio`: Twilio media streams: TEXT JSON ``connected``, ``start`` (tracks,
  ``customParameters``, ``mediaFormat``), ``media`` with base64 u-law (from sis_stream's G.711
  encoder) and string numbers, ``dtmf``, ``mark``, ``stop``.

Every wait is bounded; nothing here sleeps on the wall clock to check timing (the tests check
order and content; timing figures are for the benchmark).
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np

from sis_stream.audio.codec import ulaw_encode

PERIOD_S = 0.020


def as_frame(kind: int, payload: bytes = b"") -> bytes:
    return bytes((kind,)) + len(payload).to_bytes(2, "big") + payload


@dataclass
class AsteriskResult:
    call_uuid: str
    frames_sent: int = 0
    silence_times: list[float] = field(default_factory=list)  # loop time of each silence frame
    other_frames: list[tuple[int, bytes]] = field(default_factory=list)
    hangup_received: bool = False
    closed_by_peer: bool = False
    first_silence_after_s: float | None = None


class FakeAsterisk:
    """One AudioSocket call.

    Parameters
    ----------
    host, port : where the bridge listens
    pcm : int16 array (8 kHz) to send, in 320-byte frames (the last one zero-padded)
    realtime : send one frame per 20 ms on a drift-free clock (True) or as fast as possible
    """

    def __init__(self, host: str, port: int, pcm: np.ndarray | None = None, *, realtime: bool = False,
                 call_uuid: str | None = None, dtmf: str = "", tail_ms: int = 0) -> None:
        self.host, self.port = host, port
        data = b"" if pcm is None else np.asarray(pcm, "<i2").tobytes()
        if len(data) % 320:
            data += bytes(320 - len(data) % 320)
        data += bytes(320 * (tail_ms // 20))
        self.data = data
        self.realtime = realtime
        self.call_uuid = call_uuid or str(uuid.uuid4())
        self.dtmf = dtmf
        self.result = AsteriskResult(self.call_uuid)

    async def _reader(self, reader: asyncio.StreamReader, t_uuid: float) -> None:
        loop = asyncio.get_running_loop()
        res = self.result
        try:
            while True:
                head = await reader.readexactly(3)
                n = int.from_bytes(head[1:3], "big")
                payload = await reader.readexactly(n) if n else b""
                if head[0] == 0x10 and n == 320 and payload == bytes(320):
                    now = loop.time()
                    if res.first_silence_after_s is None:
                        res.first_silence_after_s = now - t_uuid
                    res.silence_times.append(now)
                elif head[0] == 0x00:
                    res.hangup_received = True
                else:
                    res.other_frames.append((head[0], payload))
        except (asyncio.IncompleteReadError, ConnectionError):
            res.closed_by_peer = True

    async def run(self, *, hangup: bool = True, timeout_s: float = 60.0, linger_s: float = 0.0) -> AsteriskResult:
        """Connect, send everything, hang up (or just close), return what was observed."""
        return await asyncio.wait_for(self._run(hangup, linger_s), timeout_s)

    async def _run(self, hangup: bool, linger_s: float) -> AsteriskResult:
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        writer.write(as_frame(0x01, uuid.UUID(self.call_uuid).bytes))
        t0 = loop.time()
        rtask = loop.create_task(self._reader(reader, t0))
        try:
            half = len(self.data) // 640 * 320
            for i in range(0, len(self.data), 320):
                if self.realtime:
                    delay = t0 + (i // 320 + 1) * PERIOD_S - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                writer.write(as_frame(0x10, self.data[i:i + 320]))
                self.result.frames_sent += 1
                if i == half and self.dtmf:
                    for d in self.dtmf:
                        writer.write(as_frame(0x03, d.encode()))
                if not self.realtime and i % (320 * 50) == 0:
                    await writer.drain()
                    await asyncio.sleep(0)
            await writer.drain()
            if linger_s:  # stay on the line (until the bridge hangs up, at most linger_s)
                await asyncio.wait([rtask], timeout=linger_s)
            if rtask.done():
                return self.result
            if hangup:
                writer.write(as_frame(0x00))
                await writer.drain()
            else:
                writer.close()
            await asyncio.wait_for(rtask, 10.0)  # the bridge closes promptly after a hangup
        finally:
            rtask.cancel()
            await asyncio.gather(rtask, return_exceptions=True)
            writer.close()
        return self.result


async def raw_audiosocket(host: str, port: int, data: bytes, *, timeout_s: float = 10.0) -> tuple[bytes, bool]:
    """Send raw bytes, then read until the bridge closes; returns (bytes received, closed)."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(data)
    await writer.drain()
    got = bytearray()
    closed = False
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    closed = True
                    break
                got += chunk
    except TimeoutError:
        pass
    finally:
        writer.close()
    return bytes(got), closed


@dataclass
class WsResult:
    messages: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    protocol: str | None = None


class FakeFreeSwitch:
    """One mod_audio_fork connection.

    Parameters
    ----------
    url : ws://host:port/path
    metadata : str or dict (sent verbatim as the first TEXT frame; None = no metadata frame)
    pcm : int16 array (mono) or (n, 2) array (stereo, interleaved on the wire)
    """

    def __init__(self, url: str, metadata: Any, pcm: np.ndarray, *, seed: int = 0, realtime: bool = False,
                 rate_hz: int = 8000) -> None:
        self.url = url
        self.metadata = metadata
        self.data = np.asarray(pcm, "<i2").tobytes()
        self.rng = random.Random(seed)
        self.realtime = realtime
        self.rate_hz = rate_hz
        self.frame_bytes = 2 * (pcm.shape[1] if pcm.ndim == 2 else 1)

    async def run(self, *, end_frame: bool = True, timeout_s: float = 60.0) -> WsResult:
        return await asyncio.wait_for(self._run(end_frame), timeout_s)

    async def _run(self, end_frame: bool) -> WsResult:
        out = WsResult()
        loop = asyncio.get_running_loop()
        async with aiohttp.ClientSession() as http, \
                http.ws_connect(self.url, protocols=("audio.drachtio.org",), autoping=True) as ws:
            out.protocol = ws.protocol

            async def read() -> None:
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        out.messages.append(json.loads(msg.data))

            rtask = loop.create_task(read())
            if self.metadata is not None:
                await ws.send_str(self.metadata if isinstance(self.metadata, str) else json.dumps(self.metadata))
            t0 = loop.time()
            pos = 0
            sample_bytes = self.frame_bytes
            while pos < len(self.data):
                # mod_audio_fork flushes whatever accumulated: 1..6 media-bug frames of 20 ms
                n = self.rng.randint(1, 6) * (self.rate_hz // 50) * sample_bytes
                chunk = self.data[pos:pos + n]
                pos += len(chunk)
                if self.realtime:
                    delay = t0 + pos / (self.rate_hz * sample_bytes) - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await ws.send_bytes(chunk)
            if end_frame:
                await ws.send_bytes(b"")
                await asyncio.wait_for(rtask, 30.0)  # the bridge sends the finals, then closes
            else:
                await ws.close()
                rtask.cancel()
                await asyncio.gather(rtask, return_exceptions=True)
            out.close_code = ws.close_code
        return out


class FakeTwilio:
    """One Twilio media stream.

    Parameters
    ----------
    url : ws://host:port/path
    tracks : {"inbound": pcm, "outbound": pcm} (8 kHz int16; u-law encoded here)
    """

    def __init__(self, url: str, tracks: dict[str, np.ndarray], *, call_sid: str = "CA" + "0" * 32,
                 params: dict[str, str] | None = None, dtmf: str = "") -> None:
        self.url = url
        self.tracks = {k: ulaw_encode(np.asarray(v, "<i2").tobytes()) for k, v in tracks.items()}
        self.call_sid = call_sid
        self.stream_sid = "MZ" + uuid.uuid4().hex
        self.params = params or {}
        self.dtmf = dtmf
        self.seq = 0

    def _msg(self, event: str, **body: Any) -> str:
        self.seq += 1
        d = {"event": event, "sequenceNumber": str(self.seq), "streamSid": self.stream_sid}
        d.update(body)
        return json.dumps(d)

    async def run(self, *, timeout_s: float = 60.0, before_start: list[Any] | None = None) -> WsResult:
        return await asyncio.wait_for(self._run(before_start or []), timeout_s)

    async def _run(self, before_start: list[Any]) -> WsResult:
        out = WsResult()
        async with aiohttp.ClientSession() as http, http.ws_connect(self.url) as ws:
            await ws.send_str(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            for m in before_start:
                await (ws.send_bytes(m) if isinstance(m, bytes) else ws.send_str(m))
            names = list(self.tracks)
            await ws.send_str(self._msg("start", start={
                "accountSid": "AC" + "0" * 32, "streamSid": self.stream_sid, "callSid": self.call_sid,
                "tracks": names, "customParameters": self.params,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}))
            longest = max(len(v) for v in self.tracks.values())
            chunk = 0
            for i in range(0, longest, 160):
                for name, data in self.tracks.items():
                    part = data[i:i + 160]
                    if not part:
                        continue
                    chunk += 1
                    await ws.send_str(self._msg("media", media={
                        "track": name, "chunk": str(chunk), "timestamp": str(i // 8),
                        "payload": base64.b64encode(part).decode()}))
                if i == longest // 320 * 160 and self.dtmf:
                    for d in self.dtmf:
                        await ws.send_str(self._msg("dtmf", dtmf={"track": "inbound_track", "digit": d}))
                    await ws.send_str(self._msg("mark", mark={"name": "half"}))
                if i % (160 * 50) == 0:
                    await asyncio.sleep(0)
            await ws.send_str(self._msg("stop", stop={"accountSid": "AC" + "0" * 32, "callSid": self.call_sid}))
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    out.messages.append(json.loads(msg.data))
            out.close_code = ws.close_code
        return out
