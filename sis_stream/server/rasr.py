"""RASR websocket endpoints: short-stream, sentence-stream, continue-stream, short-audio (websocket).

One :class:`RasrConnection` per websocket. The protocol core's
:class:`~sis_stream.protocol.ServerSession` decides everything about the wire (START/END order,
config validation, shard limits, the audio cap with EXCEEDED_AUDIO, cancel, the 20 s idle rule);
this module is the transport around it plus the recognition glue
(:class:`~.recognizer.SessionRecognizer`):

* the reader (the handler coroutine) feeds every websocket message to the session and acts on
  its events: START -> concurrency check and admission control (SIS.0312: ``--max-sessions``,
  then the measured decode budget of :mod:`.admission`), engine lookup off the loop (property not
  supported -> ERROR SIS.0032, engine unavailable -> SIS.0303), START answer; audio -> recognizer;
  END -> finals then END; cancel / violations / loss -> drop the recognizer;
* one writer task sends the text frames in the order the session produced them (bounded queue;
  a client that stops reading is disconnected);
* one idle task applies the 20 s rule on the settings' clock (FATAL_ERROR SIS.0304, then close).

Audio sent right behind START (before our answer), 4000-byte frames faster than real time and a
short last frame are all accepted (§14.7). Audio before the START answer counts against the
mode's audio cap like any other (what lies beyond the cap is neither recognised nor billed; the
EXCEEDED_AUDIO event follows the START answer). Audio frames that arrive after the session ended
(they were on the wire when the client sent END, or when our END/ERROR left) are dropped silently
for :data:`LATE_AUDIO_GRACE_S` instead of being answered "audio received before START".
Pings are answered by aiohttp (autoping); they do not count as client messages for the idle rule
(the error says "wait voice timeout").

Flow control: when a session's engine backlog reaches its high watermark
(:meth:`SessionRecognizer.saturated`) the reader stops reading the websocket until the backlog
is down to the low watermark. Unread data fills aiohttp's read buffer, then the socket buffers,
and TCP backpressure blocks the client's sends: a client sending faster than the engine decodes
is slowed to the engine's speed instead of getting ERROR SIS.0312 for its own backlog. The time
the reader is paused does not count for the 20 s idle rule (the client did send), and the server
pings the client every :data:`PAUSE_PING_S` while paused: the client's own heartbeat ping sits
unread behind its audio, and any data from the server resets the client's heartbeat timer (an
aiohttp client otherwise closes the connection when its pong does not come).

Metrics: each recognition session is one call of interface ``rasr.<mode>`` (``asr.short-audio-ws``
for the short-audio websocket): 200 for END NORMAL/CANCEL, the error's status for ERROR
(400 client errors, 429 concurrency, 5xx engine), delay = client END to server END; billable
audio = the session's audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from typing import Any, Final

from aiohttp import WSMsgType, web

from ..errors import EngineOverloadedError, EngineUnavailableError, PropertyNotSupportedError
from ..protocol import (
    CATALOGUE,
    AudioLimitReached,
    AudioReceived,
    ConnectionClosed,
    EndRequested,
    EndResponse,
    ErrorResponse,
    EventResponse,
    EventType,
    Mode,
    ProtocolViolation,
    ServerSession,
    ServerState,
    StartRequested,
    StartResponse,
)
from .auth import PRINCIPAL, REQUEST_ID, route
from .recognizer import RecognitionFailed, SessionRecognizer
from .state import ADMISSION, ENGINE_METRICS, ENGINES, HOT_WORDS, METRICS, POOL, SESSIONS, SETTINGS
from .wsframes import StrictWebSocketResponse

__all__ = ["INTERFACES", "LATE_AUDIO_GRACE_S", "MAX_OUTBOUND_FRAMES", "MAX_WS_MESSAGE_BYTES", "PAUSE_PING_S",
           "RECEIVE_BUFFER_BYTES", "RasrConnection", "setup_routes"]

logger = logging.getLogger(__name__)

#: Largest websocket message read (above the 64 KiB shard maximum so oversize frames reach the
#: session and get the documented SIS.0032 answer instead of a close 1009).
MAX_WS_MESSAGE_BYTES: Final = 4 * 1024 * 1024
#: Outbound text frames queued per connection before the client is considered stuck
#: (overflow policy: close the connection with 1008).
MAX_OUTBOUND_FRAMES: Final = 4096
#: Seconds after a session ended (our END or ERROR) during which audio frames arriving outside a
#: session are dropped silently: they were in flight when the session ended.
LATE_AUDIO_GRACE_S: Final = 5.0
#: While flow control does not read, the server pings the client this often (seconds).
PAUSE_PING_S: Final = 3.0
#: Kernel receive buffer of a RASR websocket connection (bounds the audio in flight while
#: flow control does not read; 64 KiB is 2 s of 16 kHz PCM and far above real-time needs).
RECEIVE_BUFFER_BYTES: Final = 64 * 1024

#: Metrics interface name per mode.
INTERFACES: Final = {
    Mode.SHORT_STREAM: "rasr.short-stream",
    Mode.SENTENCE_STREAM: "rasr.sentence-stream",
    Mode.CONTINUE_STREAM: "rasr.continue-stream",
    Mode.SHORT_AUDIO: "asr.short-audio-ws",
}


def _status(code: str) -> int:
    spec = CATALOGUE.get(code)
    return spec.http_status if spec is not None else 500


class RasrConnection:
    """One websocket connection (any number of START..END sessions, one at a time)."""

    def __init__(self, request: web.Request, ws: web.WebSocketResponse, mode: Mode) -> None:
        app = request.app
        self.settings = app[SETTINGS]
        self.metrics = app[METRICS]
        self.registry = app[ENGINES]
        self.pool = app[POOL]
        self.limiter = app[SESSIONS]
        self.admission = app.get(ADMISSION)  # measured decode budget (SIS.0312 beyond)
        self.engine_metrics = app.get(ENGINE_METRICS)  # time-to-final, decode histograms
        self.hot_words = app.get(HOT_WORDS)
        self.ws = ws
        self.mode = mode
        self.interface = INTERFACES[mode]
        principal = request.get(PRINCIPAL)
        self.project_id = principal.project_id if principal is not None else request.match_info.get("project_id", "")
        self.request_id = request.get(REQUEST_ID, "")
        cap = self.settings.max_audio_ms.get(mode.value)
        self.session = ServerSession(mode, clock=self.settings.clock, idle_timeout_s=self.settings.idle_timeout_s,
                                     max_audio_ms=cap)
        self._out: asyncio.Queue[str | None] = asyncio.Queue(MAX_OUTBOUND_FRAMES + 16)
        self._rec: SessionRecognizer | None = None
        self._slot = False
        self._end_t: float | None = None
        self._session_start_t = 0.0
        self._tasks: list[asyncio.Task] = []
        self._closing = False
        self._close_code = 1000  # 1001 when the server shuts down, 1008 when the client is stuck
        self._setup_task: asyncio.Task | None = None
        self._early_capped = False  # the audio cap was reached before the START answer
        self._grace_until = float("-inf")  # settings clock: late audio is dropped until then
        self.late_frames_dropped = 0
        self._paused_at: float | None = None  # settings clock: reader paused by flow control
        self._paused_s = 0.0  # paused time since the last client message (idle rule credit)

    # -- output ---------------------------------------------------------------------------------
    def _write(self, frames: list[str]) -> None:
        for f in frames:
            if self._out.qsize() >= MAX_OUTBOUND_FRAMES:
                logger.warning("client not reading: %d frames queued, closing trace_id=%s",
                               MAX_OUTBOUND_FRAMES, self.session.trace_id)
                self._closing = True
                self._close_code = 1008
                self._out.put_nowait(None)
                return
            self._out.put_nowait(f)

    def respond(self, response: Any) -> None:
        """Send a protocol response through the session (on the loop)."""
        self._write(self.session.send(response))
        if isinstance(response, (EndResponse, ErrorResponse)):
            self._grace_until = self.settings.clock() + LATE_AUDIO_GRACE_S

    async def _writer(self) -> None:
        try:
            while True:
                frame = await self._out.get()
                if frame is None:
                    break
                await self.ws.send_str(frame)
        except (ConnectionResetError, RuntimeError, asyncio.CancelledError):
            pass
        finally:
            if self._closing and not self.ws.closed:
                with contextlib.suppress(Exception):
                    await self.ws.close(code=self._close_code)

    async def _idle(self) -> None:
        opened = self.settings.clock()
        try:
            while not self.ws.closed:
                await asyncio.sleep(self.settings.idle_check_s)
                if self.settings.clock() - opened >= self.settings.max_connection_s:
                    # SIS drops connections older than 5 hours (the message is undocumented):
                    # end an open session like a shutdown would, then close with 1000.
                    logger.info("connection age limit reached trace_id=%s", self.session.trace_id)
                    await self.shutdown(close_code=1000)
                    return
                if self._paused_at is not None:
                    continue  # we are not reading: the client's silence is ours
                frames = self.session.expire_idle(self.settings.clock() - self._paused_s)
                if frames:
                    logger.info("idle timeout trace_id=%s: FATAL_ERROR SIS.0304", self.session.trace_id)
                    self._write(frames)
                    self._drop_recognizer("FATAL", 408)
                    self._closing = True
                    self._out.put_nowait(None)
                    return
        except asyncio.CancelledError:
            pass

    # -- session lifecycle ------------------------------------------------------------------------
    def _drop_recognizer(self, reason: str, status: int) -> None:
        rec, self._rec = self._rec, None
        task = self._setup_task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        if rec is not None:
            rec.close()
            audio_ms = rec.audio_samples * 1000 / rec.rate_hz
            latency = (time.perf_counter() - self._end_t) * 1000 if self._end_t is not None else 0.0
            self.metrics.observe(self.interface, status, latency, self.project_id, audio_ms)
            self.metrics.session_closed(self.interface, reason)
            logger.info("session end trace_id=%s reason=%s audio_ms=%.0f segments=%d", rec.trace_id, reason,
                        audio_ms, rec.segments)
        if self._slot:
            self._slot = False
            self.limiter.release()
        self._end_t = None

    def _on_start(self, ev: StartRequested) -> None:
        if self._rec is not None:  # cannot happen: the session refuses START twice
            self._drop_recognizer("ERROR", 400)
        if not self.limiter.try_acquire():
            self.metrics.rejected("concurrency")
            self.metrics.observe(self.interface, 429, 0.0, self.project_id)
            why = "the server is shutting down" if self.limiter.draining else None
            logger.info("START refused trace_id=%s: %s", ev.trace_id, why or "concurrency limit")
            self.respond(ErrorResponse.from_catalogue("SIS.0312", limit=self.limiter.limit, trace_id=ev.trace_id))
            return
        if self.admission is not None:
            ok, reason = self.admission.admit(self.limiter.active - 1)
            if not ok:  # the measured decode budget: one more session would push time-to-final over the bound
                self.limiter.release()
                self.metrics.rejected("capacity")
                self.metrics.observe(self.interface, 429, 0.0, self.project_id)
                logger.info("START refused trace_id=%s: %s", ev.trace_id, reason)
                self.respond(ErrorResponse("SIS.0312", f"{CATALOGUE['SIS.0312'].message}: {reason}",
                                           trace_id=ev.trace_id))
                return
        self._slot = True
        self._early_capped = False
        self._session_start_t = time.perf_counter()
        rec = SessionRecognizer(self.mode, ev.config, self.pool, self.respond,
                                interim_interval_s=self.settings.interim_interval_s,
                                lane_pending=self.settings.lane_pending, trace_id=ev.trace_id, **SessionRecognizer.wiring(self.pool))
        self._rec = rec
        self.metrics.session_opened(self.interface)
        logger.info("session start trace_id=%s mode=%s property=%s audio_format=%s request_id=%s",
                    ev.trace_id, self.mode.value, ev.config.property, ev.config.audio_format, self.request_id)
        self._setup_task = asyncio.create_task(self._setup(rec, ev))

    async def _setup(self, rec: SessionRecognizer, ev: StartRequested) -> None:
        cfg = ev.config
        lookup = self.hot_words if callable(self.hot_words) else None
        project_id = self.project_id

        def open_stream() -> tuple[Any, Any] | None:
            # Runs on the engine pool: the vocabulary lookup may read a database and the first
            # engine_for() loads a model.
            hot: list[str] = list(cfg.user_words or ())
            if cfg.vocabulary_id:
                words = lookup(project_id, cfg.vocabulary_id) if lookup is not None else None
                if words is None:
                    return None
                hot.extend(words)
            engine, route_ = self.registry.engine_for(cfg.property)
            stream = engine.new_stream(language=route_.language, hot_words=hot, word_info=cfg.need_word_info)
            return engine, stream

        try:
            opened = await self.pool.run(open_stream)
        except asyncio.CancelledError:
            raise
        except PropertyNotSupportedError as exc:
            self._reject(rec, ErrorResponse(exc.sis_error_code, str(exc), trace_id=ev.trace_id))
            return
        except EngineOverloadedError:
            self._reject(rec, ErrorResponse.from_catalogue("SIS.0312", limit=self.limiter.limit, trace_id=ev.trace_id))
            return
        except EngineUnavailableError as exc:
            logger.error("engine unavailable for %s: %s", cfg.property, exc)
            self._reject(rec, ErrorResponse("SIS.0303", f"engine connection failed: {exc}", trace_id=ev.trace_id))
            return
        except Exception as exc:
            logger.exception("engine setup failed trace_id=%s", ev.trace_id)
            self._reject(rec, ErrorResponse("SIS.0303", f"engine connection failed: {exc}", trace_id=ev.trace_id))
            return
        if opened is None:
            self._reject(rec, ErrorResponse.from_catalogue("SIS.0201", vocabulary_id=cfg.vocabulary_id,
                                                           trace_id=ev.trace_id))
            return
        engine, stream = opened
        if self._rec is not rec:  # cancelled / violated / lost meanwhile
            with contextlib.suppress(Exception):
                self.pool.submit(stream.close)
            return
        rec.attach(engine, stream)
        self.respond(StartResponse(trace_id=ev.trace_id))
        if self.session.state in (ServerState.IDLE, ServerState.IGNORING):
            # END(CANCEL) went out right behind the START answer.
            self._drop_recognizer("CANCEL", 200)
            return
        if self._early_capped and self.session.state is ServerState.STREAMING:
            # The cap was reached before our answer: say so now (the session drops later audio).
            self.respond(EventResponse(EventType.EXCEEDED_AUDIO, int(self.session.max_audio_ms),
                                       trace_id=ev.trace_id))
        rec.start_emitting(self._on_recognizer_end, self._on_recognizer_failure)

    def _reject(self, rec: SessionRecognizer, err: ErrorResponse) -> None:
        if self._rec is not rec:
            return
        self.respond(err)
        self._drop_recognizer("ERROR", _status(err.error_code))

    def _on_recognizer_end(self) -> None:
        rec = self._rec
        if rec is None:
            return
        self.respond(EndResponse(trace_id=rec.trace_id))
        self._drop_recognizer("NORMAL", 200)

    def _on_recognizer_failure(self, err: RecognitionFailed) -> None:
        rec = self._rec
        if rec is None:
            return
        logger.warning("recognition failed trace_id=%s: %s", rec.trace_id, err)
        self.respond(ErrorResponse(err.code, err.message, trace_id=rec.trace_id))
        self._drop_recognizer("ERROR", _status(err.code))

    def _handle_events(self) -> None:
        for ev in self.session.events():
            if isinstance(ev, AudioReceived):
                if self._rec is not None:
                    data = ev.data
                    if self.session.state in (ServerState.STARTING, ServerState.STARTING_ENDED):
                        data = self._within_cap(self._rec, ev)
                    if not data:
                        continue
                    try:
                        self._rec.feed(data)
                        if self._early_capped:
                            self._rec.limit_reached()
                    except Exception as exc:
                        logger.exception("audio processing failed trace_id=%s", self._rec.trace_id)
                        self._on_recognizer_failure(RecognitionFailed("SIS.0306", f"recognition error: {exc}"))
            elif isinstance(ev, StartRequested):
                self._on_start(ev)
            elif isinstance(ev, EndRequested):
                if self._rec is None:
                    continue
                if ev.cancel:
                    if self.session.state is ServerState.STARTING_ENDED:
                        # Cancelled before our START answer: answer START now; the session
                        # puts END(CANCEL) right behind it.
                        self.respond(StartResponse(trace_id=self._rec.trace_id))
                    self._drop_recognizer("CANCEL", 200)
                else:
                    self._end_t = time.perf_counter()
                    self._rec.finish()
            elif isinstance(ev, AudioLimitReached):
                if self._rec is not None:
                    logger.info("audio cap reached trace_id=%s (%d ms)", self._rec.trace_id, ev.audio_ms)
                    self._rec.limit_reached()
            elif isinstance(ev, ProtocolViolation):
                logger.info("client violation trace_id=%s: %s %s", self.session.trace_id, ev.error_code, ev.error_msg)
                if self._rec is not None:
                    self._drop_recognizer("ERROR", _status(ev.error_code))
                else:
                    self.metrics.observe(self.interface, _status(ev.error_code), 0.0, self.project_id)
            elif isinstance(ev, ConnectionClosed) and self._rec is not None:
                self._drop_recognizer("LOST" if ev.error_code is None else "FATAL",
                                      499 if ev.error_code is None else 408)

    def _within_cap(self, rec: SessionRecognizer, ev: AudioReceived) -> bytes:
        """The part of `ev` within the audio cap (the session enforces it only once streaming)."""
        if self._early_capped:
            return b""
        cap = int(self.session.max_audio_ms) * rec.config.format_info.bytes_per_second // 1000
        keep = cap - ev.offset_bytes
        if keep >= len(ev.data):
            return ev.data
        self._early_capped = True
        logger.info("audio cap reached before the START answer trace_id=%s (%d ms)", rec.trace_id,
                    self.session.max_audio_ms)
        return ev.data[:max(0, keep)]

    def _late_audio(self, data: str | bytes) -> bool:
        """Whether `data` is an audio frame in flight behind a session that already ended."""
        if not isinstance(data, bytes) or self.session.state is not ServerState.IDLE:
            return False
        if self.settings.clock() >= self._grace_until:
            return False
        self.late_frames_dropped += 1
        logger.debug("late audio frame dropped trace_id=%s (%d bytes)", self.session.trace_id, len(data))
        return True

    async def _flow_control(self) -> None:
        """Stop reading while the session's engine backlog is above its high watermark."""
        self._paused_s = 0.0  # a client message was just read
        rec = self._rec
        if rec is None or not rec.saturated():
            return
        clock = self.settings.clock
        self._paused_at = clock()
        room = asyncio.ensure_future(rec.wait_room())
        try:
            while True:
                done, _ = await asyncio.wait({room}, timeout=PAUSE_PING_S)
                if done:
                    break
                # The client's heartbeat ping waits behind its audio in the socket, unread: a
                # ping of ours is data the client receives, which resets its heartbeat timer.
                with contextlib.suppress(Exception):
                    await self.ws.ping()
        finally:
            if not room.done():
                room.cancel()
            self._paused_s += clock() - self._paused_at
            self._paused_at = None

    # -- main loop ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Serve the connection until the client or the server closes it."""
        self.limiter.add(self)
        self._tasks = [asyncio.create_task(self._writer()), asyncio.create_task(self._idle())]
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.BINARY:
                    data: str | bytes = msg.data
                elif msg.type == WSMsgType.TEXT:
                    data = msg.data
                else:  # ERROR
                    break
                if self.session.state is ServerState.CLOSED:
                    break
                if self._late_audio(data):
                    continue
                self._write(self.session.receive(data))
                self._handle_events()
                if self._closing:
                    break
                await self._flow_control()
                if self._closing:
                    break
        finally:
            if self.session.state is not ServerState.CLOSED:
                self.session.receive(None)
            self._handle_events()
            self._drop_recognizer("LOST", 499)
            self._closing = True
            with contextlib.suppress(asyncio.QueueFull):
                self._out.put_nowait(None)
            writer, idle = self._tasks
            idle.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(writer, 5.0)
            if not self.ws.closed:
                with contextlib.suppress(Exception):
                    await self.ws.close()
            self.limiter.discard(self)

    async def shutdown(self, close_code: int = 1001) -> None:
        """Graceful end: finish an open session (finals, then END NORMAL), then close (1001)."""
        rec = self._rec
        st = self.session.state
        if rec is not None and st in (ServerState.STREAMING, ServerState.FINISHED):
            done = asyncio.get_running_loop().create_future()

            def on_end() -> None:
                if self._rec is rec:
                    self.respond(EndResponse(trace_id=rec.trace_id))
                    self._drop_recognizer("NORMAL", 200)
                if not done.done():
                    done.set_result(None)

            def on_fail(err: RecognitionFailed) -> None:
                self._on_recognizer_failure(err)
                if not done.done():
                    done.set_result(None)

            rec._on_end, rec._on_failure = on_end, on_fail
            rec.finish()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(done), self.settings.shutdown_timeout_s)
        elif rec is not None and st is ServerState.DRAINING:
            for _ in range(int(self.settings.shutdown_timeout_s * 20)):
                if self._rec is None:
                    break
                await asyncio.sleep(0.05)
        self._closing = True
        self._close_code = close_code
        with contextlib.suppress(asyncio.QueueFull):
            self._out.put_nowait(None)
        writer = self._tasks[0] if self._tasks else None
        if writer is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(writer), 5.0)
        if not self.ws.closed:
            with contextlib.suppress(Exception):
                await self.ws.close(code=close_code, message=b"server shutting down" if close_code == 1001 else b"")

    async def force_close(self) -> None:
        """Close at once (shutdown timeout ran out)."""
        self._drop_recognizer("LOST", 503)
        for t in self._tasks:
            t.cancel()
        if not self.ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(code=1001), 1.0)


