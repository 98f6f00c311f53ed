"""Sans-IO SIS endpoint detection (vad_head, vad_tail, max_seconds) for the three RASR modes.

Theory of operation
-------------------
An :class:`Endpointer` is fed the session's int16 PCM (8 or 16 kHz, any chunk sizes) and returns
:class:`EndpointEvent` objects. It never does I/O and never looks at a clock: time is the SIS
clock, **milliseconds of session audio received** (sample count * 1000 / rate), which is what
SIS stamps RESULT ``start_time``/``end_time`` and EVENT ``timestamp`` with.

A frame VAD (by default :class:`sis_stream.audio.vad.EnergyVad` without hangover: the tail timer *is*
the hangover) decides every ``frame_ms`` frame. The decisions drive one state machine whose
rules all live in ``_TRANSITIONS`` below (h11 style: everything that changes state is in that
table; the rest of the class only counts frames and turns actions into events):

States: ``WAITING`` (no segment open) -> ``IN_SEGMENT`` -> ``WAITING`` (continuous) or
``ENDED`` (sentence done, or audio cap reached: later audio is counted but ignored) ->
``CLOSED`` (after :meth:`Endpointer.flush`; :meth:`Endpointer.process` then raises).

Triggers, all evaluated at frame boundaries (so durations are rounded *up* to whole frames):

- ``SPEECH``: a speech frame while waiting. The segment starts at that frame, or, with the
  default :class:`~sis_stream.audio.vad.EnergyVad`, at the onset it reports: up to ``lookback_ms``
  earlier, where the band energy first rose above the noise floor (never before the last
  boundary). The event is still *decided* at the speech frame (``detected_ms``).
- ``HEAD_SILENCE``: the silence since the last boundary (session start, segment close or the
  previous cut) reaches ``vad_head``.
- ``TAIL_SILENCE``: inside a segment, the run of non-speech frames reaches ``vad_tail``
  (at least one frame, so ``vad_tail=0`` ends at the first non-speech frame). The segment ends
  where that run started (the end of speech).
- ``MAX_LENGTH``: the segment (onset to now, short pauses included) reaches ``max_seconds``.
  It ends there, or where a silence run in progress started.
- ``AUDIO_CAP``: a sample beyond the mode's audio cap arrives (60 s short/sentence, 5 h
  continuous: SIS error SIS.0309). Audio past the cap is dropped.
- ``AUDIO`` (short mode only): the first audio opens the single utterance.
- ``END_OF_STREAM``: :meth:`Endpointer.flush` (the client sent END).

Mode semantics (sis-protocol.md §1.3, §4.2, §7.2):

- ``sentence``: ``VoiceStart`` once at speech onset; the sentence ends at the first trailing
  silence >= ``vad_tail`` or when it lasts ``max_seconds`` (``VoiceEnd``); if no speech started
  within ``vad_head``, ``ExceededSilence``; after either, audio is ignored. (SIS sends
  EXCEEDED_SILENCE instead of VOICE_END when the recogniser's text is empty; that depends on the
  recogniser, so the server decides it from the ``SegmentClosed`` it gets.)
- ``continuous``: segments closed by ``vad_tail`` or ``max_seconds``, many per session; leading
  silence reaching ``vad_head`` cuts a boundary (``SilenceCut``) and detection continues; no
  VOICE_* / EXCEEDED_SILENCE events.
- ``short`` (short-stream): no endpointing; the whole stream is one segment, closed by END;
  ``vad_*``/``max_seconds`` are validated but ignored, as SIS ignores them.
- all modes: ``ExceededAudio`` at the cap (closing an open segment first), then ``ENDED``.

Segment audio: while a segment is open, ``SegmentAudio`` events carry its PCM as soon as the
frames are decided (at most one frame of latency), starting ``pre_roll_ms`` before the onset
(never before the previous segment's audio end) and running to the point where the close was
detected (so it includes the trailing silence that proved the end). The PCM a segment gets is
identical whatever the chunking; only how it is split across ``SegmentAudio`` events differs.
"""

from __future__ import annotations

import enum
import logging
import math
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, ClassVar, Final, Protocol, runtime_checkable

import numpy as np

from ..errors import AudioFormatError, StreamClosedError
from .vad import SUPPORTED_FRAME_MS, SUPPORTED_RATES, EnergyVad, VadTuning, as_pcm, native_vad

