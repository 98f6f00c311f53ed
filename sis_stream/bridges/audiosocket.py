"""Asterisk AudioSocket listener (TCP; Asterisk connects, one connection per call).

Wire format: ``kind:u8 length:u16-big-endian payload[length]``. Kinds: ``0x01`` the call's
16-byte binary UUID (always first), ``0x10`` signed linear 16-bit 8 kHz mono little-endian
audio (320 bytes = 20 ms), ``0x03`` DTMF (one ASCII byte), ``0x00`` hangup, ``0xff`` error
(optional 1-byte code: 0x01 hangup, 0x02 frame forwarding, 0x04 memory).

From the UUID on, the listener writes a 320-byte silence frame back every 20 ms on a drift-free
clock (deadline ``k`` is ``t_uuid + k * 20 ms``): Asterisk reads and writes on one thread and
starves an idle peer. ``TCP_NODELAY`` is set. One timer of the listener (:class:`SilenceClock`)
serves every connection: it writes the silence frames that fall due and reads the connections'
sockets itself ("polled reads": a non-blocking ``recv_into`` when the call's next 100 ms frame to
SIS should be complete, so about one read of five 20 ms frames per SIS frame), so a call costs no
event-loop wake-up per frame. The SIS frames go out about as early as with a read per 20 ms
frame; a hangup (``0x00``, ``0xff`` or the socket closing), a DTMF digit or a malformed frame is
seen at the call's next read, within 100 ms. On hangup the connection is closed at once and the
SIS sessions are ended in the background (END, then the last finals on the events stream).

A malformed peer (first frame not a UUID, unknown kind, odd-length audio, a truncated frame)
gets an ``error`` event, a hangup frame and a clean close; the call, if it had started, ends
with reason ``protocol_error``. The higher-rate kinds ``0x11``-``0x18`` are not implemented
(their numbering differs between Asterisk versions): they are refused the same way.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import socket
import uuid
from bisect import bisect_left
from typing import Any, Final

from ..audio.formats import AudioFormat
from ..errors import RequestRejected
from .listen import listening_socket
from .session import BridgeContext, Call, SessionSettings

__all__ = ["AUDIOSOCKET_KINDS", "SILENCE_FRAME", "AudioSocketConnection", "AudioSocketListener", "SilenceClock",
           "frame"]

logger = logging.getLogger(__name__)

KIND_HANGUP: Final = 0x00
KIND_UUID: Final = 0x01
KIND_DTMF: Final = 0x03
KIND_SLIN: Final = 0x10
KIND_ERROR: Final = 0xFF
#: Kind -> name, for messages.
AUDIOSOCKET_KINDS: Final = {KIND_HANGUP: "hangup", KIND_UUID: "uuid", KIND_DTMF: "dtmf", KIND_SLIN: "slin",
                            KIND_ERROR: "error"}
_ERROR_CODES: Final = {0x01: "hangup", 0x02: "frame forwarding", 0x04: "memory"}
PERIOD_S: Final = 0.020
_SLIN8K: Final = AudioFormat(8000, "pcm", 2)
#: Seconds a new connection may take to send its UUID frame.
UUID_TIMEOUT_S: Final = 5.0


def frame(kind: int, payload: bytes = b"") -> bytes:
    """One AudioSocket frame."""
    return bytes((kind,)) + len(payload).to_bytes(2, "big") + payload


#: 20 ms of slin 8 kHz silence, framed.
SILENCE_FRAME: Final = frame(KIND_SLIN, bytes(320))
HANGUP_FRAME: Final = frame(KIND_HANGUP)


#: Size of the read buffer all connections of a listener share (one poll reads at most this much).
READ_BUFFER_BYTES: Final = 64 * 1024
#: Connections accepted per wake-up of the listening socket.
_ACCEPT_BATCH: Final = 64
#: Pause before accepting again after the process ran out of file descriptors (as asyncio does).
_ACCEPT_RETRY_S: Final = 1.0
_EMPTY: Final = b""


class AudioSocketConnection:
    """One AudioSocket connection (one call) on a non-blocking socket.

    Until its UUID frame the socket is an event-loop reader (:meth:`watch`); from the UUID on it
    is not registered with the event loop at all: the listener's :class:`SilenceClock` reads it
    (polled reads) and writes its silence frames. Received bytes are parsed in
    place from the listener's shared read buffer (a frame split across reads keeps its start in
    the connection's own ``_buf``); a write the kernel only partly takes keeps its rest in
    ``_out``, and while it is pending the silence frames are skipped (the peer is not reading).

    Parameters
    ----------
    listener : AudioSocketListener
    sock : socket.socket
        The accepted connection (made non-blocking here, ``TCP_NODELAY`` set).
    peer : str
        ``host:port`` of the peer, for events and logs.
    """

    def __init__(self, listener: AudioSocketListener, sock: socket.socket, peer: str) -> None:
        self.listener = listener
        self.ctx = listener.ctx
        self.sock = sock
        self.peer = peer
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # pragma: no cover - not a TCP socket
            pass
        self.call: Call | None = None
        self._leg: Any = None
        self._buf = bytearray()
        self._out = _EMPTY
        self._closed = False
        #: Deadline of the next silence frame (loop time; kept by the listener's SilenceClock).
        self.silence_deadline = 0.0
        self._loop = asyncio.get_event_loop()
        self._watched = False
        self._uuid_timer: asyncio.TimerHandle | None = None
        self._lm = self.ctx.metrics.listener("audiosocket")

    def watch(self) -> None:
        """Until the UUID frame: read when the socket becomes readable (an event-loop reader, so an
        idle connection costs nothing), and give up after ``UUID_TIMEOUT_S``."""
        self._loop.add_reader(self.sock.fileno(), self._readable)
        self._watched = True
        self._uuid_timer = self._loop.call_later(UUID_TIMEOUT_S, self.uuid_timeout)

    def _unwatch(self) -> None:
        if self._watched:
            self._watched = False
            self._loop.remove_reader(self.sock.fileno())
        if self._uuid_timer is not None:
            self._uuid_timer.cancel()
            self._uuid_timer = None

    def _readable(self) -> None:
        self.poll(self.listener.read_view)
        if self.call is not None:  # from here on the listener's clock reads the socket
            self._unwatch()

    @property
    def closed(self) -> bool:
        """Whether the connection is closed (by either side)."""
        return self._closed

    # -- socket ----------------------------------------------------------------------------------

    def poll(self, view: memoryview) -> bool:
        """Read what the socket holds (one ``recv_into`` into `view`) and handle it; False when
        nothing was there."""
        try:
            n = self.sock.recv_into(view)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            self.lost(exc)
            return True
        if n:
            try:
                self.received(view[:n])
            except Exception as exc:  # noqa: BLE001 - logged with its traceback by failed()
                self.failed(exc)
        else:
            self.lost(None)
        return True

    def failed(self, exc: BaseException) -> None:
        """Handling this connection's data raised (a bug): an ``internal`` error event, a hangup,
        the call ends (``internal_error``); the other calls go on."""
        logger.error("audiosocket %s: handling the peer's data failed", self.peer, exc_info=exc)
        try:
            self._error("internal", f"{type(exc).__name__}: {exc}")
        finally:
            self._send_hangup_and_close()
            self._end_call("internal_error")

    def send(self, data: bytes) -> bool:
        """Write `data` after any pending rest, never blocking; False when the connection is
        lost. What the kernel does not take now stays pending (sent by :meth:`flush`)."""
        if self._out:
            data = self._out + data
        try:
            n = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as exc:
            self.lost(exc)
            return False
        self._out = data[n:] if n < len(data) else _EMPTY
        return True

    def flush(self) -> bool:
        """Try to write the pending rest of a frame; True when nothing is pending any more."""
        out = self._out
        if out:
            self._out = _EMPTY
            if not self.send(out):
                return False
        return not self._out

    def lost(self, exc: BaseException | None) -> None:
        """The peer closed the connection (or it failed): end the call."""
        if self._closed:
            return
        if exc is not None:
            logger.debug("audiosocket %s: connection lost: %s", self.peer, exc)
        if self._buf:
            self._error("truncated_frame", f"the connection closed inside a frame ({len(self._buf)} byte(s) "
                                           "of an incomplete frame)")
            self._close()
            self._end_call("protocol_error")
        else:
            self._close()
            self._end_call("peer_closed")

    # -- frames -----------------------------------------------------------------------------------

    def received(self, data: Any) -> None:
        """Handle bytes read from the peer (`data`: bytes or a memoryview valid during the call)."""
        if self._closed:
            return
        if self._buf:  # the rest of a frame split across reads (rare): join, parse from bytes
            self._buf += data
            data = bytes(self._buf)
            self._buf.clear()
        n = len(data)
        pos = 0
        audio: list[Any] = []  # consecutive slin payloads of this read, pushed as one chunk
        while n - pos >= 3:
            kind = data[pos]
            length = (data[pos + 1] << 8) | data[pos + 2]
            end = pos + 3 + length
            if end > n:
                break
            if kind == KIND_SLIN and self._leg is not None:
                if length & 1:
                    self._protocol_error("bad_frame", f"slin audio frame of odd length {length} "
                                                      "(16-bit samples: the length must be even)")
                    return
                audio.append(data[pos + 3:end])
            else:
                if audio:
                    self._push(audio)
                    audio = []
                self._control(kind, bytes(data[pos + 3:end]))
                if self._closed:
                    return
            pos = end
        if audio:
            self._push(audio)
        if pos < n:
            self._buf += data[pos:]

    def _push(self, audio: list[Any]) -> None:
        leg = self._leg
        if leg is None:  # pragma: no cover - only slin frames of a started call are collected
            return
        leg.push(audio[0] if len(audio) == 1 else b"".join(audio))
        call = self.call
        if call is not None and call.t0 is None:
            call.mark_audio()

    def _control(self, kind: int, payload: bytes) -> None:
        if self.call is None:
            if kind != KIND_UUID or len(payload) != 16:
                self._protocol_error("bad_frame", f"expected the UUID frame first (kind 0x01, 16 bytes), got "
                                                  f"kind 0x{kind:02x} with {len(payload)} byte(s)")
                return
            self._start(str(uuid.UUID(bytes=payload)))
            return
        if kind == KIND_HANGUP:
            self._close()
            self._end_call("hangup")
        elif kind == KIND_DTMF:
            if len(payload) != 1:
                self._protocol_error("bad_frame", f"DTMF frame of {len(payload)} bytes (expected 1)")
                return
            self.call.dtmf(payload.decode("ascii", "replace"))
        elif kind == KIND_ERROR:
            code = payload[0] if payload else None
            what = _ERROR_CODES.get(code, "unspecified") if code is not None else "unspecified"
            self._error("peer_error", f"Asterisk sent an error frame (code {code if code is not None else '-'}: "
                                      f"{what})")
            self._close()
            self._end_call("peer_error")
        elif kind == KIND_UUID:
            self._protocol_error("bad_frame", "a second UUID frame on a call that already has one")
        elif 0x11 <= kind <= 0x18:
            self._protocol_error("unsupported_kind", f"AudioSocket audio kind 0x{kind:02x} (slin above 8 kHz) is not "
                                                     "implemented: use kind 0x10 (the AudioSocket() application, or "
                                                     "c(slin) on the channel driver)")
        else:
            self._protocol_error("bad_frame", f"unknown AudioSocket kind 0x{kind:02x} (valid: 0x00 hangup, 0x01 uuid, "
                                              "0x03 dtmf, 0x10 slin, 0xff error)")

    def _start(self, call_id: str) -> None:
        self._unwatch()
        try:
            call = Call(self.ctx, "audiosocket", call_id, (0,), _SLIN8K, self.listener.settings,
                        close_peer=self.hangup, info={"peer": self.peer})
        except (RequestRejected, ValueError) as exc:
            self.call = None
            self.ctx.hub.emit(call_id, "audiosocket", 0, "error", code="bad_config",
                              message=f"bad SIS configuration for this listener: {exc}")
            self._lm.errors += 1
            self._send_hangup_and_close()
            return
        self.call = call
        self._leg = call.legs[0]
        call.start()
        self.listener.clock.add(self)

    # -- ending -----------------------------------------------------------------------------------

    def uuid_timeout(self) -> None:
        """No UUID frame in time: refuse the connection."""
        self._uuid_timer = None
        if self.call is None and not self._closed:
            self._protocol_error("no_uuid", f"no UUID frame within {UUID_TIMEOUT_S:g} s of connecting")

    def _error(self, code: str, message: str) -> None:
        cid = self.call.call_id if self.call is not None else self.peer
        self._lm.errors += 1
        self.ctx.hub.emit(cid, "audiosocket", 0, "error", code=code, message=message, peer=self.peer)
        logger.warning("audiosocket %s: %s", cid, message)

    def _protocol_error(self, code: str, message: str) -> None:
        self._error(code, message)
        self._send_hangup_and_close()
        self._end_call("protocol_error")

    def _send_hangup_and_close(self) -> None:
        if not self._closed:
            try:  # best effort: a peer that stopped reading does not get it
                self.sock.send(self._out + HANGUP_FRAME)
            except OSError:
                pass
        self._close()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._unwatch()
        self.listener.connections.discard(self)
        sock = self.sock
        try:  # what the peer sent unread would make the close a reset: read it first (not into
            sock.recv(READ_BUFFER_BYTES)  # the shared buffer: a caller may still hold a view of it)
        except OSError:
            pass
        sock.close()

    def hangup(self) -> None:
        """Hang up from our side (shutdown drain): a hangup frame, then close."""
        self._send_hangup_and_close()
        self._end_call("shutdown")

    def _end_call(self, reason: str) -> None:
        call, self.call = self.call, None
        self._leg = None
        if call is not None:
            self.listener.track(self._loop.create_task(call.finish(reason)))


class SilenceClock:
    """The 20 ms silence and the socket reads of every connection of a listener, on one timer.

    While any connection is open the timer fires once per millisecond (on its own absolute
    schedule) and serves what falls due in that millisecond:

    - **silence**: each call keeps its own drift-free deadlines (``t_uuid + k * 20 ms``) and sits
      in one of 20 one-millisecond slots by their phase; a frame is never late because of the
      slotting and at most 1 ms early. After a stall of a whole period or more the missed ticks
      are skipped (counted), keeping the phase; while a peer's socket does not take a whole frame
      its ticks are skipped too.
    - **reads** ("polled reads"): each call's socket is read when the audio it holds should
      complete the call's next frame to SIS (``ChannelLeg.ms_to_frame``, plus
      ``READ_MARGIN_MS``), at least 20 ms and at most ``read_max_ms`` (100 ms by default) apart:
      with 100 ms frames to SIS that is one read of five 20 ms frames per SIS frame, which then
      goes out about as early as with a read per 20 ms frame. The first read comes half a period
      after the UUID (until the UUID the connection waits for it as an event-loop reader).

    This costs one timer per millisecond instead of one timer entry per silence frame, and no
    event-loop wake-up per frame read (50 000 a second each at 1000 calls). A hangup, a DTMF
    digit or a malformed frame is seen at the call's next read (within ``read_max_ms``).

    Parameters
    ----------
    lm : ListenerMetrics
    read_view : memoryview, optional
        The read buffer shared by all connections (default: a new one).
    read_max_ms : int
        Longest time between two reads of a call's socket, 20..100 ms (20: read every 20 ms
        frame as it comes).
    """

    PERIOD_S: Final = PERIOD_S
    SLOT_S: Final = 0.001
    SLOTS: Final = 20
    #: The first read of a call is this many 1 ms slots after its silence phase (half a period).
    READ_OFFSET: Final = 10
    #: Milliseconds a read waits beyond the moment the next SIS frame should be complete (the
    #: peer's frames arrive with some jitter).
    READ_MARGIN_MS: Final = 2
    #: Size of the read schedule (one slot per ms; more than the longest read interval).
    READ_RING: Final = 128

    def __init__(self, lm: Any, read_view: memoryview | None = None, read_max_ms: int = 100) -> None:
        self._lm = lm
        self._view = read_view if read_view is not None else memoryview(bytearray(READ_BUFFER_BYTES))
        self._slots: list[list[Any]] = [[] for _ in range(self.SLOTS)]
        self._rslots: list[list[Any]] = [[] for _ in range(self.READ_RING)]
        self.read_max_ms = read_max_ms
        self._n = 0
        self._t0 = 0.0
        self._m = 0  # the next fire: t0 + m * SLOT_S
        self._timer: asyncio.TimerHandle | None = None
        #: Reads done, and those that found nothing (diagnostics).
        self.reads = 0
        self.empty_reads = 0

    @property
    def read_max_ms(self) -> int:
        """Longest time between two reads of a call's socket (ms, 20..100)."""
        return self._read_max

    @read_max_ms.setter
    def read_max_ms(self, value: int) -> None:
        if type(value) is not int or not 20 <= value <= 100:
            raise ValueError(f"read_max_ms must be an int in 20..100, got {value!r}")
        self._read_max = value

    def __len__(self) -> int:
        return self._n

    def _ensure_timer(self, loop: asyncio.AbstractEventLoop, now: float) -> None:
        if self._timer is None:
            self._t0, self._m = now, 0
            self._timer = loop.call_at(now, self._fire)

    def add(self, conn: Any) -> None:
        """Start `conn`'s silence now (the first frame goes out within a millisecond) and its
        reads half a period later."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._ensure_timer(loop, now)
        conn.silence_deadline = now
        m = max(self._m, math.ceil((now - self._t0) / self.SLOT_S - 1.0 - 1e-9))
        self._slots[m % self.SLOTS].append(conn)
        self._rslots[(m + self.READ_OFFSET) % self.READ_RING].append(conn)
        self._n += 1

    def _fire(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        last = max(self._m, int((now - self._t0) / self.SLOT_S))
        rslots = self._rslots
        try:
            for m in range(max(self._m, last - self.READ_RING + 1), last + 1):  # every read slot due
                if rslots[m % self.READ_RING]:
                    self._read(m % self.READ_RING, last)
            for m in range(max(self._m, last - self.SLOTS + 1), last + 1):
                if self._slots[m % self.SLOTS]:
                    self._serve(m % self.SLOTS, now)
        finally:  # even after an unexpected error (logged by the loop): the clock goes on
            self._schedule(loop, last)

    def _schedule(self, loop: asyncio.AbstractEventLoop, last: int) -> None:
        self._m = last + 1
        if self._n:
            self._timer = loop.call_at(self._t0 + self._m * self.SLOT_S, self._fire)
        else:  # every call has ended: what the read slots still hold is closed
            self._timer = None
            self._rslots = [[] for _ in range(self.READ_RING)]

    def _read(self, r: int, m_now: int) -> None:
        """One read of every connection in read slot `r`; each is rescheduled from `m_now` (the
        current slot) to when its next SIS frame should be complete."""
        view = self._view
        rslots, ring = self._rslots, self.READ_RING
        lo, hi, margin = 20, self._read_max, self.READ_MARGIN_MS
        conns = rslots[r]
        rslots[r] = []
        reads = empty = 0
        for conn in conns:
            if conn._closed:
                continue
            reads += 1
            try:
                n = conn.sock.recv_into(view)
            except (BlockingIOError, InterruptedError):
                n = -1
                empty += 1
            except OSError as exc:
                conn.lost(exc)
                continue
            if n > 0:
                try:
                    conn.received(view[:n])
                except Exception as exc:  # noqa: BLE001 - one call's failure must not stop all calls
                    conn.failed(exc)
                    continue
            elif n == 0:
                conn.lost(None)
            leg = conn._leg
            if leg is not None:
                d = int(leg.ms_to_frame())
                d = lo if d < lo else hi if d > hi else d  # noqa: FURB136 - no min()/max() call per read
            elif conn._closed:
                continue
            else:  # pragma: no cover - a call always has its leg until the connection closes
                d = lo
            rslots[(m_now + d + margin) % ring].append(conn)
        self.reads += reads
        self.empty_reads += empty

    def _serve(self, s: int, now: float) -> None:
        lm = self._lm
        hist = lm.silence_lateness  # observed inline: one update of its totals per slot
        counts, bounds = hist.counts, hist.bounds
        period = self.PERIOD_S
        horizon = now + self.SLOT_S + 1e-9
        frame_len = len(SILENCE_FRAME)
        keep: list[Any] = []
        sent = skipped = ticks = 0
        late_sum = late_max = 0.0
        for conn in self._slots[s]:
            if conn._closed:
                self._n -= 1
                continue
            d = conn.silence_deadline
            if d > horizon:  # rounding put it a slot early: serve it from the next one
                self._slots[(s + 1) % self.SLOTS].append(conn)
                continue
            late = (now - d) * 1000.0 if now > d else 0.0
            counts[bisect_left(bounds, late)] += 1
            ticks += 1
            late_sum += late
            if late > late_max:  # noqa: PLR1730 - no max() call per frame
                late_max = late
            if conn._out and not conn.flush():  # the peer does not read: skip, never queue
                skipped += 1
            else:
                try:
                    n = conn.sock.send(SILENCE_FRAME)
                except (BlockingIOError, InterruptedError):
                    n = 0
                except OSError as exc:
                    n = -1
                    conn.lost(exc)
                if n == frame_len:
                    sent += 1
                elif n > 0:  # the kernel took part of it: the rest goes first next time
                    conn._out = SILENCE_FRAME[n:]
                    sent += 1
                else:
                    skipped += 1
            if conn._closed:
                self._n -= 1
                continue
            d += period
            if d <= now:  # stalled for a whole period or more: keep the phase, skip the ticks
                missed = int((now - d) / period) + 1
                skipped += missed
                d += missed * period
            conn.silence_deadline = d
            keep.append(conn)
        hist.count += ticks
        hist.sum += late_sum
        if late_max > hist.max:  # noqa: PLR1730
            hist.max = late_max
        lm.silence_frames += sent
        lm.silence_skipped += skipped
        self._slots[s] = keep

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class AudioSocketListener:
    """Accepts AudioSocket connections on ``host:port`` (port 0: the kernel picks one).

    The listening socket is the only one registered with the event loop; the connections are
    served by the listener's :class:`SilenceClock`.

    Parameters
    ----------
    ctx : BridgeContext
    host : str
    port : int
    settings : SessionSettings
        The SIS session of each call (the property must be an 8 kHz one, or the audio is
        resampled to the property's rate).
    """

    source = "audiosocket"

    def __init__(self, ctx: BridgeContext, host: str, port: int, settings: SessionSettings) -> None:
        self.ctx = ctx
        self.host = host
        self.port = port
        self.settings = settings
        self.connections: set[AudioSocketConnection] = set()
        self._lsock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        #: The read buffer of every connection.
        self.read_view = memoryview(bytearray(READ_BUFFER_BYTES))
        self.clock = SilenceClock(ctx.metrics.listener(self.source), self.read_view)

    def track(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self) -> tuple[str, int]:
        """Start listening; returns the bound ``(host, port)``."""
        loop = self._loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self.host or None, self.port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
        if not infos:  # pragma: no cover - getaddrinfo raises instead
            raise OSError(f"cannot resolve {self.host!r}")
        sock = listening_socket(infos[0], v6only=True)
        self._lsock = sock
        loop.add_reader(sock.fileno(), self._accept)
        bound = sock.getsockname()
        self.port = bound[1]
        return bound[0], bound[1]

    def _accept(self) -> None:
        lsock = self._lsock
        if lsock is None:
            return
        for _ in range(_ACCEPT_BATCH):
            try:
                sock, addr = lsock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    logger.error("audiosocket: cannot accept a connection (%s); retrying in %g s", exc,
                                 _ACCEPT_RETRY_S)
                    assert self._loop is not None
                    self._loop.remove_reader(lsock.fileno())
                    self._retry = self._loop.call_later(_ACCEPT_RETRY_S, self._resume_accepting)
                    return
                logger.warning("audiosocket: accepting a connection failed: %s", exc)
                return
            peer = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)
            conn = AudioSocketConnection(self, sock, peer)
            self.connections.add(conn)
            if self.ctx.draining:
                conn._protocol_error("shutting_down", "the bridge is shutting down and takes no new calls")
                continue
            conn.watch()

    def _resume_accepting(self) -> None:
        self._retry = None
        if self._lsock is not None and self._loop is not None:
            self._loop.add_reader(self._lsock.fileno(), self._accept)

    async def stop_accepting(self) -> None:
        """Close the listening socket (calls in progress continue)."""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        sock, self._lsock = self._lsock, None
        if sock is not None:
            if self._loop is not None:
                self._loop.remove_reader(sock.fileno())
            sock.close()

    async def aclose(self) -> None:
        """Hang up every connection, wait for the calls to end, close the server."""
        await self.stop_accepting()
        for c in list(self.connections):
            c.hangup()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        self.clock.close()
