"""Pacing through the real pump with a fake clock, and resource hygiene over 1,000 sessions."""

from __future__ import annotations

import asyncio
import os

import pytest
from client_fakes import AK, PROJECT, SK, FakeSisServer
from helpers import FakeClock

from sis_stream.client.rasr import RasrClient
from sis_stream.protocol import AkSk, Ended, FinalResult

U8 = {"audio_format": "ulaw8k8bit", "property": "chinese_8k_common"}


def _fake_time() -> tuple[FakeClock, list[float], object]:
    clock = FakeClock(100.0)
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)
        clock.advance(s)
        await asyncio.sleep(0)

    return clock, slept, sleep


@pytest.fixture
async def server():
    async with FakeSisServer() as srv:
        yield srv


async def _paced_run(server, pacing, n_frames=20, frame_ms=100):
    clock, slept, sleep = _fake_time()
    async with RasrClient(server.url, PROJECT, AkSk(AK, SK)) as c:  # noqa: SIM117 - the stream needs the client
        async with c.stream("continue", U8, pacing=pacing, frame_ms=frame_ms, clock=clock, sleep=sleep,
                            max_buffer_ms=n_frames * frame_ms, keepalive_s=None) as s:
            await s.send(bytes(8 * frame_ms * n_frames))
            await s.end()
            evs = [e async for e in s]
    return s, slept, evs, clock


async def test_realtime_pacing_is_exact_on_a_fake_clock(server):
    # 20 frames of 100 ms: sent at t0 + k * 0.1 exactly; the pacing error is 0 for every frame.
    s, slept, evs, _clock = await _paced_run(server, "realtime")
    p = s.stats.pacing
    assert p.count == 20 and p.max == 0.0 and p.min == 0.0
    assert sum(slept) == pytest.approx(1.9, abs=1e-9)
    assert isinstance(evs[-1], Ended)


async def test_x4_pacing(server):
    s, slept, _, _ = await _paced_run(server, "x4")
    assert s.stats.pacing.count == 20 and s.stats.pacing.max == 0.0
    assert sum(slept) == pytest.approx(1.9 / 4, abs=1e-9)


async def test_burst_then_realtime(server):
    # The first 0.5 s of audio (5 frames + the frame due at t0) go at once, then 100 ms apart.
    s, slept, _, _ = await _paced_run(server, {"policy": "burst-then-realtime", "burst_s": 0.5})
    assert sum(slept) == pytest.approx(1.9 - 0.5, abs=1e-9)
    assert s.stats.pacing.max == 0.0


async def test_20ms_frames_paced(server):
    s, slept, _evs, _ = await _paced_run(server, "realtime", n_frames=50, frame_ms=20)
    assert s.stats.pacing.count == 50 and s.stats.pacing.max == 0.0
    assert sum(slept) == pytest.approx(49 * 0.02, abs=1e-9)
    assert [len(f) for f in server.connections[0].frames] == [160] * 50


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_no_leaked_tasks_or_fds_after_1000_sessions(server):
    # 1,000 short sessions (20 at a time, no pacing); afterwards no task and no fd is left over.
    async with RasrClient(server.url, PROJECT, AkSk(AK, SK)) as c:

        async def one(k: int) -> bool:
            async with c.stream("short", U8, pacing=None) as s:
                await s.send(bytes([k % 256]) * 800)
                await s.end()
                evs = [e async for e in s]
            return isinstance(evs[-1], Ended) and any(isinstance(e, FinalResult) for e in evs)

        await asyncio.gather(*(one(k) for k in range(20)))  # warm-up: pools, caches
        await asyncio.sleep(0.05)
        tasks0, fds0 = len(asyncio.all_tasks()), _open_fds()
        ok = 0
        for batch in range(50):
            res = await asyncio.gather(*(one(batch * 20 + k) for k in range(20)))
            ok += sum(res)
        await asyncio.sleep(0.1)  # let the server side finish its handlers
        tasks1, fds1 = len(asyncio.all_tasks()), _open_fds()
        assert c._streams == set()
    assert ok == 1000
    assert tasks1 <= tasks0, [t.get_name() for t in asyncio.all_tasks()]
    assert fds1 <= fds0 + 2  # keep-alive sockets may differ by a couple; never grows with N
    assert len(server.connections) == 1020
