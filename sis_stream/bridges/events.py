"""Bridge events and where they go: JSON lines (a file or stdout), a webhook, a callback.

Every event is one flat JSON object with at least ``call_id``, ``source`` (``audiosocket`` |
``audio_fork`` | ``twilio``), ``channel`` (0, 1 or the Twilio track name), ``type``
(:data:`EVENT_TYPES`), ``seq`` (a bridge-wide sequence number, so a receiver can restore the
order) and ``time`` (Unix seconds). ``partial``/``final`` add ``text``, ``start_ms`` and
``end_ms`` (call time: milliseconds since the call's first audio); ``call_end`` adds ``audio_ms``,
``lost_ms`` and ``reason``; ``dtmf`` adds ``digit``; ``error`` adds ``code`` and ``message``.

:meth:`EventHub.emit` never blocks and never awaits: each sink has a bounded queue with the
``drop_oldest`` policy (drops are counted) and its own writer task, so a slow disk, a stalled
stdout pipe or a dead webhook can never hold up the media path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final, TextIO

__all__ = [
    "EVENT_TYPES",
    "SOURCES",
    "CallbackSink",
    "EventHub",
    "EventSink",
    "JsonLinesSink",
    "WebhookSink",
]

logger = logging.getLogger(__name__)

#: The ``type`` values of bridge events.
EVENT_TYPES: Final = ("call_start", "partial", "final", "dtmf", "call_end", "error")
#: The ``source`` values (one per listener kind).
SOURCES: Final = ("audiosocket", "audio_fork", "twilio")


class EventSink:
    """A bounded queue of events and one task that delivers them (subclasses: :meth:`deliver`).

    Parameters
    ----------
    max_queue : int
        Events held while delivery lags; beyond it the oldest is dropped (``drop_oldest``) and
        counted in :attr:`dropped`.
    """

    name = "sink"

    def __init__(self, max_queue: int = 10_000) -> None:
        if type(max_queue) is not int or max_queue < 1:
            raise ValueError(f"max_queue must be an int >= 1, got {max_queue!r}")
        self.max_queue = max_queue
        self._q: deque[dict[str, Any]] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.delivered = 0
        self.dropped = 0
        self.failed = 0

    def put(self, event: dict[str, Any]) -> None:
        """Queue `event` (never blocks; drops the oldest queued event when full)."""
        if len(self._q) >= self.max_queue:
            self._q.popleft()
            self.dropped += 1
        self._q.append(event)
        if self._wake is not None:
            self._wake.set()

    async def start(self) -> None:
        """Start the delivery task (in the running loop)."""
        self._wake = asyncio.Event()
        if self._q:
            self._wake.set()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"bridge-{self.name}")

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            if not self._q:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = list(self._q)
            self._q.clear()
            try:
                await self.deliver(batch)
            except asyncio.CancelledError:
                raise
            except Exception:  # a sink must never take the bridge down
                self.failed += len(batch)
                logger.exception("%s: could not deliver %d event(s)", self.name, len(batch))

    async def deliver(self, batch: list[dict[str, Any]]) -> None:  # pragma: no cover - abstract
        """Deliver `batch` (in order)."""
        raise NotImplementedError

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Deliver what is queued (at most `timeout_s`), then stop."""
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            except asyncio.TimeoutError:
                logger.warning("%s: %d event(s) not delivered at shutdown", self.name, len(self._q))
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        await self.close_resources()

    async def close_resources(self) -> None:
        """Release files and sessions (after the last delivery)."""


class JsonLinesSink(EventSink):
    """Events as JSON lines to a file (appended) or to stdout (``"-"``).

    Writes happen in a worker thread, one batch at a time, so a stalled pipe never blocks the
    event loop.
    """

    name = "events"

    def __init__(self, path: str, max_queue: int = 10_000) -> None:
        super().__init__(max_queue)
        self.path = path
        self._fh: TextIO | None = None
        self._own = False

    async def start(self) -> None:
        if self.path == "-":
            self._fh = sys.stdout
        else:
            # opened in a worker thread (the loop never blocks on the filesystem); closed in close_resources
            self._fh = await asyncio.get_running_loop().run_in_executor(
                None, lambda: open(self.path, "a", encoding="utf-8"))  # noqa: SIM115
            self._own = True
        await super().start()

    async def deliver(self, batch: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(e, ensure_ascii=False, separators=(",", ":")) + "\n" for e in batch)
        fh = self._fh
        assert fh is not None

        def write() -> None:
            fh.write(text)
            fh.flush()

        await asyncio.get_running_loop().run_in_executor(None, write)
        self.delivered += len(batch)

    async def close_resources(self) -> None:
        if self._own and self._fh is not None:
            self._fh.close()
        self._fh = None


