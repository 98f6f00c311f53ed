"""Transcriber jobs on Redis Streams: leases, heartbeats, reclaim, fencing, atomic completion.

Selected by ``sis-stream serve --redis URL`` and used by ``sis-stream worker --redis URL``; every
process pointed at the same Redis shares one queue. Requires Redis >= 6.2 (``XAUTOCLAIM``) and the
``redis`` Python package (``pip install 'sis-stream[cluster]'``). One Redis (or a primary with
replicas), not Redis Cluster: the scripts touch several keys at once.

Keys (prefix ``sis:`` by default)
---------------------------------
``sis:job:{id}``            hash: ``state`` (WAITING/RUNNING/FINISHED/ERROR), ``project_id``,
                            ``request`` (JSON), times, ``attempt`` (the fencing number), ``owner``,
                            ``lease_until``, ``entry`` (its stream entry), result or error, callback
                            state; expires ``retention_s`` after the job ended.
``sis:job:{id}:cblog``      list: one JSON line per callback delivery attempt.
``sis:job:{id}:segments``   list: segments of the pieces finished so far (the checkpoint).
``sis:jobs``                stream, consumer group ``workers``: one entry per open job.
``sis:jobs:open``           set of open job ids (the ``max_waiting`` bound, ``SIS.0536`` beyond).
``sis:callbacks``           stream, consumer group ``dispatch``: the callback outbox
                            (:mod:`.callbacks`).
``sis:callbacks:retry``     sorted set: callbacks waiting for their next try (score = due time).

Theory of operation
-------------------
1. ``submit``: one script stores the WAITING hash, ``XADD``\\ s the stream entry and adds the id to
   the open set (or refuses with ``SIS.0536``).
2. A worker slot takes an entry: first ``XAUTOCLAIM`` of an entry idle longer than the lease (a
   crashed or stalled owner), else ``XREADGROUP ... >``. A script then sets ``RUNNING``, the owner,
   and increments ``attempt``: the **fence**. An entry whose job already ended (or expired) is
   acknowledged and dropped. A job started more than ``max_attempts`` times fails with
   ``SIS.0307`` (a poison job cannot loop through the cluster forever).
3. While the job runs, a heartbeat every ``lease_s / 3`` re-claims the entry for its owner
   (``XCLAIM ... JUSTID``: idle time reset, delivery counter kept), but only while the stored
   ``attempt`` is still the worker's own. When it is not (the lease ran out and another worker
   took the job over), the stale worker stops.
4. Completion is one script, guarded by the fence: ``FINISHED``/``ERROR`` with the result, the
   callback record (``callback_state=PENDING`` and an outbox entry ``{job_id, attempt}``), ``XACK``
   + ``XDEL`` of the job entry, removal from the open set and the retention ``EXPIRE``. A stale
   worker's completion changes nothing, so a job ends exactly once.

A worker that is killed (``kill -9``) leaves its entry pending; another process reclaims it once
it has been idle ``lease_s`` and resumes it from its last checkpoint: the processor gets a
:class:`Checkpoint` and saves the segments of each finished piece of audio under the fence
(``sis:job:{id}:segments`` and ``checkpoint_ms``); the next attempt loads them and skips that audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from typing import Any, Final

from ..errors import RequestRejected
from ..protocol.errors import reject
from .jobs import MAX_ATTEMPTS, JobRecord, Processor

__all__ = ["DISPATCH_GROUP", "JOB_GROUP", "Checkpoint", "RedisJobManager", "RedisKeys", "callbacks_idle", "cancel_tasks", "connect_redis", "ensure_group", "record_from_hash"]

logger = logging.getLogger(__name__)

JOB_GROUP: Final = "workers"
#: Consumer group of the callback outbox (:mod:`.callbacks`).
DISPATCH_GROUP: Final = "dispatch"
#: Pause after a Redis connection error before a worker slot tries again.
_RETRY_PAUSE_S: Final = 1.0
_BLOCK_MS: Final = 1000

_SUBMIT: Final = """
if redis.call('SCARD', KEYS[3]) >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
local id = redis.call('XADD', KEYS[2], '*', 'job_id', ARGV[1])
redis.call('HSET', KEYS[1], 'entry', id)
redis.call('SADD', KEYS[3], ARGV[1])
return 1
"""

_CLAIM: Final = """
local st = redis.call('HGET', KEYS[1], 'state')
if st ~= 'WAITING' and st ~= 'RUNNING' then return -1 end
local a = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
redis.call('HSET', KEYS[1], 'state', 'RUNNING', 'owner', ARGV[1], 'lease_until', ARGV[3])
redis.call('HSETNX', KEYS[1], 'start_time', ARGV[2])
return a
"""

_HEARTBEAT: Final = """
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'state') ~= 'RUNNING' then return 0 end
redis.call('XCLAIM', KEYS[2], ARGV[2], ARGV[3], 0, ARGV[4], 'JUSTID')
redis.call('HSET', KEYS[1], 'lease_until', ARGV[5])
return 1
"""

_COMPLETE: Final = """
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then return 0 end
local st = redis.call('HGET', KEYS[1], 'state')
if st ~= 'RUNNING' and st ~= 'WAITING' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[7], 'finish_time', ARGV[5], unpack(ARGV, 8))
redis.call('HSETNX', KEYS[1], 'start_time', ARGV[5])
if redis.call('HEXISTS', KEYS[1], 'callback_url') == 1 then
  redis.call('HSET', KEYS[1], 'callback_state', 'PENDING')
  redis.call('XADD', KEYS[3], '*', 'job_id', ARGV[4], 'attempt', ARGV[1], 'n', '0')
