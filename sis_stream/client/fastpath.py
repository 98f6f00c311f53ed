"""The scheduler-driven fast path of the send loop: audio frames written as masked websocket
frames straight to the connection's transport (:class:`FastWriter`), with aiohttp's
``send_bytes`` as the fallback, and the pump that sends due frames from the shared pacing
timer's callback without waking the send task (:class:`FastPathMixin`, a base of
:class:`~sis_stream.client.runner.StreamRunner`)."""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import aiohttp

try:  # the fast audio-frame writer (see FastWriter); absent -> aiohttp's send_bytes is used
    from aiohttp._websocket.helpers import websocket_mask as _ws_mask
    from aiohttp._websocket.writer import WebSocketWriter as _AiohttpWriter
except ImportError:  # pragma: no cover - other aiohttp layouts
    _ws_mask = None
    _AiohttpWriter = None

if TYPE_CHECKING:
    from ..protocol import ClientSession
    from .events import StreamStats
    from .framing import Framer
    from .pacing import Pacer
    from .scheduler import PacingScheduler

__all__ = ["SEND_BUFFER_BYTES", "FastPathMixin", "FastWriter", "limit_send_buffer"]

#: Kernel send buffer of a streaming connection. Small, so that a server applying TCP
#: backpressure (it stops reading while its engine catches up) blocks the sender after a
#: second or two of audio instead of megabytes of autotuned buffer; still far above what
#: real-time audio needs over any RTT (64 KiB per round trip).
SEND_BUFFER_BYTES: Final = 64 * 1024


def limit_send_buffer(ws: Any, nbytes: int = SEND_BUFFER_BYTES) -> None:
    """Set ``SO_SNDBUF`` of the websocket's TCP socket (quietly nothing for other transports)."""
    import socket

    try:
        transport = ws._response.connection.transport  # aiohttp's ClientWebSocketResponse
    except AttributeError:
        transport = getattr(getattr(ws, "_writer", None), "transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or getattr(sock, "family", None) not in (socket.AF_INET, socket.AF_INET6):
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, nbytes)
    except OSError:  # pragma: no cover - platform refuses: keep the default
        pass


class FastWriter:
    """Writes binary (audio) frames of one aiohttp client websocket straight to its transport.

    aiohttp's ``send_bytes`` is a coroutine per frame (``send_bytes`` -> ``send_frame`` ->
    ``_write_websocket_frame`` -> ``transport.write``). For an uncompressed, masked client
    connection the frame is a 4-byte header (for 126..65535 bytes), a 4-byte mask and the
    masked payload (RFC 6455 §5.2-5.3); built here with aiohttp's own mask helper (C when
    built) and one ``transport.write``. The masks come from ``os.urandom`` (drawn 4 KiB at a
    time), as RFC 6455 §10.3 asks for an unpredictable mask.

    Only used when the connection is an aiohttp ``WebSocketWriter`` with masking on and no
    compression, and only while aiohttp's protocol is not pausing writes (flow control): then
    the caller falls back to ``await ws.send_bytes`` (which drains). Text frames (START, END)
    always go through aiohttp.
    """

    __slots__ = ("_pool", "_pos", "protocol", "transport", "writer")

    _H1 = struct.Struct("!BB").pack
    _H2 = struct.Struct("!BBH").pack
    _H3 = struct.Struct("!BBQ").pack
    _POOL = 4096

    def __init__(self, writer: Any) -> None:
        self.writer = writer
        self.transport = writer.transport
        self.protocol = writer.protocol
        self._pool = b""
        self._pos = self._POOL

    @classmethod
    def for_ws(cls, ws: Any) -> FastWriter | None:
        """The fast writer of ``ws``, or None when its writer is not the known aiohttp kind."""
        if _ws_mask is None or _AiohttpWriter is None:
            return None
        w = getattr(ws, "_writer", None)
        if type(w) is not _AiohttpWriter or w.use_mask is not True or w.compress:
            return None
        if not isinstance(getattr(w, "transport", None), asyncio.WriteTransport) \
                or not hasattr(w.protocol, "writing_paused") or not hasattr(w, "_closing"):
            return None
        return cls(w)

    def ready(self) -> bool:
        """Whether :meth:`write` may be used now (writes are not paused by flow control)."""
        return not self.protocol.writing_paused

    def write(self, payload: bytes) -> bool:
        """Write one masked binary frame; False when the connection is closing (lost)."""
        if self.writer._closing or self.transport.is_closing():
            return False
        pos = self._pos
        if pos >= self._POOL:
            self._pool = os.urandom(self._POOL)
            pos = 0
        self._pos = pos + 4
        mask = self._pool[pos:pos + 4]
        n = len(payload)
        if n < 126:
            head = self._H1(0x82, 0x80 | n)
        elif n < 65536:
            head = self._H2(0x82, 0xFE, n)
        else:
            head = self._H3(0x82, 0xFF, n)
        body = bytearray(payload)
        _ws_mask(mask, body)
        self.transport.write(head + mask + body)
        return True


