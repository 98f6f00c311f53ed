"""Usage counters shared through Redis (``serve --redis URL``).

Each process keeps its own counters (:meth:`.metrics.Metrics.usage`, shown by its ``/metrics``).
A :class:`UsagePublisher` adds what changed since its last round to the cluster-wide hashes
``sis:usage:{project_id}`` (fields ``{interface}:calls`` and ``{interface}:audio_ms``) every
``interval_s`` and once more at shutdown, so the totals survive process restarts. A process
killed with ``kill -9`` loses at most its last ``interval_s`` of counts.
:func:`cluster_usage` reads the totals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Final

__all__ = ["USAGE_PREFIX", "UsagePublisher", "cluster_usage"]

logger = logging.getLogger(__name__)

USAGE_PREFIX: Final = "sis:usage:"


class UsagePublisher:
    """Adds one process's usage deltas to Redis (see the module docstring).

    Parameters
    ----------
    redis : redis.asyncio.Redis
        Not closed here (shared with the caller).
    metrics : Metrics
    interval_s : float
    """

    def __init__(self, redis: Any, metrics: Any, interval_s: float = 2.0) -> None:
        self.redis = redis
        self.metrics = metrics
        self.interval_s = float(interval_s)
        self._sent: dict[tuple[str, str], tuple[int, float]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="sis-usage-sync")

    async def flush(self) -> None:
        """Add the counts not yet published (one transaction)."""
        pipe = self.redis.pipeline(transaction=True)
        new: dict[tuple[str, str], tuple[int, float]] = {}
        for u in self.metrics.usage():
            key = (u.project_id, u.interface)
            calls0, audio0 = self._sent.get(key, (0, 0.0))
            if u.calls == calls0 and u.audio_ms == audio0:
                continue
            pipe.hincrby(USAGE_PREFIX + u.project_id, f"{u.interface}:calls", u.calls - calls0)
            pipe.hincrbyfloat(USAGE_PREFIX + u.project_id, f"{u.interface}:audio_ms", u.audio_ms - audio0)
            new[key] = (u.calls, u.audio_ms)
        if new:
            await pipe.execute()
            self._sent.update(new)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis down: the deltas wait for the next round
                logger.debug("usage publish failed: %s", exc)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        try:
            await self.flush()
        except Exception as exc:  # noqa: BLE001
            logger.warning("usage counts of the last %.0f s not published: %s", self.interval_s, exc)


async def cluster_usage(redis: Any, project_id: str) -> dict[str, dict[str, float]]:
    """``{interface: {"calls": n, "audio_ms": ms}}`` of `project_id` across the cluster."""
    out: dict[str, dict[str, float]] = {}
    for field, value in (await redis.hgetall(USAGE_PREFIX + project_id)).items():
        iface, _, what = field.rpartition(":")
        out.setdefault(iface, {})[what] = float(value)
    return out
