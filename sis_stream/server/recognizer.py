"""Per-session recognition glue: audio bytes -> PCM -> Endpointer -> engine stream (in the pool).

Theory of operation
-------------------
One :class:`SessionRecognizer` serves one START..END session of a websocket connection. It runs
on the event loop and never blocks it:

* :meth:`feed` (cheap, on the loop): decode the START's ``audio_format`` (pcm16 bytes, or G.711
  through :mod:`sis_stream.audio.codec`) to int16 PCM at the format's rate, run the
  :class:`~sis_stream.audio.endpoint.Endpointer` over it (sentence/continuous: server endpointing;
  short-stream and the short-audio websocket: one utterance closed by END), and turn its events
  into engine operations and output items.
* Engine operations (``accept``, ``partial``, ``finalize``, ``close``) run on the stream's
  :class:`~sis_stream.engines.pool.Lane` of the shared bounded executor, in order. Segment PCM is
  converted to the engines' 16 kHz by our own resampler kernel (``sis_stream.audio.resample``) and
  batched (``accept_batch_ms``) so a stream costs a few pool tasks per second.
* Batched decoding: when the server has a :class:`~sis_stream.engines.batcher.DecodeBatcher` and
  the stream is ``batchable`` (Whisper/Moonshine without word timings or hot words), the lane
  only *plans* finals and partials (``plan_final``/``plan_partial``: cheap) and hands the decode
  job, tagged with the session's property, to the batcher, which decodes the jobs of many
  sessions that fall due together in one call; the batcher's future resolves the output item.
  Other streams decode in their lane.
* Output items go into one FIFO; the emitter task (started once the START answer is out) awaits
  each item's engine future in turn and hands :mod:`sis_stream.protocol` responses to the
  connection, so messages leave in the order they were decided: interims of a segment before its
  final, a sentence's final before VOICE_END, every final before END.

Clocks: RESULT ``start_time``/``end_time`` are the Endpointer's speech onset and end (ms of session
audio); ``word_info`` times are the engine's stream-clock times mapped back onto the session
audio clock through the segment's audio start (the engine only sees segment audio).

Interim results (``interim_results=yes``): at most one per ``interim_interval_s`` per stream, only
when no earlier partial of the stream is still pending, and skipped while the executor has a
backlog (``queued >= workers``) or the batcher is loaded (its ``try_submit`` refuses, or the job
waited too long): under load interims are dropped first, finals never.

Time to final: with a ``ttf_observer``, every final reports the server-side time from the end of
speech to the final going out: the time since the segment closed plus the trailing silence
(``vad_tail``) the endpointer waited for before closing it.

Text: Whisper punctuates; ``add_punc=no`` strips punctuation. Pocketsphinx does not;
``add_punc=yes`` then only capitalises the first letter and ends the sentence with a period
(nothing smarter is claimed). ``digit_norm=yes`` turns spelled English numbers into digits;
``digit_norm=no`` spells digits as words.

Sentence mode: the sentence ends with VOICE_END if its final text is non-empty, else
EXCEEDED_SILENCE (current docs). With the ``none`` engine (always empty text, real timings) a
closed segment counts as speech and gives VOICE_END.

Flow control: a session's own backlog never becomes an error. :meth:`SessionRecognizer.saturated`
says when the connection should stop reading the websocket (the engine operations not yet
started reach ``flow_high`` tasks, or the shared executor queue is three quarters full while this
stream has work queued); the connection then awaits :meth:`SessionRecognizer.wait_room`, which
returns once the backlog is down to ``flow_low`` tasks (or the recognizer is closed). While the
server does not read, TCP backpressure blocks the client's sends, so a client sending as fast as
it can runs at the engine's speed. Operations queued before the engine stream is ready (the
model loads) count as backlog too, and so do the stream's decode jobs in the batcher (so a file
sent at full speed keeps a bounded number of segments in flight, ``decode_high``, which then
decode together).

Bounds: the output FIFO holds at most one pending partial plus one item per segment/event, and
segments are bounded by the session audio cap; pending engine tasks per stream are bounded by the
flow-control watermark (plus what one websocket message can add), the lane (``lane_pending``, a
hard bound that flow control keeps out of reach) and, globally, by the executor queue (overflow
policy: reject -> the session ends with ERROR SIS.0312 when the server is overloaded by too many
sessions).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from ..audio.endpoint import (
    CloseReason,
    Endpointer,
    ExceededSilence,
    SegmentAudio,
    SegmentClosed,
    SegmentOpened,
    VoiceEnd,
    VoiceStart,
)
from ..audio.endpoint import Mode as EpMode
from ..engines.base import SAMPLE_RATE_HZ, Engine, EngineStream, Hypothesis
from ..engines.batcher import DecodeBatcher, DecodeJob
from ..engines.pool import EngineExecutor, Lane
from ..errors import EngineOverloadedError, StreamClosedError
from ..protocol import (
    EventResponse,
    EventType,
    Mode,
    ResultResponse,
    Segment,
    SegmentResult,
    StartConfig,
    WordInfo,
)
from ._pcm import PcmDecoder, Upsampler2x, _Converter, _make_converter
from ._text import digits_to_words, postprocess_text, words_to_digits

__all__ = [
    "DEFAULT_DECODE_HIGH",
    "DEFAULT_FLOW_HIGH",
    "DEFAULT_FLOW_LOW",
    "PcmDecoder",
    "RecognitionFailed",
    "SessionRecognizer",
    "Upsampler2x",
    "decoding_for",
    "digits_to_words",
    "postprocess_text",
    "wire_decoding",
    "words_to_digits",
]

logger = logging.getLogger(__name__)

#: Engine ``accept`` calls are batched to at least this much audio (except before partial/final).
DEFAULT_ACCEPT_BATCH_MS: Final = 200
#: Flow control: stop reading the websocket at this many engine operations not yet started ...
DEFAULT_FLOW_HIGH: Final = 32
#: ... and read again once the backlog is down to this many.
DEFAULT_FLOW_LOW: Final = 8
#: Share of the executor queue above which a stream with queued work stops reading as well.
_GLOBAL_HIGH: Final = 0.75
#: Flow control: stop reading at this many decode jobs of the stream in the batcher (a file sent
#: at full speed keeps this many segments in flight: they batch together, and the first result
#: comes back within one batch of at most this many of its segments).
DEFAULT_DECODE_HIGH: Final = 8

_EP_MODE: Final = {
    Mode.SHORT_STREAM: EpMode.SHORT,
    Mode.SHORT_AUDIO: EpMode.SHORT,
    Mode.SENTENCE_STREAM: EpMode.SENTENCE,
    Mode.CONTINUE_STREAM: EpMode.CONTINUOUS,
}


class RecognitionFailed(Exception):
    """An engine operation failed; the connection answers ERROR ``code`` (SIS.0306 / SIS.0312)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# -- the recognizer -----------------------------------------------------------------------------

