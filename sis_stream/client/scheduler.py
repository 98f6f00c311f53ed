"""The shared pacing timer: one loop timer for the paced sends of all streams on an event loop
(:class:`PacingScheduler`)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import weakref
from collections.abc import Callable
from typing import Final

__all__ = ["MAX_PACING_COALESCE_S", "PacingScheduler"]

#: Upper bound of ``TransportOptions.pacing_coalesce_s`` (how early a frame may be sent).
MAX_PACING_COALESCE_S: Final = 0.01


class PacingScheduler:
    """One timer per event loop for the paced sends of all streams on it.

    ``asyncio.sleep`` per frame costs every stream its own ``TimerHandle`` (a Python object,
    pushed on the loop's heap with Python-level comparisons) and, when N streams are due at
    different instants, one event-loop iteration (an ``epoll_wait``) per frame. Here the
    deadlines (absolute, from each stream's :class:`~sis_stream.client.pacing.Pacer`: the schedule
    stays drift-free) go into one heap of plain tuples, and a single loop timer is armed for the
    earliest one. When it fires, every waiter due within ``coalesce_s`` is woken in the same
    loop iteration, and the timer fires at most once per ``coalesce_s`` window (the next fire
    is at the earliest deadline minus ``coalesce_s``, but not before the end of the window just
    served), so 1000 streams with phases spread over a frame need at most one loop wake-up per
    ``coalesce_s`` instead of 1000 per frame. A waiter is never woken late by the coalescing,
    and at most ``coalesce_s`` early.

    Two kinds of waiters: :meth:`wait_until` (a future for a task to await) and :meth:`call_at`
    (a callback run from the timer, used by the stream runner's fast path, which sends its due
    frames right there without waking its task). Heap entries are ``(when, token)`` tuples of
    atomic values, which the GC stops tracking at once.

    The heap is bounded by the number of waiting streams (one entry per paced stream; a
    cancelled or disarmed waiter's entry leaves the heap when its deadline passes). Use
    :meth:`for_loop` to get the loop's shared instance.

    Parameters
    ----------
    loop : asyncio.AbstractEventLoop
    coalesce_s : float
        Wake-up window in seconds (0 <= coalesce_s <= 0.01).
    """

    _instances: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, PacingScheduler]] = \
        weakref.WeakKeyDictionary()

    def __init__(self, loop: asyncio.AbstractEventLoop, coalesce_s: float = 0.001) -> None:
        if isinstance(coalesce_s, bool) or not isinstance(coalesce_s, (int, float)) \
                or not 0 <= coalesce_s <= MAX_PACING_COALESCE_S:
            raise ValueError(f"coalesce_s must lie in [0, {MAX_PACING_COALESCE_S:g}] s, got {coalesce_s!r}")
        # weak: the per-loop cache is keyed weakly by the loop, so no strong path back to it
        self._loop_ref = weakref.ref(loop)
        self.coalesce_s = float(coalesce_s)
        self._heap: list[tuple[float, int]] = []  # (when, token)
        self._futs: dict[int, asyncio.Future[None]] = {}  # token -> waiter (wait_until)
        self._cbs: dict[int, Callable[[int], bool]] = {}  # token -> callback (call_at)
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        #: Loop timers fired and waiters woken so far (wakeups / fires = coalescing factor).
        self.fires = 0
        self.wakeups = 0
        self._firing = False

    @classmethod
    def for_loop(cls, loop: asyncio.AbstractEventLoop, coalesce_s: float = 0.001) -> PacingScheduler:
        """The shared scheduler of ``loop`` for this ``coalesce_s`` (created on first use)."""
        per_loop = cls._instances.get(loop)
        if per_loop is None:
            per_loop = cls._instances[loop] = {}
        sched = per_loop.get(coalesce_s)
        if sched is None:
            sched = per_loop[coalesce_s] = cls(loop, coalesce_s)
        return sched

    def __len__(self) -> int:
        return len(self._heap)

    def wait_until(self, when: float) -> asyncio.Future[None]:
        """A future resolved (with None) once ``loop.time() >= when - coalesce_s``.

        Await it; cancelling it (or the awaiting task) is safe.
        """
        loop = self._loop_ref()
        if loop is None:
            raise RuntimeError("PacingScheduler used after its event loop was garbage-collected")
        fut = loop.create_future()
        self._futs[self._push(loop, when)] = fut
        return fut

    def call_at(self, when: float, callback: Callable[[int], bool]) -> int:
        """Call ``callback(token)`` from the shared timer once ``loop.time() >= when - coalesce_s``.

        The callback-driven form of :meth:`wait_until`, for a sender that does its per-frame
        work synchronously (no task wake-up per frame). It runs inside the timer callback, so
        it must be short and should not raise (an exception goes to the loop's exception
        handler); it returns whether it did anything (counted in :attr:`wakeups`). There is
        no cancel: a caller that no longer wants the call ignores it, by comparing the token
        (the int returned here) with the one it armed last. A callback that calls
        :meth:`call_at` again for a time already due runs on the next timer, i.e. after the
        loop has polled its sockets.

        Returns
        -------
        int
            The token passed to ``callback``.
        """
        loop = self._loop_ref()
        if loop is None:
            raise RuntimeError("PacingScheduler used after its event loop was garbage-collected")
        token = self._push(loop, when)
        self._cbs[token] = callback
        return token

    def _push(self, loop: asyncio.AbstractEventLoop, when: float) -> int:
        # Heap entries are (float, int) tuples: the GC untracks them at its first look, so the
        # per-frame entries of a thousand streams never reach the older generations.
        token = next(self._seq)
        heapq.heappush(self._heap, (when, token))
        if when < self._timer_at and not self._firing:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = when
            self._timer = loop.call_at(when - self.coalesce_s, self._fire)
        return token

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = float("inf")
        loop = self._loop_ref()
        if loop is None:
            return
        self.fires += 1
        heap = self._heap
        now = loop.time()
        horizon = now + self.coalesce_s
        pop = heapq.heappop
        # Take every due entry first: a callback re-arming for a due time lands in the heap
        # and runs on the next timer, never in this pass (it cannot starve the loop).
        due = []
        while heap and heap[0][0] <= horizon:
            due.append(pop(heap)[1])
        self._firing = True
        woken = 0
        futs, cbs = self._futs, self._cbs
        try:
            for token in due:
                fut = futs.pop(token, None)
                if fut is not None:
                    if not fut.done():
                        fut.set_result(None)
                        woken += 1
                    continue
                try:
                    if cbs.pop(token)(token):
                        woken += 1
                except Exception as exc:  # noqa: BLE001 - one bad callback must not stop the timer
                    loop.call_exception_handler({"message": "PacingScheduler callback failed",
                                                 "exception": exc})
        finally:
            self._firing = False
            self.wakeups += woken
            if heap:
                # At most one fire per window: every deadline left is past `horizon`, so firing
                # again at `horizon` still wakes each before its deadline (never late, at most
                # coalesce_s early), and dense deadlines (1000 streams) share one loop wake-up
                # per window instead of one per loop iteration.
                self._timer_at = heap[0][0]
                self._timer = loop.call_at(max(self._timer_at - self.coalesce_s, horizon), self._fire)