class WebhookSink(EventSink):
    """One HTTP POST (JSON body) per event, retried with exponential backoff.

    Parameters
    ----------
    url : str
        ``http://`` or ``https://`` URL.
    max_queue : int
        Bounded queue (``drop_oldest``).
    max_attempts : int
        Tries per event; connection errors, timeouts, 408, 429 and 5xx are retried, other 4xx
        are not (the receiver rejected the event: retrying would not help).
    base_delay_s, max_delay_s : float
        Backoff: ``min(max, base * 2**(k-1))`` with up to 50 % jitter before try ``k+1``.
    timeout_s : float
        Per-request timeout.
    """

    name = "webhook"

    def __init__(self, url: str, max_queue: int = 10_000, *, max_attempts: int = 5, base_delay_s: float = 0.5,
                 max_delay_s: float = 8.0, timeout_s: float = 5.0) -> None:
        super().__init__(max_queue)
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook URL must start with http:// or https://, got {url!r}")
        if type(max_attempts) is not int or max_attempts < 1:
            raise ValueError(f"max_attempts must be an int >= 1, got {max_attempts!r}")
        self.url = url
        self.max_attempts = max_attempts
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.timeout_s = timeout_s
        self.retries = 0
        self._http: Any = None

    async def start(self) -> None:
        import aiohttp

        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        await super().start()

    async def deliver(self, batch: list[dict[str, Any]]) -> None:
        for event in batch:
            await self._post(event)

    async def _post(self, event: dict[str, Any]) -> None:
        import aiohttp

        body = json.dumps(event, ensure_ascii=False).encode()
        for attempt in range(1, self.max_attempts + 1):
            status: int | None = None
            try:
                async with self._http.post(self.url, data=body,
                                           headers={"Content-Type": "application/json"}) as resp:
                    status = resp.status
                    await resp.read()
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            else:
                if status < 300:
                    self.delivered += 1
                    return
                reason = f"HTTP {status}"
                if 400 <= status < 500 and status not in (408, 429):
                    break
            if attempt < self.max_attempts:
                self.retries += 1
                delay = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
                await asyncio.sleep(delay * (1 - 0.5 * random.random()))
        self.failed += 1
        logger.warning("webhook: gave up on a %s event of call %s after %d attempt(s) (%s)",
                       event.get("type"), event.get("call_id"), attempt, reason)

    async def close_resources(self) -> None:
        if self._http is not None:
            await self._http.close()
        self._http = None


class CallbackSink(EventSink):
    """Events handed to a plain function (``callback(event)``), from the sink's own task."""

    name = "callback"

    def __init__(self, callback: Callable[[dict[str, Any]], Any], max_queue: int = 10_000) -> None:
        super().__init__(max_queue)
        self.callback = callback

    async def deliver(self, batch: list[dict[str, Any]]) -> None:
        for event in batch:
            r = self.callback(event)
            if asyncio.iscoroutine(r):
                await r
            self.delivered += 1


class EventHub:
    """Fans every event out to the sinks; stamps ``seq`` and ``time``."""

    def __init__(self, sinks: list[EventSink] | tuple[EventSink, ...] = ()) -> None:
        self.sinks = list(sinks)
        self._seq = 0
        self.counts: dict[str, int] = {}

    def emit(self, call_id: str, source: str, channel: int | str, type_: str, **fields: Any) -> dict[str, Any]:
        """Build one event and queue it on every sink (never blocks). Returns the event."""
        self._seq += 1
        event: dict[str, Any] = {"call_id": call_id, "source": source, "channel": channel, "type": type_,
                                 "seq": self._seq, "time": round(time.time(), 3)}
        event.update(fields)
        self.counts[type_] = self.counts.get(type_, 0) + 1
        for s in self.sinks:
            s.put(event)
        return event

    async def start(self) -> None:
        for s in self.sinks:
            await s.start()

    async def aclose(self, timeout_s: float = 5.0) -> None:
        for s in self.sinks:
            await s.aclose(timeout_s)
