"""One telephony call in SIS sessions: per-call settings, the SIS leg of each channel, the call.

The telephony reader calls :meth:`ChannelLeg.push` and never awaits: audio goes into a bounded
buffer (``drop_oldest``; lost milliseconds counted per call), and the leg's own task moves whole
frames from it into a continue-stream :class:`~sis_stream.client.rasr.RasrStream` (which
reconnects with replay, rolls over before the 5 h limit and sends keepalive silence after a
gap, so the 20 s idle rule holds). Result times come back on the stream's audio clock and are
mapped to call time (milliseconds since the call's first audio) through the drops.

A hangup sends END and waits, at most ``final_timeout_s``, for the last finals and END before
``call_end`` is emitted.
"""

from __future__ import annotations

import asyncio
import logging
import re
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Final

from ..audio.formats import AudioFormat
from ..client.events import Reconnected
from ..client.rasr import MODES
from ..client.transport import DEFAULT_ROLLOVER_AFTER_S
from ..errors import SisConnectionError, SisStreamError
from ..protocol import (
    FinalResult,
    PartialResult,
    ResultMessage,
    ServerError,
    validate_config,
)
from .events import EventHub
from .metrics import BridgeMetrics

__all__ = [
    "OVERRIDE_KEYS",
    "BridgeContext",
    "Call",
    "ChannelLeg",
    "LegOptions",
    "SessionSettings",
    "session_format",
]

logger = logging.getLogger(__name__)

#: Keys a call may override from its own metadata (mod_audio_fork metadata JSON, Twilio
#: ``customParameters``). Other keys are ignored (they belong to the application).
OVERRIDE_KEYS: Final = ("property", "mode", "interim_results", "add_punc", "digit_norm", "need_word_info",
                        "vad_head", "vad_tail", "max_seconds", "vocabulary_id")
_FLAGS: Final = ("interim_results", "add_punc", "digit_norm", "need_word_info")
_INTS: Final = ("vad_head", "vad_tail", "max_seconds")
_RATE_RE: Final = re.compile(r"_(8|16)k_")
_TRUE: Final = ("yes", "true", "1", "on")
_FALSE: Final = ("no", "false", "0", "off")


def session_format(input_format: AudioFormat, prop: str) -> AudioFormat:
    """The SIS ``audio_format`` for telephony audio in `input_format` and property `prop`.

    The input's own format when the property has its rate (u-law 8 kHz passes straight through
    to ``ulaw8k8bit``, slin 8 kHz to ``pcm8k16bit``); otherwise 16-bit PCM at the property's
    rate (the client transcodes and resamples on the way).
    """
    m = _RATE_RE.search(prop)
    rate = int(m.group(1)) * 1000 if m else 16000
    if input_format.rate_hz == rate and input_format.channels == 1:
        return input_format
    return AudioFormat.from_sis(f"pcm{rate // 1000}k16bit")


