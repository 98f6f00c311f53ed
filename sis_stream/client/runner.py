"""The stream runner of the RASR pump: connect, send loop (Framer + Pacer), receive loop,
reconnect with replay, planned rollover (:class:`StreamRunner`)."""

# Theory of operation
# ===================
#
# The runner (with its mixins, see below) is the only code that awaits for streaming. One
# StreamRunner drives one recognition stream (possibly over several connections) with exactly
# two tasks, both owned here and cancelled by aclose(): the supervisor task (connect, START, the
# send loop, reconnects) and the receive task of the current connection (ws messages ->
# ClientSession.receive -> mapped events -> the bounded EventQueue). No thread is involved;
# everything runs on the caller's loop.
#
#   user send() --transcode--> Framer (bounded, overflow policy) --pop--> [VAD gate] --> ring
#        --(await the loop's PacingScheduler until the pacer's deadline)--> ws.send_bytes
#        --> pacer.sent(clock())     (an injected clock/sleep: await sleep(pacer.delay(clock())))
#   ws messages --> ClientSession --> time mapping / duplicate filter --> EventQueue --> user
#
# Clocks. Three time lines exist:
#   user ms     position in the audio the user gave (after transcoding); what events report.
#   stream ms   audio actually put on the wire at least once (gated audio is not; keepalive
#               silence is); the replay ring and the "lost ms" accounting use it.
#   conn ms     the server's session clock of the current connection: 0 at its first frame.
# Every frame sent on a connection is recorded (conn ms, stream ms, user ms, duration) in a
# bounded map; result times are mapped back through it, so reconnects (replay restarts the
# server clock), local VAD gating (gaps) and keepalive silence (extra audio) never shift the
# timestamps a user sees.
#
# Reconnect (continue-stream only). The ring keeps every frame sent since the end of the last
# final result (bounded: oldest frames are dropped beyond ``ring_ms``). When the transport is
# lost during a session the user has not ended, the runner reconnects with exponential backoff
# and jitter (attempt limit), sends START again, replays the ring at once, and carries on.
# Finals whose end is not past the last final already delivered are duplicates and dropped.
# ``Reconnected.lost_ms`` is the audio between the last final's end and the oldest frame the
# ring still held (0 when the ring covered the gap). A session whose END was sent is never
# reconnected. Planned rollover: before the 5 h connection limit the runner ends the session
# cleanly (END, finals, END) at a silence boundary and continues on a new connection.
#
# Where the parts live (imports point down this list, never up):
#   runner.py     StreamRunner: user side, supervisor (connect, reconnect, replay), general send
#                 loop, keepalive, rollover, teardown
#   receive.py    ReceiveMixin: the receive loop and the event mapping (clocks, duplicates)
#   fastpath.py   FastPathMixin and FastWriter: one frame now (direct masked write or
#                 send_bytes) and the scheduler-driven fast path
#   _replay.py    the replay ring and the time map
#   events.py     Reconnected, RolledOver, EventQueue, StreamStats
#   transport.py  ws_url, host_header, open_websocket, TransportOptions, ReconnectPolicy
#   scheduler.py  PacingScheduler, the loop's shared pacing timer

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

import aiohttp

from ..errors import (
    LocalProtocolError,
    SisConnectionError,
    SisLimitError,
    SisServerError,
)
from .framing import SILENCE_BYTE, Framer
from .pacing import Pacer
from ..protocol import (
    ClientSession,
    ConnectionClosed,
    EndOfStream,
    Mode,
    StartConfig,
    StartStream,
)
from ._replay import _DATA, _Ring, _TimeMap
from .events import EventQueue, RolledOver, StreamStats
from .fastpath import FastPathMixin, FastWriter, limit_send_buffer
from .receive import ReceiveMixin
from .scheduler import PacingScheduler
from .transport import (
    CONNECTION_LIMIT_S,
    DEFAULT_ROLLOVER_AFTER_S,
    ReconnectPolicy,
    TransportOptions,
)

__all__ = ["FrameGate", "StreamRunner"]

logger = logging.getLogger(__name__)

#: If no silence boundary came within this time after the rollover was due, roll over anyway.
ROLLOVER_GRACE_S: Final = 600.0


class FrameGate(Protocol):
    """Local VAD gating: ``process(frame, user_ms) -> [(frame, user_ms), ...]`` to send."""

    def process(self, frame: bytes, user_ms: float) -> list[tuple[bytes, float]]: ...


