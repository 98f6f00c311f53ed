"""RASR websocket endpoints: short-stream, sentence-stream, continue-stream, short-audio (websocket).

One :class:`RasrConnection` per websocket. The protocol core's
:class:`~sis_stream.protocol.ServerSession` decides everything about the wire (START/END order,
config validation, shard limits, the audio cap with EXCEEDED_AUDIO, cancel, the 20 s idle rule);
this module is the transport around it plus the recognition glue
(:class:`~.recognizer.SessionRecognizer`):

* the reader (the handler coroutine) feeds every websocket message to the session and acts on
  its events: START -> concurrency check (SIS.0312), engine lookup off the loop (property not
  supported -> ERROR SIS.0032, engine unavailable -> SIS.0303), START answer; audio -> recognizer;
  END -> finals then END; cancel / violations / loss -> drop the recognizer;
* one writer task sends the text frames in the order the session produced them (bounded queue;
  a client that stops reading is disconnected);
* one idle task applies the 20 s rule on the settings' clock (FATAL_ERROR SIS.0304, then close).

Audio sent right behind START (before our answer), 4000-byte frames faster than real time and a
short last frame are all accepted (§14.7). Pings are answered by aiohttp (autoping); they do not
count as client messages for the idle rule (the error says "wait voice timeout").

Metrics: each recognition session is one call of interface ``rasr.<mode>`` (``asr.short-audio-ws``
for the short-audio websocket): 200 for END NORMAL/CANCEL, the error's status for ERROR
(400 client errors, 429 concurrency, 5xx engine), delay = client END to server END; billable
audio = the session's audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
    Mode,
    ProtocolViolation,
    ServerSession,
    ServerState,
    StartRequested,
    StartResponse,
)
from .auth import PRINCIPAL, REQUEST_ID, route
from .recognizer import RecognitionFailed, SessionRecognizer
from .state import ENGINES, HOT_WORDS, METRICS, POOL, SESSIONS, SETTINGS

__all__ = ["INTERFACES", "MAX_OUTBOUND_FRAMES", "MAX_WS_MESSAGE_BYTES", "RasrConnection", "setup_routes"]

logger = logging.getLogger(__name__)

#: Largest websocket message read (above the 64 KiB shard maximum so oversize frames reach the
#: session and get the documented SIS.0032 answer instead of a close 1009).
MAX_WS_MESSAGE_BYTES: Final = 4 * 1024 * 1024
#: Outbound text frames queued per connection before the client is considered stuck
#: (overflow policy: close the connection with 1008).
MAX_OUTBOUND_FRAMES: Final = 4096

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
                frames = self.session.expire_idle()
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
        self._slot = True
        self._session_start_t = time.perf_counter()
        rec = SessionRecognizer(self.mode, ev.config, self.pool, self.respond,
                                interim_interval_s=self.settings.interim_interval_s,
                                lane_pending=self.settings.lane_pending, trace_id=ev.trace_id)
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
                    try:
                        self._rec.feed(ev.data)
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
                self._write(self.session.receive(data))
                self._handle_events()
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


def _ws_handler(mode: Mode):
    @route(interface=INTERFACES[mode])
    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=MAX_WS_MESSAGE_BYTES, compress=False)
        if not ws.can_prepare(request).ok:
            return web.json_response(
                {"error_code": "SIS.0032",
                 "error_msg": f"{request.path} is a websocket endpoint: send a websocket upgrade (GET)"},
                status=400)
        await ws.prepare(request)
        conn = RasrConnection(request, ws, mode)
        await conn.run()
        return ws
    handler.__name__ = f"ws_{mode.name.lower()}"
    return handler


def setup_routes(app: web.Application) -> None:
    """Install the four websocket GET routes (``/v1/{project_id}/rasr/...``, ``/asr/short-audio``)."""
    for mode in Mode:
        app.router.add_get(mode.path("{project_id}"), _ws_handler(mode), allow_head=False)