@dataclass
class _SegMeta:
    index: int
    start_ms: int  # speech onset, session clock
    audio_start_ms: int  # first sample of the segment audio fed to the engine, session clock
    engine_start_ms: int  # engine stream clock at that sample


@dataclass
class _Item:
    kind: str  # "partial", "final", "event", "sentence_end", "end"
    future: asyncio.Future | None = None
    meta: _SegMeta | None = None
    end_ms: int = 0
    event: EventType | None = None
    timestamp: int = 0
    closed_t: float = 0.0  # time.monotonic() when the segment closed (finals)
    tail_s: float = 0.0  # trailing silence the endpointer had waited by then (finals)


def _transfer(src: Any, dst: asyncio.Future) -> None:
    if dst.done():
        return
    if src.cancelled():
        dst.set_exception(RecognitionFailed("SIS.0306", "recognition was cancelled"))
    elif src.exception() is not None:
        exc = src.exception()
        if isinstance(exc, EngineOverloadedError):  # the decode queue is full: server overload
            exc = RecognitionFailed("SIS.0312", f"max concurrency exceeded: the recognition engine is "
                                                f"overloaded ({exc})")
        elif isinstance(exc, StreamClosedError):
            exc = RecognitionFailed("SIS.0306", f"the recognition engine stopped ({exc})")
        dst.set_exception(exc)
    else:
        dst.set_result(src.result())


#: Decode wiring of a server, by its executor: what ``decoding_for`` hands each recognizer.
_WIRING: weakref.WeakKeyDictionary[EngineExecutor, dict[str, Any]] = weakref.WeakKeyDictionary()


