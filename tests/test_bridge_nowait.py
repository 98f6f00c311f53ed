"""The bridge's non-waiting path to SIS: ``RasrStream.send_nowait`` (frames written inline by the
producer's call when the send task is idle, ``drop_oldest`` with the lost ms returned) and the
SIS leg feeding it straight from the telephony reader (drops mapped back to call time)."""

from __future__ import annotations

import asyncio

import pytest
from client_fakes import AK, PROJECT, SK, FakeSisServer

from sis_stream.audio.formats import AudioFormat
from sis_stream.bridges import CallbackSink, EventHub, LegOptions, SessionSettings
from sis_stream.bridges.metrics import BridgeMetrics
from sis_stream.bridges.session import BridgeContext, Call
from sis_stream.client.framing import Framer
from sis_stream.client.rasr import RasrClient
from sis_stream.errors import LocalProtocolError
from sis_stream.protocol import AkSk, Ended

U8 = {"audio_format": "ulaw8k8bit", "property": "chinese_8k_common"}
FRAME = 800  # 100 ms of ulaw8k8bit


async def _until(pred, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not pred():
            await asyncio.sleep(0.01)


async def test_send_nowait_writes_whole_frames_inline_and_they_arrive_intact() -> None:
    payload = bytes(range(256)) * 10  # 3.2 frames, every byte value
    async with FakeSisServer() as srv, RasrClient(srv.url, PROJECT, AkSk(AK, SK)) as c, \
            c.stream("continue", U8, pacing=None, overflow="drop_oldest", max_buffer_ms=1000) as s:
        runner = s._runner  # type: ignore[attr-defined]
        await _until(lambda: runner._idle)  # the send task parked in its idle wait
        assert s.send_nowait(payload[:500]) == 0.0 and s.stats.frames_sent == 0  # no whole frame yet
        assert s.send_nowait(payload[500:1700]) == 0.0
        assert s.stats.frames_sent == 2  # written by this call, no task switch in between
        assert s.send_nowait(payload[1700:]) == 0.0 and s.stats.frames_sent == 3
        assert runner._idle  # the send task was never woken
        await s.end()  # flushes the 0.2-frame tail
        async for ev in s:
            if isinstance(ev, Ended):
                break
        assert s.stats.frames_sent == 4
    assert srv.connections[0].audio == payload


async def test_send_nowait_drops_oldest_and_returns_the_lost_ms() -> None:
    async with FakeSisServer() as srv, RasrClient(srv.url, PROJECT, AkSk(AK, SK)) as c, \
            c.stream("continue", U8, pacing="realtime", overflow="drop_oldest", max_buffer_ms=1000) as s:
        # paced: nothing is sent inline, and no await in this loop lets the send task take a frame
        lost = [s.send_nowait(bytes([i]) * FRAME) for i in range(30)]  # 3 s into a 1 s buffer
        assert lost == [0.0] * 10 + [100.0] * 20
        assert s.framer.stats.dropped_ms == 2000
        assert s.framer.buffered_bytes == 10 * FRAME
        await s.end()
        async for ev in s:
            if isinstance(ev, Ended):
                break
    assert srv.connections[0].audio == b"".join(bytes([i]) * FRAME for i in range(20, 30))  # the newest second


async def test_send_nowait_refuses_block_streams_and_non_bytes() -> None:
    async with FakeSisServer() as srv, RasrClient(srv.url, PROJECT, AkSk(AK, SK)) as c:
        async with c.stream("continue", U8, pacing=None) as s:  # overflow="block" (the default)
            with pytest.raises(LocalProtocolError, match="needs overflow='drop_oldest' or 'error'"):
                s.send_nowait(bytes(FRAME))
            with pytest.raises(TypeError, match="bytes-like"):
                s.send_nowait("audio")  # type: ignore[arg-type]
        async with c.stream("continue", U8, pacing=None, overflow="drop_oldest") as s:
            await s.end()
            with pytest.raises(LocalProtocolError, match="after end"):
                s.send_nowait(bytes(FRAME))


class _FramerStream:
    """A stand-in SIS stream for the leg: a real drop_oldest Framer, frames taken by hand."""

    def __init__(self, max_buffer_ms: int) -> None:
        self.framer = Framer(AudioFormat(8000, "pcm", 2), 100, max_buffer_ms=max_buffer_ms, overflow="drop_oldest")

    def send_nowait(self, data: bytes) -> float:
        fr = self.framer
        before = fr.stats.dropped_ms
        fr.feed(data)
        return fr.stats.dropped_ms - before


async def test_leg_feeds_the_open_stream_directly_and_maps_its_drops_to_call_time() -> None:
    events: list[dict] = []
    hub = EventHub([CallbackSink(events.append)])
    ctx = BridgeContext(None, hub, BridgeMetrics(), LegOptions(max_buffer_ms=1000))
    call = Call(ctx, "audiosocket", "c1", (0,), AudioFormat(8000, "pcm", 2), SessionSettings())
    leg = call.legs[0]
    stream = _FramerStream(1000)
    leg._stream = stream  # what _send_loop does once the session is open
    frame = bytes(320)
    for _ in range(50):  # 1 s: fits
        leg.push(frame)
    assert leg.lost_ms == 0 and stream.framer.frames_ready == 10
    for _ in range(5):  # the stream sends 500 ms
        stream.framer.pop()
    for _ in range(100):  # 2 s more: 1.5 s of the oldest is dropped, at stream time 500 ms
        leg.push(frame)
    assert leg.audio_ms == 3000 and leg.lost_ms == 1500
    assert leg.sent_ms == 1500  # the stream's time line: what it kept
    assert leg.call_ms(400) == 400 and leg.call_ms(500) == 2000 and leg.call_ms(1400) == 2900
    assert ctx.metrics.listener("audiosocket").lost_ms == 1500
    leg._fail()  # the leg dies: what the stream still held is lost too, and all later audio
    assert leg.lost_ms == 2500
    leg.push(frame)
    assert leg.lost_ms == 2520 and stream.framer.buffered_bytes == 16000


def test_leg_options_queue_must_hold_a_frame() -> None:
    with pytest.raises(ValueError, match=r"max_buffer_ms must be >= frame_ms .* max_buffer_ms=200 with frame_ms=500"):
        LegOptions(max_buffer_ms=200, frame_ms=500)
    assert LegOptions(max_buffer_ms=1000, frame_ms=1000).frame_ms == 1000
