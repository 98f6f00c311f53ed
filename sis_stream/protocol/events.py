"""Frozen-dataclass events of the sans-IO sessions: what each side sends, and what it is told."""

from __future__ import annotations

from dataclasses import dataclass

from .config import StartConfig
from .messages import CancelEncoding, EndReason, EventType, Segment

__all__ = [
    # client side: outbound
    "StartStream",
    "AudioFrame",
    "EndOfStream",
    # client side: inbound
    "Started",
    "PartialResult",
    "FinalResult",
    "VoiceStart",
    "VoiceEnd",
    "ExceededSilence",
    "ExceededAudio",
    "OtherEvent",
    "ServerError",
    "Ended",
    "ConnectionClosed",
    # server side: inbound (for the server app)
    "StartRequested",
    "AudioReceived",
    "EndRequested",
    "AudioLimitReached",
    "ProtocolViolation",
    # server side: outbound (the server app's decisions)
    "StartResponse",
    "ResultResponse",
    "EventResponse",
    "ErrorResponse",
    "FatalErrorResponse",
    "EndResponse",
]


def _check_bytes(data: object, what: str) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"{what} must be bytes, got {type(data).__name__}")


def _check_code(code: object, msg: object) -> None:
    if not isinstance(code, str) or not code:
        raise TypeError(f"error_code must be a non-empty str, got {code!r}")
    if not isinstance(msg, str):
        raise TypeError(f"error_msg must be a str, got {type(msg).__name__}")


# --- client side, outbound ---------------------------------------------------------------------


@dataclass(frozen=True)
class StartStream:
    """Client: send START with this config."""

    config: StartConfig

    def __post_init__(self) -> None:
        if not isinstance(self.config, StartConfig):
            raise TypeError(f"config must be a StartConfig, got {type(self.config).__name__}")


@dataclass(frozen=True)
class AudioFrame:
    """Client: send one binary frame of audio in the session's ``audio_format``."""

    data: bytes

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", _check_bytes(self.data, "AudioFrame.data"))


@dataclass(frozen=True)
class EndOfStream:
    """Client: send END. ``cancel=True`` discards pending audio (END reason CANCEL)."""

    cancel: bool = False
    encoding: CancelEncoding = CancelEncoding.STRING

    def __post_init__(self) -> None:
        if not isinstance(self.cancel, bool):
            raise TypeError(f"cancel must be a bool, got {type(self.cancel).__name__}")


# --- client side, inbound ----------------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    """The server accepted START."""

    trace_id: str | None


@dataclass(frozen=True)
class PartialResult:
    """An interim hypothesis (``is_final: false``) for one segment."""

    segment: Segment
    trace_id: str | None

    @property
    def text(self) -> str:
        """``segment.result.text`` or ``""``."""
        return self.segment.result.text if self.segment.result is not None else ""


@dataclass(frozen=True)
class FinalResult:
    """The final result for one segment (``is_final: true``)."""

    segment: Segment
    trace_id: str | None

    @property
    def text(self) -> str:
        """``segment.result.text`` or ``""``."""
        return self.segment.result.text if self.segment.result is not None else ""


@dataclass(frozen=True)
class VoiceStart:
    """EVENT VOICE_START."""

    timestamp: int | None
    trace_id: str | None


@dataclass(frozen=True)
class VoiceEnd:
    """EVENT VOICE_END: the sentence ended; the server ignores later audio."""

    timestamp: int | None
    trace_id: str | None


@dataclass(frozen=True)
class ExceededSilence:
    """EVENT EXCEEDED_SILENCE: no speech within ``vad_head`` (or an empty sentence)."""

    timestamp: int | None
    trace_id: str | None


@dataclass(frozen=True)
class ExceededAudio:
    """EVENT EXCEEDED_AUDIO: the session's audio cap was reached."""

    timestamp: int | None
    trace_id: str | None


@dataclass(frozen=True)
class OtherEvent:
    """An EVENT with an undocumented name (kept, not an error)."""

    event: str
    timestamp: int | None
    trace_id: str | None


@dataclass(frozen=True)
class ServerError:
    """ERROR (``fatal=False``; an END(ERROR) follows if a session was active) or FATAL_ERROR
    (``fatal=True``; the server closes the connection)."""

    error_code: str
    error_msg: str
    trace_id: str | None
    fatal: bool = False

    def to_exception(self):  # -> SisApiError (import kept local to avoid a cycle)
        """The typed :class:`~sis_stream.errors.SisApiError` subclass for this error."""
        from .errors import api_error

        return api_error(self.error_code, self.error_msg, trace_id=self.trace_id)


@dataclass(frozen=True)
class Ended:
    """END: the session is over (``reason`` NORMAL, CANCEL or ERROR)."""

    reason: EndReason
    trace_id: str | None