@dataclass(frozen=True)
class SessionSettings:
    """The SIS session of each call of a listener (per-call overrides: :meth:`with_overrides`).

    Attributes mirror the START config (``property``, flags as booleans, VAD durations in ms,
    ``max_seconds`` in s; None = the SIS default) plus ``mode`` (``continue`` by default,
    ``sentence`` or ``short``).
    """

    property: str = "english_16k_common"
    mode: str = "continue"
    interim_results: bool = False
    add_punc: bool = False
    digit_norm: bool = True
    need_word_info: bool = False
    vad_head: int | None = None
    vad_tail: int | None = None
    max_seconds: int | None = None
    vocabulary_id: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("continue", "sentence", "short"):
            raise ValueError(f"mode must be continue, sentence or short, got {self.mode!r}")

    def with_overrides(self, params: Mapping[str, Any] | None) -> SessionSettings:
        """These settings with the :data:`OVERRIDE_KEYS` found in `params` applied.

        Values may be strings (Twilio ``customParameters`` are): flags take yes/no/true/false,
        durations decimal integers.

        Raises
        ------
        ValueError
            A known key with a bad value (the message names the key, the value and what is valid).
        """
        if not params:
            return self
        changes: dict[str, Any] = {}
        for key in OVERRIDE_KEYS:
            if key not in params:
                continue
            v = params[key]
            if key in _FLAGS:
                if isinstance(v, str) and v.strip().lower() in _TRUE + _FALSE:
                    v = v.strip().lower() in _TRUE
                elif not isinstance(v, bool):
                    raise ValueError(f"{key} must be yes/no (or true/false), got {v!r}")
            elif key in _INTS:
                if isinstance(v, str) and re.fullmatch(r"\s*\d+\s*", v):
                    v = int(v)
                elif type(v) is not int:
                    raise ValueError(f"{key} must be an integer, got {v!r}")
            elif not isinstance(v, str) or not v:
                raise ValueError(f"{key} must be a non-empty string, got {v!r}")
            changes[key] = v
        return replace(self, **changes) if changes else self

    def config(self, audio_format: str) -> dict[str, Any]:
        """The START config (wire names) for `audio_format`."""
        cfg: dict[str, Any] = {"audio_format": audio_format, "property": self.property}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in _FLAGS:
                cfg[f.name] = "yes" if v else "no"
            elif (f.name in _INTS or f.name == "vocabulary_id") and v is not None:
                cfg[f.name] = v
        return cfg

    def validate(self, audio_format: str) -> None:
        """Check the START config as SIS would.

        Raises
        ------
        RequestRejected
            With the SIS error (e.g. ``SIS.0301 'audio_format' is not match model``).
        """
        validate_config(self.config(audio_format), MODES[self.mode])


@dataclass(frozen=True)
class LegOptions:
    """Tunables of every SIS leg.

    Attributes
    ----------
    max_buffer_ms : int
        Bound of the queue between the telephony reader and the SIS leg (``drop_oldest``); it also
        holds the audio that arrives while the SIS session is being opened.
    final_timeout_s : float
        After a hangup, how long to wait for the last finals and END.
    frame_ms : int
        Frame length sent to SIS (100 ms: 1600 bytes of pcm8k16bit, 800 of ulaw8k8bit).
    connect_timeout_s : float
        How long opening a SIS session (connect, START, its answer) may take.
    keepalive_s : float or None
        Longest gap between frames to SIS before keepalive silence (< 20 s, the idle rule;
        telephony audio is continuous, so it only matters when a peer pauses its media).
    rollover_after_s : float or None
        Age at which a SIS connection is rolled over to a new one (before the 5 h limit).
    """

    max_buffer_ms: int = 5000
    final_timeout_s: float = 10.0
    frame_ms: int = 100
    connect_timeout_s: float = 10.0
    keepalive_s: float | None = 10.0
    rollover_after_s: float | None = DEFAULT_ROLLOVER_AFTER_S

    def __post_init__(self) -> None:
        if type(self.max_buffer_ms) is not int or self.max_buffer_ms < 200:
            raise ValueError(f"max_buffer_ms must be an int >= 200, got {self.max_buffer_ms!r}")
        if not 0 < self.final_timeout_s <= 300:
            raise ValueError(f"final_timeout_s must lie in (0, 300], got {self.final_timeout_s!r}")
        if not 0 < self.connect_timeout_s <= 120:
            raise ValueError(f"connect_timeout_s must lie in (0, 120], got {self.connect_timeout_s!r}")
        if self.frame_ms not in (20, 40, 60, 80, 100, 200, 500, 1000):
            raise ValueError(f"frame_ms must be one of 20, 40, 60, 80, 100, 200, 500, 1000, got {self.frame_ms!r}")
        if self.max_buffer_ms < self.frame_ms:
            raise ValueError(f"max_buffer_ms must be >= frame_ms (the queue must hold a whole frame), got "
                             f"max_buffer_ms={self.max_buffer_ms} with frame_ms={self.frame_ms}")


@dataclass
class BridgeContext:
    """What every call of a bridge shares: the SIS client, the event hub, metrics, options."""

    client: Any
    hub: EventHub
    metrics: BridgeMetrics
    options: LegOptions = field(default_factory=LegOptions)
    calls: set[Call] = field(default_factory=set)
    draining: bool = False
    idle: asyncio.Event = field(default_factory=asyncio.Event)