__all__ = [
    "AUDIO_CAP_MS",
    "DEFAULT_MAX_SECONDS",
    "DEFAULT_PRE_ROLL_MS",
    "DEFAULT_VAD_HEAD_MS",
    "DEFAULT_VAD_TAIL_MS",
    "MAX_SECONDS_RANGE",
    "PRE_ROLL_RANGE_MS",
    "VAD_HEAD_RANGE_MS",
    "VAD_HEAD_ZERO_MEANS_MS",
    "VAD_TAIL_RANGE_MS",
    "CloseReason",
    "EndpointEvent",
    "Endpointer",
    "ExceededAudio",
    "ExceededSilence",
    "FrameVad",
    "Mode",
    "SegmentAudio",
    "SegmentClosed",
    "SegmentOpened",
    "SilenceCut",
    "State",
    "VoiceEnd",
    "VoiceStart",
]

_log = logging.getLogger(__name__)


class Mode(str, enum.Enum):
    """RASR mode (the WebSocket path): ``short-stream``, ``sentence-stream``, ``continue-stream``."""

    #: One utterance per session, no server endpointing.
    SHORT = "short"
    #: One sentence, then audio is ignored.
    SENTENCE = "sentence"
    #: Many segments, detection continues after each.
    CONTINUOUS = "continuous"


class State(enum.Enum):
    """Endpointer state."""

    #: No segment open; counting leading silence.
    WAITING = "waiting"
    #: A segment is open.
    IN_SEGMENT = "in_segment"
    #: Sentence finished or audio cap reached: later audio is ignored.
    ENDED = "ended"
    #: flush() was called; process() raises.
    CLOSED = "closed"


class CloseReason(str, enum.Enum):
    """Why a segment closed."""

    #: Trailing silence reached ``vad_tail``.
    VAD_TAIL = "vad_tail"
    #: The segment lasted ``max_seconds``.
    MAX_SECONDS = "max_seconds"
    #: The session's audio cap was reached.
    EXCEEDED_AUDIO = "exceeded_audio"
    #: The stream ended (client END / flush()).
    END_OF_STREAM = "end_of_stream"


#: SIS config ranges (inclusive), sis-protocol.md §4.2.
VAD_HEAD_RANGE_MS: Final = (0, 60000)
VAD_TAIL_RANGE_MS: Final = (0, 3000)
MAX_SECONDS_RANGE: Final = (1, 60)
DEFAULT_VAD_HEAD_MS: Final = 10000
DEFAULT_VAD_TAIL_MS: Final = 500
DEFAULT_MAX_SECONDS: Final = 30
#: Current SIS docs: ``vad_head=0`` is treated as 60000 ms (older docs: 0 disabled the check).
VAD_HEAD_ZERO_MEANS_MS: Final = 60000
#: Pre-roll bounds (ours, not SIS): how much audio before the onset a segment's audio includes.
PRE_ROLL_RANGE_MS: Final = (0, 2000)
DEFAULT_PRE_ROLL_MS: Final = 300
#: Total audio per session before EXCEEDED_AUDIO (SIS.0309): 60 s short/sentence, 5 h continuous.
AUDIO_CAP_MS: Final = {Mode.SHORT: 60_000, Mode.SENTENCE: 60_000, Mode.CONTINUOUS: 5 * 3600 * 1000}


@runtime_checkable
class FrameVad(Protocol):
    """What the Endpointer needs from a frame VAD (EnergyVad has it; so can a webrtcvad adapter).

    ``process(pcm)`` takes int16 PCM of any length, buffers partial frames and returns one
    truthy/falsy decision per completed frame of ``frame_len`` samples; ``reset()`` forgets all.
    """

    rate_hz: int
    frame_len: int

    def process(self, chunk: Any) -> Any: ...

    def reset(self) -> None: ...


# ---------------------------------------------------------------------------------------------
# Events. Every event has ``timestamp_ms`` (the SIS-clock time it refers to) and ``detected_ms``
# (how much session audio had been received when it was decided). ``sis_event`` is the EVENT
# name the server sends for it, or None for the segment bookkeeping events.


@dataclass(frozen=True)
class EndpointEvent:
    """Base class of everything :class:`Endpointer` returns.

    Attributes
    ----------
    timestamp_ms : int
        SIS-clock time the event refers to (ms of session audio).
    detected_ms : int
        Audio received when it was decided (``>= timestamp_ms``).
    """

    sis_event: ClassVar[str | None] = None
    timestamp_ms: int
    detected_ms: int


@dataclass(frozen=True)
class VoiceStart(EndpointEvent):
    """Speech onset (sentence mode, at most once). ``timestamp_ms`` is the onset."""

    sis_event: ClassVar[str | None] = "VOICE_START"


@dataclass(frozen=True)
class VoiceEnd(EndpointEvent):
    """End of the sentence (sentence mode, at most once). ``timestamp_ms`` is the end of speech."""

    sis_event: ClassVar[str | None] = "VOICE_END"