class FastPathMixin:
    """The audio-frame sends of :class:`~sis_stream.client.runner.StreamRunner`: one frame now
    (:meth:`_send_audio`, direct write or ``send_bytes``) and the scheduler-driven fast path.

    A mixin, so that the per-frame code reads the runner's state as plain attributes, as it did
    in one class. It holds no state: the runner sets the attributes and provides the shared
    per-frame bookkeeping named below.
    """

    # set by the runner
    pacer: Pacer | None
    framer: Framer
    gate: Any
    stats: StreamStats
    error: BaseException | None
    _loop: asyncio.AbstractEventLoop
    _clock: Callable[[], float]
    _sched: PacingScheduler | None
    _session: ClientSession | None
    _ws: Any
    _fastw: FastWriter | None
    _fast_token: int
    _fast_cb: Callable[[int], bool] | None
    _fast_fut: asyncio.Future[bool] | None
    _ended: asyncio.Future | None
    _rollover_at: float | None
    rollover_after_s: float | None
    _wakeup: asyncio.Event
    _lost: bool
    _server_finished: bool
    _end_requested: bool
    _cancel: bool
    _user_pos: float
    _silence_boundary: bool

    if TYPE_CHECKING:  # provided by the runner
        def _mark_lost(self, exc: BaseException | None) -> None: ...
        def _pop_frame(self) -> tuple[bytes, float, float] | None: ...
        def _resume_pacing(self, now: float, user_ms: float, keepalive: bool) -> None: ...
        def _record_frame(self, data: bytes, user_ms: float, dur: float,
                          keepalive: bool) -> None: ...
        def _after_send(self, ok: bool, now: float, user_ms: float, dur: float,
                        keepalive: bool) -> None: ...

    async def _send_audio(self, data: bytes) -> bool:
        """Send one audio frame now (no pacing, no bookkeeping); False if dropped or lost."""
        assert self._session is not None
        frame = self._session.send_audio(data)
        if frame is None:
            return False
        fw = self._fastw
        if fw is not None and fw.ready():
            if not fw.write(frame):
                self._mark_lost(None)
                return False
        else:
            try:
                await self._ws.send_bytes(frame)  # type: ignore[union-attr]
            except (ConnectionResetError, aiohttp.ClientError) as exc:
                self._mark_lost(exc)
                return False
        self.stats.frames_sent += 1
        self.stats.bytes_sent += len(frame)
        return True

    def _write_frame(self, fw: Any) -> tuple[bool, bytes | None] | None:
        """Pop the next whole frame and write it straight to the transport `fw`, with the send
        loop's per-frame bookkeeping (_send_one without pacing): None when no frame is buffered,
        else (written, the encoded frame or None when the session refused the audio)."""
        popped = self._pop_frame()
        if popped is None:
            return None
        data, user_ms, dur = popped
        self._silence_boundary = False
        self._record_frame(data, user_ms, dur, False)
        frame = self._session.send_audio(data)  # type: ignore[union-attr]
        ok = frame is not None and fw.write(frame)
        if ok:
            self.stats.frames_sent += 1
            self.stats.bytes_sent += len(frame)  # type: ignore[arg-type]
        self._after_send(ok, self._clock(), user_ms, dur, False)
        return ok, frame

    # -- push-driven sends (feed_nowait) ------------------------------------------------------------

    def _send_now(self) -> None:
        """Send the whole frames buffered, now, from the producer's call (the send task is parked
        in its idle wait). Only for an unpaced stream without a VAD gate on a plain connection that
        is not pausing writes, with nothing else to do (not lost/ended/ending, no rollover due);
        otherwise, or when a write fails, the send task is woken and deals with it. The per-frame
        bookkeeping is the send loop's (_send_one without pacing)."""
        fw = self._fastw
        if self.pacer is not None or self.gate is not None or fw is None or self._session is None \
                or self._lost or self.error is not None or self._server_finished or self._end_requested \
                or (self._ended is not None and self._ended.done()):
            self._wakeup.set()
            return
        clock, rollover_at = self._clock, self._rollover_at
        while True:
            if not fw.ready() or (rollover_at is not None and clock() >= rollover_at):
                self._wakeup.set()
                return
            sent = self._write_frame(fw)
            if sent is None:
                break
            if not sent[0]:  # as _send_one returning False: the connection is over (reconnect or end)
                self._mark_lost(None)
                return
        if self.rollover_after_s is not None:
            self._silence_boundary = True  # nothing left to send: a natural boundary (as _idle_wait)

    # -- fast path ---------------------------------------------------------------------------------
    #
    # The common case of a paced stream (shared timer, no VAD gate, a plain aiohttp connection
    # that is not pausing writes, whole frames buffered, nothing else to do) is run without
    # waking the send task per frame: the task arms a PacingScheduler callback and waits on one
    # future; the callback sends every frame that is due (the same bookkeeping as the runner's
    # _send_one, the frame written straight to the transport), re-arms itself for the next
    # deadline and hands back to the task (resolves the future) as soon as anything needs the
    # general loop: empty framer, lost/ended/error, END with cancel, rollover due, flow control.
    # The task then runs one iteration of the general loop, which deals with it, and re-enters.

    #: At most this many frames per callback (a catch-up burst then yields to the loop).
    _FAST_BATCH: Final = 8

    def _fast_possible(self) -> bool:
        return self._sched is not None and self.gate is None and self._fastw is not None

    async def _pump_fast(self) -> bool:
        """Run the fast path until it hands back; True when a frame was dropped or lost (the
        connection is over, as when _send_one returns False)."""
        fut: asyncio.Future[bool] = self._loop.create_future()
        self._fast_fut = fut
        self._fast_token = -1
        # one bound method per pump, not per frame (dropped afterwards: no runner <-> method cycle)
        self._fast_cb = self._fast_step
        self._fast_run()
        try:
            return await fut
        finally:
            self._fast_token = -1  # disarm a pending callback
            self._fast_fut = None
            self._fast_cb = None

    def _fast_step(self, token: int) -> bool:
        if token != self._fast_token:
            return False  # stale (disarmed)
        self._fast_token = -1
        self._fast_run()
        return True

    def _fast_run(self) -> None:
        try:
            self._fast_send()
        except BaseException as exc:  # noqa: BLE001 - raised in the send task, like _send_one
            self._fast_token = -1
            fut = self._fast_fut
            if fut is not None and not fut.done():
                fut.set_exception(exc)

    def _fast_send(self) -> None:
        pacer, sched, fw, framer, clock = self.pacer, self._sched, self._fastw, self.framer, self._clock
        cb = self._fast_cb
        assert pacer is not None and sched is not None and fw is not None and self._session is not None
        assert cb is not None
        ended, rollover_at = self._ended, self._rollover_at
        failed = False
        for _ in range(self._FAST_BATCH):
            now = clock()
            if self._lost or self.error is not None or self._server_finished \
                    or (self._end_requested and self._cancel) or (ended is not None and ended.done()) \
                    or (rollover_at is not None and now >= rollover_at) or not fw.ready() \
                    or not framer.frames_ready:  # empty: the general loop waits for input
                break
            self._resume_pacing(now, self._user_pos, False)
            d = pacer.delay(now)
            if d > sched.coalesce_s:
                self._fast_token = sched.call_at(now + d, cb)
                return
            sent = self._write_frame(fw)
            if sent is None:
                break
            ok, frame = sent
            if not ok:
                if frame is not None:
                    self._mark_lost(None)
                failed = True
                break
        else:  # batch limit: more frames are due; continue on the next timer
            self._fast_token = sched.call_at(clock(), cb)
            return
        fut = self._fast_fut
        if fut is not None and not fut.done():
            fut.set_result(failed)
