"""The stream runner's receive side: websocket messages -> :class:`ClientSession` -> events
mapped back to the user's clock, duplicates after a replay dropped -> the
:class:`~sis_stream.client.events.EventQueue` (:class:`ReceiveMixin`, a base of
:class:`~sis_stream.client.runner.StreamRunner`)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import aiohttp

from ..errors import BufferFullError, RemoteProtocolError
from ..protocol import (
    ClientSession,
    ConnectionClosed,
    Ended,
    EndReason,
    ExceededAudio,
    ExceededSilence,
    FinalResult,
    OtherEvent,
    PartialResult,
    Segment,
    ServerError,
    Started,
    VoiceEnd,
    VoiceStart,
    WordInfo,
)
from .events import Reconnected

if TYPE_CHECKING:
    from ._replay import _Ring, _TimeMap
    from .events import EventQueue, StreamStats

__all__ = ["ReceiveMixin"]

logger = logging.getLogger(__name__)


class ReceiveMixin:
    """The receive task of :class:`~sis_stream.client.runner.StreamRunner` (one per connection)
    and the mapping of the session's events to what the user sees.

    A mixin over the runner's state: it holds none itself; the runner sets the attributes below.
    """

    # set by the runner
    events: EventQueue
    stats: StreamStats
    ready: asyncio.Event
    error: BaseException | None
    trace_id: str | None
    _session: ClientSession | None
    _started: asyncio.Future | None
    _ended: asyncio.Future | None
    _ring: _Ring
    _map: _TimeMap
    _room: asyncio.Event
    _wakeup: asyncio.Event
    _end_sent: asyncio.Event
    _end_requested: bool
    _server_finished: bool
    _internal_end: bool
    _closed_reported: bool
    _silence_boundary: bool
    _pending_reconnect: tuple[int, float, float] | None
    _last_final_stream: float
    _last_final_user: float
    _last_rx_at: float
    _loop: asyncio.AbstractEventLoop

    if TYPE_CHECKING:  # provided by the runner
        @property
        def _can_reconnect(self) -> bool: ...
        def _mark_lost(self, exc: BaseException | None) -> None: ...

    async def _recv_loop(self, ws: Any, session: ClientSession) -> None:
        try:
            async for msg in ws:
                self._last_rx_at = self._loop.time()  # progress: the END wait restarts from here
                if msg.type is aiohttp.WSMsgType.TEXT:
                    session.receive(msg.data)
                elif msg.type is aiohttp.WSMsgType.BINARY:
                    session.receive(msg.data)  # raises RemoteProtocolError
                else:
                    break
                await self._dispatch(session)
                if session.state.name in ("CLOSED",):
                    break
        except (RemoteProtocolError, BufferFullError) as exc:
            self.error = exc
            self._resolve(self._started, False)
            self._resolve(self._ended, False)
            self._mark_lost(exc)  # the supervisor sees self.error and stops (never reconnects)
            return
        except (aiohttp.ClientError, ConnectionResetError) as exc:
            logger.debug("receive failed: %r", exc)
        session.receive(None)
        await self._dispatch(session)
        self._mark_lost(None)
        self._resolve(self._started, False)
        self._resolve(self._ended, False)

    @staticmethod
    def _resolve(fut: asyncio.Future | None, value: bool) -> None:
        if fut is not None and not fut.done():
            fut.set_result(value)

    async def _dispatch(self, session: ClientSession) -> None:
        for ev in session.events():
            out = self._map_event(ev)
            if out is not None:
                await self.events.put(out)

    def _map_event(self, ev: object) -> object | None:
        if isinstance(ev, Started):
            self.trace_id = ev.trace_id
            self._resolve(self._started, True)
            self.ready.set()
            if self._pending_reconnect is not None:
                a, rep, lost = self._pending_reconnect
                self._pending_reconnect = None
                return Reconnected(a, rep, lost, ev.trace_id)
            return ev if self.stats.connections == 1 else None
        if isinstance(ev, (PartialResult, FinalResult)):
            seg, stream_end = self._map_segment(ev.segment)
            if isinstance(ev, FinalResult):
                if stream_end <= self._last_final_stream + 0.5 and self.stats.connections > 1 \
                        and self._last_final_stream > 0:
                    self.stats.duplicate_finals += 1
                    return None
                self._last_final_stream = max(self._last_final_stream, stream_end)
                self._last_final_user = max(self._last_final_user, float(seg.end_time))
                self._ring.trim(stream_end)
                self._map.trim(ev.segment.end_time)
                self._silence_boundary = True
                return FinalResult(seg, ev.trace_id)
            if stream_end <= self._last_final_stream and self.stats.connections > 1:
                self.stats.stale_partials += 1
                return None
            return PartialResult(seg, ev.trace_id)
        if isinstance(ev, (VoiceStart, VoiceEnd, ExceededSilence, ExceededAudio)):
            ts = ev.timestamp
            if ts is not None:
                ts = round(self._map.map(ts)[0])
            if not isinstance(ev, VoiceStart):
                self._server_finished = True
                self._room.set()
                self._wakeup.set()
            return replace(ev, timestamp=ts)
        if isinstance(ev, Ended):
            self._resolve(self._ended, True)
            self._wakeup.set()
            if self._internal_end and ev.reason is EndReason.NORMAL:
                return None
            return ev
        if isinstance(ev, ServerError):
            if not ev.fatal and self._session is not None and self._session.state.name == "SERVER_ENDED":
                # START rejected: no END follows (§7.4)
                self._resolve(self._started, False)
                self._resolve(self._ended, True)
                self.ready.set()
            self._wakeup.set()
            return ev
        if isinstance(ev, ConnectionClosed):
            self._mark_lost(None)
            if ev.error_code is not None:  # FATAL_ERROR: report, never reconnect
                self._server_finished = True
                self._resolve(self._started, False)
                self._resolve(self._ended, True)
                self._closed_reported = True
                return ev
            if self._can_reconnect and ev.during_session and not self._end_sent.is_set() \
                    and not self._end_requested and not self._server_finished:
                return None  # the supervisor reconnects (or reports after the last attempt)
            if not ev.during_session:
                return None
            self._server_finished = True
            self._closed_reported = True
            return ev
        if isinstance(ev, OtherEvent):
            return ev
        return ev

    def _map_segment(self, seg: Segment) -> tuple[Segment, float]:
        start_u, _ = self._map.map(seg.start_time)
        end_u, end_s = self._map.map(seg.end_time)
        result = seg.result
        if result is not None and result.word_info:
            words = tuple(
                WordInfo(None if w.start_time is None else round(self._map.map(w.start_time)[0]),
                         None if w.end_time is None else round(self._map.map(w.end_time)[0]), w.word)
                for w in result.word_info)
            result = replace(result, word_info=words)
        return replace(seg, start_time=round(start_u), end_time=round(end_u), result=result), end_s
