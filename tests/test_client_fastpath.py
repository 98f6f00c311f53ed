"""The pump's per-frame fast path: ClientSession.send_audio, PacingScheduler.call_at, direct frames."""

from __future__ import annotations

import asyncio

import pytest
from client_fakes import AK, PROJECT, SK, FakeSisServer
from test_client_scheduler import _FakeLoop

from sis_stream.client.rasr import RasrClient
from sis_stream.errors import LocalProtocolError
from sis_stream.protocol import (
    AkSk,
    AudioFrame,
    ClientSession,
    Ended,
    Mode,
    StartConfig,
    StartStream,
)
from sis_stream.client.scheduler import PacingScheduler

U8 = {"audio_format": "ulaw8k8bit", "property": "chinese_8k_common"}


def _streaming_session() -> ClientSession:
    cs = ClientSession("continue-stream")
    cs.send(StartStream(StartConfig(**U8, mode=Mode.CONTINUE_STREAM)))
    cs.receive('{"resp_type": "START", "trace_id": "t"}')
    return cs


def test_send_audio_matches_send_in_streaming():
    a, b = _streaming_session(), _streaming_session()
    assert a.send_audio(b"\xff" * 800) == b"\xff" * 800
    assert b.send(AudioFrame(b"\xff" * 800)) == [b"\xff" * 800]
    assert (a.frames_sent, a.bytes_sent) == (b.frames_sent, b.bytes_sent) == (1, 800)
    assert a.send_audio(bytearray(b"\x01" * 160)) == b"\x01" * 160  # the general path converts


def test_send_audio_rejects_like_send():
    with pytest.raises(LocalProtocolError, match="audio before the START answer"):
        cs = ClientSession("continue-stream")
        cs.send(StartStream(StartConfig(**U8, mode=Mode.CONTINUE_STREAM)))
        cs.send_audio(b"\xff" * 800)
    with pytest.raises(LocalProtocolError, match="exceeds the shard maximum"):
        _streaming_session().send_audio(b"\xff" * 100_000)
    with pytest.raises(LocalProtocolError, match="not allowed in client state IDLE"):
        ClientSession("continue-stream").send_audio(b"\xff" * 800)
    with pytest.raises(TypeError, match="AudioFrame.data must be bytes"):
        _streaming_session().send_audio("text")  # type: ignore[arg-type]


def test_send_audio_drops_after_the_server_ended():
    cs = _streaming_session()
    cs.receive('{"resp_type": "END", "trace_id": "t", "reason": "NORMAL"}')
    assert cs.send_audio(b"\xff" * 800) is None and cs.dropped_frames == 1


async def test_call_at_runs_callbacks_with_their_token_and_counts_live_ones():
    loop = _FakeLoop(asyncio.get_running_loop())
    sched = PacingScheduler(loop, coalesce_s=0.001)  # type: ignore[arg-type]
    seen: list[int] = []

    def cb(token: int) -> bool:
        seen.append(token)
        if len(seen) == 1:  # re-arming for a due time waits for the next timer
            assert sched.call_at(1.0, cb) not in seen
        return token != stale

    stale = sched.call_at(1.0005, cb)
    first = sched.call_at(1.0, cb)
    fut = sched.wait_until(1.0002)
    loop.fire_at(0.9995)
    assert seen[:2] == [first, stale] and fut.done() and len(seen) == 2
    assert (sched.fires, sched.wakeups) == (1, 2)  # first + the future; the stale one not counted
    loop.fire_at(1.0005)  # the re-armed callback, on the next timer (one fire per window)
    assert len(seen) == 3 and loop.timers == [] and len(sched) == 0


async def test_a_failing_callback_does_not_stop_the_timer():
    real = asyncio.get_running_loop()
    errors: list[dict] = []
    real.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    try:
        loop = _FakeLoop(real)
        loop.call_exception_handler = real.call_exception_handler  # type: ignore[attr-defined]
        sched = PacingScheduler(loop, coalesce_s=0.0)  # type: ignore[arg-type]

        def bad(token: int) -> bool:
            raise RuntimeError("boom")

        sched.call_at(1.0, bad)
        fut = sched.wait_until(1.0)
        loop.fire_at(1.0)
        assert fut.done() and isinstance(errors[0]["exception"], RuntimeError)
    finally:
        real.set_exception_handler(None)


async def test_paced_frames_go_out_through_the_fast_path_and_arrive_intact():
    """Real aiohttp client websocket: frames are written by the direct (masked) writer; the
    server (aiohttp, which unmasks and checks the frames) gets every byte in order."""
    payload = bytes(range(256)) * 5  # 8 frames of 160 bytes, every byte value
    async with FakeSisServer() as srv, RasrClient(srv.url, PROJECT, AkSk(AK, SK)) as c, \
            c.stream("continue", U8, frame_ms=20, keepalive_s=None) as s:
        runner = s._runner  # type: ignore[attr-defined]
        await s.send(payload)
        await asyncio.sleep(0)
        assert runner._fastw is not None
        await s.end()
        async for ev in s:
            if isinstance(ev, Ended):
                break
        assert s.stats.frames_sent == 8 and s.stats.pacing.count == 8
    assert srv.connections[0].audio == payload