def wire_decoding(pool: EngineExecutor, *, batcher: DecodeBatcher | None,
                  ttf_observer: Callable[[str, float], None] | None = None) -> None:
    """Register the server-wide decode batcher and time-to-final observer of the server using
    `pool` (the application does this at startup; :func:`decoding_for` reads it)."""
    _WIRING[pool] = {"batcher": batcher, "ttf_observer": ttf_observer}


def decoding_for(pool: EngineExecutor) -> dict[str, Any]:
    """Keyword arguments ``batcher`` and ``ttf_observer`` for :class:`SessionRecognizer` of the
    server using `pool` (empty when none were wired: synchronous decoding, no TTF metric)."""
    return dict(_WIRING.get(pool, {}))


class SessionRecognizer:
    """Recognition for one START..END session (see the module docstring).

    Parameters
    ----------
    mode : Mode
        The websocket mode.
    config : StartConfig
        The validated START config.
    pool : EngineExecutor
        The shared executor (a lane is taken per session).
    send : callable
        ``send(response)`` for every protocol response (called on the loop, in order).
    interim_interval_s : float
        Minimum time between two interims of this stream.
    lane_pending : int
        Bound on this stream's queued engine tasks.
    accept_batch_ms : int
        Batch size of engine ``accept`` calls.
    flow_high, flow_low : int
        Flow-control watermarks in engine operations not yet started (see the module docstring);
        ``1 <= flow_low <= flow_high < lane_pending``.
    trace_id : str
        For logs and for the responses (stale answers are dropped by the session).
    batcher : DecodeBatcher, optional
        The server-wide decode batcher: a :attr:`~sis_stream.engines.buffered.BufferedStream.batchable`
        stream's decodes go there (planned in the lane); other streams decode in their lane.
    decode_high : int
        Flow control: the connection stops reading while this many of the stream's decode jobs
        are in the batcher.
    ttf_observer : callable, optional
        ``ttf_observer(property, seconds)`` for every final: server-side time from the end of
        speech (the segment's close plus the trailing silence the endpointer waited for) to the
        final going out.
    """

    #: ``SessionRecognizer(..., **SessionRecognizer.wiring(pool))``: see :func:`decoding_for`.
    wiring = staticmethod(decoding_for)

    def __init__(self, mode: Mode, config: StartConfig, pool: EngineExecutor,
                 send: Callable[[Any], None], *, interim_interval_s: float = 1.0, lane_pending: int = 256,
                 accept_batch_ms: int = DEFAULT_ACCEPT_BATCH_MS, flow_high: int = DEFAULT_FLOW_HIGH,
                 flow_low: int = DEFAULT_FLOW_LOW, trace_id: str | None = None,
                 batcher: DecodeBatcher | None = None, decode_high: int = DEFAULT_DECODE_HIGH,
                 ttf_observer: Callable[[str, float], None] | None = None) -> None:
        flow_high = min(flow_high, max(1, lane_pending // 2))
        flow_low = min(flow_low, flow_high)
        if not 1 <= flow_low <= flow_high:
            raise ValueError(f"flow watermarks must satisfy 1 <= flow_low <= flow_high, got "
                             f"flow_low={flow_low!r}, flow_high={flow_high!r}")
        if isinstance(decode_high, bool) or not isinstance(decode_high, int) or decode_high < 1:
            raise ValueError(f"decode_high must be an int >= 1, got {decode_high!r}")
        self.flow_high = flow_high
        self.flow_low = flow_low
        self.decode_high = decode_high
        self._room: asyncio.Event | None = None  # set by _poke when the backlog fell to flow_low
        self.paused_s = 0.0  # time the connection stopped reading for this session (stats)
        self.pauses = 0
        self.mode = mode
        self.config = config
        self.pool = pool
        self.batcher = batcher
        self._ttf = ttf_observer
        self._batched = False  # set at attach: the stream's decodes go to the batcher
        self._decoding = 0  # jobs of this stream in the batcher (flow-control backlog)
        self._decodes: set[Future] = set()  # their futures (cancelled at close)
        self.trace_id = trace_id
        self._send = send
        self._loop = asyncio.get_running_loop()
        fmt = config.format_info
        self.rate_hz = fmt.rate_hz
        self._decoder = PcmDecoder(fmt.encoding)
        ep_mode = _EP_MODE[mode]
        if ep_mode is EpMode.SHORT:
            self.endpointer = Endpointer(ep_mode, self.rate_hz)
        else:
            self.endpointer = Endpointer(ep_mode, self.rate_hz, vad_head=config.vad_head,
                                         vad_tail=config.vad_tail, max_seconds=config.effective_max_seconds)
        self.lane: Lane = pool.lane(lane_pending)
        self.interim_interval_s = float(interim_interval_s)
        self._batch_samples = accept_batch_ms * SAMPLE_RATE_HZ // 1000
        self.engine: Engine | None = None
        self.stream: EngineStream | None = None
        self._ops: list[tuple[Callable[[EngineStream], Any], asyncio.Future | None]] = []  # before attach
        self._batch: list[np.ndarray] = []
        self._batch_n = 0
        self._engine_samples = 0  # 16 kHz samples queued for the engine
        self._convert: _Converter | None = None
        self._seg: _SegMeta | None = None
        self._partial_pending = False
        self._last_partial = -1e18
        self._items: asyncio.Queue[_Item] = asyncio.Queue()
        self._emitter: asyncio.Task | None = None
        self._closed = False
        self._finished_input = False
        self._last_final_text = ""
        self._on_end: Callable[[], None] | None = None
        self._on_failure: Callable[[RecognitionFailed], None] | None = None
        self.audio_samples = 0  # session samples fed (at the format rate)
        self.segments = 0

    # -- wiring ---------------------------------------------------------------------------------
    def attach(self, engine: Engine, stream: EngineStream) -> None:
        """The engine stream is ready: run the operations queued while it loaded."""
        self.engine = engine
        self.stream = stream
        self._batched = (self.batcher is not None and not self.batcher.closed
                         and bool(getattr(stream, "batchable", False)))
        if engine.name == "none":
            # The none engine only counts samples: one accept per segment (at its final or
            # partial) is enough, and saves the pool hops.
            self._batch_samples = 1 << 62
        ops, self._ops = self._ops, []
        for fn, fut in ops:
            self._submit(fn, fut)
        self._poke()

    # -- flow control -----------------------------------------------------------------------------
    @property
    def backlog(self) -> int:
        """Engine operations of this stream not yet done: queued in its lane (or before attach)
        and decode jobs waiting in, or decoded by, the batcher."""
        return len(self._ops) + self.lane.pending + self._decoding

    def _globally_loaded(self) -> bool:
        st = self.pool.stats()
        if st.queued >= _GLOBAL_HIGH * st.max_queued:
            return True
        if self._batched and self.batcher is not None:
            bst = self.batcher.stats()
            return bst.queued >= _GLOBAL_HIGH * bst.max_queued
        return False

    def saturated(self) -> bool:
        """Whether the connection should stop reading the websocket until :meth:`wait_room`."""
        if self._closed or self._finished_input:
            return False
        n = self.backlog
        if n >= self.flow_high or self._decoding >= self.decode_high:
            return True
        if n and self.stream is not None:
            return self._globally_loaded()
        return False

    def _has_room(self) -> bool:
        if self._closed:
            return True
        n = self.backlog
        if n == 0:
            return True
        if n > self.flow_low or self._decoding >= self.decode_high:
            return False
        return not self._globally_loaded()

    async def wait_room(self) -> None:
        """Wait until the backlog is down to ``flow_low`` (or the recognizer closed).

        Wakes on the completion of this stream's own engine operations, so it always ends: the
        backlog is only waited on while the stream has queued work, and queued work runs.
        """
        t0 = time.monotonic()
        self.pauses += 1
        try:
            while not self._has_room():
                ev = self._room = asyncio.Event()
                await ev.wait()
        finally:
            self._room = None
            self.paused_s += time.monotonic() - t0

    def _poke(self) -> None:
        ev = self._room
        if ev is not None and self._has_room():
            ev.set()

    def _on_done(self, f: Any, fut: asyncio.Future | None) -> None:
        # On the loop, for every finished engine operation of this stream.
        if fut is not None and not f.cancelled() and f.exception() is None and isinstance(f.result(), Future):
            self._chain(f.result(), fut)  # a planned decode went to the batcher
        elif fut is not None:
            if self._closed:
                if not fut.done():
                    fut.cancel()  # nobody awaits it any more: no "exception never retrieved"
            else:
                _transfer(f, fut)
        else:
            self._check_op(f)
        self._poke()

    def _chain(self, job_future: Future, fut: asyncio.Future) -> None:
        # On the loop: the batcher's future resolves `fut` (the emitter's item) when decoded.
        self._decoding += 1
        self._decodes.add(job_future)
        if self._closed:
            job_future.cancel()
        job_future.add_done_callback(lambda f: self._threadsafe(self._on_decoded, f, fut))

    def _on_decoded(self, f: Future, fut: asyncio.Future) -> None:
        # On the loop, for every decode job of this stream that the batcher finished (or dropped).
        self._decoding -= 1
        self._decodes.discard(f)
        if self._closed:
            if not fut.done():
                fut.cancel()
        else:
            _transfer(f, fut)
        self._poke()

    def start_emitting(self, on_end: Callable[[], None], on_failure: Callable[[RecognitionFailed], None]) -> None:
        """Start the emitter (call right after the START answer went out)."""
        self._on_end = on_end
        self._on_failure = on_failure
        self._emitter = asyncio.create_task(self._emit_loop(), name=f"sis-emit-{self.trace_id}")

    # -- engine operations ------------------------------------------------------------------------
    def _submit(self, fn: Callable[[EngineStream], Any], fut: asyncio.Future | None, *, optional: bool = False) -> bool:
        if self.stream is None:
            if optional:
                return False
            self._ops.append((fn, fut))
            return True
        stream = self.stream
        try:
            cf = self.lane.try_submit(fn, stream) if optional else self.lane.submit(fn, stream)
        except EngineOverloadedError as exc:
            err = RecognitionFailed("SIS.0312", f"max concurrency exceeded: the recognition engine is overloaded ({exc})")
            if fut is not None:
                fut.set_exception(err)
            else:
                self._fail(err)
            return False
        except StreamClosedError:
            if fut is not None and not fut.done():
                fut.set_exception(RecognitionFailed("SIS.0306", "the recognizer was closed"))
            return False
        if cf is None:
            return False
        cf.add_done_callback(lambda f: self._done_threadsafe(f, fut))
        return True

    def _done_threadsafe(self, f: Any, fut: asyncio.Future | None) -> None:
        self._threadsafe(self._on_done, f, fut)

    def _threadsafe(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed (server gone): nobody waits for the result
            pass

    def _final_op(self, stream: EngineStream) -> Hypothesis | Future:
        # In the lane: end the segment; a batchable stream hands its decode to the batcher.
        if not self._batched:
            return stream.finalize()
        planned = stream.plan_final()  # type: ignore[attr-defined]
        if not isinstance(planned, DecodeJob):
            return planned
        planned.tag = self.config.property
        assert self.batcher is not None
        return self.batcher.submit(planned)

    def _plan_partial(self, stream: EngineStream) -> Hypothesis | Future | None:
        # In the lane: plan the interim pass; skipped (None) when the batcher is loaded.
        planned = stream.plan_partial()  # type: ignore[attr-defined]
        if not isinstance(planned, DecodeJob):
            return planned
        planned.tag = self.config.property
        assert self.batcher is not None
        return self.batcher.try_submit(planned)

    def _check_op(self, f: Any) -> None:
        if self._closed or f.cancelled():
            return
        exc = f.exception()
        if exc is not None:
            logger.warning("engine accept failed trace_id=%s: %s", self.trace_id, exc)
            self._fail(RecognitionFailed("SIS.0306", f"recognition error: {exc}"))

    def _fail(self, err: RecognitionFailed) -> None:
        if self._closed:
            return
        if self._on_failure is not None:
            self._on_failure(err)
        else:  # not emitting yet: report when the emitter starts
            fut = self._loop.create_future()
            fut.set_exception(err)
            self._items.put_nowait(_Item("final", fut, None))

    def _flush_batch(self) -> None:
        if not self._batch:
            return
        pcm = self._batch[0] if len(self._batch) == 1 else np.concatenate(self._batch)
        self._batch, self._batch_n = [], 0
        self._submit(lambda s, p=pcm: s.accept(p), None)

    def _queue_pcm(self, pcm: np.ndarray, *, last: bool = False) -> None:
        if self._convert is not None:
            pcm = self._convert.process(pcm) if pcm.size else pcm
            if last:
                tail = self._convert.flush()
                pcm = np.concatenate((pcm, tail)) if tail.size else pcm
        if pcm.size == 0:
            return
        self._batch.append(pcm)
        self._batch_n += pcm.size
        self._engine_samples += pcm.size
        if self._batch_n >= self._batch_samples:
            self._flush_batch()

    # -- input ----------------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Audio of the session, as received (call on the loop; cheap)."""
        if self._closed or self._finished_input:
            return
        pcm = self._decoder.decode(data)
        if pcm.size == 0:
            return
        self.audio_samples += pcm.size
        self._handle(self.endpointer.process(pcm))
        self._maybe_partial()

    def finish(self) -> None:
        """No more audio (client END, or the audio cap): close the open segment, then END."""
        self._close_input()
        self._items.put_nowait(_Item("end"))

    def limit_reached(self) -> None:
        """The session's audio cap was reached (EXCEEDED_AUDIO sent): close the open segment."""
        self._close_input()

    def _close_input(self) -> None:
        if self._finished_input or self._closed:
            return
        self._finished_input = True
        self._handle(self.endpointer.flush())
        self._flush_batch()

    def _handle(self, events: list) -> None:
        for ev in events:
            if isinstance(ev, SegmentAudio):
                self._queue_pcm(ev.pcm)
            elif isinstance(ev, SegmentOpened):
                self._convert = _make_converter(self.rate_hz)
                self._seg = _SegMeta(ev.index, ev.start_ms, ev.audio_start_ms,
                                     self._engine_samples * 1000 // SAMPLE_RATE_HZ)
                self._last_partial = -1e18
                self.segments += 1
            elif isinstance(ev, SegmentClosed):
                if self._convert is not None:
                    self._queue_pcm(np.zeros(0, np.int16), last=True)
                    self._convert = None
                self._flush_batch()
                fut = self._loop.create_future()
                meta = self._seg or _SegMeta(ev.index, ev.start_ms, ev.audio_start_ms,
                                             self._engine_samples * 1000 // SAMPLE_RATE_HZ)
                meta.start_ms = ev.start_ms
                self._submit(self._final_op, fut)
                tail_ms = ev.detected_ms - ev.end_ms if ev.reason is CloseReason.VAD_TAIL else 0
                self._items.put_nowait(_Item("final", fut, meta, end_ms=ev.end_ms, closed_t=time.monotonic(),
                                             tail_s=max(0, tail_ms) / 1000.0))
                self._seg = None
            elif isinstance(ev, VoiceStart):
                self._items.put_nowait(_Item("event", event=EventType.VOICE_START, timestamp=ev.timestamp_ms))
            elif isinstance(ev, VoiceEnd):
                self._items.put_nowait(_Item("sentence_end", timestamp=ev.timestamp_ms))
            elif isinstance(ev, ExceededSilence):
                self._items.put_nowait(_Item("event", event=EventType.EXCEEDED_SILENCE, timestamp=ev.timestamp_ms))
            # SilenceCut: a boundary without speech, nothing to send. ExceededAudio: the protocol
            # session enforces the cap (it truncates the crossing frame, so the Endpointer never
            # sees audio beyond it).

    def _maybe_partial(self) -> None:
        if (not self.config.interim_results or self._seg is None or self._partial_pending
                or self.stream is None or self._emitter is None):
            return
        now = time.monotonic()
        if now - self._last_partial < self.interim_interval_s:
            return
        st = self.pool.stats()
        if st.queued >= st.workers:
            return  # under load: interims are skipped first
        if self._batched and self.batcher is not None and not self.batcher.accepting_partials():
            return
        self._flush_batch()
        fut = self._loop.create_future()
        op = self._plan_partial if self._batched else (lambda s: s.partial())
        if not self._submit(op, fut, optional=True):
            return
        self._partial_pending = True
        self._last_partial = now
        seg = self._seg
        self._items.put_nowait(_Item("partial", fut, seg, end_ms=self.audio_samples * 1000 // self.rate_hz))

    # -- output ---------------------------------------------------------------------------------
    def _segment(self, hyp: Hypothesis | None, meta: _SegMeta, end_ms: int, final: bool) -> Segment | None:
        text = hyp.text if hyp is not None else ""
        eng = self.engine
        language = getattr(self.stream, "language", "en")
        text = postprocess_text(text, add_punc=self.config.add_punc, digit_norm=self.config.digit_norm,
                                punctuated=bool(eng and eng.punctuates), language=language)
        is_none = eng is not None and eng.name == "none"
        if final:
            self._last_final_text = text
        if not text and not is_none and not (final and self.mode in (Mode.SHORT_STREAM, Mode.SHORT_AUDIO)):
            return None  # nothing recognised: no RESULT for this segment
        words = None
        if self.config.need_word_info:
            words = []
            if hyp is not None:
                shift = meta.audio_start_ms - meta.engine_start_ms
                for w in hyp.words:
                    s, e = max(0, w.start_ms + shift), max(0, w.end_ms + shift)
                    words.append(WordInfo(s, max(s, e), w.word))
            words = tuple(words)
        start = meta.start_ms
        end = max(start, end_ms)
        score = float(hyp.score) if hyp is not None else 0.0
        return Segment(start, end, final, SegmentResult(text, score, words))

    async def _emit_loop(self) -> None:
        while True:
            item = await self._items.get()
            if self._closed:
                return
            if item.kind == "end":
                if self._on_end is not None:
                    self._on_end()
                return
            if item.kind == "event":
                assert item.event is not None
                self._send(EventResponse(item.event, int(item.timestamp), trace_id=self.trace_id))
                continue
            if item.kind == "sentence_end":
                is_none = self.engine is not None and self.engine.name == "none"
                ev = EventType.VOICE_END if (self._last_final_text or is_none) else EventType.EXCEEDED_SILENCE
                self._send(EventResponse(ev, int(item.timestamp), trace_id=self.trace_id))
                continue
            assert item.future is not None
            try:
                hyp = await item.future
            except RecognitionFailed as exc:
                if self._on_failure is not None:
                    self._on_failure(exc)
                return
            except Exception as exc:  # noqa: BLE001 - engine failure -> ERROR SIS.0306
                logger.warning("engine failed trace_id=%s: %r", self.trace_id, exc)
                if self._on_failure is not None:
                    self._on_failure(RecognitionFailed("SIS.0306", f"recognition error: {exc}"))
                return
            finally:
                if item.kind == "partial":
                    self._partial_pending = False
            if self._closed or item.meta is None:
                continue
            seg = self._segment(hyp, item.meta, item.end_ms, item.kind == "final")
            if seg is not None:
                self._send(ResultResponse((seg,), trace_id=self.trace_id))
            if item.kind == "final" and self._ttf is not None and item.closed_t:
                try:
                    self._ttf(self.config.property, time.monotonic() - item.closed_t + item.tail_s)
                except Exception:
                    logger.debug("time-to-final observer failed", exc_info=True)

    # -- teardown -------------------------------------------------------------------------------
    def close(self) -> None:
        """Drop everything (cancel, error, lost connection) and release the engine stream."""
        if self._closed:
            return
        self._closed = True
        if self._emitter is not None and not self._emitter.done() and self._emitter is not asyncio.current_task():
            self._emitter.cancel()
        self._poke()  # a reader waiting for room reads again (and sees the session is over)
        for f in list(self._decodes):  # queued decodes nobody will emit: drop them
            f.cancel()
        while not self._items.empty():  # results nobody will emit: no "exception never retrieved"
            fut = self._items.get_nowait().future
            if fut is not None:
                if fut.done():
                    if not fut.cancelled():
                        fut.exception()
                else:
                    fut.cancel()
        stream, self.stream = self.stream, None
        if stream is not None:
            try:
                self.lane.submit(lambda s: s.close(), stream)
            except Exception:  # noqa: BLE001 - pool full or shut down: close inline (cheap)
                try:
                    stream.close()
                except Exception:
                    logger.debug("stream close failed trace_id=%s", self.trace_id, exc_info=True)
        self.lane.close()
