"""The transcriber job backend interface: what the REST routes need of a job queue.

Two backends implement it:

* :class:`.jobs.JobManager` (default): one process, jobs in ``jobs.sqlite3`` under the data
  directory;
* :class:`.redis_jobs.RedisJobManager` (``sis-stream serve --redis URL``): jobs on Redis Streams,
  shared by every ``serve`` and ``worker`` process using the same Redis.

The routes call :meth:`JobBackend.submit` and :meth:`JobBackend.get`; either may return an
awaitable (the Redis backend talks to the network), so callers go through :func:`resolve`.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable
from typing import Any, Protocol, TypeVar, runtime_checkable

__all__ = ["JobBackend", "resolve"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


@runtime_checkable
class JobBackend(Protocol):
    """A transcriber job queue (see the module docstring)."""

    async def start(self) -> None:
        """Open connections and start workers/dispatchers."""

    async def stop(self) -> None:
        """Stop workers (a running job is resumed later, here or by another process)."""

    def submit(self, project_id: str, request: dict[str, Any], callback_url: str | None) -> Any:
        """Store a WAITING job; returns its id (or an awaitable of it). ``SIS.0536`` when full."""

    def get(self, project_id: str, job_id: str) -> Any:
        """The job record (or an awaitable of it); ``SIS.0533 "task id is not found"``."""

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no job is open and no callback is pending (tests)."""


async def resolve(value: T | Awaitable[T]) -> T:
    """`value`, awaited first when it is awaitable."""
    if inspect.isawaitable(value):
        return await value
    return value