_MAX_ANCHORS: Final = 256


class ChannelLeg:
    """The SIS session of one channel of one call.

    Parameters
    ----------
    call : Call
    channel : int or str
        0/1, or the Twilio track name.
    input_format : AudioFormat
        Format of the bytes given to :meth:`push` (mono).
    settings : SessionSettings
    """

    def __init__(self, call: Call, channel: int | str, input_format: AudioFormat, settings: SessionSettings) -> None:
        self.call = call
        self.channel = channel
        self.input_format = input_format
        self.settings = settings
        self.session_format = session_format(input_format, settings.property)
        opts = call.ctx.options
        self._bpms = input_format.bytes_per_second / 1000.0
        self._width = input_format.bytes_per_frame
        self.frame_bytes = round(opts.frame_ms * self._bpms)
        self._frame_ms = float(opts.frame_ms)
        self.max_bytes = round(opts.max_buffer_ms * self._bpms)
        self._buf = bytearray()  # audio while the SIS session is being opened
        self._stream: Any = None  # the open SIS stream, fed by push() directly
        self._ready = asyncio.Event()
        self._ending = False
        self._dead = False
        self._sis_done = False
        self.audio_ms = 0.0
        self.lost_ms = 0.0
        self.sent_ms = 0.0
        self._final_end_ms = 0.0
        self._dropped_ms = 0.0
        self._anchors: list[float] = []  # sent_ms at each drop
        self._anchor_drop: list[float] = []  # cumulative dropped ms from that point on
        self.finals = 0
        self.trace_id: str | None = None
        self._lm = call.ctx.metrics.listener(call.source)

    # -- telephony side (synchronous, never awaits) --------------------------------------------
    #
    # While the SIS session is being opened, push() queues in ``_buf`` (bounded, drop_oldest).
    # Once it is open the queue is the stream's own input buffer (a Framer, ``drop_oldest``,
    # max_buffer_ms): push() collects one frame in ``_buf`` and hands it to
    # ``stream.send_nowait``, which never waits and writes it straight to the SIS socket when the
    # socket takes it (no task switch per frame; whole frames, so the stream's buffer is not
    # re-joined per 20 ms packet while it holds a backlog). Drops count as lost ms either way;
    # ``sent_ms`` is the audio the stream kept (its time line).

    def push(self, data: bytes) -> None:
        """Queue telephony audio (any length). Never blocks."""
        ms = len(data) / self._bpms
        self.audio_ms += ms
        self._lm.audio_ms += ms
        if self._dead or self._ending:
            if self._dead:
                self._lose(ms)
            return
        buf = self._buf
        stream = self._stream
        if stream is not None:
            buf += data
            if len(buf) >= self.frame_bytes:
                try:
                    self._handover(stream)
                except Exception as exc:  # the reader must survive whatever the SIS leg does
                    logger.exception("call %s channel %s: sending to SIS failed", self.call.call_id, self.channel)
                    self._fail()
                    self.error("internal", f"{type(exc).__name__}: {exc}")
            return
        buf += data
        excess = len(buf) - self.max_bytes
        if excess > 0:
            excess += -excess % self._width
            del buf[:excess]
            dropped = excess / self._bpms
            self._lose(dropped)
            self._dropped_ms += dropped
            if self._anchors and self._anchors[-1] == self.sent_ms:
                self._anchor_drop[-1] = self._dropped_ms
            else:
                self._anchors.append(self.sent_ms)
                self._anchor_drop.append(self._dropped_ms)
                if len(self._anchors) > _MAX_ANCHORS:
                    del self._anchors[0], self._anchor_drop[0]
        if len(buf) >= self.frame_bytes and not self._ready.is_set():
            self._ready.set()

    def ms_to_frame(self) -> float:
        """Milliseconds of audio still missing from the next whole frame to SIS (0 < ms <=
        ``frame_ms``): what is queued here and in the open stream's buffer, modulo a frame. The
        AudioSocket listener reads a call's socket when that much more audio should be there."""
        ms = len(self._buf) / self._bpms
        stream = self._stream
        if stream is not None:
            fr = stream.framer
            ms += fr.buffered_bytes / fr.audio_format.bytes_per_ms
        frame_ms = self._frame_ms
        return frame_ms - ms % frame_ms

    def _handover(self, stream: Any) -> None:
        """Give what ``_buf`` holds to the open stream."""
        buf = self._buf
        data = bytes(buf)
        buf.clear()
        try:
            lost = stream.send_nowait(data)
        except Exception:
            self._lose(len(data) / self._bpms)
            raise
        if lost:
            self._stream_drop(stream, lost)
        self.sent_ms += len(data) / self._bpms - lost

    def _stream_drop(self, stream: Any, ms: float) -> None:
        """The stream's buffer dropped `ms` of its oldest audio (or refused it, the session being
        over): lost, and later stream times shift by `ms` (at the stream's read position)."""
        self._lose(ms)
        self._dropped_ms += ms
        fr = stream.framer
        at = fr.stats.bytes_out / (fr.audio_format.bytes_per_second / 1000.0)
        if self._anchors and self._anchors[-1] == at:
            self._anchor_drop[-1] = self._dropped_ms
        else:
            self._anchors.append(at)
            self._anchor_drop.append(self._dropped_ms)
            if len(self._anchors) > _MAX_ANCHORS:
                del self._anchors[0], self._anchor_drop[0]

    def _lose(self, ms: float) -> None:
        self.lost_ms += ms
        self._lm.lost_ms += ms

    def finish(self) -> None:
        """No more audio: flush what is buffered, then END."""
        self._ending = True
        self._ready.set()

    def call_ms(self, user_ms: float) -> int:
        """Call time (ms since the call's first audio) of a time on the SIS stream's audio clock."""
        i = bisect_right(self._anchors, user_ms)
        return round(user_ms + (self._anchor_drop[i - 1] if i else 0.0))

    # -- SIS side ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Open the SIS session, pump audio until :meth:`finish`, END, wait for the last finals."""
        ctx = self.call.ctx
        self._lm.sessions_active += 1
        try:
            cfg = self.settings.config(self.session_format.sis_name)
            inp = None if self.input_format == self.session_format else self.input_format
            stream = ctx.client.stream(self.settings.mode, cfg, input_format=inp, frame_ms=ctx.options.frame_ms,
                                       pacing=None, overflow="drop_oldest", max_buffer_ms=ctx.options.max_buffer_ms,
                                       keepalive_s=ctx.options.keepalive_s,
                                       rollover_after_s=ctx.options.rollover_after_s,
                                       events_overflow="drop_partial")
            try:
                await asyncio.wait_for(stream.__aenter__(), ctx.options.connect_timeout_s)
            except asyncio.TimeoutError:
                raise SisConnectionError(f"no answer to START within {ctx.options.connect_timeout_s:g} s") from None
            try:
                await self._converse(stream)
            except BaseException:
                await stream.__aexit__(RuntimeError, RuntimeError("leg failed"), None)
                raise
            await stream.aclose()  # END was sent and answered (or timed out): just close
        except asyncio.CancelledError:
            raise
        except (SisStreamError, OSError) as exc:
            self._fail()
            self.error("sis_unavailable", f"the SIS session failed: {type(exc).__name__}: {exc}")
        except Exception as exc:  # a leg must never take the bridge down
            self._fail()
            logger.exception("call %s channel %s: SIS leg failed", self.call.call_id, self.channel)
            self.error("internal", f"{type(exc).__name__}: {exc}")
        finally:
            self._lm.sessions_active -= 1

    async def _converse(self, stream: Any) -> None:
        ctx = self.call.ctx
        self.trace_id = stream.trace_id
        recv = asyncio.get_running_loop().create_task(self._receive(stream))
        try:
            await self._send_loop(stream)
            if not self._sis_done:
                await stream.end()
            try:
                await asyncio.wait_for(asyncio.shield(recv), ctx.options.final_timeout_s)
            except asyncio.TimeoutError:
                self.error("final_timeout", f"SIS sent no END within {ctx.options.final_timeout_s:g} s "
                                            "after the hangup; results still pending are lost")
                await stream.aclose()
        finally:
            if not recv.done():
                recv.cancel()
                await asyncio.gather(recv, return_exceptions=True)

    def _fail(self, session_lost: bool = False) -> None:
        """The SIS leg is gone: what is queued and all later audio count as lost; with
        `session_lost` also the audio already handed to the session after its last final (the
        session died before recognising it)."""
        if not self._dead:
            self._dead = True
            stream, self._stream = self._stream, None
            self._lose(len(self._buf) / self._bpms)
            self._buf.clear()
            if session_lost:
                self._lose(max(0.0, self.sent_ms - self._final_end_ms))
            elif stream is not None:  # what the stream still held never reached the session
                fr = stream.framer
                self._lose(fr.buffered_bytes / (fr.audio_format.bytes_per_second / 1000.0))

    async def _send_loop(self, stream: Any) -> None:
        """Hand the audio queued while the session opened to the stream, then let push() feed it
        directly until the hangup (or the session ends)."""
        if self._buf and not self._sis_done:
            self._handover(stream)
        if self._dead:
            return
        self._stream = stream
        try:
            while not (self._sis_done or self._ending):
                self._ready.clear()
                await self._ready.wait()
        finally:
            self._stream = None
        if self._buf and not (self._sis_done or self._dead):
            self._handover(stream)  # the hangup: the last, partial frame

    async def _receive(self, stream: Any) -> None:
        call = self.call
        hub = call.ctx.hub
        loop = asyncio.get_running_loop()
        try:
            async for ev in stream:
                if isinstance(ev, FinalResult):
                    seg = ev.segment
                    start, end = self.call_ms(seg.start_time), self.call_ms(seg.end_time)
                    self.finals += 1
                    self._final_end_ms = max(self._final_end_ms, float(seg.end_time))
                    self._lm.finals += 1
                    if call.t0 is not None:
                        self._lm.time_to_final.observe(max(0.0, (loop.time() - call.t0) * 1000.0 - end))
                    hub.emit(call.call_id, call.source, self.channel, "final", text=ev.text, start_ms=start,
                             end_ms=end, trace_id=ev.trace_id)
                    self._inband_result(ev.trace_id, seg)
                elif isinstance(ev, PartialResult):
                    seg = ev.segment
                    self._lm.partials += 1
                    hub.emit(call.call_id, call.source, self.channel, "partial", text=ev.text,
                             start_ms=self.call_ms(seg.start_time), end_ms=self.call_ms(seg.end_time),
                             trace_id=ev.trace_id)
                    self._inband_result(ev.trace_id, seg)
                elif isinstance(ev, ServerError):
                    self.error(ev.error_code, ev.error_msg, fatal=ev.fatal, trace_id=ev.trace_id)
                    self._fail(session_lost=True)
                elif isinstance(ev, Reconnected):
                    self._lose(ev.lost_ms)
                    logger.info("call %s channel %s: SIS reconnected (attempt %d, replayed %.0f ms, lost %.0f ms)",
                                call.call_id, self.channel, ev.attempt, ev.replayed_ms, ev.lost_ms)
        except asyncio.CancelledError:
            raise
        except SisStreamError as exc:
            self._fail(session_lost=True)
            self.error("sis_connection", f"the SIS session failed: {type(exc).__name__}: {exc}")
        finally:
            self._sis_done = True
            self._ready.set()

    def _inband_result(self, trace_id: str | None, seg: Any) -> None:
        if self.call.has_inband:
            data = ResultMessage(trace_id, (seg,)).to_dict()
            data["channel"] = self.channel
            self.call.inband({"type": "transcription", "data": data})

    def error(self, code: str, message: str, **extra: Any) -> None:
        """Emit an ``error`` event for this channel (and send it in-band where supported)."""
        self._lm.errors += 1
        self.call.ctx.hub.emit(self.call.call_id, self.call.source, self.channel, "error", code=code,
                               message=message, **extra)
        self.call.inband({"type": "error", "data": {"code": code, "message": message, "channel": self.channel}})


