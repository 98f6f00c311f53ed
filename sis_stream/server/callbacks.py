"""Callback delivery for the Redis job backend: an outbox stream, retries with backoff, an
idempotency key per result.

When a job ends, :mod:`.redis_jobs` adds ``{job_id, attempt, n}`` to the outbox stream
``sis:callbacks`` in the same script that ends the job. Every process runs a
:class:`CallbackDispatcher`: it reads the outbox with the consumer group ``dispatch`` and POSTs
the job's GET body (which includes ``job_id``) to its ``callback_url`` with the headers

``X-Sis-Callback-Id: <job_id>``              (as the embedded backend sends)
``X-Sis-Job-Id: <job_id>``
``X-Sis-Job-Attempt: <attempt>``             the fencing number of the attempt that produced the result
``X-Sis-Delivery-Attempt: <n>``              1, 2, ... for this callback
``Idempotency-Key: <job_id>:<attempt>``      the same on every retry of one result

A 2xx answer ends the callback (``callback_state=DELIVERED``) and acknowledges the outbox entry in
one script; anything else schedules the next try ``backoff_s * 2**(n-1)`` later (a sorted set,
moved back to the outbox when due), until ``attempts`` tries were made (then ``FAILED``). Each try
is appended to the job's callback log. Delivery is at least once: if a dispatcher dies between the
receiver's 2xx and its acknowledgement, another dispatcher reclaims the entry after
``reclaim_s`` and delivers it again with the same ``Idempotency-Key`` (receivers de-duplicate on
it). Only one attempt of a job can ever end it (the fence), so a receiver sees exactly one
distinct result per job.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, Final

from ..errors import RequestRejected
from .redis_jobs import DISPATCH_GROUP, RedisKeys, cancel_tasks, ensure_group, record_from_hash

__all__ = ["CallbackDispatcher", "idempotency_key"]

logger = logging.getLogger(__name__)

_BLOCK_MS: Final = 1000
_PROMOTE_EVERY_S: Final = 0.5

_SETTLE: Final = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('RPUSH', KEYS[2], ARGV[3])
  redis.call('HINCRBY', KEYS[1], 'callback_attempts', 1)
  if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'callback_state', ARGV[4]) end
  local ttl = redis.call('TTL', KEYS[1])
  if ttl > 0 then redis.call('EXPIRE', KEYS[2], ttl) end
end
if ARGV[5] ~= '' then redis.call('ZADD', KEYS[4], ARGV[6], ARGV[5]) end
redis.call('XACK', KEYS[3], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[3], ARGV[2])
return 1
"""

_PROMOTE: Final = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, m in ipairs(due) do
  local d = cjson.decode(m)
  redis.call('XADD', KEYS[2], '*', 'job_id', d[1], 'attempt', d[2], 'n', d[3])
  redis.call('ZREM', KEYS[1], m)
