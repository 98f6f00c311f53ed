"""The stream runner's record of the frames it put on the wire: the replay ring (:class:`_Ring`)
and the time map from a connection's clock back to the user's and the stream's
(:class:`_TimeMap`). Private to the client pump (:mod:`.runner`)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import NamedTuple


class _Sent(NamedTuple):
    """Layout of one frame put on the wire (ring entries are indexed by the constants below).

    The runner stores PLAIN tuples of this layout, not ``_Sent`` instances: the GC untracks an
    exact tuple of atomic values at its first look, but never a tuple subclass (CPython only
    untracks ``PyTuple_CheckExact`` objects). As NamedTuples, a thousand streams' rings and time
    maps pushed ~20,000 tracked objects a second into the oldest generation, and the full
    collections this triggered (100-200 ms each at N=1000) were the pacing p99. ``_Ring`` and
    ``_TimeMap`` accept either form.
    """

    data: bytes
    stream_ms: float
    user_ms: float
    dur_ms: float
    keepalive: bool

    @property
    def user_dur(self) -> float:
        return 0.0 if self.keepalive else self.dur_ms


class _Mapped(NamedTuple):
    """Layout of a frame's place on the connection's clock (no audio bytes: the map only maps
    times). Stored as plain tuples, like :class:`_Sent`."""

    conn_ms: float
    stream_ms: float
    user_ms: float
    dur_ms: float
    keepalive: bool


# field indexes of the _Sent / _Mapped layouts
_DATA = _CONN = 0
_STREAM, _USER, _DUR, _KA = 1, 2, 3, 4


class _TimeMap:
    """conn ms -> (user ms, stream ms) through the frames sent on one connection (bounded)."""

    def __init__(self, max_entries: int) -> None:
        self._e: deque[tuple[float, float, float, float, bool]] = deque()  # _Mapped layout
        self._max = max_entries
        self._anchor: tuple[float, float, float] | None = None  # conn, user, stream at the cut
        self.conn_pos = 0.0

    def add(self, s: tuple) -> None:
        """Map the next frame on this connection (``s`` in the :class:`_Sent` layout)."""
        dur = s[_DUR]
        self._e.append((self.conn_pos, s[_STREAM], s[_USER], dur, s[_KA]))
        self.conn_pos += dur
        if len(self._e) > self._max:
            self._cut()

    def _cut(self) -> None:
        conn, stream, user, dur, ka = self._e.popleft()
        self._anchor = (conn + dur, user + (0.0 if ka else dur), stream + dur)

    def trim(self, conn_end: float) -> None:
        while self._e and self._e[0][_CONN] + self._e[0][_DUR] <= conn_end:
            self._cut()

    def map(self, t: float) -> tuple[float, float]:
        for conn, stream, user, dur, ka in reversed(self._e):
            if conn <= t:
                d = min(t - conn, dur)
                extra = t - conn - d  # past the last frame: extrapolate 1:1
                return (user + (0.0 if ka else d) + extra, stream + d + extra)
        if self._anchor is not None:
            c, u, st = self._anchor
            return (u + (t - c), st + (t - c))
        if self._e:
            conn, stream, user = self._e[0][:3]
            return (user + (t - conn), stream + (t - conn))
        return (t, t)


class _Ring:
    """Frames sent since the end of the last final (bounded by ``cap_ms``; oldest dropped)."""

    def __init__(self, cap_ms: float) -> None:
        self.cap_ms = cap_ms
        self._e: deque[tuple] = deque()  # _Sent layout
        self.ms = 0.0
        self.dropped_ms = 0.0

    def add(self, s: tuple) -> None:
        """Keep frame ``s`` (:class:`_Sent` layout) for replay."""
        dur = s[_DUR]
        if self.cap_ms <= 0:
            self.dropped_ms += dur
            return
        self._e.append(s)
        self.ms += dur
        while self.ms > self.cap_ms + 1e-9 and self._e:
            old = self._e.popleft()[_DUR]
            self.ms -= old
            self.dropped_ms += old

    def trim(self, stream_end: float) -> None:
        while self._e and self._e[0][_STREAM] + self._e[0][_DUR] <= stream_end + 1e-6:
            self.ms -= self._e.popleft()[_DUR]

    def clear(self) -> None:
        self._e.clear()
        self.ms = 0.0

    def start_stream_ms(self, next_stream_ms: float) -> float:
        return self._e[0][_STREAM] if self._e else next_stream_ms

    def __iter__(self) -> Iterator[tuple]:
        return iter(list(self._e))

    def __len__(self) -> int:
        return len(self._e)
