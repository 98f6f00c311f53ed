"""The shared pacing timer (``scheduler.PacingScheduler``): one loop timer for many paced streams."""

from __future__ import annotations

import asyncio

import pytest
from client_fakes import AK, PROJECT, SK, FakeSisServer

from sis_stream.client.rasr import RasrClient
from sis_stream.protocol import AkSk, Ended
from sis_stream.client.scheduler import PacingScheduler
from sis_stream.client.transport import TransportOptions

U8 = {"audio_format": "ulaw8k8bit", "property": "chinese_8k_common"}


class _FakeLoop:
    """Just what the scheduler uses: time(), create_future(), call_at(); timers fired by hand."""

    def __init__(self, real: asyncio.AbstractEventLoop) -> None:
        self.now = 0.0
        self.real = real
        self.timers: list[tuple[float, object]] = []

    def time(self) -> float:
        return self.now

    def create_future(self) -> asyncio.Future:
        return self.real.create_future()

    def call_at(self, when: float, cb):
        loop = self

        class _Handle:
            cancelled = False

            def cancel(self) -> None:
                self.cancelled = True
                loop.timers.remove(entry)

        h = _Handle()
        entry = (when, cb)
        self.timers.append(entry)
        return h

    def fire_at(self, t: float) -> None:
        """Advance to ``t`` and run the one armed timer (it must be due)."""
        assert len(self.timers) == 1, self.timers
        when, cb = self.timers.pop()
        assert when <= t + 1e-12, (when, t)
        self.now = t
        cb()


async def test_coalesces_deadlines_within_the_window_and_never_wakes_earlier():
    loop = _FakeLoop(asyncio.get_running_loop())
    sched = PacingScheduler(loop, coalesce_s=0.001)  # type: ignore[arg-type]
    futs = [sched.wait_until(t) for t in (1.0008, 1.0, 1.0004, 1.005)]
    # one timer only, armed coalesce_s before the earliest deadline
    assert [w for w, _ in loop.timers] == [pytest.approx(0.999)]
    assert len(sched) == 4
    loop.fire_at(0.9995)  # horizon 1.0005: the deadlines 1.0 and 1.0004 are woken together
    assert [f.done() for f in futs] == [False, True, True, False]
    # at most one fire per window: the next one at the horizon (1.0005), not at 1.0008 - 0.001
    assert [w for w, _ in loop.timers] == [pytest.approx(1.0005)]
    loop.fire_at(1.0005)
    assert [f.done() for f in futs] == [True, True, True, False]
    assert [w for w, _ in loop.timers] == [pytest.approx(1.004)]
    loop.fire_at(1.004)
    assert all(f.done() for f in futs)
    assert loop.timers == [] and len(sched) == 0
    assert (sched.fires, sched.wakeups) == (3, 4)


async def test_earlier_deadline_rearms_and_cancelled_waiters_are_skipped():
    loop = _FakeLoop(asyncio.get_running_loop())
    sched = PacingScheduler(loop, coalesce_s=0.0)  # type: ignore[arg-type]
    late = sched.wait_until(2.0)
    early = sched.wait_until(1.0)
    assert [w for w, _ in loop.timers] == [1.0]  # the 2.0 timer was cancelled and replaced
    early.cancel()
    loop.fire_at(1.0)  # the cancelled waiter is dropped, not resolved
    assert early.cancelled() and not late.done() and sched.wakeups == 0
    loop.fire_at(2.0)
    assert late.done() and sched.wakeups == 1 and loop.timers == []


@pytest.mark.parametrize("bad", [-0.001, 0.02, True, "1ms"])
def test_coalesce_window_is_validated(bad):
    with pytest.raises(ValueError, match="coalesce_s must lie in"):
        PacingScheduler(_FakeLoop(None), bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pacing_coalesce_s must lie in"):
        TransportOptions(pacing_coalesce_s=bad)


async def test_streams_share_the_loop_scheduler(monkeypatch):
    """Default clock and sleep: every paced wait of every stream goes to the loop's one scheduler.

    Real time, a few frames: how many frames actually wait depends on the machine (a frame that
    is already due when the sender reaches it is sent without waiting), so the counts are
    bounded, not exact, and nothing checks wall-clock pacing values. The whole test is bounded
    by a generous deadline.
    """
    loop = asyncio.get_running_loop()
    sched = PacingScheduler.for_loop(loop, TransportOptions().pacing_coalesce_s)
    assert PacingScheduler.for_loop(loop, TransportOptions().pacing_coalesce_s) is sched
    used: list[PacingScheduler] = []
    for name in ("wait_until", "call_at"):
        real = getattr(PacingScheduler, name)

        def spy(self, *args, _real=real, **kwargs):
            used.append(self)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(PacingScheduler, name, spy)
    before = sched.wakeups
    async with FakeSisServer() as srv, RasrClient(srv.url, PROJECT, AkSk(AK, SK)) as c:

        async def one(byte: int) -> int:
            async with c.stream("continue", U8, frame_ms=20, keepalive_s=None) as s:
                await s.send(bytes([byte]) * 160 * 4)
                await s.end()
                async for ev in s:
                    if isinstance(ev, Ended):
                        break
                assert s.stats.pacing.count == 4
                return s.stats.frames_sent

        got = await asyncio.wait_for(asyncio.gather(one(1), one(2), one(3)), 60)
        assert got == [4, 4, 4]
    # frame 0 of each stream is due at once; frames 1-3 (9 in all) may wait on the shared
    # timer: at least one did (20 ms apart, they cannot all have been late), none elsewhere.
    assert used and all(u is sched for u in used)
    assert 1 <= sched.wakeups - before <= 9
    assert len(sched) == 0