@dataclass(frozen=True)
class ExceededSilence(EndpointEvent):
    """No speech within ``vad_head`` (sentence mode). ``timestamp_ms`` is when it ran out."""

    sis_event: ClassVar[str | None] = "EXCEEDED_SILENCE"


@dataclass(frozen=True)
class ExceededAudio(EndpointEvent):
    """The session's audio passed the mode's cap. ``timestamp_ms`` is the cap."""

    sis_event: ClassVar[str | None] = "EXCEEDED_AUDIO"


@dataclass(frozen=True)
class SegmentOpened(EndpointEvent):
    """A segment (sentence) started at ``timestamp_ms`` (= ``start_ms``).

    Attributes
    ----------
    index : int
        0, 1, 2, ... per session.
    audio_start_ms : int
        Where the segment's audio (its first ``SegmentAudio``) starts: the onset minus the
        pre-roll, not before 0 or the previous segment's audio end.
    """

    index: int
    audio_start_ms: int

    @property
    def start_ms(self) -> int:
        """Speech onset (the RESULT ``start_time``)."""
        return self.timestamp_ms


@dataclass(frozen=True)
class SegmentAudio(EndpointEvent):
    """PCM of an open segment, in order; ``timestamp_ms`` is its first sample's time.

    Attributes
    ----------
    index : int
        Segment index.
    start_sample : int
        Session sample index of ``pcm[0]`` (exact; ``timestamp_ms`` is rounded down).
    pcm : numpy.ndarray
        int16, read-only. Not part of equality (``n_samples`` is).
    n_samples : int
        ``len(pcm)``.
    """

    index: int
    start_sample: int
    n_samples: int
    pcm: np.ndarray = field(compare=False, repr=False)


@dataclass(frozen=True)
class SegmentClosed(EndpointEvent):
    """A segment ended. ``timestamp_ms`` is ``end_ms``.

    Attributes
    ----------
    index : int
        Segment index.
    start_ms : int
        Speech onset (RESULT ``start_time``).
    reason : CloseReason
        What ended it.
    audio_start_ms, audio_end_ms : int
        Span of the PCM delivered in its ``SegmentAudio`` events (pre-roll and the trailing
        silence up to ``detected_ms`` included).
    """

    index: int
    start_ms: int
    reason: CloseReason
    audio_start_ms: int
    audio_end_ms: int

    @property
    def end_ms(self) -> int:
        """End of speech (RESULT ``end_time``)."""
        return self.timestamp_ms


@dataclass(frozen=True)
class SilenceCut(EndpointEvent):
    """Continuous mode: silence from ``start_ms`` reached ``vad_head`` at ``timestamp_ms``.

    SIS cuts a sentence boundary there and continues; there is no speech to recognise.
    """

    start_ms: int


# ---------------------------------------------------------------------------------------------
# The transition table: ALL state changes live here. (mode, state, trigger) -> (next state,
# actions in the order their events are emitted). A missing key means "cannot happen"; the
# frame counting below only raises triggers that make sense in the current state.


class _T(enum.Enum):
    SPEECH = "speech"
    HEAD_SILENCE = "head_silence"
    TAIL_SILENCE = "tail_silence"
    MAX_LENGTH = "max_length"
    AUDIO_CAP = "audio_cap"
    AUDIO = "audio"
    END_OF_STREAM = "end_of_stream"


class _A(enum.Enum):
    OPEN = "open"  # SegmentOpened
    CLOSE = "close"  # pending SegmentAudio, then SegmentClosed
    VOICE_START = "voice_start"
    VOICE_END = "voice_end"
    EXCEEDED_SILENCE = "exceeded_silence"
    EXCEEDED_AUDIO = "exceeded_audio"
    CUT = "cut"  # SilenceCut