end
redis.call('XACK', KEYS[2], ARGV[2], ARGV[3])
redis.call('XDEL', KEYS[2], ARGV[3])
redis.call('SREM', KEYS[4], ARGV[4])
redis.call('DEL', KEYS[5])
redis.call('EXPIRE', KEYS[1], ARGV[6])
return 1
"""

_SAVE_CHECKPOINT: Final = """
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'state') ~= 'RUNNING' then return 0 end
if #ARGV > 2 then redis.call('RPUSH', KEYS[2], unpack(ARGV, 3)) end
redis.call('HSET', KEYS[1], 'checkpoint_ms', ARGV[2])
return 1
"""

_DROP_ENTRY: Final = """
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"""


def connect_redis(url: str) -> Any:
    """A ``redis.asyncio.Redis`` client for `url` (``redis://HOST:PORT/DB``).

    Raises
    ------
    RuntimeError
        The ``redis`` package is not installed (says how to install it).
    ValueError
        `url` is not a ``redis://``, ``rediss://`` or ``unix://`` URL.
    """
    if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
        shown = url.split("://")[0] + "://..." if isinstance(url, str) and "://" in url else "no URL scheme"
        raise ValueError(f"the Redis URL must start with redis://, rediss:// or unix://, got {shown}")
    try:
        import redis.asyncio as aioredis
    except ImportError:
        raise RuntimeError("--redis needs the 'redis' package: pip install 'sis-stream[cluster]'") from None
    return aioredis.from_url(url, decode_responses=True, health_check_interval=10)



async def cancel_tasks(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel `tasks`, wait for each to end (its exception, if any, is dropped: a stopping
    background loop has nobody left to report to) and empty the list."""
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await t
    tasks.clear()

class RedisKeys:
    """Key names under one prefix (``sis:`` by default)."""

    def __init__(self, prefix: str = "sis:") -> None:
        self.prefix = prefix
        self.jobs = f"{prefix}jobs"
        self.open = f"{prefix}jobs:open"
        self.callbacks = f"{prefix}callbacks"
        self.retry = f"{prefix}callbacks:retry"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def cblog(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}:cblog"

    def segments(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}:segments"


def _f(v: str | None) -> float | None:
    return float(v) if v not in (None, "") else None


def record_from_hash(job_id: str, h: dict[str, str], cblog: list[str] | None = None) -> JobRecord:
    """A :class:`~.jobs.JobRecord` from a job hash (what GET and the callbacks need)."""
    segs = h.get("segments")
    return JobRecord(
        job_id, h.get("project_id", ""), h.get("state", "WAITING"), json.loads(h.get("request") or "{}"),
        float(h.get("create_time") or 0.0), _f(h.get("start_time")), _f(h.get("finish_time")),
        int(h.get("attempt") or 0), int(h["audio_duration"]) if h.get("audio_duration") else None,
        json.loads(segs) if segs else None, h.get("error_code") or None, h.get("error_msg") or None,
        h.get("callback_url") or None, h.get("callback_state", "NONE"), int(h.get("callback_attempts") or 0),
        [json.loads(x) for x in (cblog or [])])


class RedisJobManager:
    """Transcriber jobs on Redis Streams (see the module docstring); same API as
    :class:`~.jobs.JobManager` except that :meth:`submit` and :meth:`get` are coroutines.

    Parameters
    ----------
    redis : redis.asyncio.Redis
        From :func:`connect_redis` (``decode_responses=True``); closed by :meth:`stop`.
    processor : callable
        ``await processor(job, should_stop, checkpoint=Checkpoint)`` -> ``(segments,
        audio_duration_ms)``; it may resume from and save to the :class:`Checkpoint`.
    workers : int
        Jobs this process runs at once; 0 = submit and read only (an API-only ``serve``).
    max_waiting : int
        Bound on open jobs across the cluster (``SIS.0536`` beyond).
    lease_s : float
        A job whose owner has not renewed its lease for this long is taken over by another
        worker. Heartbeats every ``lease_s / 3``.
    max_attempts : int
        Starts allowed per job before it fails with ``SIS.0307``.
    retention_s : float
        Finished jobs (and their callback log) expire after this long.
    dispatcher : CallbackDispatcher, optional
        Delivers the callbacks (:mod:`.callbacks`); started and stopped with the manager.
    keys : RedisKeys, optional
    consumer : str, optional
        This process's consumer name (default ``host-pid-random``).
    """

    def __init__(self, redis: Any, processor: Processor, *, workers: int = 2, max_waiting: int = 1000,
                 lease_s: float = 30.0, max_attempts: int = MAX_ATTEMPTS, retention_s: float = 72 * 3600.0,
                 dispatcher: Any = None, keys: RedisKeys | None = None, consumer: str | None = None,
                 clock: Any = time.time) -> None:
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers!r}")
        if not lease_s > 0:
            raise ValueError(f"lease_s must be > 0, got {lease_s!r}")
        self.redis = redis
        self.processor = processor
        self.workers = int(workers)
        self.max_waiting = int(max_waiting)
        self.lease_s = float(lease_s)
        self.max_attempts = int(max_attempts)
        self.retention_s = float(retention_s)
        self.dispatcher = dispatcher
        self.keys = keys or RedisKeys()
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.clock = clock
        self.jobs_run = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._submit = redis.register_script(_SUBMIT)
        self._claim = redis.register_script(_CLAIM)
        self._heartbeat = redis.register_script(_HEARTBEAT)
        self._complete = redis.register_script(_COMPLETE)
        self._drop = redis.register_script(_DROP_ENTRY)
        self._save_checkpoint = redis.register_script(_SAVE_CHECKPOINT)

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Create the consumer group if needed, start the worker slots and the dispatcher."""
        await ensure_group(self.redis, self.keys.jobs, JOB_GROUP)
        self._tasks = [asyncio.create_task(self._slot(i), name=f"sis-redis-job-{i}") for i in range(self.workers)]
        if self.dispatcher is not None:
            await self.dispatcher.start()
        logger.info("transcriber jobs on Redis: consumer %s, %d worker slot(s), lease %.0f s",
                    self.consumer, self.workers, self.lease_s)

    async def stop(self) -> None:
        """Stop the slots (a running job is taken over by another process after its lease)."""
        self._stopping = True
        await cancel_tasks(self._tasks)
        if self.dispatcher is not None:
            await self.dispatcher.stop()
        with contextlib.suppress(Exception):
            await self.redis.aclose()

    # -- API ------------------------------------------------------------------------------------
    async def submit(self, project_id: str, request: dict[str, Any], callback_url: str | None) -> str:
        """Store a new WAITING job and queue it; returns its id (``SIS.0536`` when full)."""
        job_id = str(uuid.uuid4())
        fields = ["project_id", project_id, "state", "WAITING", "attempt", "0", "create_time", repr(self.clock()),
                  "request", json.dumps(request, ensure_ascii=False), "callback_state", "NONE",
                  "callback_attempts", "0"]
        if callback_url:
            fields += ["callback_url", callback_url]
        ok = await self._submit(keys=[self.keys.job(job_id), self.keys.jobs, self.keys.open],
                                args=[job_id, self.max_waiting, *fields])
        if not ok:
            raise reject("SIS.0536", f"the transcriber submission limit is reached: {self.max_waiting} jobs are "
                                     "waiting")
        return job_id

    async def get(self, project_id: str, job_id: str) -> JobRecord:
        """The job, or ``SIS.0533 "task id is not found"`` (unknown, other project, or expired)."""
        h = await self.redis.hgetall(self.keys.job(job_id))
        if not h or h.get("project_id") != project_id:
            raise reject("SIS.0533", "task id is not found")
        return record_from_hash(job_id, h, await self.redis.lrange(self.keys.cblog(job_id), 0, -1))

    async def record(self, job_id: str) -> JobRecord | None:
        """The job whatever its project (workers, dispatcher, tests), or None."""
        h = await self.redis.hgetall(self.keys.job(job_id))
        return record_from_hash(job_id, h) if h else None

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no job is open and no callback is pending or scheduled (cluster-wide)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await self.redis.scard(self.keys.open) == 0 and await callbacks_idle(self.redis, self.keys):
                return True
            await asyncio.sleep(0.1)
        return False

    # -- worker slots ---------------------------------------------------------------------------
    async def _slot(self, index: int) -> None:
        import redis.exceptions as rexc

        while not self._stopping:
            try:
                entry = await self._next_entry()
                if entry is not None:
                    await self._run(*entry)
            except asyncio.CancelledError:
                raise
            except (rexc.ConnectionError, rexc.TimeoutError, rexc.BusyLoadingError, OSError) as exc:
                logger.warning("job slot %d: Redis unavailable (%s); retrying in %.0f s", index, exc,
                               _RETRY_PAUSE_S)
                await asyncio.sleep(_RETRY_PAUSE_S)
            except Exception:
                logger.exception("job slot %d failed unexpectedly", index)
                await asyncio.sleep(_RETRY_PAUSE_S)

    async def _next_entry(self) -> tuple[str, str] | None:
        """``(entry_id, job_id)``: an expired lease first (XAUTOCLAIM), else a new entry."""
        res = await self.redis.xautoclaim(self.keys.jobs, JOB_GROUP, self.consumer,
                                          int(self.lease_s * 1000), start_id="0-0", count=1)
        claimed = res[1] if res and len(res) > 1 else []
        for entry_id, fields in claimed:
            if fields and fields.get("job_id"):
                logger.info("reclaimed job %s (lease of %.0f s expired)", fields["job_id"], self.lease_s)
                return entry_id, fields["job_id"]
            await self._drop(keys=[self.keys.jobs], args=[JOB_GROUP, entry_id])
        got = await self.redis.xreadgroup(JOB_GROUP, self.consumer, {self.keys.jobs: ">"}, count=1,
                                          block=_BLOCK_MS)
        for _stream, entries in got or []:
            for entry_id, fields in entries:
                if fields and fields.get("job_id"):
                    return entry_id, fields["job_id"]
                await self._drop(keys=[self.keys.jobs], args=[JOB_GROUP, entry_id])
        return None

    async def _run(self, entry_id: str, job_id: str) -> None:
        key = self.keys.job(job_id)
        now = self.clock()
        attempt = int(await self._claim(keys=[key], args=[self.consumer, repr(now), repr(now + self.lease_s)]))
        if attempt < 0:  # already ended or expired: nothing to do
            await self._drop(keys=[self.keys.jobs], args=[JOB_GROUP, entry_id])
            return
        if attempt > self.max_attempts:
            err = reject("SIS.0307", f"task error: processing was interrupted {attempt - 1} times")
            await self._finish(job_id, entry_id, attempt, error=err)
            return
        job = await self.record(job_id)
        if job is None:
            return
        logger.info("transcriber job %s started (attempt %d) by %s", job_id, attempt, self.consumer)
        lost = asyncio.Event()
        ckpt = Checkpoint(self, job_id, attempt)
        work = asyncio.create_task(self.processor(job, lambda: self._stopping or lost.is_set(), checkpoint=ckpt))
        beat = asyncio.create_task(self._beat(key, entry_id, attempt, lost, work))
        try:
            segments, duration = await work
        except RequestRejected as exc:
            if not lost.is_set():
                await self._finish(job_id, entry_id, attempt, error=exc)
            return
        except asyncio.CancelledError:
            if self._stopping or not lost.is_set():
                raise
            logger.warning("job %s: lease lost to another worker; attempt %d abandoned", job_id, attempt)
            return
        except Exception as exc:
            if self._stopping:
                return
            logger.exception("transcriber job %s failed", job_id)
            await self._finish(job_id, entry_id, attempt,
                               error=reject("SIS.30008", f"transcription failed: {type(exc).__name__}"))
            return
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await beat
            if not work.done():
                work.cancel()
        await self._finish(job_id, entry_id, attempt, segments=segments, duration=duration)

    async def _beat(self, key: str, entry_id: str, attempt: int, lost: asyncio.Event,
                    work: asyncio.Task[Any]) -> None:
        import redis.exceptions as rexc

        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                ok = await self._heartbeat(keys=[key, self.keys.jobs], args=[
                    attempt, JOB_GROUP, self.consumer, entry_id, repr(self.clock() + self.lease_s)])
            except (rexc.ConnectionError, rexc.TimeoutError, rexc.BusyLoadingError, OSError) as exc:
                logger.warning("heartbeat of %s failed (%s); the fence guards the result", key, exc)
                continue
            if not ok:
                lost.set()
                work.cancel()
                return

    async def _finish(self, job_id: str, entry_id: str, attempt: int, *, segments: Any = None,
                      duration: int | None = None, error: RequestRejected | None = None) -> bool:
        if error is None:
            state = "FINISHED"
            fields = ["segments", json.dumps(segments or [], ensure_ascii=False), "audio_duration",
                      str(int(duration or 0))]
        else:
            state = "ERROR"
            fields = ["error_code", error.error_code, "error_msg", error.error_msg]
        done = await self._complete(
            keys=[self.keys.job(job_id), self.keys.jobs, self.keys.callbacks, self.keys.open,
                  self.keys.segments(job_id)],
            args=[attempt, JOB_GROUP, entry_id, job_id, repr(self.clock()), int(self.retention_s), state, *fields])
        if done:
            self.jobs_run += 1
            logger.info("transcriber job %s ended: %s (attempt %d)", job_id, state, attempt)
        else:
            logger.warning("job %s: completion of attempt %d refused by the fence (a newer attempt owns it)",
                           job_id, attempt)
        return bool(done)


class Checkpoint:
    """Per-segment progress of one attempt of one job (handed to the processor).

    The processor calls :meth:`load` once (what earlier attempts finished) and :meth:`save` after
    each piece of audio; a resumed job skips what was saved. :meth:`save` is fenced: it returns
    False (and stores nothing) once another attempt owns the job, and the processor should stop.
    Segments are stored in ``sis:job:{id}:segments`` until the job ends.
    """

    def __init__(self, manager: RedisJobManager, job_id: str, attempt: int) -> None:
        self.manager = manager
        self.job_id = job_id
        self.attempt = attempt
        self.resumed_from_ms = 0

    async def load(self) -> tuple[int, list[dict[str, Any]]]:
        """``(done_ms, segments)`` saved by earlier attempts (``(0, [])`` for a fresh job)."""
        r = self.manager.redis
        keys = self.manager.keys
        done = await r.hget(keys.job(self.job_id), "checkpoint_ms")
        rows = [json.loads(x) for x in await r.lrange(keys.segments(self.job_id), 0, -1)]
        self.resumed_from_ms = int(done or 0)
        if self.resumed_from_ms:
            await r.hset(keys.job(self.job_id), "resumed_from_ms", self.resumed_from_ms)
            logger.info("job %s resumes at %d ms (%d segment(s) kept)", self.job_id, self.resumed_from_ms,
                        len(rows))
        return self.resumed_from_ms, rows

    async def save(self, done_ms: int, segments: list[dict[str, Any]]) -> bool:
        """Append `segments` and record that the audio up to `done_ms` is done (fenced)."""
        keys = self.manager.keys
        ok = await self.manager._save_checkpoint(
            keys=[keys.job(self.job_id), keys.segments(self.job_id)],
            args=[self.attempt, int(done_ms), *(json.dumps(s, ensure_ascii=False) for s in segments)])
        return bool(ok)


async def ensure_group(redis: Any, stream: str, group: str) -> None:
    """``XGROUP CREATE stream group 0 MKSTREAM`` unless the group exists."""
    import redis.exceptions as rexc

    try:
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
    except rexc.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def callbacks_idle(redis: Any, keys: RedisKeys) -> bool:
    """True when the outbox has no pending, unread or scheduled callback."""
    if await redis.zcard(keys.retry):
        return False
    if not await redis.exists(keys.callbacks):
        return True
    if await redis.xlen(keys.callbacks):
        return False
    with contextlib.suppress(Exception):
        info = await redis.xpending(keys.callbacks, DISPATCH_GROUP)
        if info and info.get("pending"):
            return False
    return True