@dataclass(frozen=True)
class ConnectionClosed:
    """The connection is gone: transport lost (``error_code`` None) or closed after a fatal error."""

    error_code: str | None = None
    during_session: bool = False


# --- server side, inbound (for the server app) -------------------------------------------------


@dataclass(frozen=True)
class StartRequested:
    """A valid START arrived. Answer with :class:`StartResponse` or :class:`ErrorResponse`."""

    config: StartConfig
    trace_id: str


@dataclass(frozen=True)
class AudioReceived:
    """Audio for the current session (possibly before the START answer: the SDK does not wait).

    Attributes
    ----------
    data : bytes
        The frame (truncated at the audio cap, see :class:`AudioLimitReached`).
    offset_bytes : int
        Session audio bytes before this frame (the session audio clock).
    undersized : bool
        Shorter than the shard minimum (accepted; counted).
    """

    data: bytes
    offset_bytes: int
    undersized: bool = False


@dataclass(frozen=True)
class EndRequested:
    """The client sent END. With ``cancel`` the session has already answered END(CANCEL) (or will,
    right behind the START answer): drop pending work and send nothing more. Without ``cancel``,
    send the remaining results, then :class:`EndResponse`."""

    cancel: bool


@dataclass(frozen=True)
class AudioLimitReached:
    """The session's audio reached its cap; the session sent EVENT EXCEEDED_AUDIO and ignores
    later audio. Finish the audio received so far; END follows the client's END as usual."""

    audio_ms: int


@dataclass(frozen=True)
class ProtocolViolation:
    """The client broke the protocol; the session already answered ERROR (and END(ERROR) when
    ``session_ended``). Drop the session's recognition state."""

    error_code: str
    error_msg: str
    session_ended: bool


# --- server side, outbound (the server app's decisions) ----------------------------------------


@dataclass(frozen=True)
class StartResponse:
    """Accept the pending START (sends ``{"resp_type": "START", "trace_id": ...}``).

    Every response takes an optional ``trace_id``: pass :attr:`StartRequested.trace_id` when
    answering asynchronously, and an answer for a session that is already over (the client broke
    the protocol, cancelled, or a new START arrived meanwhile) is dropped instead of being applied
    to the wrong session.
    """

    trace_id: str | None = None


@dataclass(frozen=True)
class ResultResponse:
    """Send a RESULT with these segments (times in ms on the session audio clock)."""

    segments: tuple[Segment, ...]
    trace_id: str | None = None

    def __post_init__(self) -> None:
        segs = self.segments
        if isinstance(segs, Segment):
            segs = (segs,)
        if isinstance(segs, list):
            segs = tuple(segs)
        if not isinstance(segs, tuple) or not segs or not all(isinstance(s, Segment) for s in segs):
            raise TypeError("segments must be a non-empty tuple of Segment")
        object.__setattr__(self, "segments", segs)


@dataclass(frozen=True)
class EventResponse:
    """Send an EVENT. ``timestamp`` in ms from the session start (documented as reserved)."""

    event: EventType
    timestamp: int = 0
    trace_id: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "event", EventType(self.event))
        if type(self.timestamp) is not int:
            raise TypeError(f"timestamp must be an int (ms), got {type(self.timestamp).__name__}")


@dataclass(frozen=True)
class ErrorResponse:
    """Send ERROR (+ END(ERROR) if the START answer was sent). Use
    :meth:`from_catalogue` for catalogue codes."""

    error_code: str
    error_msg: str
    trace_id: str | None = None

    def __post_init__(self) -> None:
        _check_code(self.error_code, self.error_msg)

    @classmethod
    def from_catalogue(cls, code: str, *, trace_id: str | None = None, **params: object) -> ErrorResponse:
        """Build from the catalogue message of ``code`` (see :func:`.errors.error_message`)."""
        from .errors import error_message

        return cls(code, error_message(code, **params), trace_id)


@dataclass(frozen=True)
class FatalErrorResponse:
    """Send FATAL_ERROR; the session is CLOSED and the adapter must close the connection."""

    error_code: str
    error_msg: str

    def __post_init__(self) -> None:
        _check_code(self.error_code, self.error_msg)

    @classmethod
    def from_catalogue(cls, code: str, **params: object) -> FatalErrorResponse:
        """Build from the catalogue message of ``code``."""
        from .errors import error_message

        return cls(code, error_message(code, **params))


@dataclass(frozen=True)
class EndResponse:
    """Send END. NORMAL after the client's END (or to end a session from the server side);
    CANCEL/ERROR are sent by the session itself (cancel, :class:`ErrorResponse`)."""

    reason: EndReason = EndReason.NORMAL
    trace_id: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", EndReason(self.reason))