def _limit_receive_buffer(request: web.Request) -> None:
    # A small kernel receive buffer: when flow control stops reading, the client blocks after
    # about a second of audio instead of after megabytes of autotuned buffer (whose decoding
    # would then delay the END answer).
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or getattr(sock, "family", None) not in (socket.AF_INET, socket.AF_INET6):
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)


def _ws_handler(mode: Mode):
    @route(interface=INTERFACES[mode])
    async def handler(request: web.Request) -> web.StreamResponse:
        ws = StrictWebSocketResponse(autoping=True, max_msg_size=MAX_WS_MESSAGE_BYTES, compress=False)
        if not ws.can_prepare(request).ok:
            return web.json_response(
                {"error_code": "SIS.0032",
                 "error_msg": f"{request.path} is a websocket endpoint: send a websocket upgrade (GET)"},
                status=400)
        await ws.prepare(request)
        _limit_receive_buffer(request)
        conn = RasrConnection(request, ws, mode)
        await conn.run()
        return ws
    handler.__name__ = f"ws_{mode.name.lower()}"
    return handler


def setup_routes(app: web.Application) -> None:
    """Install the four websocket GET routes (``/v1/{project_id}/rasr/...``, ``/asr/short-audio``)."""
    for mode in Mode:
        app.router.add_get(mode.path("{project_id}"), _ws_handler(mode), allow_head=False)
