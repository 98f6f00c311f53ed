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
* Output items go into one FIFO; the emitter task (started once the START answer is out) awaits
  each item's engine future in turn and hands :mod:`sis_stream.protocol` responses to the
  connection, so messages leave in the order they were decided: interims of a segment before its
  final, a sentence's final before VOICE_END, every final before END.

Clocks: RESULT ``start_time``/``end_time`` are the Endpointer's speech onset and end (ms of session
audio); ``word_info`` times are the engine's stream-clock times mapped back onto the session
audio clock through the segment's audio start (the engine only sees segment audio).

Interim results (``interim_results=yes``): at most one per ``interim_interval_s`` per stream, only
when no earlier partial of the stream is still pending, and skipped while the executor has a
backlog (``queued >= workers``): under load interims are dropped first, finals never.

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
model loads) count as backlog too.

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
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from ..audio import codec
from ..audio.endpoint import (
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
from ..engines.pool import EngineExecutor, Lane
from ..engines.zh_text import postprocess_zh
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
from ..text import number_to_words

__all__ = [
    "DEFAULT_FLOW_HIGH",
    "DEFAULT_FLOW_LOW",
    "PcmDecoder",
    "RecognitionFailed",
    "SessionRecognizer",
    "Upsampler2x",
    "digits_to_words",
    "postprocess_text",
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


# -- audio conversion ---------------------------------------------------------------------------

class PcmDecoder:
    """Bytes of one SIS ``audio_format`` -> int16 PCM at the format's rate (streaming).

    A pcm16 frame of odd length keeps its last byte for the next frame (samples never split).
    """

    def __init__(self, encoding: str) -> None:
        if encoding not in ("pcm", "ulaw", "alaw"):
            raise ValueError(f"encoding must be 'pcm', 'ulaw' or 'alaw', got {encoding!r}")
        self.encoding = encoding
        self._carry = b""

    def decode(self, data: bytes) -> np.ndarray:
        """Decode one frame; returns a (possibly empty) int16 array."""
        if self.encoding == "pcm":
            if self._carry:
                data = self._carry + data
                self._carry = b""
            if len(data) % 2:
                self._carry = data[-1:]
                data = data[:-1]
            return np.frombuffer(data, dtype="<i2").astype(np.int16, copy=False)
        codes = np.frombuffer(data, dtype=np.uint8)
        return codec.decode(codes, self.encoding)


def _halfband_taps(n_side: int = 16) -> np.ndarray:
    # Windowed-sinc low-pass at a quarter of the output rate (the input Nyquist), gain 2 to
    # make up for the zero-stuffing. 2*n_side+1 taps, Blackman window.
    n = np.arange(-n_side, n_side + 1)
    h = 0.5 * np.sinc(n / 2.0) * np.blackman(2 * n_side + 1)
    return (2.0 * h / h.sum()).astype(np.float64)


class Upsampler2x:
    """Streaming 2x upsampler (8 kHz -> 16 kHz): zero-stuff and a 33-tap half-band FIR.

    Fallback only, used when ``sis_stream.audio.resample`` cannot be imported. The filter
    delays the output by 16 output samples (1 ms), negligible next to the 10 ms VAD frames.
    """

    _TAPS: Final = _halfband_taps()

    def __init__(self) -> None:
        self._hist = np.zeros(len(self._TAPS) - 1, dtype=np.float64)

    def process(self, pcm: np.ndarray) -> np.ndarray:
        """Upsample one int16 chunk; returns ``2 * len(pcm)`` int16 samples."""
        if pcm.size == 0:
            return np.zeros(0, np.int16)
        z = np.zeros(2 * pcm.size, dtype=np.float64)
        z[::2] = pcm
        buf = np.concatenate((self._hist, z))
        y = np.convolve(buf, self._TAPS, mode="valid")
        self._hist = buf[-(len(self._TAPS) - 1):]
        return np.clip(np.rint(y), -32768, 32767).astype(np.int16)


class _Converter:
    """Segment PCM at the format's rate -> 16 kHz int16, streaming, flushed at the segment end.

    Uses the project's resampler kernel (:class:`sis_stream.audio.resample.StreamResampler`,
    delay-compensated: sample 0 out is sample 0 in, and the total length is exact); falls back to
    :class:`Upsampler2x` only if that module cannot be imported.
    """

    def __init__(self, rate_hz: int) -> None:
        if rate_hz * 2 != SAMPLE_RATE_HZ:
            raise ValueError(f"only 8000 and 16000 Hz audio is accepted, got {rate_hz}")
        try:
            from ..audio.resample import StreamResampler
        except ImportError:  # pragma: no cover - the resampler ships with the package
            self._rs = None
            self._up = Upsampler2x()
        else:
            self._rs = StreamResampler(rate_hz, SAMPLE_RATE_HZ, dtype=np.int16)

    def process(self, pcm: np.ndarray) -> np.ndarray:
        if self._rs is None:
            return self._up.process(pcm)
        return self._rs.process(pcm)

    def flush(self) -> np.ndarray:
        if self._rs is None:
            return np.zeros(0, np.int16)
        return self._rs.flush()


def _make_converter(rate_hz: int) -> _Converter | None:
    """A converter of `rate_hz` int16 PCM to 16 kHz, or None when no conversion is needed."""
    if rate_hz == SAMPLE_RATE_HZ:
        return None
    return _Converter(rate_hz)


# -- text post-processing -----------------------------------------------------------------------

_NUM_WORDS: Final = {
    "zero": 0, "oh": None, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20,
    "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
}
_SCALES: Final = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9}
_PUNCT_RE: Final = re.compile(r"(?<!\d)[.,!?;:\"“”‘’«»…()\[\]{}]|[.,](?!\d)|[!?;:\"“”…()\[\]{}]")
_DIGITS_RE: Final = re.compile(r"\b\d{1,15}\b")


def words_to_digits(text: str) -> str:
    """Replace runs of spelled English cardinal numbers by digits (``"twenty three"`` -> ``"23"``).

    Handles ``zero``..``nine hundred ninety nine billion ...`` with ``hundred/thousand/million/
    billion`` scales and optional ``and``; anything else is left untouched.
    """
    tokens = text.split()
    out: list[str] = []
    i = 0
    while i < len(tokens):
        j, total, current, seen = i, 0, 0, False
        while j < len(tokens):
            w = tokens[j].lower().strip(",.")
            if w in _NUM_WORDS and _NUM_WORDS[w] is not None:
                v = _NUM_WORDS[w]
                if seen and current % 10 != 0 and v < 10:
                    break  # "two three" is two numbers
                if seen and current % 100 == 0 and current and v < 100 and current < 100:
                    break
                current += v
                seen = True
            elif w in _SCALES and seen:
                scale = _SCALES[w]
                if scale == 100:
                    current *= 100
                else:
                    total += current * scale
                    current = 0
            elif w == "and" and seen and j + 1 < len(tokens) and tokens[j + 1].lower() in _NUM_WORDS:
                pass
            else:
                break
            j += 1
        if seen:
            trail = tokens[j - 1][-1] if tokens[j - 1][-1] in ",." else ""
            out.append(str(total + current) + trail)
            i = j
        else:
            out.append(tokens[i])
            i += 1
    return " ".join(out)


def digits_to_words(text: str) -> str:
    """Spell integers in English words (``"23"`` -> ``"twenty three"``)."""
    return _DIGITS_RE.sub(lambda m: number_to_words(int(m.group(0))), text)


def postprocess_text(text: str, *, add_punc: bool, digit_norm: bool, punctuated: bool, language: str) -> str:
    """Apply ``add_punc`` and ``digit_norm`` to an engine transcript (see the module docstring)."""
    text = " ".join(text.split())
    if not text:
        return text
    if language == "zh":  # Mandarin rules: full-width punctuation, Chinese numerals <-> digits
        return postprocess_zh(text, add_punc=add_punc, digit_norm=digit_norm)
    if language == "en":
        text = words_to_digits(text) if digit_norm else digits_to_words(text)
    if punctuated and not add_punc:
        text = " ".join(_PUNCT_RE.sub("", text).split())
    elif not punctuated and add_punc:
        text = text[0].upper() + text[1:]
        if text[-1] not in ".!?":
            text += "."
    return text


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


def _transfer(src: Any, dst: asyncio.Future) -> None:
    if dst.done():
        return
    if src.cancelled():
        dst.set_exception(RecognitionFailed("SIS.0306", "recognition was cancelled"))
    elif src.exception() is not None:
        dst.set_exception(src.exception())
    else:
        dst.set_result(src.result())


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
    """

    def __init__(self, mode: Mode, config: StartConfig, pool: EngineExecutor,
                 send: Callable[[Any], None], *, interim_interval_s: float = 1.0, lane_pending: int = 256,
                 accept_batch_ms: int = DEFAULT_ACCEPT_BATCH_MS, flow_high: int = DEFAULT_FLOW_HIGH,
                 flow_low: int = DEFAULT_FLOW_LOW, trace_id: str | None = None) -> None:
        flow_high = min(flow_high, max(1, lane_pending // 2))
        flow_low = min(flow_low, flow_high)
        if not 1 <= flow_low <= flow_high:
            raise ValueError(f"flow watermarks must satisfy 1 <= flow_low <= flow_high, got "
                             f"flow_low={flow_low!r}, flow_high={flow_high!r}")
        self.flow_high = flow_high
        self.flow_low = flow_low
        self._room: asyncio.Event | None = None  # set by _poke when the backlog fell to flow_low
        self.paused_s = 0.0  # time the connection stopped reading for this session (stats)
        self.pauses = 0
        self.mode = mode
        self.config = config
        self.pool = pool
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
        """Engine operations of this stream not yet started (queued before attach included)."""
        return len(self._ops) + self.lane.pending

    def saturated(self) -> bool:
        """Whether the connection should stop reading the websocket until :meth:`wait_room`."""
        if self._closed or self._finished_input:
            return False
        n = self.backlog
        if n >= self.flow_high:
            return True
        if n and self.stream is not None:
            st = self.pool.stats()
            return st.queued >= _GLOBAL_HIGH * st.max_queued
        return False

    def _has_room(self) -> bool:
        if self._closed:
            return True
        n = self.backlog
        if n == 0:
            return True
        if n > self.flow_low:
            return False
        st = self.pool.stats()
        return st.queued < _GLOBAL_HIGH * st.max_queued

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
        if fut is not None:
            if self._closed:
                if not fut.done():
                    fut.cancel()  # nobody awaits it any more: no "exception never retrieved"
            else:
                _transfer(f, fut)
        else:
            self._check_op(f)
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
        try:
            self._loop.call_soon_threadsafe(self._on_done, f, fut)
        except RuntimeError:  # the loop is closed (server gone): nobody waits for the result
            pass

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
                self._submit(lambda s: s.finalize(), fut)
                self._items.put_nowait(_Item("final", fut, meta, end_ms=ev.end_ms))
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
        self._flush_batch()
        fut = self._loop.create_future()
        if not self._submit(lambda s: s.partial(), fut, optional=True):
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

    # -- teardown -------------------------------------------------------------------------------
    def close(self) -> None:
        """Drop everything (cancel, error, lost connection) and release the engine stream."""
        if self._closed:
            return
        self._closed = True
        if self._emitter is not None and not self._emitter.done() and self._emitter is not asyncio.current_task():
            self._emitter.cancel()
        self._poke()  # a reader waiting for room reads again (and sees the session is over)
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
