"""A bounded thread-pool executor for engine work, with ordered per-stream lanes.

Engine calls block (model decoding), so a server runs them here instead of on its event loop. The
pool has ``max_workers`` threads (default: the available cores) and a bound on *queued* tasks
(accepted but not started) across all callers. When that bound is reached the overflow policy
decides:

``"reject"`` (default)
    :meth:`EngineExecutor.submit` raises :class:`~sis_stream.errors.EngineOverloadedError` at once.
``"block"``
    ``submit`` waits up to ``block_timeout_s`` for room, then raises the same error. Never use it
    from an event loop thread: :meth:`EngineExecutor.run` and :meth:`Lane.run` always reject.

:meth:`EngineExecutor.try_submit` never raises for a full queue: it returns ``None``, for work that
may simply be skipped under load (Whisper partials).

An :class:`EngineStream <sis_stream.engines.base.EngineStream>` must see its calls one at a time and
in order, so each stream gets a :class:`Lane`: tasks of one lane run in submission order, never two
at once, and lanes share the pool fairly (a lane re-queues after each task, so one slow stream
cannot hold a worker for a burst of its tasks). Each lane has its own bound (``max_pending``) under
the same policy.

The asyncio helpers (``run``) live only in this module and import asyncio lazily.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar

from ..errors import EngineOverloadedError, StreamClosedError
from .base import available_cores

__all__ = ["OVERFLOW_POLICIES", "EngineExecutor", "ExecutorStats", "Lane"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
OverflowPolicy = Literal["reject", "block"]
#: Named overflow policies for a full queue.
OVERFLOW_POLICIES: Final = ("reject", "block")
#: Default queued tasks per worker (whole pool) and pending tasks per lane.
DEFAULT_QUEUED_PER_WORKER: Final = 64
DEFAULT_LANE_PENDING: Final = 64


@dataclass(frozen=True)
class ExecutorStats:
    """A snapshot of the executor, for metrics (queue depth, load).

    Attributes
    ----------
    workers : int
        Worker threads.
    queued : int
        Tasks accepted and not yet started.
    running : int
        Tasks running now.
    completed : int
        Tasks finished (including failed ones).
    rejected : int
        Submissions refused because a queue was full (``try_submit`` skips included).
    max_queued : int
        The bound on ``queued``.
    """

    workers: int
    queued: int
    running: int
    completed: int
    rejected: int
    max_queued: int


class _Task:
    __slots__ = ("args", "fn", "future", "kwargs")

    def __init__(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        self.future: Future = Future()
        self.fn = fn
        self.args = args
        self.kwargs = kwargs


class EngineExecutor:
    """Thread pool with a bounded queue and a named overflow policy.

    Parameters
    ----------
    max_workers : int, optional
        Worker threads. Default: the cores this process may use.
    max_queued : int, optional
        Bound on tasks accepted but not started, over all lanes. Default ``64 * max_workers``.
    overflow : {"reject", "block"}
        Policy when the queue is full (see the module docstring).
    block_timeout_s : float
        Longest wait under ``"block"``.
    thread_name_prefix : str
        Worker thread names.

    Raises
    ------
    ValueError
        For a non-positive size, an unknown policy or a negative timeout.
    """

    def __init__(self, max_workers: int | None = None, *, max_queued: int | None = None,
                 overflow: OverflowPolicy = "reject", block_timeout_s: float = 5.0,
                 thread_name_prefix: str = "sis-engine") -> None:
        workers = available_cores() if max_workers is None else max_workers
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"max_workers must be an int >= 1, got {max_workers!r}")
        queued = DEFAULT_QUEUED_PER_WORKER * workers if max_queued is None else max_queued
        if not isinstance(queued, int) or queued < 1:
            raise ValueError(f"max_queued must be an int >= 1, got {max_queued!r}")
        if overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow must be one of {OVERFLOW_POLICIES}, got {overflow!r}")
        if not block_timeout_s >= 0:
            raise ValueError(f"block_timeout_s must be >= 0, got {block_timeout_s!r}")
        self.max_workers = workers
        self.max_queued = queued
        self.overflow: OverflowPolicy = overflow
        self.block_timeout_s = float(block_timeout_s)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=thread_name_prefix)
        self._cond = threading.Condition()
        self._queued = 0
        self._running = 0
        self._completed = 0
        self._rejected = 0
        self._shutdown = False
        self._waiting: set[_Task] = set()  # admitted, not started (cancelled by shutdown)

    # -- admission --------------------------------------------------------------------------------
    def _admit(self, block: bool, task: _Task, lane: Lane | None = None) -> tuple[bool, bool]:
        """Reserve a queue slot for `task` (appending it to `lane`, if any) under one lock hold.

        Returns (admitted, start_lane_step).
        """
        deadline = time.monotonic() + self.block_timeout_s
        with self._cond:
            while True:
                if self._shutdown:
                    raise StreamClosedError("EngineExecutor has been shut down")
                if lane is not None and lane._closed:
                    raise StreamClosedError("Lane has been closed")
                lane_full = lane is not None and len(lane._pending) >= lane.max_pending
                if self._queued < self.max_queued and not lane_full:
                    self._queued += 1
                    self._waiting.add(task)
                    if lane is None:
                        return True, False
                    lane._pending.append(task)
                    start = not lane._active
                    lane._active = True
                    return True, start
                remaining = deadline - time.monotonic()
                if not block or remaining <= 0:
                    self._rejected += 1
                    return False, False
                self._cond.wait(remaining)

    def _overloaded(self, lane: Lane | None) -> EngineOverloadedError:
        if lane is not None and len(lane._pending) >= lane.max_pending:
            what = f"lane queue full ({lane.max_pending} pending tasks)"
        else:
            what = f"engine queue full ({self.max_queued} queued tasks, {self.max_workers} workers)"
        return EngineOverloadedError(f"{what}; overflow policy {self.overflow!r}")

    def _run_task(self, task: _Task) -> None:
        with self._cond:
            self._queued -= 1
            self._waiting.discard(task)
            self._running += 1
            self._cond.notify()
        try:
            if task.future.set_running_or_notify_cancel():
                try:
                    task.future.set_result(task.fn(*task.args, **task.kwargs))
                except BaseException as exc:  # noqa: BLE001 - delivered to the caller via the future
                    task.future.set_exception(exc)
        finally:
            with self._cond:
                self._running -= 1
                self._completed += 1

    def _start(self, task: _Task) -> None:
        try:
            self._pool.submit(self._run_task, task)
        except RuntimeError as exc:  # pool shut down between admission and here
            with self._cond:
                self._queued -= 1
                self._waiting.discard(task)
            raise StreamClosedError("EngineExecutor has been shut down") from exc

    # -- public API -------------------------------------------------------------------------------
    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Run ``fn(*args, **kwargs)`` on a worker (unordered with respect to other submissions).

        Returns
        -------
        concurrent.futures.Future

        Raises
        ------
        EngineOverloadedError
            If the queue is full (at once under ``"reject"``, after ``block_timeout_s`` under ``"block"``).
        StreamClosedError
            After :meth:`shutdown`.
        """
        task = _Task(fn, args, kwargs)
        if not self._admit(self.overflow == "block", task)[0]:
            raise self._overloaded(None)
        self._start(task)
        return task.future

    def try_submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T] | None:
        """Like :meth:`submit` but return None instead of waiting or raising when the queue is full."""
        task = _Task(fn, args, kwargs)
        if not self._admit(False, task)[0]:
            return None
        self._start(task)
        return task.future

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Await ``fn(*args, **kwargs)`` run on a worker; never blocks the event loop.

        Raises
        ------
        EngineOverloadedError
            At once if the queue is full, whatever the policy.
        """
        import asyncio

        task = _Task(fn, args, kwargs)
        if not self._admit(False, task)[0]:
            raise self._overloaded(None)
        self._start(task)
        return await asyncio.wrap_future(task.future)

    def lane(self, max_pending: int = DEFAULT_LANE_PENDING) -> Lane:
        """A new ordered lane (one per stream).

        Parameters
        ----------
        max_pending : int
            Bound on this lane's tasks not yet started.
        """
        return Lane(self, max_pending)

    def stats(self) -> ExecutorStats:
        """Current counters (consistent snapshot)."""
        with self._cond:
            return ExecutorStats(self.max_workers, self._queued, self._running, self._completed,
                                 self._rejected, self.max_queued)

    def shutdown(self, wait: bool = True, *, cancel_pending: bool = True) -> None:
        """Stop accepting work; cancel queued tasks (by default) and optionally wait for running ones."""
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()
            waiting = list(self._waiting) if cancel_pending else []
        for task in waiting:
            task.future.cancel()  # a cancelled task is skipped if its worker step still runs
        self._pool.shutdown(wait=wait, cancel_futures=cancel_pending)

    def __enter__(self) -> EngineExecutor:  # noqa: PYI034 - py3.10 has no typing.Self
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


class Lane:
    """Ordered, one-at-a-time execution of one stream's calls on a shared :class:`EngineExecutor`.

    Create with :meth:`EngineExecutor.lane`. Tasks run in submission order; a failing task fails
    only its own future.
    """

    def __init__(self, executor: EngineExecutor, max_pending: int) -> None:
        if not isinstance(max_pending, int) or max_pending < 1:
            raise ValueError(f"max_pending must be an int >= 1, got {max_pending!r}")
        self.executor = executor
        self.max_pending = max_pending
        self._pending: collections.deque[_Task] = collections.deque()
        self._active = False  # a drain step is scheduled or running
        self._closed = False

    @property
    def pending(self) -> int:
        """Tasks of this lane not yet started."""
        with self.executor._cond:
            return len(self._pending)

    def _schedule(self) -> None:
        ex = self.executor
        try:
            ex._pool.submit(self._step)
        except RuntimeError as exc:  # shut down: fail what is left
            with ex._cond:
                left = list(self._pending)
                self._pending.clear()
                ex._queued -= len(left)
                ex._waiting.difference_update(left)
                self._active = False
            for t in left:
                t.future.cancel()
            raise StreamClosedError("EngineExecutor has been shut down") from exc

    def _step(self) -> None:
        ex = self.executor
        with ex._cond:
            if not self._pending:  # emptied by a shutdown
                self._active = False
                return
            task = self._pending.popleft()
        ex._run_task(task)
        with ex._cond:
            more = bool(self._pending)
            self._active = more
        if more:
            try:
                self._schedule()  # re-queue behind other lanes: fairness
            except StreamClosedError:
                pass

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Queue ``fn(*args, **kwargs)`` after this lane's earlier tasks.

        Raises
        ------
        EngineOverloadedError
            If the lane or the executor is full (policy as for :meth:`EngineExecutor.submit`).
        StreamClosedError
            After :meth:`close` or executor shutdown.
        """
        ex = self.executor
        task = _Task(fn, args, kwargs)
        admitted, start = ex._admit(ex.overflow == "block", task, self)
        if not admitted:
            raise ex._overloaded(self)
        if start:
            self._schedule()
        return task.future

    def try_submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T] | None:
        """Like :meth:`submit` but return None when full (e.g. skip a partial under load)."""
        task = _Task(fn, args, kwargs)
        admitted, start = self.executor._admit(False, task, self)
        if not admitted:
            return None
        if start:
            self._schedule()
        return task.future

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Await ``fn(*args, **kwargs)`` in lane order; rejects at once when full (never blocks)."""
        import asyncio

        ex = self.executor
        task = _Task(fn, args, kwargs)
        admitted, start = ex._admit(False, task, self)
        if not admitted:
            raise ex._overloaded(self)
        if start:
            self._schedule()
        return await asyncio.wrap_future(task.future)

    def close(self) -> None:
        """Refuse new tasks; tasks already queued still run."""
        with self.executor._cond:
            self._closed = True
