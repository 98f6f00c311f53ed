"""Asterisk AudioSocket listener (TCP; Asterisk connects, one connection per call).

Wire format: ``kind:u8 length:u16-big-endian payload[length]``. Kinds: ``0x01`` the call's
16-byte binary UUID (always first), ``0x10`` signed linear 16-bit 8 kHz mono little-endian
audio (320 bytes = 20 ms), ``0x03`` DTMF (one ASCII byte), ``0x00`` hangup, ``0xff`` error
(optional 1-byte code: 0x01 hangup, 0x02 frame forwarding, 0x04 memory).

From the UUID on, the listener writes a 320-byte silence frame back every 20 ms on a drift-free
clock (deadline ``k`` is ``t_uuid + k * 20 ms``; one timer serves every connection, see
:class:`SilenceClock`):
Asterisk reads and writes on one thread and starves an idle peer. ``TCP_NODELAY`` is set. On
hangup (``0x00``, ``0xff`` or the socket closing) the connection is closed at once and the SIS
sessions are ended in the background (END, then the last finals on the events stream).

A malformed peer (first frame not a UUID, unknown kind, odd-length audio, a truncated frame)
gets an ``error`` event, a hangup frame and a clean close; the call, if it had started, ends
with reason ``protocol_error``. The higher-rate kinds ``0x11``-``0x18`` are not implemented
(their numbering differs between Asterisk versions): they are refused the same way.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import uuid
from bisect import bisect_left
from typing import Any, Final

from ..audio.formats import AudioFormat
from ..errors import RequestRejected
from .session import BridgeContext, Call, SessionSettings

__all__ = ["AUDIOSOCKET_KINDS", "SILENCE_FRAME", "AudioSocketListener", "AudioSocketProtocol", "frame"]

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


#: Size of the read buffer all connections of a listener share (see AudioSocketProtocol).
READ_BUFFER_BYTES: Final = 64 * 1024


class AudioSocketProtocol(asyncio.BufferedProtocol):
    """One AudioSocket connection (one call).

    A buffered protocol: every read goes into one buffer shared by the listener's connections
    (reads are handled one at a time on the loop; a frame split across reads keeps its start in
    the connection's own ``_buf``). asyncio's plain protocols read with ``recv(256 KiB)``, which
    allocates a 256 KiB object per read and shrinks it to the 323 bytes of a frame: about 5 µs
    per read in the benchmark's profile, against about 2 µs for ``recv_into`` here.
    """

    def __init__(self, listener: AudioSocketListener) -> None:
        self.listener = listener
        self.ctx = listener.ctx
        self.transport: asyncio.Transport | None = None
        self.call: Call | None = None
        self._leg: Any = None
        self._buf = bytearray()
        self._closed = False
        self._paused = False
        #: Deadline of the next silence frame (loop time; kept by the listener's SilenceClock).
        self.silence_deadline = 0.0
        self._loop = asyncio.get_event_loop()
        self._uuid_timer: asyncio.TimerHandle | None = None
        self.peer = "?"
        self._lm = self.ctx.metrics.listener("audiosocket")

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment] - uvloop's transports are not asyncio.Transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # pragma: no cover - not a TCP socket
                pass
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.listener.connections.add(self)
        if self.ctx.draining:
            self._protocol_error("shutting_down", "the bridge is shutting down and takes no new calls")
            return
        self._uuid_timer = self._loop.call_later(UUID_TIMEOUT_S, self._uuid_timeout)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.listener.read_view

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self.listener.read_view[:nbytes].tobytes())

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        if self._buf:  # the rest of a frame split across reads (rare): join, parse from bytes
            self._buf += data
            data = bytes(self._buf)
            self._buf.clear()
        n = len(data)
        pos = 0
        audio: list[bytes] = []  # consecutive slin payloads of this read, pushed as one chunk
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
                self._control(kind, data[pos + 3:end])
                if self._closed:
                    return
            pos = end
        if audio:
            self._push(audio)
        if pos < n:
            self._buf += data[pos:]

    def _push(self, audio: list[bytes]) -> None:
        leg = self._leg
        if leg is None:  # pragma: no cover - only slin frames of a started call are collected
            return
        leg.push(audio[0] if len(audio) == 1 else b"".join(audio))
        call = self.call
        if call is not None and call.t0 is None:
            call.mark_audio()

    def connection_lost(self, exc: Exception | None) -> None:
        was_closed = self._closed
        self._closed = True
        if self._uuid_timer is not None:
            self._uuid_timer.cancel()
        self.listener.connections.discard(self)
        if not was_closed:
            if self._buf:
                self._error("truncated_frame", f"the connection closed inside a frame ({len(self._buf)} byte(s) "
                                               "of an incomplete frame)")
                self._end_call("protocol_error")
            else:
                self._end_call("peer_closed")

    # -- frames -----------------------------------------------------------------------------------

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
        if self._uuid_timer is not None:
            self._uuid_timer.cancel()
            self._uuid_timer = None
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

    def _uuid_timeout(self) -> None:
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
        if not self._closed and self.transport is not None and not self.transport.is_closing():
            self.transport.write(HANGUP_FRAME)
        self._close()

    def _close(self) -> None:
        self._closed = True
        if self.transport is not None:
            self.transport.close()

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
    """The 20 ms silence of every connection of a listener, on one loop timer.

    Each connection keeps its own drift-free deadlines (``t_uuid + k * 20 ms``). Connections sit
    in 20 one-millisecond slots by the phase of their deadline; while any is registered the
    timer fires once per millisecond (on its own absolute schedule) and serves the slot whose
    deadlines fall due: a frame is never late because of the slotting and at most 1 ms early.
    After a stall of a whole period or more the missed ticks are skipped (counted), keeping the
    phase; while a peer's socket buffer is full (asyncio flow control) its ticks are skipped too.
    This costs one timer per millisecond instead of one timer entry per frame (50 000 a second
    at 1000 calls).
    """

    PERIOD_S: Final = PERIOD_S
    SLOT_S: Final = 0.001
    SLOTS: Final = 20

    def __init__(self, lm: Any) -> None:
        self._lm = lm
        self._slots: list[list[AudioSocketProtocol]] = [[] for _ in range(self.SLOTS)]
        self._n = 0
        self._t0 = 0.0
        self._m = 0  # the next fire: t0 + m * SLOT_S
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return self._n

    def add(self, conn: AudioSocketProtocol) -> None:
        """Start `conn`'s silence now (the first frame goes out within a millisecond)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._timer is None:
            self._t0, self._m = now, 0
            self._timer = loop.call_at(now, self._fire)
        conn.silence_deadline = now
        m = max(self._m, math.ceil((now - self._t0) / self.SLOT_S - 1.0 - 1e-9))
        self._slots[m % self.SLOTS].append(conn)
        self._n += 1

    def _fire(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        last = max(self._m, int((now - self._t0) / self.SLOT_S))
        for m in range(max(self._m, last - self.SLOTS + 1), last + 1):
            if self._slots[m % self.SLOTS]:
                self._serve(m % self.SLOTS, now)
        self._m = last + 1
        self._timer = loop.call_at(self._t0 + self._m * self.SLOT_S, self._fire) if self._n else None

    def _serve(self, s: int, now: float) -> None:
        lm = self._lm
        hist = lm.silence_lateness  # observed inline: one update of its totals per slot
        counts, bounds = hist.counts, hist.bounds
        period = self.PERIOD_S
        horizon = now + self.SLOT_S + 1e-9
        keep: list[AudioSocketProtocol] = []
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
            if late > late_max:
                late_max = late
            if conn._paused:
                skipped += 1
            else:
                conn.transport.write(SILENCE_FRAME)  # type: ignore[union-attr]
                sent += 1
            d += period
            if d <= now:  # stalled for a whole period or more: keep the phase, skip the ticks
                missed = int((now - d) / period) + 1
                skipped += missed
                d += missed * period
            conn.silence_deadline = d
            keep.append(conn)
        hist.count += ticks
        hist.sum += late_sum
        if late_max > hist.max:
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
        self.connections: set[AudioSocketProtocol] = set()
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.clock = SilenceClock(ctx.metrics.listener(self.source))
        #: The read buffer of every connection (AudioSocketProtocol.get_buffer).
        self.read_view = memoryview(bytearray(READ_BUFFER_BYTES))

    def track(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self) -> tuple[str, int]:
        """Start listening; returns the bound ``(host, port)``."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: AudioSocketProtocol(self), self.host, self.port,
                                                reuse_address=True, backlog=1024)
        addr = self._server.sockets[0].getsockname()
        self.port = addr[1]
        return addr[0], addr[1]

    async def stop_accepting(self) -> None:
        """Close the listening socket (calls in progress continue)."""
        if self._server is not None:
            self._server.close()

    async def aclose(self) -> None:
        """Hang up every connection, wait for the calls to end, close the server."""
        await self.stop_accepting()
        for c in list(self.connections):
            c.hangup()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        self.clock.close()
        if self._server is not None:
            await self._server.wait_closed()
