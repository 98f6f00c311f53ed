"""Each ``serve --redis`` process publishes its session capacity to Redis.

Every ``interval_s`` the process writes the hash ``sis:capacity:{HOST:PORT}`` = ``{"sessions",
"capacity", "connections", "draining", "time"}`` with a TTL of ``3 * interval_s``, so a process
that died disappears from the view by itself. :func:`cluster_capacity` reads the whole view
(what an autoscaler or a dashboard needs: free session slots per process).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Final

__all__ = ["CAPACITY_PREFIX", "CapacityPublisher", "cluster_capacity"]

logger = logging.getLogger(__name__)

CAPACITY_PREFIX: Final = "sis:capacity:"


class CapacityPublisher:
    """Publishes one process's :class:`.state.SessionLimiter` figures (see the module docstring).

    Parameters
    ----------
    redis : redis.asyncio.Redis
        Closed by :meth:`stop`.
    name : str
        ``HOST:PORT`` of this process.
    limiter : SessionLimiter
    draining : callable
        True once the process drains.
    interval_s : float
    """

    def __init__(self, redis: Any, name: str, limiter: Any, draining: Any, interval_s: float = 2.0) -> None:
        self.redis = redis
        self.key = CAPACITY_PREFIX + name
        self.limiter = limiter
        self.draining = draining
        self.interval_s = float(interval_s)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="sis-capacity")

    async def publish(self) -> None:
        lim = self.limiter
        await self.redis.hset(self.key, mapping={
            "sessions": lim.active, "capacity": lim.limit, "connections": len(lim.connections),
            "draining": int(bool(self.draining())), "time": repr(time.time())})
        await self.redis.expire(self.key, max(1, int(3 * self.interval_s)))

    async def _loop(self) -> None:
        while True:
            try:
                await self.publish()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis down: try again next round
                logger.debug("capacity publish failed: %s", exc)
            await asyncio.sleep(self.interval_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        with contextlib.suppress(Exception):
            await self.redis.delete(self.key)
        with contextlib.suppress(Exception):
            await self.redis.aclose()


async def cluster_capacity(redis: Any) -> dict[str, dict[str, str]]:
    """``{HOST:PORT: {"sessions", "capacity", "connections", "draining", "time"}}`` of every live
    process."""
    out: dict[str, dict[str, str]] = {}
    async for key in redis.scan_iter(match=CAPACITY_PREFIX + "*", count=100):
        h = await redis.hgetall(key)
        if h:
            out[key[len(CAPACITY_PREFIX):]] = h
    return out