_W, _S, _E, _C = State.WAITING, State.IN_SEGMENT, State.ENDED, State.CLOSED
_TRANSITIONS: Final[dict[tuple[Mode, State, _T], tuple[State, tuple[_A, ...]]]] = {
    # sentence-stream
    (Mode.SENTENCE, _W, _T.SPEECH): (_S, (_A.OPEN, _A.VOICE_START)),
    (Mode.SENTENCE, _W, _T.HEAD_SILENCE): (_E, (_A.EXCEEDED_SILENCE,)),
    (Mode.SENTENCE, _S, _T.TAIL_SILENCE): (_E, (_A.CLOSE, _A.VOICE_END)),
    (Mode.SENTENCE, _S, _T.MAX_LENGTH): (_E, (_A.CLOSE, _A.VOICE_END)),
    (Mode.SENTENCE, _W, _T.AUDIO_CAP): (_E, (_A.EXCEEDED_AUDIO,)),
    (Mode.SENTENCE, _S, _T.AUDIO_CAP): (_E, (_A.CLOSE, _A.EXCEEDED_AUDIO)),
    # continue-stream
    (Mode.CONTINUOUS, _W, _T.SPEECH): (_S, (_A.OPEN,)),
    (Mode.CONTINUOUS, _W, _T.HEAD_SILENCE): (_W, (_A.CUT,)),
    (Mode.CONTINUOUS, _S, _T.TAIL_SILENCE): (_W, (_A.CLOSE,)),
    (Mode.CONTINUOUS, _S, _T.MAX_LENGTH): (_W, (_A.CLOSE,)),
    (Mode.CONTINUOUS, _W, _T.AUDIO_CAP): (_E, (_A.EXCEEDED_AUDIO,)),
    (Mode.CONTINUOUS, _S, _T.AUDIO_CAP): (_E, (_A.CLOSE, _A.EXCEEDED_AUDIO)),
    # short-stream
    (Mode.SHORT, _W, _T.AUDIO): (_S, (_A.OPEN,)),
    (Mode.SHORT, _W, _T.AUDIO_CAP): (_E, (_A.EXCEEDED_AUDIO,)),
    (Mode.SHORT, _S, _T.AUDIO_CAP): (_E, (_A.CLOSE, _A.EXCEEDED_AUDIO)),
    # END (flush) in every mode: close what is open.
    **{(m, st, _T.END_OF_STREAM): (_C, (_A.CLOSE,) if st is _S else ())
       for m in Mode for st in (_W, _S, _E)},
}

_REASONS: Final = {
    _T.TAIL_SILENCE: CloseReason.VAD_TAIL,
    _T.MAX_LENGTH: CloseReason.MAX_SECONDS,
    _T.AUDIO_CAP: CloseReason.EXCEEDED_AUDIO,
    _T.END_OF_STREAM: CloseReason.END_OF_STREAM,
}


# Every integer the per-frame path reads or writes lives in one int64 ``array('q')``
# (``Endpointer._c``), so that the compiled front-end in ``sis_stream._native.vad`` reaches them
# through one pointer; the Python code uses them as plain attributes (``_Counter``). The order is
# ``_COUNTERS``; the native module's ``EP_COUNTERS`` must be the same tuple (checked at binding).
_COUNTERS: Final = (
    "_received",  # samples received (accepted or ignored)
    "_accepted",  # samples given to the VAD (stops at the audio cap)
    "_frames",  # frames decided
    "_lead",  # silence frames since the last boundary (WAITING)
    "_boundary",  # sample index of the last boundary (for SilenceCut.start_ms)
    "_seg_start",  # onset frame of the open segment
    "_sil_run",  # trailing non-speech frames in the open segment
    "_index",  # index of the current/last segment
    "_audio_from",  # next sample of the open segment not yet emitted as audio
    "_audio_start",  # first sample of the open segment's audio
    "_prev_audio_end",  # end of the previous segment's audio (pre-roll never overlaps)
    "_buf_start",  # session sample index of the first buffered sample (_store[_head])
    "_back",  # onset look-back (frames) of the decision run being walked
    "_head",  # _store offset of the first buffered sample
    "_fill",  # _store offset past the last buffered sample
    "_hot",  # what the compiled front-end may do: 0 nothing, 1 waiting, 2 in a segment
    # constants of the configuration
    "_cap_samples",
    "_head_frames",
    "_tail_frames",
    "_max_frames",
    "_keep_back",
    "_frame_len_c",
    "_rate_c",
    "_include_audio_c",
)
_N_RESET: Final = _COUNTERS.index("_cap_samples")  # counters before it are zeroed by reset()


class _Counter:
    """Attribute view of one slot of ``Endpointer._c`` (an int)."""

    __slots__ = ("_i",)

    def __init__(self, i: int) -> None:
        self._i = i

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        return self if obj is None else obj._c[self._i]

    def __set__(self, obj: Any, value: int) -> None:
        obj._c[self._i] = value