class Call:
    """One telephony call: one :class:`ChannelLeg` (SIS session) per channel.

    Parameters
    ----------
    ctx : BridgeContext
    source : str
        ``audiosocket``, ``audio_fork`` or ``twilio``.
    call_id : str
    channels : sequence of int or str
    input_format : AudioFormat
        Format of each channel's audio (mono).
    settings : SessionSettings
        Already with the call's overrides.
    inband : callable, optional
        ``inband(message_dict)``: results/errors to send back on the telephony connection
        (mod_audio_fork); must not block.
    close_peer : callable, optional
        Closes the telephony connection (used by the shutdown drain).

    Raises
    ------
    RequestRejected
        The settings do not make a valid START config for this audio (checked before anything
        is opened).
    """

    def __init__(self, ctx: BridgeContext, source: str, call_id: str, channels: Sequence[int | str],
                 input_format: AudioFormat, settings: SessionSettings, *,
                 inband: Callable[[dict[str, Any]], None] | None = None,
                 close_peer: Callable[[], None] | None = None, info: Mapping[str, Any] | None = None) -> None:
        self.ctx = ctx
        self.source = source
        self.call_id = call_id
        self.settings = settings
        settings.validate(session_format(input_format, settings.property).sis_name)
        self.legs = [ChannelLeg(self, ch, input_format, settings) for ch in channels]
        self._inband = inband
        self.close_peer = close_peer
        self.info = dict(info or {})
        self.t0: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._finished = False
        self.end_reason: str | None = None

    @property
    def has_inband(self) -> bool:
        return self._inband is not None

    def inband(self, message: dict[str, Any]) -> None:
        """Send `message` back on the telephony connection (where the protocol allows it)."""
        if self._inband is not None:
            self._inband(message)

    def start(self) -> None:
        """Emit ``call_start`` and open the SIS sessions (in background tasks)."""
        ctx = self.ctx
        lm = ctx.metrics.listener(self.source)
        lm.calls_active += 1
        lm.calls_total += 1
        ctx.calls.add(self)
        ctx.idle.clear()
        loop = asyncio.get_running_loop()
        for leg in self.legs:
            ctx.metrics.active[(self.call_id, self.source, str(leg.channel))] = leg
            ctx.hub.emit(self.call_id, self.source, leg.channel, "call_start", property=self.settings.property,
                         mode=self.settings.mode, audio_format=leg.session_format.sis_name, **self.info)
            self._tasks.append(loop.create_task(leg.run(), name=f"bridge-{self.source}-{self.call_id}-{leg.channel}"))

    def mark_audio(self) -> None:
        """Note the call's first audio (call time 0)."""
        if self.t0 is None:
            self.t0 = asyncio.get_running_loop().time()

    def dtmf(self, digit: str, channel: int | str = 0) -> None:
        """Emit a ``dtmf`` event."""
        self.ctx.hub.emit(self.call_id, self.source, channel, "dtmf", digit=digit,
                          at_ms=round(self.legs[0].audio_ms) if self.legs else 0)

    def _wait_s(self) -> float:
        o = self.ctx.options
        return o.final_timeout_s + o.connect_timeout_s + 1.0

    async def finish(self, reason: str) -> None:
        """End every leg (END, bounded wait for the last finals), then emit ``call_end``."""
        if self._finished:
            return
        self._finished = True
        self.end_reason = reason
        for leg in self.legs:
            leg.finish()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=self._wait_s())
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        ctx = self.ctx
        lm = ctx.metrics.listener(self.source)
        for leg in self.legs:
            ctx.metrics.active.pop((self.call_id, self.source, str(leg.channel)), None)
            ctx.hub.emit(self.call_id, self.source, leg.channel, "call_end", audio_ms=round(leg.audio_ms),
                         lost_ms=round(leg.lost_ms), reason=reason, finals=leg.finals, trace_id=leg.trace_id)
        lm.calls_active -= 1
        ctx.calls.discard(self)
        if not ctx.calls:
            ctx.idle.set()