end
return #due
"""


def idempotency_key(job_id: str, attempt: int | str) -> str:
    """``<job_id>:<attempt>``: the same on every delivery of one job result."""
    return f"{job_id}:{attempt}"


def _now_rfc3339() -> str:
    return datetime.now(tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class CallbackDispatcher:
    """Delivers the outbox (see the module docstring).

    Parameters
    ----------
    redis : redis.asyncio.Redis
    consumer : str
        Consumer name of this process.
    attempts : int
        Tries per callback before FAILED.
    backoff_s : float
        First retry delay; doubles each try.
    timeout_s : float
        Per POST.
    check : callable, optional
        Re-validates the callback URL before each try (raises RequestRejected: FAILED at once).
    concurrency : int
        Callbacks delivered at once by this process.
    reclaim_s : float
        An outbox entry a dispatcher took but did not settle for this long is taken over.
    keys : RedisKeys, optional
    """

    def __init__(self, redis: Any, consumer: str, *, attempts: int = 5, backoff_s: float = 1.0,
                 timeout_s: float = 10.0, check: Callable[[str], None] | None = None, concurrency: int = 4,
                 reclaim_s: float | None = None, keys: RedisKeys | None = None) -> None:
        if attempts < 1 or concurrency < 1:
            raise ValueError(f"attempts and concurrency must be >= 1, got {attempts!r}, {concurrency!r}")
        self.redis = redis
        self.consumer = consumer
        self.attempts = int(attempts)
        self.backoff_s = float(backoff_s)
        self.timeout_s = float(timeout_s)
        self.check = check
        self.concurrency = int(concurrency)
        self.reclaim_s = float(reclaim_s) if reclaim_s is not None else 3 * self.timeout_s + 5.0
        self.keys = keys or RedisKeys()
        self.delivered = 0
        self._settle = redis.register_script(_SETTLE)
        self._promote = redis.register_script(_PROMOTE)
        self._tasks: list[asyncio.Task[None]] = []
        self._session: Any = None
        self._stopping = False

    async def start(self) -> None:
        import aiohttp

        await ensure_group(self.redis, self.keys.callbacks, DISPATCH_GROUP)
        self._session = aiohttp.ClientSession(trust_env=False,
                                              timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        self._tasks = [asyncio.create_task(self._loop(i), name=f"sis-callbacks-{i}")
                       for i in range(self.concurrency)]
        self._tasks.append(asyncio.create_task(self._promoter(), name="sis-callbacks-promoter"))

    async def stop(self) -> None:
        self._stopping = True
        await cancel_tasks(self._tasks)
        if self._session is not None:
            await self._session.close()

    async def _guarded(self, what: str, coro_fn: Callable[[], Any]) -> None:
        import redis.exceptions as rexc

        while not self._stopping:
            try:
                await coro_fn()
            except asyncio.CancelledError:
                raise
            except (rexc.ConnectionError, rexc.TimeoutError, rexc.BusyLoadingError, OSError) as exc:
                logger.warning("%s: Redis unavailable (%s); retrying in 1 s", what, exc)
                await asyncio.sleep(1.0)
            except Exception:
                logger.exception("%s failed unexpectedly", what)
                await asyncio.sleep(1.0)

    async def _promoter(self) -> None:
        async def once() -> None:
            await self._promote(keys=[self.keys.retry, self.keys.callbacks], args=[repr(time.time()), 100])
            await asyncio.sleep(_PROMOTE_EVERY_S)
        await self._guarded("callback retry scheduler", once)

    async def _loop(self, index: int) -> None:
        async def once() -> None:
            entry = await self._next()
            if entry is not None:
                await self._deliver(*entry)
        await self._guarded(f"callback dispatcher {index}", once)

    async def _next(self) -> tuple[str, dict[str, str]] | None:
        res = await self.redis.xautoclaim(self.keys.callbacks, DISPATCH_GROUP, self.consumer,
                                          int(self.reclaim_s * 1000), start_id="0-0", count=1)
        for entry_id, fields in (res[1] if res and len(res) > 1 else []):
            if fields:
                return entry_id, fields
            await self._settle(keys=self._keys(""), args=[DISPATCH_GROUP, entry_id, "", "", "", ""])
        got = await self.redis.xreadgroup(DISPATCH_GROUP, self.consumer, {self.keys.callbacks: ">"},
                                          count=1, block=_BLOCK_MS)
        for _stream, entries in got or []:
            for entry_id, fields in entries:
                return entry_id, fields or {}
        return None

    def _keys(self, job_id: str) -> list[str]:
        return [self.keys.job(job_id), self.keys.cblog(job_id), self.keys.callbacks, self.keys.retry]

    async def _deliver(self, entry_id: str, fields: dict[str, str]) -> None:
        job_id = fields.get("job_id", "")
        attempt = fields.get("attempt", "0")
        n = int(fields.get("n", "0"))
        h = await self.redis.hgetall(self.keys.job(job_id)) if job_id else {}
        if not h or not h.get("callback_url") or h.get("callback_state") != "PENDING":
            await self._settle(keys=self._keys(job_id), args=[DISPATCH_GROUP, entry_id, "", "", "", ""])
            return
        job = record_from_hash(job_id, h)
        url = job.callback_url or ""
        body = json.dumps(job.public_body(), ensure_ascii=False).encode("utf-8")
        log: dict[str, Any] = {"time": _now_rfc3339(), "attempt": n + 1}
        ok = False
        final = ""
        try:
            if self.check is not None:
                self.check(url)
            async with self._session.post(url, data=body, allow_redirects=False, headers={
                    "Content-Type": "application/json;charset=utf-8", "X-Sis-Callback-Id": job_id,
                    "X-Sis-Job-Id": job_id, "X-Sis-Job-Attempt": str(attempt),
                    "X-Sis-Delivery-Attempt": str(n + 1),
                    "Idempotency-Key": idempotency_key(job_id, attempt)}) as resp:
                log["status"] = resp.status
                ok = 200 <= resp.status < 300
        except RequestRejected as exc:
            log["error"] = exc.error_msg
            final = "FAILED"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - network errors are retried
            log["error"] = f"{type(exc).__name__}: {exc}"[:300]
        retry_member, due = "", ""
        if ok:
            final = "DELIVERED"
            self.delivered += 1
        elif not final:
            if n + 1 >= self.attempts:
                final = "FAILED"
                logger.warning("callback of job %s failed after %d attempts", job_id, self.attempts)
            else:
                retry_member = json.dumps([job_id, str(attempt), str(n + 1)])
                due = repr(time.time() + self.backoff_s * (2 ** n))
        await self._settle(keys=self._keys(job_id), args=[
            DISPATCH_GROUP, entry_id, json.dumps(log), final, retry_member, due])