Connector = Callable[[], Awaitable[Any]]
_LOST, _DONE, _ROLLOVER = "lost", "done", "rollover"


class StreamRunner(FastPathMixin, ReceiveMixin):
    """Drive one recognition stream over one or more websocket connections.

    Parameters
    ----------
    connect : async callable
        Returns an open aiohttp websocket (a new connection per call; auth is done there).
    config : StartConfig
    framer : Framer
        The bounded input buffer (the user feeds it through :meth:`feed`).
    pacer : Pacer or None
        None sends frames as fast as the socket takes them.
    gate : FrameGate or None
        Optional local VAD gating.
    reconnect : ReconnectPolicy
    keepalive_s : float or None
        Send a frame of silence (the shard minimum) when no frame went out for this long, so
        the 20 s idle rule never fires (default 10 s; None disables).
    rollover_after_s : float or None
        Planned rollover age of a connection (default 4 h 45 min).
    events : EventQueue
    clock, sleep : callables
        Monotonic seconds and ``await sleep(s)``; default the loop's.
    rng : callable
        Uniform [0, 1) for backoff jitter.
    options : TransportOptions
    """

    def __init__(
        self,
        *,
        connect: Connector,
        config: StartConfig,
        framer: Framer,
        pacer: Pacer | None,
        gate: FrameGate | None = None,
        reconnect: ReconnectPolicy = ReconnectPolicy(),
        keepalive_s: float | None = 10.0,
        rollover_after_s: float | None = DEFAULT_ROLLOVER_AFTER_S,
        events: EventQueue | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        options: TransportOptions = TransportOptions(),
    ) -> None:
        if keepalive_s is not None and not 0 < keepalive_s < 20:
            raise ValueError(f"keepalive_s must lie in (0, 20) s to beat the 20 s idle rule, got {keepalive_s!r}")
        if rollover_after_s is not None and not 0 < rollover_after_s < CONNECTION_LIMIT_S:
            raise ValueError(f"rollover_after_s must lie in (0, {CONNECTION_LIMIT_S:g}), got {rollover_after_s!r}")
        self.mode = config.mode
        self.config = config
        self.framer = framer
        self.pacer = pacer
        self.gate = gate
        self.reconnect = reconnect
        self.keepalive_s = keepalive_s
        self.rollover_after_s = rollover_after_s
        self.events = events if events is not None else EventQueue()
        self.options = options
        self._connect = connect
        self._loop = asyncio.get_running_loop()
        self._clock = clock if clock is not None else self._loop.time
        self._sleep = sleep
        self._rng = rng
        # The shared timer needs loop time and a real sleep; injected ones (tests) are used as is.
        self._sched: PacingScheduler | None = None
        if pacer is not None and sleep is asyncio.sleep and (clock is None or clock == self._loop.time):
            self._sched = PacingScheduler.for_loop(self._loop, options.pacing_coalesce_s)
        fmt = framer.audio_format
        self._bytes_per_ms = fmt.bytes_per_second / 1000.0
        lo = fmt.shard_limits[0]
        self._keepalive_frame = bytes([SILENCE_BYTE[fmt.encoding]]) * lo
        self.stats = StreamStats()
        if pacer is not None:
            self.stats.pacing = pacer.stats
        self._ring = _Ring(float(reconnect.ring_ms) if self._can_reconnect else 0.0)
        self._map_max = max(64, 4 * int(reconnect.ring_ms / max(framer.frame_ms, 1)) + 64)
        self._map = _TimeMap(self._map_max)
        self._stream_pos = 0.0  # stream ms of the next new frame
        self._user_pos = 0.0  # user ms of the next popped frame
        self._last_final_stream = 0.0
        self._last_final_user = 0.0
        self._last_sent_user_end: float | None = None
        self._last_rx_at = 0.0  # loop time of the last server message (END wait)
        # user intent and connection state
        self._wakeup = asyncio.Event()
        self._idle = False  # the send task is parked in _idle_wait (feed_nowait may send inline)
        self._room = asyncio.Event()
        self._end_requested = False
        self._cancel = False
        self._end_sent = asyncio.Event()
        self._finished = asyncio.Event()
        self._end_or_finished = asyncio.Event()  # set with _end_sent and with _finished
        self._server_finished = False  # VOICE_END / EXCEEDED_* seen: stop sending audio
        self._session: ClientSession | None = None
        self._ws: Any = None
        self._recv_task: asyncio.Task | None = None
        self._task: asyncio.Task | None = None
        self._started: asyncio.Future | None = None
        self._ended: asyncio.Future | None = None
        self._lost = False
        self._internal_end = False
        self._conn_opened_at = 0.0
        self._silence_boundary = False
        self._first_connection = True
        self._pending_reconnect: tuple[int, float, float] | None = None
        self._closed_reported = False
        self._starved = True
        #: Set once the first START is answered, rejected, or the runner finished.
        self.ready = asyncio.Event()
        self._gated_frame = b""
        self._gated_user_ms = 0.0
        # fast path (see FastPathMixin._pump_fast in fastpath.py): direct frame writer of the
        # connection, generation of the armed scheduler callback (bumped to disarm), the future
        # the send task waits on
        self._fastw: FastWriter | None = None
        self._fast_token = -1  # token of the armed scheduler callback (-1: none)
        self._fast_cb: Callable[[int], bool] | None = None  # _fast_step while pumping
        self._fast_fut: asyncio.Future[bool] | None = None
        self.error: BaseException | None = None
        self.trace_id: str | None = None

    @property
    def _can_reconnect(self) -> bool:
        return self.mode is Mode.CONTINUE_STREAM and self.reconnect.enabled

    # -- user side ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the supervisor task (owned; cancelled by :meth:`aclose`)."""
        if self._task is not None:
            raise LocalProtocolError("StreamRunner.start() called twice")
        self._task = self._loop.create_task(self._run(), name="sis-stream-runner")

    async def feed(self, chunk: bytes) -> None:
        """Put session-format bytes into the framer under its overflow policy.

        ``block`` waits for room (back-pressure); ``drop_oldest`` and ``error`` return at once
        (the latter raises :class:`BufferFullError`).
        """
        if self._end_requested:
            raise LocalProtocolError("send() after end()")
        if self._server_finished or self._finished.is_set():
            # the server ended the session (VOICE_END, EXCEEDED_*, error): audio is pointless
            self.stats.dropped_after_end += 1
            return
        view = memoryview(chunk)
        while view.nbytes:
            taken = self.framer.feed(view)
            view = view[taken:]
            self._wakeup.set()
            if view.nbytes:
                if self._finished.is_set() or self._server_finished:
                    self.stats.dropped_after_end += 1
                    return
                self._room.clear()
                await self._room.wait()

    def feed_nowait(self, chunk: bytes | bytearray | memoryview) -> float:
        """Put session-format bytes into the framer without waiting; return the ms of audio lost.

        For a framer whose overflow policy never waits: ``drop_oldest`` (the oldest whole frames
        make room; their ms are returned) or ``error`` (:class:`BufferFullError`, nothing
        taken). Once the server ended the session the chunk is not taken and its ms are
        returned. An unpaced stream without a VAD gate whose send task is idle sends the frames
        that became whole right here (:meth:`_send_now`: same bookkeeping as the send loop), so
        a producer feeding many streams costs no task switch per frame; otherwise the send
        task is woken.

        Raises
        ------
        LocalProtocolError
            After :meth:`end`, or the framer's policy is ``block`` (use :meth:`feed`).
        BufferFullError
            ``error`` policy and the chunk does not fit.
        """
        if self._end_requested:
            raise LocalProtocolError("send() after end()")
        fr = self.framer
        if fr.overflow == "block":
            raise LocalProtocolError("send_nowait() needs overflow='drop_oldest' or 'error' (under 'block' a "
                                     "full buffer must be waited for: use 'await send()')")
        n = chunk.nbytes if type(chunk) is memoryview else len(chunk)
        if self._server_finished or self._finished.is_set():
            self.stats.dropped_after_end += 1
            return n / self._bytes_per_ms
        lost = 0.0
        if n > fr.room:
            before = fr.stats.bytes_dropped
            fr.feed(chunk)
            lost = (fr.stats.bytes_dropped - before) / self._bytes_per_ms
        else:
            fr.feed(chunk)
        if fr.frames_ready:
            if self._idle:
                self._send_now()
            else:
                self._wakeup.set()
        return lost

    async def end(self, cancel: bool = False) -> None:
        """Flush the framer and send END (``cancel`` discards what the server has not decoded).

        Returns once END is on the wire (or the stream is already over); iterate the events to
        get the remaining finals and :class:`Ended`. ``end(cancel=True)`` while an earlier
        ``end()`` is still sending buffered audio turns it into END with cancel: the audio not
        yet sent is dropped.
        """
        if not self._end_requested:
            self._end_requested = True
            self._cancel = bool(cancel)
            self._wakeup.set()
        elif cancel and not self._cancel and not self._end_sent.is_set():
            # end(cancel=True) while an earlier end() still sends the buffered audio in real
            # time: drop what is left and send END with cancel instead (once END is on the
            # wire, it cannot be taken back: the call then just waits).
            self._cancel = True
            self._wakeup.set()
        # One event for "END sent or runner finished" (one future while waiting, instead of two
        # tasks and asyncio.wait: a thousand streams waiting here for minutes add less garbage
        # to the GC's oldest generation).
        await self._end_or_finished.wait()

    async def wait_finished(self) -> None:
        """Wait until the supervisor finished."""
        await self._finished.wait()

    async def aclose(self) -> None:
        """Cancel both tasks, close the websocket (close handshake) and end the event queue."""
        for t in (self._task, self._recv_task):
            if t is not None and not t.done():
                t.cancel()
        for t in (self._task, self._recv_task):
            if t is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        await self._close_ws()
        self._finished.set()
        self._end_or_finished.set()
        self.ready.set()
        self._room.set()
        self.events.close()

    # -- supervisor -------------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            attempt_info: tuple[int, float, float] | None = None
            while True:
                if attempt_info is None:
                    ws = await self._connect()
                else:
                    ws = await self._reconnect_ws()
                    if ws is None:
                        self.error = SisConnectionError(
                            f"connection lost and {self.reconnect.max_attempts} reconnect attempts failed")
                        await self.events.put(ConnectionClosed(None, True))
                        return
                outcome = await self._run_connection(ws)
                if outcome == _DONE or self.error is not None:
                    return
                if outcome == _ROLLOVER:
                    attempt_info = None
                    continue
                # lost mid-session
                if not self._can_reconnect or self._end_requested or self._end_sent.is_set() \
                        or self._server_finished:
                    if not self._closed_reported:
                        await self.events.put(ConnectionClosed(None, True))
                    return
                attempt_info = (0, 0.0, 0.0)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - surfaced to the user by the stream
            self.error = exc
            logger.debug("stream failed: %r", exc)
        finally:
            await self._close_ws()
            await self._stop_recv()
            self._finished.set()
            self._end_or_finished.set()
            self.ready.set()
            self._room.set()
            self.events.close()

    async def _reconnect_ws(self) -> Any:
        pol = self.reconnect
        for attempt in range(1, pol.max_attempts + 1):
            await self._sleep(pol.delay(attempt, self._rng))
            try:
                ws = await self._connect()
            except (SisConnectionError, OSError, SisServerError, SisLimitError) as exc:
                logger.info("reconnect attempt %d/%d failed: %s", attempt, pol.max_attempts, exc)
                continue
            replayed = self._ring.ms
            lost = max(0.0, self._ring.start_stream_ms(self._stream_pos) - self._last_final_stream)
            self.stats.reconnects += 1
            self.stats.replayed_ms += replayed
            self.stats.lost_ms += lost
            self._pending_reconnect = (attempt, replayed, lost)
            return ws
        return None

    async def _run_connection(self, ws: Any) -> str:
        self._ws = ws
        self._fastw = FastWriter.for_ws(ws)
        limit_send_buffer(ws)
        self.stats.connections += 1
        self._session = ClientSession(self.mode)
        self._started = self._loop.create_future()
        self._ended = self._loop.create_future()
        self._lost = False
        self._internal_end = False
        self._map = _TimeMap(self._map_max)
        self._recv_task = self._loop.create_task(self._recv_loop(ws, self._session), name="sis-stream-recv")
        self._conn_opened_at = self._clock()
        if self.rollover_after_s is not None and self.mode is Mode.CONTINUE_STREAM:
            self._rollover_at: float | None = self._conn_opened_at + self.rollover_after_s
            self._rollover_force_at = self._conn_opened_at + min(self.rollover_after_s + ROLLOVER_GRACE_S,
                                                                 CONNECTION_LIMIT_S - 60.0)
        else:
            self._rollover_at = None
        try:
            await self._send_text(self._session.send(StartStream(self.config)))
            ok = await self._wait_future(self._started, self.options.start_timeout_s, "START")
            if not ok:
                return _LOST if self._lost else _DONE
            self._first_connection = False
            for s in self._ring:  # replay
                self._map.add(s)
                await self._send_audio(s[_DATA])
            self._starved = True  # the schedule (re)starts with the first frame on this connection
            return await self._send_loop()
        finally:
            await self._close_ws()
            await self._stop_recv()

    async def _wait_future(self, fut: asyncio.Future, timeout: float, what: str) -> bool:
        try:
            return bool(await asyncio.wait_for(asyncio.shield(fut), timeout))
        except asyncio.TimeoutError:
            raise SisConnectionError(f"no {what} answer within {timeout:g} s") from None

    async def _send_text(self, frames: list[str | bytes]) -> None:
        for f in frames:
            try:
                await self._ws.send_str(f)  # type: ignore[arg-type]
            except (ConnectionResetError, aiohttp.ClientError) as exc:
                self._mark_lost(exc)

    def _mark_lost(self, exc: BaseException | None) -> None:
        logger.debug("transport lost: %r", exc)
        self._lost = True
        self._wakeup.set()

    def _next_frames(self) -> list[tuple[bytes, float, bool]] | None:
        """Next frames to send as (data, user_ms, keepalive), [] if a frame was gated, None if
        the framer is empty."""
        popped = self._pop_frame()
        if popped is None:
            return None
        frame, user_ms, dur = popped
        if self.gate is None:
            return [(frame, user_ms, False)]
        out = self.gate.process(frame, user_ms)
        self._gated_frame, self._gated_user_ms = frame, user_ms
        if not out:
            self.stats.gated_ms += dur
            self._silence_boundary = True
        return [(f, u, False) for f, u in out]

    def _pop_frame(self) -> tuple[bytes, float, float] | None:
        """The next buffered frame as (data, user_ms, duration_ms), the user clock moved past it;
        None if the framer is empty."""
        frame = self.framer.pop()
        if frame is None:
            return None
        self._room.set()
        dur = len(frame) / self._bytes_per_ms
        user_ms = self._user_pos
        self._user_pos += dur
        return frame, user_ms, dur

    def _resume_pacing(self, now: float, user_ms: float, keepalive: bool) -> None:
        """Restart the schedule at `now` if the input ran dry (or VAD withheld audio) before
        this frame: audio that did not exist yet cannot be late, so no catch-up burst."""
        assert self.pacer is not None
        if self._starved or (not keepalive and self._last_sent_user_end is not None
                             and abs(user_ms - self._last_sent_user_end) > 1e-6):
            self.pacer.reanchor(now)
            self._starved = False

    def _after_send(self, ok: bool, now: float, user_ms: float, dur: float, keepalive: bool) -> None:
        """Pacing and position bookkeeping once a frame was written (`ok`) or not."""
        if ok and self.pacer is not None:
            self.pacer.sent(now)
        if not keepalive:
            self._last_sent_user_end = user_ms + dur
        self._last_send_at = now

    async def _send_one(self, data: bytes, user_ms: float, keepalive: bool) -> bool:
        if self.pacer is not None:
            self._resume_pacing(self._clock(), user_ms, keepalive)
            now = self._clock()
            d = self.pacer.delay(now)
            if d > 0:
                if self._sched is not None:
                    await self._sched.wait_until(now + d)
                else:
                    await self._sleep(d)
            if self._lost:
                return False
        dur = len(data) / self._bytes_per_ms
        self._record_frame(data, user_ms if not keepalive else self._user_pos, dur, keepalive)
        ok = await self._send_audio(data)
        self._after_send(ok, self._clock(), user_ms, dur, keepalive)
        return ok

    def _record_frame(self, data: bytes, user_ms: float, dur: float, keepalive: bool) -> None:
        """Replay ring, time map and counters for a frame about to be sent."""
        s = (data, self._stream_pos, user_ms, dur, keepalive)  # _Sent layout, a plain tuple
        self._stream_pos += dur
        self.stats.audio_ms_sent += dur
        self._ring.add(s)
        self.stats.ring_dropped_ms = self._ring.dropped_ms
        self._map.add(s)

    async def _send_loop(self) -> str:
        self._last_send_at = self._clock()
        fast_next = True
        while True:
            if self.error is not None:
                return _DONE
            if self._lost:
                return _LOST
            if self._ended is not None and self._ended.done():
                return _DONE
            if self._server_finished:
                return await self._finish(cancel=False)
            if self._rollover_at is not None and self._clock() >= self._rollover_at:
                if self._silence_boundary:
                    return await self._rollover(forced=False)
                if self._rollover_forced():
                    return await self._rollover(forced=True)
            if self._end_requested and self._cancel:
                return await self._finish(cancel=True)
            if fast_next and self._fast_possible():
                if await self._pump_fast():
                    return _LOST
                fast_next = False  # the next iteration runs the general loop once
                continue
            fast_next = True
            self._wakeup.clear()
            frames = self._next_frames()
            if frames == [] and self.keepalive_s is not None and \
                    self._clock() - self._last_send_at >= self.keepalive_s:
                frames = [(self._gated_frame, self._gated_user_ms, False)]  # beat the idle rule
                self.stats.keepalive_frames += 1
            if frames is None:
                if self._end_requested:
                    if not self._cancel:
                        for f in self.framer.flush():
                            for data, u, k in self._gate_tail(f):
                                if not await self._send_one(data, u, k):
                                    return _LOST
                    return await self._finish(cancel=self._cancel)
                await self._idle_wait()
                continue
            if frames:
                self._silence_boundary = False  # a final arriving while this frame waits sets it again
            for data, u, k in frames:
                if not await self._send_one(data, u, k):
                    return _LOST

    def _gate_tail(self, frame: bytes) -> list[tuple[bytes, float, bool]]:
        dur = len(frame) / self._bytes_per_ms
        u = self._user_pos
        self._user_pos += dur
        if self.gate is None:
            return [(frame, u, False)]
        return [(f, x, False) for f, x in self.gate.process(frame, u)]

    async def _idle_wait(self) -> None:
        self._starved = True
        timeout = None
        if self.keepalive_s is not None:
            timeout = self._last_send_at + self.keepalive_s - self._clock()
            if timeout <= 0:
                self.stats.keepalive_frames += 1
                await self._send_one(self._keepalive_frame, self._user_pos, True)
                return
        if self.rollover_after_s is not None:
            left = self._conn_opened_at + self.rollover_after_s - self._clock()
            timeout = left if timeout is None else min(timeout, left)
            self._silence_boundary = True  # nothing to send: a natural boundary
            if left <= 0:
                return
        # a timer handle, not asyncio.wait_for (a Task per wait before Python 3.12); a spurious
        # wakeup is harmless: the send loop clears the event and looks again
        timer = self._loop.call_later(timeout, self._wakeup.set) if timeout is not None else None
        self._idle = True
        try:
            await self._wakeup.wait()
        finally:
            self._idle = False
            if timer is not None:
                timer.cancel()

    def _rollover_due(self) -> bool:
        return self._rollover_at is not None and self._clock() >= self._rollover_at

    def _rollover_forced(self) -> bool:
        return self._rollover_at is not None and self._clock() >= self._rollover_force_at

    async def _rollover(self, forced: bool) -> str:
        self._internal_end = True
        outcome = await self._finish(cancel=False, internal=True)
        if outcome != _DONE:
            return outcome
        self._ring.clear()  # END(cancel=false) made the server decode everything sent
        self._last_final_stream = self._stream_pos
        self.stats.rollovers += 1
        await self.events.put(RolledOver(self._user_pos, forced, self.trace_id))
        return _ROLLOVER

    async def _finish(self, cancel: bool, internal: bool = False) -> str:
        assert self._session is not None and self._ended is not None
        await self._send_text(self._session.send(EndOfStream(cancel=cancel)))
        if not internal:
            self._end_sent.set()
            self._end_or_finished.set()
        if self._lost:
            return _LOST
        await self._wait_end()
        return _LOST if (self._lost and not self._ended.result()) else _DONE

    async def _wait_end(self) -> None:
        """Wait for the END answer; the timeout runs from the last server message (a server
        working through a backlog keeps sending results, and audio still in the socket buffers
        when END was written is decoded before it), so only a silent server times out."""
        assert self._ended is not None
        timeout = self.options.end_timeout_s
        self._last_rx_at = self._loop.time()
        while True:
            left = self._last_rx_at + timeout - self._loop.time()
            if left <= 0:
                raise SisConnectionError(f"no END answer within {timeout:g} s (and no other server "
                                         f"message in that time)")
            try:
                await asyncio.wait_for(asyncio.shield(self._ended), left)
                return
            except asyncio.TimeoutError:
                continue

    # -- teardown ---------------------------------------------------------------------------------

    async def _stop_recv(self) -> None:
        t = self._recv_task
        self._recv_task = None
        if t is not None and t is not asyncio.current_task():
            if not t.done():
                # the websocket is closed by now, so the loop ends on its own; cancel if it hangs
                with contextlib.suppress(asyncio.TimeoutError, Exception):
                    await asyncio.wait_for(asyncio.shield(t), self.options.close_timeout_s)
            if not t.done():
                t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    async def _close_ws(self) -> None:
        ws = self._ws
        self._ws = None
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                await ws.close()