def _check_int(name: str, value: Any, lo: int, hi: int, unit: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int ({unit}), got {type(value).__name__}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in {lo}..{hi} {unit}, got {value}")
    return int(value)


class Endpointer:
    """SIS server-side endpoint detection over one session's PCM (sans-IO).

    Parameters
    ----------
    mode : {"sentence", "continuous", "short"} or Mode
        RASR mode: ``sentence-stream``, ``continue-stream`` or ``short-stream``.
    rate_hz : int
        8000 or 16000 (the ``audio_format`` rate).
    vad_head : int, optional
        Leading silence in ms, 0..60000, default 10000. Per the **current** SIS docs, 0 is
        treated as 60000 (the 2019/2021 docs said 0 disabled the check; we follow the current
        docs). Sentence mode: no speech by then ends the session with ``ExceededSilence``;
        continuous: a ``SilenceCut`` boundary.
    vad_tail : int, optional
        Trailing silence in ms that ends a sentence, 0..3000, default 500 (0 = the first
        non-speech frame ends it).
    max_seconds : int, optional
        Longest sentence in s, 1..60, default 30.
    pre_roll_ms : int, optional
        Audio before the onset included in a segment's audio, 0..2000, default 300.
    frame_ms : int, optional
        VAD frame, 10 (default), 20 or 30: the granularity of every boundary.
    sensitivity : float, optional
        Passed to the default :class:`~sis_stream.audio.vad.EnergyVad` (0..1, default 0.5).
    vad : FrameVad, optional
        Use this frame VAD instead (its ``rate_hz`` must match; its frame length sets the
        granularity). It is reset with the Endpointer.
    include_audio : bool, optional
        Emit ``SegmentAudio`` events (default True). Without them only the pre-roll is kept,
        useful for barge-in detection on the client.

    Raises
    ------
    TypeError
        A parameter of the wrong type.
    ValueError
        A parameter outside its documented range (the message gives the range), an unknown
        mode, or a `vad` whose rate differs.
    AudioFormatError
        Unsupported `rate_hz` or `frame_ms`.

    Examples
    --------
    >>> import numpy as np
    >>> ep = Endpointer("sentence", 16000, vad_head=1000)
    >>> [type(e).__name__ for e in ep.process(np.zeros(16000 * 2, np.int16))]
    ['ExceededSilence']
    """

    def __init__(
        self,
        mode: str | Mode = Mode.SENTENCE,
        rate_hz: int = 16000,
        *,
        vad_head: int = DEFAULT_VAD_HEAD_MS,
        vad_tail: int = DEFAULT_VAD_TAIL_MS,
        max_seconds: int = DEFAULT_MAX_SECONDS,
        pre_roll_ms: int = DEFAULT_PRE_ROLL_MS,
        frame_ms: int = 10,
        sensitivity: float = 0.5,
        vad: FrameVad | None = None,
        include_audio: bool = True,
    ) -> None:
        self._c = array("q", bytes(8 * len(_COUNTERS)))  # see _COUNTERS
        try:
            self.mode: Final = Mode(mode)
        except ValueError:
            raise ValueError(
                f"mode must be one of {[m.value for m in Mode]}, got {mode!r}"
            ) from None
        if rate_hz not in SUPPORTED_RATES:
            raise AudioFormatError(f"rate_hz must be one of {SUPPORTED_RATES}, got {rate_hz!r}")
        if frame_ms not in SUPPORTED_FRAME_MS:
            raise AudioFormatError(f"frame_ms must be one of {SUPPORTED_FRAME_MS}, got {frame_ms!r}")
        self.vad_head: Final = _check_int("vad_head", vad_head, *VAD_HEAD_RANGE_MS, "ms")
        self.vad_tail: Final = _check_int("vad_tail", vad_tail, *VAD_TAIL_RANGE_MS, "ms")
        self.max_seconds: Final = _check_int("max_seconds", max_seconds, *MAX_SECONDS_RANGE, "s")
        self.pre_roll_ms: Final = _check_int("pre_roll_ms", pre_roll_ms, *PRE_ROLL_RANGE_MS, "ms")
        self.rate_hz: Final = int(rate_hz)
        self.include_audio: Final = bool(include_audio)
        if vad is None:
            # No VAD hangover: the tail timer is the hangover, and the end of speech is then
            # where the VAD first fell silent.
            base = VadTuning.from_sensitivity(sensitivity)
            tuning = VadTuning(**{**base.__dict__, "hangover_ms": 0, "hangover_quiet_ms": 0,
                                  "hangover_low_snr_ms": 0})
            vad = EnergyVad(rate_hz, frame_ms, sensitivity, tuning=tuning)
        elif not isinstance(vad, FrameVad):
            raise TypeError(f"vad must provide rate_hz, frame_len, process(), reset(); got {vad!r}")
        elif vad.rate_hz != rate_hz:
            raise ValueError(f"vad.rate_hz must equal rate_hz={rate_hz}, got {vad.rate_hz}")
        self.vad: Final = vad
        #: Samples per VAD frame.
        self.frame_len: Final = int(vad.frame_len)
        self._fms = 1000 * self.frame_len / self.rate_hz  # frame duration, ms
        head_ms = self.vad_head or VAD_HEAD_ZERO_MEANS_MS
        # Durations in whole frames, rounded up: a timer fires at the first frame boundary at
        # which the measured duration is >= the configured one.
        self._head_frames = max(1, math.ceil(head_ms / self._fms - 1e-9))
        self._tail_frames = max(1, math.ceil(self.vad_tail / self._fms - 1e-9))
        self._max_frames = max(1, math.ceil(self.max_seconds * 1000 / self._fms - 1e-9))
        #: Total audio the mode accepts (ms); beyond it: ExceededAudio.
        self.audio_cap_ms: Final = AUDIO_CAP_MS[self.mode]
        self._cap_samples = self.audio_cap_ms * self.rate_hz // 1000
        self._pre_roll = self.pre_roll_ms * self.rate_hz // 1000
        # EnergyVad reports how far before its first speech frame an onset began (the onset
        # look-back); other FrameVads start segments at their first speech frame.
        self._onsets = getattr(vad, "process_onsets", None)
        look = int(getattr(vad, "max_lookback_frames", 0)) if self._onsets is not None else 0
        # Audio kept before the decided end while waiting: the look-back plus the pre-roll.
        self._keep_back = self._pre_roll + look * self.frame_len
        self._frame_len_c = self.frame_len
        self._rate_c = self.rate_hz
        self._include_audio_c = int(self.include_audio)
        # The compiled front-end runs the default EnergyVad's frames (the exact class: it reads
        # the VAD's state directly) in sentence and continuous mode.
        self._front_ok = type(vad) is EnergyVad and self.mode is not Mode.SHORT
        self.reset()

    # -- public API ---------------------------------------------------------------------------

    def reset(self) -> None:
        """Start a new session with the same configuration (clears the VAD too)."""
        self.vad.reset()
        for i in range(_N_RESET):  # every counter of the session (see _COUNTERS)
            self._c[i] = 0
        self._index = -1
        # Recent audio (pre-roll, open segment, partial frame) is _store[_head:_fill]; it
        # starts at session sample _buf_start. Appends go to the end; room is made by moving
        # the live part to the front or by doubling (_append).
        self._store = np.empty(2 * (self._keep_back + self.rate_hz), np.int16)
        self._events: list[EndpointEvent] = []
        self._state = State.WAITING

    @property
    def _state(self) -> State:
        return self._state_v

    @_state.setter
    def _state(self, state: State) -> None:
        self._state_v = state
        self._hot = (1 if state is State.WAITING else 2 if state is State.IN_SEGMENT else 0) \
            if self._front_ok else 0

    @property
    def _buf(self) -> np.ndarray:
        # The buffered audio (a view).
        return self._store[self._head : self._fill]

    def _append(self, x: np.ndarray) -> None:
        n = len(x)
        head, fill = self._head, self._fill
        if fill + n > len(self._store):
            live = fill - head
            store = self._store
            if live + n > len(store):  # (the compiled front-end compacts the same way)
                store = np.empty(2 * (live + n), np.int16)
            store[:live] = self._store[head:fill]  # numpy copes with the overlap
            self._store, self._head, fill = store, 0, live
        self._store[fill : fill + n] = x
        self._fill = fill + n

    @property
    def state(self) -> State:
        """Current :class:`State`."""
        return self._state

    @property
    def position_ms(self) -> int:
        """Session audio received so far, ms (the SIS clock)."""
        return self._received * 1000 // self.rate_hz

    @property
    def open_segment(self) -> int | None:
        """Index of the open segment, or None."""
        return self._index if self._state is State.IN_SEGMENT else None

    def process(self, chunk: Any) -> list[EndpointEvent]:
        """Feed session audio; return the events it caused, in order.

        Parameters
        ----------
        chunk : numpy.ndarray or bytes-like
            int16 mono PCM at ``rate_hz`` (array, or little-endian bytes of even length), any
            length. G.711 input is decoded by the caller (:mod:`sis_stream.audio.codec`).

        Returns
        -------
        list of EndpointEvent

        Raises
        ------
        StreamClosedError
            After :meth:`flush`.
        TypeError, AudioFormatError
            Bad chunk type, dtype, shape or byte length.
        """
        if self._state is State.CLOSED:
            raise StreamClosedError("Endpointer.process() after flush(); call reset() first")
        x = as_pcm(chunk, "pcm", "Endpointer.process")
        self._received += len(x)
        if self._state is State.ENDED:
            return []  # sentence over or cap reached: SIS ignores later audio
        room = self._cap_samples - self._accepted
        over = len(x) > room
        if over:
            x = x[:room]
        self._accepted += len(x)
        if len(x):
            self._append(x)
        if self.mode is Mode.SHORT:
            if len(x) and self._state is State.WAITING:
                self._fire(_T.AUDIO, 0, 0)
            return self._finish(over, self._accepted)
        if not len(x):
            return self._decided(None, None, over)
        if self._onsets is not None:
            d, back = self._onsets(x)
            return self._decided(np.asarray(d, dtype=bool), back, over)
        return self._decided(np.asarray(self.vad.process(x), dtype=bool), None, over)

    def _decided(self, d: np.ndarray | None, back: np.ndarray | None,
                 over: bool) -> list[EndpointEvent]:
        # The rest of process() once the VAD decided the new frames (the compiled front-end
        # calls this when its frames raise a trigger).
        if d is not None:
            self._run_decisions(d, back)
        return self._finish(over, self._frames * self.frame_len)

    def _finish(self, over: bool, decided_end: int) -> list[EndpointEvent]:
        if over and self._state is not State.ENDED:
            end = self._speech_end(self._cap_samples)
            self._fire(_T.AUDIO_CAP, self._cap_samples, end)
        elif self._state is State.IN_SEGMENT:
            self._emit_audio(decided_end)
        self._trim()
        out, self._events = self._events, []
        return out

    def flush(self) -> list[EndpointEvent]:
        """End of stream (client END): close an open segment with all its audio.

        The partial last frame is not VAD-decided; its audio goes to the open segment. After
        this, :meth:`process` raises until :meth:`reset`. Calling it again returns ``[]``.

        Returns
        -------
        list of EndpointEvent
        """
        if self._state is State.CLOSED:
            return []
        end = self._accepted
        if self._state is State.IN_SEGMENT and self.mode is not Mode.SHORT:
            end = self._speech_end(self._frames * self.frame_len)
        self._fire(_T.END_OF_STREAM, self._accepted, end)
        out, self._events = self._events, []
        return out

    # -- frame counting: turns decisions into triggers ------------------------------------------

    def _run_decisions(self, d: np.ndarray, back: np.ndarray | None = None) -> None:
        # Walk runs of equal decisions, jumping straight to the frame where a timer fires, so a
        # long silence costs O(1) Python steps instead of one per frame. `back` (EnergyVad's
        # onset look-back, frames) moves a segment's start before its first speech frame.
        if not len(d):
            return
        edges = np.flatnonzero(d[1:] != d[:-1]) + 1
        starts = np.concatenate(([0], edges))
        stops = np.concatenate((edges, [len(d)]))
        base = self._frames
        for a, b in zip(starts.tolist(), stops.tolist()):
            self._back = int(back[a]) if back is not None else 0
            self._advance(bool(d[a]), base + a, b - a)
            if self._state is State.ENDED:
                break
        self._frames = base + len(d)

    def _advance(self, speech: bool, f0: int, n: int) -> None:
        # Frames f0 .. f0 + n - 1 all have decision `speech`.
        L = self.frame_len
        while n > 0:
            if self._state is State.WAITING:
                if speech:
                    # The onset look-back never reaches past the last boundary (the frames
                    # since it are the silence counted in _lead).
                    onset = f0 - min(self._back, self._lead)
                    self._fire(_T.SPEECH, (f0 + 1) * L, onset * L)
                    continue  # the same frames now count inside the segment
                k = self._head_frames - self._lead
                if n < k:
                    self._lead += n
                    return
                f0, n = f0 + k, n - k
                self._fire(_T.HEAD_SILENCE, f0 * L, f0 * L)
            elif self._state is State.IN_SEGMENT:
                k_max = self._max_frames - (f0 - self._seg_start)
                if speech:
                    self._sil_run = 0
                    if n < k_max:
                        return
                    f0, n = f0 + k_max, n - k_max
                    self._fire(_T.MAX_LENGTH, f0 * L, f0 * L)
                    continue
                k_tail = self._tail_frames - self._sil_run
                k = min(k_tail, k_max)
                if n < k:
                    self._sil_run += n
                    return
                f0, n = f0 + k, n - k
                self._sil_run += k
                end = (f0 - self._sil_run) * L
                self._fire(_T.TAIL_SILENCE if k_tail <= k_max else _T.MAX_LENGTH, f0 * L, end)
            else:
                return

    def _speech_end(self, at: int) -> int:
        # End of speech if the open segment were closed at sample `at`: the start of a silence
        # run in progress, else `at`.
        if self._state is State.IN_SEGMENT and self._sil_run:
            return min(at, (self._frames - self._sil_run) * self.frame_len)
        return at

    # -- the only place state changes ------------------------------------------------------------

    def _fire(self, trigger: _T, at: int, where: int) -> None:
        """Apply the table entry for `trigger` decided at sample `at`; `where` = boundary sample."""
        key = (self.mode, self._state, trigger)
        try:
            next_state, actions = _TRANSITIONS[key]
        except KeyError:  # pragma: no cover - the counting above only raises valid triggers
            raise RuntimeError(f"no endpoint transition for {key}") from None
        ms = self._ms
        for action in actions:
            if action is _A.OPEN:
                self._index += 1
                self._seg_start = where // self.frame_len
                self._sil_run = 0
                self._audio_start = max(where - self._pre_roll, self._prev_audio_end, self._buf_start)
                self._audio_from = self._audio_start
                self._events.append(SegmentOpened(ms(where), ms(at), self._index, ms(self._audio_start)))
            elif action is _A.CLOSE:
                self._emit_audio(at)
                self._events.append(SegmentClosed(
                    ms(where), ms(at), self._index, ms(self._seg_start * self.frame_len),
                    _REASONS[trigger], ms(self._audio_start), ms(at)))
                self._prev_audio_end = at
                self._lead = 0
                self._boundary = at
            elif action is _A.VOICE_START:
                self._events.append(VoiceStart(ms(where), ms(at)))
            elif action is _A.VOICE_END:
                self._events.append(VoiceEnd(ms(where), ms(at)))
            elif action is _A.EXCEEDED_SILENCE:
                self._events.append(ExceededSilence(ms(at), ms(at)))
            elif action is _A.EXCEEDED_AUDIO:
                self._events.append(ExceededAudio(ms(at), ms(at)))
            elif action is _A.CUT:
                self._events.append(SilenceCut(ms(at), ms(at), ms(self._boundary)))
                self._lead = 0
                self._boundary = at
        if trigger is _T.HEAD_SILENCE or trigger is _T.SPEECH:
            self._lead = 0
        _log.debug("endpoint %s: %s --%s--> %s", self.mode.value, self._state.value,
                   trigger.value, next_state.value)
        self._state = next_state

    # -- audio bookkeeping -------------------------------------------------------------------

    def _ms(self, sample: int) -> int:
        return sample * 1000 // self.rate_hz

    def _emit_audio(self, upto: int) -> None:
        if not self.include_audio or upto <= self._audio_from:
            return
        a = self._audio_from - self._buf_start
        b = upto - self._buf_start
        pcm = self._buf[a:b].copy()
        pcm.flags.writeable = False
        self._events.append(SegmentAudio(self._ms(self._audio_from), self._ms(upto), self._index,
                                         self._audio_from, len(pcm), pcm))
        self._audio_from = upto

    def _trim(self) -> None:
        # Keep the pre-roll before the decided end, the open segment's unsent audio and the
        # undecided partial frame; everything older is dropped (bounded memory).
        decided = self._accepted if self.mode is Mode.SHORT else self._frames * self.frame_len
        keep = decided - self._keep_back
        if self._state is State.IN_SEGMENT and self.include_audio:
            keep = min(keep, self._audio_from)
        keep = max(keep, self._buf_start)
        if keep > self._buf_start:
            self._head += keep - self._buf_start
            self._buf_start = keep


for _i, _name in enumerate(_COUNTERS):
    setattr(Endpointer, _name, _Counter(_i))
del _i, _name

#: The Python Endpointer.process (what the compiled front-end hands every other call to).
_PY_PROCESS: Final = Endpointer.process


def _bind_front_end(native: ModuleType) -> Callable[..., list[EndpointEvent]]:
    """Give the native module the Python method and return its front-end, dressed as the method.

    When ``_backend`` selected the compiled VAD kernel at import, ``Endpointer.process`` is its
    compiled front-end: it runs the hot case in C (sentence or continuous mode with the default
    :class:`EnergyVad`, waiting or in a segment, an int16 ndarray or PCM bytes of 1 to 16 whole
    frames within the audio cap, no partial frame pending, frames that raise no trigger) and
    hands every other call, and the decisions of frames that do raise one, to the Python code.
    """
    native._bind_endpoint_front_end(_PY_PROCESS, SegmentAudio, _COUNTERS)
    front = native._endpoint_process_front
    front.__name__ = "process"
    front.__qualname__ = "Endpointer.process"
    front.__module__ = __name__
    front.__doc__ = _PY_PROCESS.__doc__
    front.__wrapped__ = _PY_PROCESS  # inspect.signature() and help() show the method's
    return front


if (_native := native_vad()) is not None:
    Endpointer.process = _bind_front_end(_native)  # type: ignore[method-assign]
del _native
