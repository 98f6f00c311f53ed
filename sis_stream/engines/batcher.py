"""A server-wide decode batcher: decode jobs of many streams that become due together in one call.

Whole-utterance models (Whisper, Moonshine) decode a batch of items in about the time of a few
single decodes, so a server with many calls decodes their finals (and interim passes) together:
each stream plans its decode cheaply in its own lane (:meth:`BufferedStream.plan_final
<sis_stream.engines.buffered.BufferedStream.plan_final>`), hands the resulting :class:`DecodeJob` to
the :class:`DecodeBatcher`, and gets a :class:`concurrent.futures.Future` of the job's result.

Theory of operation
-------------------
``workers`` threads (default: the cores; started with the first job) share two FIFO queues, finals
and partials. A worker

1. takes the *head*: the oldest final, or the oldest partial when no final is queued;
2. waits until ``window_ms`` after the head was queued, or until ``max_batch`` jobs are queued,
   so that jobs of other streams falling due meanwhile join it;
3. groups with the head the oldest jobs of the same kind (final or partial) that share its
   decoder object, language and, when the decoder has ``batch_compatible(len_a, len_b)``, whose
   lengths keep the group's shortest and longest items compatible; at most ``max_batch`` (and
   at most the decoder's ``max_batch`` attribute, if it has one);
4. calls ``decoder.decode_batch(audios, language=..., final=..., prompts=...)`` once, and
   resolves each job's future with ``job.complete(text, score)`` (an exception from the decode
   fails every future of the batch; one from ``complete`` fails only its job);
5. calls ``observer(decoder_name, jobs, decode_s)`` (metrics), in the worker thread.

Fairness: finals are served strictly oldest first, whatever their stream, so one stream's burst
cannot starve another's older final. Per-stream order of *results* is the caller's business (the
server emits results in its own order, whatever order the futures resolve in).

Partials are optional work, dropped before finals are delayed: at most ``partial_workers``
workers (default: all but one) decode partials at a time, so a final falling due never waits
behind partial batches on every worker; :meth:`DecodeBatcher.try_submit`
returns None when ``partial_high`` jobs are queued; a queued partial that waited longer than
``partial_max_wait_s`` is resolved ``None`` (skipped) instead of decoded; a final submitted to a
full queue evicts the oldest queued partial (resolved None).

Bounds: at most ``max_queued`` jobs are queued. Overflow policy for a final (no partial left to
evict): ``"reject"`` (default) raises :class:`~sis_stream.errors.EngineOverloadedError` at once;
``"block"`` waits up to ``block_timeout_s`` for room, then raises it (never from an event loop).
:meth:`DecodeBatcher.shutdown` cancels queued futures and joins the threads within a bound.

The decoder protocol (duck-typed): ``decode_batch(audios, *, language, final, prompts) ->
list[(text, score)]`` (one pair per item, in order), an optional ``batch_compatible(len_a,
len_b) -> bool``, an optional ``max_batch`` int and an optional ``name`` (for the observer).
Decoders are grouped by equality, so an adapter object must compare equal for the same model.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np

from ..errors import EngineOverloadedError, StreamClosedError
from .base import available_cores

__all__ = [
    "BATCH_OVERFLOW_POLICIES",
    "DEFAULT_BATCH_WINDOW_MS",
    "DEFAULT_MAX_BATCH",
    "BatcherStats",
    "DecodeBatcher",
    "DecodeJob",
]

logger = logging.getLogger(__name__)

#: Default collection window after the oldest queued job (ms).
DEFAULT_BATCH_WINDOW_MS: Final = 20
#: Default largest batch.
DEFAULT_MAX_BATCH: Final = 16
#: Default bound on queued jobs per worker.
DEFAULT_QUEUED_PER_WORKER: Final = 256
#: A queued partial older than this (seconds) is skipped instead of decoded.
DEFAULT_PARTIAL_MAX_WAIT_S: Final = 0.5
#: Named overflow policies for a full queue (finals; partials are skipped).
BATCH_OVERFLOW_POLICIES: Final = ("reject", "block")
BatchOverflow = Literal["reject", "block"]


def _identity(text: str, score: float) -> tuple[str, float]:
    return text, score


@dataclass(eq=False)
class DecodeJob:
    """One decode of one stream, for :class:`DecodeBatcher`.

    Attributes
    ----------
    audio : numpy.ndarray
        int16 mono 16 kHz samples to decode (not copied: do not modify it afterwards).
    final : bool
        A final (always decoded) or a partial (skipped under load).
    decoder : object
        Has ``decode_batch`` (see the module docstring); jobs batch only with equal decoders.
    complete : callable
        ``complete(text, score)`` -> the future's result (a ``Hypothesis``); runs in a batcher
        thread. Default: the ``(text, score)`` pair.
    language : str
        Passed to the decoder; jobs batch only with the same language.
    prompt : str or None
        Previous-text prompt for the decoder (``None``: none).
    tag : str
        Free label for the observer (the server puts the SIS property here).
    enqueued : float
        ``time.monotonic()`` when it was queued (set by the batcher).
    wait_s : float
        Seconds it waited in the queue (set when a worker took it).
    future : concurrent.futures.Future
        Its result (set by the batcher at submission).
    """

    audio: np.ndarray
    final: bool
    decoder: Any
    complete: Callable[[str, float], Any] = _identity
    language: str = "en"
    prompt: str | None = None
    tag: str = ""
    enqueued: float = 0.0
    wait_s: float = 0.0
    future: Future | None = field(default=None, repr=False)

    @property
    def samples(self) -> int:
        """Length of :attr:`audio`."""
        return len(self.audio)


@dataclass(frozen=True)
class BatcherStats:
    """A snapshot of a :class:`DecodeBatcher` (for metrics and admission).

    Attributes
    ----------
    workers, max_batch, max_queued : int
        The configuration.
    window_ms : float
        The collection window.
    queued, queued_finals, queued_partials : int
        Jobs waiting now.
    running : int
        Batches being decoded now.
    batches : int
        Batches decoded so far (failed ones included).
    decoded : int
        Jobs decoded so far.
    skipped : int
        Partials not decoded: refused by ``try_submit``, expired in the queue, or evicted by a final.
    rejected : int
        Finals refused because the queue was full.
    decode_s : float
        Total time spent in ``decode_batch``.
    """

    workers: int
    max_batch: int
    max_queued: int
    window_ms: float
    queued: int
    queued_finals: int
    queued_partials: int
    running: int
    batches: int
    decoded: int
    skipped: int
    rejected: int
    decode_s: float


class DecodeBatcher:
    """Batches decode jobs of many streams (see the module docstring).

    Parameters
    ----------
    workers : int, optional
        Worker threads (default: the cores this process may use).
    window_ms : float
        How long a worker waits after the oldest queued job for more jobs to join it.
    max_batch : int
        Largest batch.
    max_queued : int, optional
        Bound on queued jobs (default 256 per worker).
    overflow : {"reject", "block"}
        Policy for a final submitted to a full queue (after evicting a queued partial, if any).
    block_timeout_s : float
        Longest wait under ``"block"``.
    partial_high : int, optional
        :meth:`try_submit` refuses partials once this many jobs are queued (default
        ``workers * max_batch``, capped at ``max_queued``).
    partial_max_wait_s : float
        A queued partial older than this is skipped (its future resolves None).
    partial_workers : int, optional
        Most workers decoding partials at the same time (default ``workers - 1``, at least 1):
        the others stay free for finals.
    observer : callable, optional
        ``observer(decoder_name, jobs, decode_s)`` after each batch, in the worker thread;
        exceptions are logged and ignored.
    thread_name_prefix : str
        Worker thread names.

    Raises
    ------
    ValueError
        For a bad size, window, timeout or an unknown policy.
    """

    def __init__(self, workers: int | None = None, *, window_ms: float = DEFAULT_BATCH_WINDOW_MS,
                 max_batch: int = DEFAULT_MAX_BATCH, max_queued: int | None = None,
                 overflow: BatchOverflow = "reject", block_timeout_s: float = 5.0,
                 partial_high: int | None = None, partial_max_wait_s: float = DEFAULT_PARTIAL_MAX_WAIT_S,
                 partial_workers: int | None = None,
                 observer: Callable[[str, Sequence[DecodeJob], float], None] | None = None,
                 thread_name_prefix: str = "sis-decode") -> None:
        n = available_cores() if workers is None else workers
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"workers must be an int >= 1, got {workers!r}")
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be an int >= 1, got {max_batch!r}")
        if isinstance(window_ms, bool) or not isinstance(window_ms, (int, float)) or not 0 <= window_ms <= 10_000:
            raise ValueError(f"window_ms must be a number in 0..10000, got {window_ms!r}")
        queued = DEFAULT_QUEUED_PER_WORKER * n if max_queued is None else max_queued
        if isinstance(queued, bool) or not isinstance(queued, int) or queued < 1:
            raise ValueError(f"max_queued must be an int >= 1, got {max_queued!r}")
        if overflow not in BATCH_OVERFLOW_POLICIES:
            raise ValueError(f"overflow must be one of {BATCH_OVERFLOW_POLICIES}, got {overflow!r}")
        if not block_timeout_s >= 0:
            raise ValueError(f"block_timeout_s must be >= 0, got {block_timeout_s!r}")
        if not partial_max_wait_s > 0:
            raise ValueError(f"partial_max_wait_s must be > 0, got {partial_max_wait_s!r}")
        high = min(n * max_batch, queued) if partial_high is None else partial_high
        if isinstance(high, bool) or not isinstance(high, int) or high < 1:
            raise ValueError(f"partial_high must be an int >= 1, got {partial_high!r}")
        pw = max(1, n - 1) if partial_workers is None else partial_workers
        if isinstance(pw, bool) or not isinstance(pw, int) or not 1 <= pw <= n:
            raise ValueError(f"partial_workers must be an int in 1..workers ({n}), got {partial_workers!r}")
        if observer is not None and not callable(observer):
            raise TypeError(f"observer must be callable, got {type(observer).__name__}")
        self.workers = n
        self.window_s = float(window_ms) / 1000.0
        self.max_batch = max_batch
        self.max_queued = queued
        self.overflow: BatchOverflow = overflow
        self.block_timeout_s = float(block_timeout_s)
        self.partial_high = high
        self.partial_max_wait_s = float(partial_max_wait_s)
        self.partial_workers = pw
        self.observer = observer
        self._cond = threading.Condition()
        self._finals: collections.deque[DecodeJob] = collections.deque()
        self._partials: collections.deque[DecodeJob] = collections.deque()
        self._closed = False
        self._running = 0
        self._running_partials = 0  # batches of partials being decoded
        self._batches = 0
        self._decoded = 0
        self._skipped = 0
        self._rejected = 0
        self._decode_s = 0.0
        self._threads = [threading.Thread(target=self._work, name=f"{thread_name_prefix}-{i}", daemon=True)
                         for i in range(n)]
        self._started = False  # the threads start with the first job

    def _start(self) -> None:
        """Start the worker threads (caller holds the lock)."""
        if not self._started:
            self._started = True
            for t in self._threads:
                t.start()

    # -- submission -------------------------------------------------------------------------------
    def _queued(self) -> int:
        return len(self._finals) + len(self._partials)

    def _prepare(self, job: DecodeJob) -> None:
        if not isinstance(job, DecodeJob):
            raise TypeError(f"job must be a DecodeJob, got {type(job).__name__}")
        if not callable(getattr(job.decoder, "decode_batch", None)):
            raise TypeError(f"job.decoder must have a decode_batch method, got {type(job.decoder).__name__}")
        job.future = Future()
        job.enqueued = time.monotonic()

    def submit(self, job: DecodeJob) -> Future:
        """Queue `job` (a final, usually) and return its future.

        Raises
        ------
        EngineOverloadedError
            If the queue is full and holds no partial to evict (at once under ``"reject"``,
            after ``block_timeout_s`` under ``"block"``).
        StreamClosedError
            After :meth:`shutdown`.
        """
        self._prepare(job)
        evicted: list[DecodeJob] = []
        deadline = time.monotonic() + self.block_timeout_s
        try:
            with self._cond:
                while True:
                    if self._closed:
                        raise StreamClosedError("DecodeBatcher has been shut down")
                    if self._queued() < self.max_queued:
                        break
                    if self._partials:  # optional work makes room for a final
                        evicted.append(self._partials.popleft())
                        self._skipped += 1
                        continue
                    remaining = deadline - time.monotonic()
                    if self.overflow != "block" or remaining <= 0:
                        self._rejected += 1
                        raise EngineOverloadedError(
                            f"decode queue full ({self.max_queued} queued jobs, {self.workers} workers); "
                            f"overflow policy {self.overflow!r}")
                    self._cond.wait(remaining)
                (self._finals if job.final else self._partials).append(job)
                self._start()
                self._cond.notify_all()
        finally:
            _skip(evicted)
        assert job.future is not None
        return job.future

    def try_submit(self, job: DecodeJob) -> Future | None:
        """Queue optional work (a partial): None, and nothing queued, when the queue is loaded.

        Raises
        ------
        StreamClosedError
            After :meth:`shutdown`.
        """
        self._prepare(job)
        with self._cond:
            if self._closed:
                raise StreamClosedError("DecodeBatcher has been shut down")
            if self._queued() >= min(self.partial_high, self.max_queued):
                self._skipped += 1
                return None
            (self._finals if job.final else self._partials).append(job)
            self._start()
            self._cond.notify_all()
        return job.future

    def accepting_partials(self) -> bool:
        """Whether :meth:`try_submit` would queue a job now (a cheap check before planning one)."""
        with self._cond:
            return not self._closed and self._queued() < min(self.partial_high, self.max_queued)

    # -- workers ----------------------------------------------------------------------------------
    def _expire(self, now: float, out: list[DecodeJob]) -> None:
        """Move queued partials that waited too long to `out` (caller holds the lock)."""
        q = self._partials
        while q and now - q[0].enqueued > self.partial_max_wait_s:
            out.append(q.popleft())
            self._skipped += 1

    def _group(self, now: float) -> list[DecodeJob]:
        """Take the head and the jobs that batch with it (caller holds the lock)."""
        src = self._finals if self._finals else self._partials
        head = src[0]
        decoder = head.decoder
        cap = self.max_batch
        limit = getattr(decoder, "max_batch", None)
        if isinstance(limit, int) and limit >= 1:
            cap = min(cap, limit)
        compatible = getattr(decoder, "batch_compatible", None)
        group: list[DecodeJob] = []
        lo = hi = head.samples
        kept: collections.deque[DecodeJob] = collections.deque()
        for job in src:
            if job.future is not None and job.future.cancelled():
                continue  # its caller gave up: drop it
            ok = len(group) < cap and (not group or (job.decoder == decoder and job.language == head.language))
            if ok and group and compatible is not None:
                n = job.samples
                ok = bool(compatible(min(lo, n), max(hi, n)))
            if ok:
                group.append(job)
                lo, hi = min(lo, job.samples), max(hi, job.samples)
            else:
                kept.append(job)
        src.clear()
        src.extend(kept)
        for job in group:
            job.wait_s = now - job.enqueued
        return group

    def _take(self) -> tuple[list[DecodeJob], list[DecodeJob]] | None:
        """Block until a batch is due; (batch, expired partials), or None at shutdown."""
        expired: list[DecodeJob] = []
        with self._cond:
            while True:
                if self._closed:
                    return None
                now = time.monotonic()
                self._expire(now, expired)
                if not self._finals and not self._partials:
                    if expired:
                        return [], expired
                    self._cond.wait()
                    continue
                if not self._finals and self._running_partials >= self.partial_workers:
                    # Only partials are queued and their share of the workers is busy: wait for
                    # a final, a partial batch to end, or the oldest partial to expire.
                    self._cond.wait(self._partials[0].enqueued + self.partial_max_wait_s - now)
                    continue
                head = self._finals[0] if self._finals else self._partials[0]
                due = head.enqueued + self.window_s
                if self._queued() < self.max_batch and now < due:
                    self._cond.wait(due - now)
                    continue
                group = self._group(now)
                if group:
                    self._running += 1
                    if not group[0].final:
                        self._running_partials += 1
                return group, expired

    def _work(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            taken_jobs, expired = taken
            _skip(expired)
            group = [j for j in taken_jobs if j.future is not None and j.future.set_running_or_notify_cancel()]
            if group:
                self._run(group)
            elif taken_jobs:  # every job was cancelled meanwhile
                with self._cond:
                    self._done(taken_jobs[0].final)

    def _run(self, jobs: list[DecodeJob]) -> None:
        head = jobs[0]
        decoder = head.decoder
        t0 = time.perf_counter()
        results: list[Any] | None = None
        error: BaseException | None = None
        try:
            results = list(decoder.decode_batch([j.audio for j in jobs], language=head.language,
                                                final=head.final, prompts=[j.prompt for j in jobs]))
            if len(results) != len(jobs):
                raise RuntimeError(f"{_name(decoder)}.decode_batch returned {len(results)} results "
                                   f"for {len(jobs)} items")
        except BaseException as exc:  # noqa: BLE001 - delivered to every job of the batch
            error = exc
        decode_s = time.perf_counter() - t0
        with self._cond:
            self._done(head.final)
            self._batches += 1
            self._decoded += len(jobs)
            self._decode_s += decode_s
        for i, job in enumerate(jobs):
            assert job.future is not None
            if error is not None:
                job.future.set_exception(error)
                continue
            try:
                text, score = results[i]  # type: ignore[index]
                job.future.set_result(job.complete(text, float(score)))
            except BaseException as exc:  # noqa: BLE001 - this job's failure only
                job.future.set_exception(exc)
        if error is not None:
            logger.warning("batched decode of %d job(s) by %s failed: %r", len(jobs), _name(decoder), error)
        elif logger.isEnabledFor(logging.DEBUG):
            logger.debug("decoded %d %s job(s) with %s in %.3f s (waited up to %.3f s, %d samples max)",
                         len(jobs), "final" if head.final else "partial", _name(decoder), decode_s,
                         max(j.wait_s for j in jobs), max(j.samples for j in jobs))
        if self.observer is not None:
            try:
                self.observer(_name(decoder), jobs, decode_s)
            except Exception:
                logger.exception("decode batch observer failed")

    def _done(self, final: bool) -> None:
        """A batch left the workers (caller holds the lock)."""
        self._running -= 1
        if not final:
            self._running_partials -= 1
            self._cond.notify()  # a worker may be waiting for the partials' share

    # -- state ------------------------------------------------------------------------------------
    def stats(self) -> BatcherStats:
        """Current counters (consistent snapshot)."""
        with self._cond:
            return BatcherStats(self.workers, self.max_batch, self.max_queued, self.window_s * 1000.0,
                                self._queued(), len(self._finals), len(self._partials), self._running,
                                self._batches, self._decoded, self._skipped, self._rejected, self._decode_s)

    @property
    def closed(self) -> bool:
        """True after :meth:`shutdown`."""
        return self._closed

    def shutdown(self, wait: bool = True, *, timeout_s: float = 5.0) -> None:
        """Stop: refuse new jobs, cancel the queued ones' futures, and join the workers.

        Parameters
        ----------
        wait : bool
            Join the worker threads (a batch being decoded finishes first), for at most
            `timeout_s` in all; threads still decoding then are left to finish on their own
            (they are daemon threads).
        timeout_s : float
            Bound on the join.
        """
        with self._cond:
            self._closed = True
            queued = [*self._finals, *self._partials]
            self._finals.clear()
            self._partials.clear()
            self._cond.notify_all()
        for job in queued:
            if job.future is not None:
                job.future.cancel()
        if not wait:
            return
        deadline = time.monotonic() + max(0.0, timeout_s)
        for t in self._threads:
            if t is threading.current_thread() or not t.is_alive():
                continue
            t.join(max(0.0, deadline - time.monotonic()))
        alive = sum(t.is_alive() for t in self._threads)
        if alive:
            logger.warning("%d decode worker(s) still busy after %.1f s at shutdown", alive, timeout_s)

    def __enter__(self) -> DecodeBatcher:  # noqa: PYI034 - py3.10 has no typing.Self
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _skip(jobs: list[DecodeJob]) -> None:
    """Resolve skipped partials with None (outside the lock: callbacks may run)."""
    for job in jobs:
        if job.future is not None and job.future.set_running_or_notify_cancel():
            job.future.set_result(None)


def _name(decoder: Any) -> str:
    name = getattr(decoder, "name", None)
    return name if isinstance(name, str) and name else type(decoder).__name__
