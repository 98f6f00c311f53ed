"""What a stream hands its user besides the protocol's events: the pump's own events
(:class:`Reconnected`, :class:`RolledOver`), the bounded :class:`EventQueue` that carries events
from the receive loop to the user (:data:`END_OF_EVENTS` once it is closed and drained), and the
stream's counters (:class:`StreamStats`)."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

from ..errors import BufferFullError
from ..protocol import PartialResult

__all__ = [
    "END_OF_EVENTS",
    "EVENT_OVERFLOW_POLICIES",
    "EventQueue",
    "Reconnected",
    "RolledOver",
    "StreamStats",
]

#: Named overflow policies of :class:`EventQueue`.
EVENT_OVERFLOW_POLICIES: Final = ("block", "drop_partial", "error")
#: What :meth:`EventQueue.get` returns once the queue is closed and drained.
END_OF_EVENTS: Final = object()


# --- events added by the pump ------------------------------------------------------------------


@dataclass(frozen=True)
class Reconnected:
    """The connection was lost mid-session and re-established (continue-stream).

    Attributes
    ----------
    attempt : int
        Connect attempts this reconnect took (1 = first try succeeded).
    replayed_ms : float
        Audio sent again from the replay ring.
    lost_ms : float
        Audio after the last final result that could not be replayed (the ring had dropped it);
        0 when the ring covered the whole gap.
    trace_id : str or None
        Trace id of the new session.
    """

    attempt: int
    replayed_ms: float
    lost_ms: float
    trace_id: str | None


@dataclass(frozen=True)
class RolledOver:
    """A planned rollover to a new connection (before the 5 h limit) happened at ``user_ms``."""

    user_ms: float
    forced: bool
    trace_id: str | None


# --- bounded event queue -------------------------------------------------------------------------


class EventQueue:
    """Bounded FIFO between the receive loop and the user, with a named overflow policy.

    Policies: ``block`` (the receive loop waits, so TCP back-pressure reaches the server),
    ``drop_partial`` (drop the oldest queued :class:`PartialResult`; block if there is none:
    finals are never dropped), ``error`` (raise :class:`BufferFullError`, which fails the stream).
    """

    def __init__(self, maxsize: int = 1024, overflow: str = "block") -> None:
        if type(maxsize) is not int or maxsize < 1:
            raise ValueError(f"maxsize must be an int >= 1, got {maxsize!r}")
        if overflow not in EVENT_OVERFLOW_POLICIES:
            raise ValueError(f"overflow must be one of {EVENT_OVERFLOW_POLICIES}, got {overflow!r}")
        self.maxsize = maxsize
        self.overflow = overflow
        self._q: deque[object] = deque()
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._closed = False
        self.dropped = 0
        self.overruns = 0

    def __len__(self) -> int:
        return len(self._q)

    async def put(self, item: object) -> None:
        """Queue ``item`` under the overflow policy."""
        while len(self._q) >= self.maxsize and not self._closed:
            self.overruns += 1
            if self.overflow == "error":
                raise BufferFullError(f"event queue full ({self.maxsize} events): iterate the stream "
                                      "faster or use overflow='block'/'drop_partial'")
            if self.overflow == "drop_partial":
                victim = next((e for e in self._q if isinstance(e, PartialResult)), None)
                if victim is not None:
                    self._q.remove(victim)
                    self.dropped += 1
                    break
            self._writable.clear()
            await self._writable.wait()
        self._q.append(item)
        self._readable.set()

    def close(self) -> None:
        """No more items; :meth:`get` returns :data:`END_OF_EVENTS` once drained."""
        self._closed = True
        self._readable.set()
        self._writable.set()

    async def get(self) -> object:
        """Next item, or :data:`END_OF_EVENTS` after :meth:`close`."""
        while not self._q:
            if self._closed:
                return END_OF_EVENTS
            self._readable.clear()
            await self._readable.wait()
        item = self._q.popleft()
        self._writable.set()
        return item

    def get_nowait(self) -> object | None:
        """Next item or None."""
        if not self._q:
            return None
        item = self._q.popleft()
        self._writable.set()
        return item


# --- stream counters ---------------------------------------------------------------------------


@dataclass
class StreamStats:
    """Counters of one stream (all connections)."""

    frames_sent: int = 0
    bytes_sent: int = 0
    audio_ms_sent: float = 0.0  #: unique audio (stream clock), replays excluded
    replayed_ms: float = 0.0
    lost_ms: float = 0.0
    reconnects: int = 0
    rollovers: int = 0
    keepalive_frames: int = 0
    gated_ms: float = 0.0
    duplicate_finals: int = 0
    stale_partials: int = 0
    dropped_after_end: int = 0
    connections: int = 0
    ring_dropped_ms: float = 0.0
    pacing: Any = field(default=None, repr=False)
