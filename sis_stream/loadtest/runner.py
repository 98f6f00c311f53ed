"""The load test run: stream slots, the ramp, the clock, the end of the run and its result.

One event loop runs everything: one :class:`~sis_stream.client.rasr.RasrClient` (one aiohttp
session) shared by every stream, ``N`` slot tasks that each play corpus files one call after
another, and one supervisor that follows the ramp (starting slots), samples the timeline once
a second (active calls, harness CPU) and drives the progress line. The client's shared pacing
timer paces every stream.

The end: when ``duration_s`` is up no call starts any more; calls in flight finish normally for
up to ``drain_s`` and are then cut (END with cancel). Ctrl-C (`stop` set) cuts every call at
once. Either way each cut call gets END with cancel and its answer, then the run waits at most
:data:`CUT_WAIT_S` for them, cancels what is left (each stream then closes its websocket) and
returns a result: the report is always written.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from ..client.pacing import PacingStats
from .call import CallHandle, CallSpec, run_call
from .corpus import Corpus
from .metrics import Aggregate, CallResult, LiveCounters
from .plan import RampPlan
from .target import LoadTarget, check_target

__all__ = ["CUT_WAIT_S", "LoadTest", "LoadTestOptions", "RunState", "thread_run_wait_s"]

logger = logging.getLogger(__name__)

#: Longest wait for cut calls to get their END answer before their tasks are cancelled.
CUT_WAIT_S: Final = 10.0
#: Timeline rows kept (one per second: a day).
MAX_TIMELINE: Final = 86_400
#: Golden-ratio stride over the corpus so slots do not play the same file in step.
_STRIDE: Final = 0.6180339887498949


@dataclass(frozen=True)
class LoadTestOptions:
    """How a run is driven.

    Attributes
    ----------
    spec : CallSpec
        How each call is made.
    duration_s : float
        Calls start until this many seconds have passed.
    plan : RampPlan
        Concurrency over time.
    drain_s : float or None
        How long calls in flight at the end may still run before they are cut (default: the
        longest file at the run's pace plus 10 s, so every call can finish).
    tick_s : float
        Supervisor period (ramp granularity).
    freeze_gc : bool
        Collect once and ``gc.freeze()`` the objects alive when the load starts (the corpus,
        the server and client set-up), so the garbage collector's full passes during the run do
        not walk them again (pauses there delay every stream's frames); undone at the end. It
        changes process-wide state, so it is off by default (the command line turns it on).
    """

    spec: CallSpec
    duration_s: float
    plan: RampPlan
    drain_s: float | None = None
    tick_s: float = 0.05
    freeze_gc: bool = False


@dataclass
class RunState:
    """What the supervisor exposes to the progress line and to a capacity controller."""

    origin: float = 0.0
    target: int = 0
    active: int = 0
    calls_started: int = 0
    finished: int = 0
    stopping: bool = False
    interrupted: bool = False
    phase: str = "ramp"
    timeline: list[dict[str, Any]] = field(default_factory=list)
    #: Pacing of calls that ended since the controller last reset it (per capacity level).
    window_pacing: PacingStats = field(default_factory=PacingStats)


Controller = Callable[["LoadTest"], Awaitable[None]]


def thread_run_wait_s() -> tuple[float, float] | None:
    """CPU time and run-queue wait of this thread (Linux ``/proc/thread-self/schedstat``): the
    wait is time the event loop was ready to run but another process had the CPU."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            run_ns, wait_ns = f.read().split()[:2]
        return int(run_ns) / 1e9, int(wait_ns) / 1e9
    except (OSError, ValueError):
        return None


def _load1() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # not available on this platform
        return None


class LoadTest:
    """A load test of one target with one corpus.

    Parameters
    ----------
    target : LoadTarget
        Checked with :func:`~sis_stream.loadtest.target.check_target` (non-loopback needs
        credentials).
    corpus : Corpus
    options : LoadTestOptions
    on_tick : callable, optional
        Called about once a second with this object (the progress line).
    """

    def __init__(self, target: LoadTarget, corpus: Corpus, options: LoadTestOptions, *,
                 on_tick: Callable[[LoadTest], None] | None = None) -> None:
        self.target = check_target(target)
        self.corpus = corpus
        self.options = options
        self.spec: CallSpec = options.spec
        self.state = RunState()
        self.agg = Aggregate()
        self.on_tick = on_tick
        self.target_override: int | None = None
        self._handles: set[CallHandle] = set()
        self._slots: dict[int, asyncio.Task[None]] = {}
        self._client: Any = None
        self.live = LiveCounters()
        self._lag_max = 0.0  # the supervisor's longest late wake-up since the last sample (s)
        self._rw_last: tuple[float, float] | None = None
        #: Run-queue wait of the event loop's thread over the run (s), None where unknown.
        self.wait_s: float | None = None
        self.wall_s = 0.0
        self.cpu_s = 0.0
        self.load1: tuple[float | None, float | None] = (None, None)
        longest = max(i.duration_ms for i in corpus.items) / 1000.0
        #: Seconds calls in flight at the end may still run.
        self.drain_s = options.drain_s if options.drain_s is not None else \
            longest / self.spec.pacer().speed + 10.0

    # -- the client ------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _open_client(self) -> AsyncIterator[Any]:
        t = self.target
        if t.embedded:
            assert t.server_factory is not None
            settings = dict(t.server_settings)
            settings.setdefault("max_sessions", max(256, self.options.plan.streams + 16))
            async with t.server_factory(engine_overrides=t.engine_overrides, **settings) as server, \
                    server.client() as client:
                yield client
            return
        from ..client.rasr import RasrClient
        from ..client.transport import TransportOptions

        assert t.endpoint is not None and t.auth is not None
        async with RasrClient(t.endpoint, t.project_id, t.auth,
                              options=TransportOptions(verify_tls=t.verify_tls)) as client:
            yield client

    # -- slots -----------------------------------------------------------------------------------

    def _wanted(self) -> int:
        if self.target_override is not None:
            return self.target_override
        return self.options.plan.target(self._now() - self.state.origin)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def _slot(self, slot: int) -> None:
        n = len(self.corpus.items)
        k = 0
        base = int(slot * _STRIDE * n) if n > 1 else 0
        st = self.state
        while not st.stopping and slot < st.target:
            item = self.corpus.items[(base + k) % n]
            k += 1
            h = CallHandle()
            self._handles.add(h)
            st.active += 1
            index = st.calls_started
            st.calls_started += 1
            try:
                res = await run_call(self._client, item, self.spec, index=index, slot=slot,
                                     origin=st.origin, handle=h, live=self.live)
            finally:
                st.active -= 1
                self._handles.discard(h)
            self._account(res)
            if h.cut_requested:
                return

    def _account(self, res: CallResult) -> None:
        self.agg.add(res)
        self.state.finished += 1
        if res.pacing is not None:
            self.state.window_pacing.merge(res.pacing)

    def _spawn(self) -> None:
        # Slots below the target that have no running task get one. A slot's task only ends
        # when the run stops or the target fell below it, so after a full pass the scan only
        # needs to run again when the target changes (or once a second, below).
        st = self.state
        loop = asyncio.get_running_loop()
        for slot in range(st.target):
            task = self._slots.get(slot)
            if task is None or task.done():
                self._slots[slot] = loop.create_task(self._slot(slot), name=f"sis-stream-loadtest-slot-{slot}")

    def cut_all(self, reason: str) -> None:
        """Cut every call in flight (END with cancel)."""
        for h in list(self._handles):
            h.cut(reason)

    # -- the clock -------------------------------------------------------------------------------

    def recent_p95_ms(self, window_s: float = 10.0) -> float | None:
        """p95 final latency of the last `window_s` seconds (the progress line)."""
        now_s = self._now() - self.state.origin
        vals = sorted(v for t, v in self.live.recent if t >= now_s - window_s)
        if not vals:
            return None
        return vals[min(len(vals) - 1, int(0.95 * len(vals)))]

    def _sample(self, cpu0: float, last: list[float]) -> None:
        st = self.state
        now = self._now()
        cpu = time.process_time()
        dt = now - last[0]
        rw = thread_run_wait_s()
        wait_pct = None
        if rw is not None and self._rw_last is not None and dt > 0:
            wait_pct = round(100.0 * (rw[1] - self._rw_last[1]) / dt, 1)
        self._rw_last = rw
        row = {"t": round(now - st.origin, 3), "active": st.active, "target": st.target,
               "cpu_pct": round(100.0 * (cpu - last[1]) / dt, 1) if dt > 0 else None,
               "wait_pct": wait_pct,
               "finished": st.finished, "finals": self.live.finals, "errors": self.live.errors,
               "loop_lag_ms": round(max(0.0, self._lag_max) * 1000.0, 1)}
        self._lag_max = 0.0
        last[0], last[1] = now, cpu
        if len(st.timeline) < MAX_TIMELINE:
            st.timeline.append(row)
        if self.on_tick is not None:
            try:
                self.on_tick(self)
            except Exception:  # a display must never stop the run
                logger.exception("progress display failed")

    async def _sleep_or_stop(self, stop: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

    # -- the run ---------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None, controller: Controller | None = None) -> LoadTest:
        """Run the load until the duration is up, the controller returns, or `stop` is set.

        Returns this object (its :attr:`agg`, :attr:`state`, :attr:`wall_s`, :attr:`cpu_s`).
        """
        stop = stop or asyncio.Event()
        st = self.state
        loop = asyncio.get_running_loop()
        async with self._open_client() as client:
            self._client = client
            cpu0 = time.process_time()
            st.origin = loop.time()
            load0 = _load1()
            rw0 = self._rw_last = thread_run_wait_s()
            last = [st.origin, cpu0]
            next_sample = st.origin + 1.0
            frozen = False
            if self.options.freeze_gc:
                gc.collect()
                gc.freeze()
                frozen = True
            spawned_for = -1
            ctl = loop.create_task(controller(self), name="sis-stream-loadtest-controller") \
                if controller is not None else None
            try:
                while not stop.is_set():
                    now = loop.time()
                    if ctl is not None:
                        if ctl.done():
                            break
                    elif now - st.origin >= self.options.duration_s:
                        break
                    st.target = self._wanted()
                    if st.target != spawned_for:
                        self._spawn()
                        spawned_for = st.target
                    if now >= next_sample:
                        self._spawn()
                        self._sample(cpu0, last)
                        next_sample = max(next_sample + 1.0, now + 0.5)
                    wake = loop.time() + self.options.tick_s
                    await self._sleep_or_stop(stop, self.options.tick_s)
                    self._lag_max = max(self._lag_max, loop.time() - wake)
                st.stopping = True
                st.phase = "drain"
                if stop.is_set():
                    st.interrupted = True
                    self.cut_all("interrupted")
                else:
                    deadline = loop.time() + self.drain_s
                    while self._pending() and loop.time() < deadline and not stop.is_set():
                        if loop.time() >= next_sample:
                            self._sample(cpu0, last)
                            next_sample = max(next_sample + 1.0, loop.time() + 0.5)
                        wake = loop.time() + 0.1
                        await self._sleep_or_stop(stop, 0.1)
                        self._lag_max = max(self._lag_max, loop.time() - wake)
                    if stop.is_set():
                        st.interrupted = True
                    self.cut_all("interrupted" if stop.is_set() else "drain")
                await self._finish_slots()
            finally:
                if ctl is not None and not ctl.done():
                    ctl.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await ctl
                if frozen:
                    gc.unfreeze()
                self.wall_s = loop.time() - st.origin
                self.cpu_s = time.process_time() - cpu0
                self.load1 = (load0, _load1())
                rw1 = thread_run_wait_s()
                if rw0 is not None and rw1 is not None:
                    self.wait_s = rw1[1] - rw0[1]
                self._sample(cpu0, last)
                st.phase = "done"
                if ctl is not None and ctl.done() and not ctl.cancelled() and ctl.exception() is not None:
                    raise ctl.exception()  # type: ignore[misc]
        return self

    def _pending(self) -> list[asyncio.Task[None]]:
        return [t for t in self._slots.values() if not t.done()]

    async def _finish_slots(self) -> None:
        pending = self._pending()
        if pending:
            await asyncio.wait(pending, timeout=CUT_WAIT_S)
        pending = self._pending()
        for t in pending:
            t.cancel()
        if pending:
            logger.warning("%d call(s) did not end within %.0f s of END cancel; cancelled", len(pending), CUT_WAIT_S)
            await asyncio.wait(pending, timeout=5.0)
