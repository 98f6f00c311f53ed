"""Wire models of every RASR / short-audio websocket message, with exact JSON parse and serialise."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final, Union

from ..errors import RemoteProtocolError
from .config import Mode, StartConfig, validate_config
from .errors import reject

__all__ = [
    "RespType",
    "EventType",
    "EndReason",
    "CancelEncoding",
    "WordInfo",
    "SegmentResult",
    "Segment",
    "StartCommand",
    "EndCommand",
    "StartMessage",
    "ResultMessage",
    "EventMessage",
    "ErrorMessage",
    "FatalErrorMessage",
    "EndMessage",
    "ClientMessage",
    "ServerMessage",
    "parse_client_message",
    "parse_server_message",
    "MAX_CLIENT_TEXT_BYTES",
    "MAX_SERVER_TEXT_BYTES",
]

#: Largest client text frame parsed (a START with a long ``user_words`` list fits easily).
MAX_CLIENT_TEXT_BYTES: Final = 1 << 20
#: Largest server text frame parsed (aiohttp's default ``max_msg_size`` is 4 MiB).
MAX_SERVER_TEXT_BYTES: Final = 4 << 20


class RespType(str, Enum):
    """``resp_type`` of a server message (§7)."""

    START = "START"
    RESULT = "RESULT"
    EVENT = "EVENT"
    ERROR = "ERROR"
    FATAL_ERROR = "FATAL_ERROR"
    END = "END"


class EventType(str, Enum):
    """The four documented ``event`` names (§7.2)."""

    #: Speech started (sentence mode, at most once).
    VOICE_START = "VOICE_START"
    #: The sentence ended (sentence mode, at most once); later audio is ignored.
    VOICE_END = "VOICE_END"
    #: No speech within ``vad_head`` or an empty sentence (sentence mode); later audio ignored.
    EXCEEDED_SILENCE = "EXCEEDED_SILENCE"
    #: The session's audio cap was reached; later audio ignored.
    EXCEEDED_AUDIO = "EXCEEDED_AUDIO"

    @property
    def ends_recognition(self) -> bool:
        """True for the events after which the server ignores audio."""
        return self is not EventType.VOICE_START


class EndReason(str, Enum):
    """``reason`` of a server END (§7.6)."""

    NORMAL = "NORMAL"
    CANCEL = "CANCEL"
    ERROR = "ERROR"


class CancelEncoding(str, Enum):
    """How ``cancel`` appears in a client END (§6): the SDKs send strings, the docs a boolean."""

    #: ``"cancel": "false"`` / ``"true"`` (every official SDK; our default).
    STRING = "string"
    #: ``"cancel": false`` / ``true`` (the documented type).
    BOOLEAN = "boolean"
    #: no ``cancel`` key (the short-audio websocket form ``{"command": "END"}``).
    OMITTED = "omitted"


class _Invalid(Exception):
    """Internal: a value failed a shape check (converted at the parser boundary)."""

    def __init__(self, field: str) -> None:
        super().__init__(field)
        self.field = field


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _loads(data: str | bytes | bytearray | memoryview, limit: int) -> object:
    """Decode one text frame; raises ValueError for anything that is not one JSON document."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        if len(data) > limit:
            raise ValueError(f"message of {len(data)} bytes exceeds {limit}")
        text = bytes(data).decode("utf-8")  # UnicodeDecodeError is a ValueError
    elif isinstance(data, str):
        if len(data) > limit:
            raise ValueError(f"message of {len(data)} characters exceeds {limit}")
        text = data
    else:
        raise TypeError(f"a message must be str or bytes, got {type(data).__name__}")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _opt_int(d: dict[str, Any], key: str, required: bool = False) -> int | None:
    if key not in d:
        if required:
            raise _Invalid(key)
        return None
    v = d[key]
    # Durations are integers on the wire; an integral float is read as its int.
    if isinstance(v, float) and math.isfinite(v) and v == int(v):
        v = int(v)
    if type(v) is not int:
        raise _Invalid(key)
    return v


def _req_str(d: dict[str, Any], key: str) -> str:
    v = d.get(key)
    if not isinstance(v, str):
        raise _Invalid(key)
    return v


def _opt_str(d: dict[str, Any], key: str) -> str | None:
    if key not in d or d[key] is None:
        return None
    return _req_str(d, key)


# ---------------------------------------------------------------------------------------------
# Result payload


@dataclass(frozen=True)
class WordInfo:
    """One ``word_info`` item (all fields optional per the schema, §7.3)."""

    start_time: int | None = None
    end_time: int | None = None
    word: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Wire form; absent fields are omitted."""
        d: dict[str, Any] = {}
        if self.start_time is not None:
            d["start_time"] = self.start_time
        if self.end_time is not None:
            d["end_time"] = self.end_time
        if self.word is not None:
            d["word"] = self.word
        return d

    @classmethod
    def from_dict(cls, d: object) -> WordInfo:
        """Parse one item; raises RemoteProtocolError on a wrong shape."""
        return _remote(_word_from, d)


def _word_from(d: object) -> WordInfo:
    if not isinstance(d, dict):
        raise _Invalid("word_info")
    return WordInfo(_opt_int(d, "start_time"), _opt_int(d, "end_time"), _opt_str(d, "word"))


@dataclass(frozen=True)
class SegmentResult:
    """``segments[i].result``: text, score (0..1) and optional word timings."""

    text: str
    score: float | None = None
    word_info: tuple[WordInfo, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise TypeError(f"text must be a str, got {type(self.text).__name__}")
        if self.score is not None:
            if isinstance(self.score, bool) or not isinstance(self.score, (int, float)):
                raise TypeError(f"score must be a float, got {type(self.score).__name__}")
            if not math.isfinite(self.score):
                raise ValueError(f"score must be finite, got {self.score!r}")
        if isinstance(self.word_info, list):
            object.__setattr__(self, "word_info", tuple(self.word_info))

    def to_dict(self) -> dict[str, Any]:
        """Wire form; ``score``/``word_info`` only when set."""
        d: dict[str, Any] = {"text": self.text}
        if self.score is not None:
            d["score"] = float(self.score)
        if self.word_info is not None:
            d["word_info"] = [w.to_dict() for w in self.word_info]
        return d


def _result_from(d: object) -> SegmentResult:
    if not isinstance(d, dict):
        raise _Invalid("result")
    text = _req_str(d, "text") if "text" in d else ""
    score: float | None = None
    if "score" in d and d["score"] is not None:
        s = d["score"]
        if isinstance(s, bool) or not isinstance(s, (int, float)):
            raise _Invalid("score")
        score = float(s)
    words: tuple[WordInfo, ...] | None = None
    if "word_info" in d and d["word_info"] is not None:
        if not isinstance(d["word_info"], list):
            raise _Invalid("word_info")
        words = tuple(_word_from(w) for w in d["word_info"])
    return SegmentResult(text, score, words)


@dataclass(frozen=True)
class Segment:
    """One sentence of a RESULT: times in ms on the session audio clock (§7.3)."""

    start_time: int
    end_time: int
    is_final: bool
    result: SegmentResult | None = None

    def __post_init__(self) -> None:
        for name in ("start_time", "end_time"):
            v = getattr(self, name)
            if type(v) is not int:
                raise TypeError(f"{name} must be an int (ms), got {type(v).__name__}")
        if not isinstance(self.is_final, bool):
            raise TypeError(f"is_final must be a bool, got {type(self.is_final).__name__}")

    def to_dict(self) -> dict[str, Any]:
        """Wire form (``result`` omitted when None, as on failure)."""
        d: dict[str, Any] = {"start_time": self.start_time, "end_time": self.end_time,
                             "is_final": self.is_final}
        if self.result is not None:
            d["result"] = self.result.to_dict()
        return d


def _segment_from(d: object) -> Segment:
    if not isinstance(d, dict):
        raise _Invalid("segments")
    start = _opt_int(d, "start_time", required=True)
    end = _opt_int(d, "end_time", required=True)
    final = d.get("is_final")
    if not isinstance(final, bool):
        raise _Invalid("is_final")
    result = _result_from(d["result"]) if d.get("result") is not None else None
    return Segment(start, end, final, result)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Client -> server


def _dumps(d: dict[str, Any]) -> str:
    # json.dumps defaults (", "/": " separators) like the SDKs; non-ASCII kept as UTF-8 text.
    return json.dumps(d, ensure_ascii=False)


@dataclass(frozen=True)
class StartCommand:
    """Client ``{"command": "START", "config": {...}}`` (§4)."""

    config: StartConfig

    def to_dict(self) -> dict[str, Any]:
        """Wire form."""
        return {"command": "START", "config": self.config.to_dict()}

    def to_json(self) -> str:
        """The text frame."""
        return _dumps(self.to_dict())


@dataclass(frozen=True)
class EndCommand:
    """Client ``{"command": "END", "cancel": ...}`` (§6)."""

    cancel: bool = False
    encoding: CancelEncoding = CancelEncoding.STRING

    def __post_init__(self) -> None:
        if not isinstance(self.cancel, bool):
            raise TypeError(f"cancel must be a bool, got {type(self.cancel).__name__}")
        object.__setattr__(self, "encoding", CancelEncoding(self.encoding))
        if self.encoding is CancelEncoding.OMITTED and self.cancel:
            raise ValueError("cancel=True cannot be sent with encoding OMITTED")

    def to_dict(self) -> dict[str, Any]:
        """Wire form."""
        d: dict[str, Any] = {"command": "END"}
        if self.encoding is CancelEncoding.STRING:
            d["cancel"] = "true" if self.cancel else "false"
        elif self.encoding is CancelEncoding.BOOLEAN:
            d["cancel"] = self.cancel
        return d

    def to_json(self) -> str:
        """The text frame."""
        return _dumps(self.to_dict())


ClientMessage = Union[StartCommand, EndCommand]


def parse_client_message(data: str | bytes, mode: Mode | str = Mode.CONTINUE_STREAM) -> ClientMessage:
    """Parse a client text frame (server side).

    Parameters
    ----------
    data : str or bytes
        The text frame (bytes are decoded as UTF-8).
    mode : Mode or str
        Interface the frame arrived on (selects the config rules).

    Returns
    -------
    StartCommand or EndCommand

    Raises
    ------
    RequestRejected
        The answer for the client: ``SIS.0032 "the json in the request is invalid"`` (not UTF-8,
        not JSON, too large, not an object), ``SIS.0012 "'command' is required"``,
        ``SIS.0032 "'command' is invalid"``, ``SIS.0012 "'config' is required"``,
        ``SIS.0032 "'cancel' is invalid"``, or any :func:`validate_config` rejection.
    TypeError
        ``data`` is neither str nor bytes (caller bug, not peer input).
    """
    try:
        obj = _loads(data, MAX_CLIENT_TEXT_BYTES)
    except ValueError:
        raise reject("SIS.0032") from None
    if not isinstance(obj, dict):
        raise reject("SIS.0032")
    if "command" not in obj:
        raise reject("SIS.0012", field="command")
    command = obj["command"]
    if command == "START" and isinstance(command, str):
        if "config" not in obj:
            raise reject("SIS.0012", field="config")
        return StartCommand(validate_config(obj["config"], mode))
    if command == "END" and isinstance(command, str):
        if "cancel" not in obj:
            return EndCommand(False, CancelEncoding.OMITTED)
        c = obj["cancel"]
        if isinstance(c, bool):
            return EndCommand(c, CancelEncoding.BOOLEAN)
        # The SDKs send "false"; "true"/"false" are accepted in any letter case (str(bool)
        # gives "True"), and serialised back lower-case.
        if isinstance(c, str) and c.lower() in ("true", "false"):
            return EndCommand(c.lower() == "true", CancelEncoding.STRING)
        raise reject("SIS.0032", field="cancel")
    raise reject("SIS.0032", field="command")


# ---------------------------------------------------------------------------------------------
# Server -> client


def _with_trace(resp_type: RespType, trace_id: str | None, **rest: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"resp_type": resp_type.value}
    if trace_id is not None:
        d["trace_id"] = trace_id
    d.update(rest)
    return d


@dataclass(frozen=True)
class StartMessage:
    """Server ``{"resp_type": "START", "trace_id": ...}`` (§7.1)."""

    trace_id: str | None

    def to_dict(self) -> dict[str, Any]:
        """Wire form."""
        return _with_trace(RespType.START, self.trace_id)

    def to_json(self) -> str:
        """The text frame."""
        return _dumps(self.to_dict())


@dataclass(frozen=True)
class ResultMessage:
    """Server RESULT with one or more segments (§7.3)."""

    trace_id: str | None
    segments: tuple[Segment, ...]

    def __post_init__(self) -> None:
        if isinstance(self.segments, list):
            object.__setattr__(self, "segments", tuple(self.segments))

    def to_dict(self) -> dict[str, Any]:
        """Wire form."""
        return _with_trace(RespType.RESULT, self.trace_id, segments=[s.to_dict() for s in self.segments])

    def to_json(self) -> str:
        """The text frame."""
        return _dumps(self.to_dict())


@dataclass(frozen=True)
class EventMessage:
    """Server EVENT (§7.2). ``event`` is kept as a string so unknown future names survive;
    :attr:`event_type` gives the enum for the documented four."""

    trace_id: str | None
    event: str
    timestamp: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.event, EventType):
            object.__setattr__(self, "event", self.event.value)

    @property
    def event_type(self) -> EventType | None:
        """The documented event, or None for an unknown name."""
        try:
            return EventType(self.event)
        except ValueError:
            return None

    def to_dict(self) -> dict[str, Any]:
        """Wire form (``timestamp`` only when set)."""
        d = _with_trace(RespType.EVENT, self.trace_id, event=self.event)
        if self.timestamp is not None:
            d["timestamp"] = self.timestamp
        return d

    def to_json(self) -> str:
        """The text frame."""
        return _dumps(self.to_dict())


@dataclass(frozen=True)
class ErrorMessage:
    """Server ERROR (§7.4): session-level, the connection stays open."""

    trace_id: str | None
    error_code: str
    error_msg: str

    def to_dict(self) -> dict[str, Any]:
        """Wire form."""
        return _with_trace(RespType.ERROR, self.trace_id, error_code=self.error_code, error_msg=self.error_msg)

    def to_json(self) -> str:
        """The text frame."""
        return _dumps(self.to_dict())


@dataclass(frozen=True)
class FatalErrorMessage:
    """Server FATAL_ERROR (§7.5): the server closes the connection after it."""

    trace_id: str | None
    error_code: str
    error_msg: str

    def to_dict(self) -> dict[str, Any]:
        """Wire form."""
        return _with_trace(RespType.FATAL_ERROR, self.trace_id, error_code=self.error_code,
                           error_msg=self.error_msg)

    def to_json(self) -> str:
        """The text frame."""
        return _dumps(self.to_dict())


@dataclass(frozen=True)
class EndMessage:
    """Server END (§7.6)."""

    trace_id: str | None
    reason: EndReason = EndReason.NORMAL

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", EndReason(self.reason))

    def to_dict(self) -> dict[str, Any]:
        """Wire form."""
        return _with_trace(RespType.END, self.trace_id, reason=self.reason.value)

    def to_json(self) -> str:
        """The text frame."""
        return _dumps(self.to_dict())


ServerMessage = Union[StartMessage, ResultMessage, EventMessage, ErrorMessage, FatalErrorMessage, EndMessage]


def _remote(fn: Any, arg: Any) -> Any:
    try:
        return fn(arg)
    except _Invalid as exc:
        raise RemoteProtocolError(f"server message has an invalid {exc.field!r}") from None


def _server_from(obj: object) -> ServerMessage:
    if not isinstance(obj, dict):
        raise RemoteProtocolError(f"server message is not a JSON object (got {type(obj).__name__})")
    trace_id = _opt_str(obj, "trace_id")
    if "resp_type" not in obj:
        # Gateway-style answers carry only error_code/error_msg; the old SDK treats them as an
        # error (§7.7), so do we.
        if isinstance(obj.get("error_code"), str) and isinstance(obj.get("error_msg"), str):
            return ErrorMessage(trace_id, obj["error_code"], obj["error_msg"])
        raise RemoteProtocolError("server message has no 'resp_type'")
    rt = obj["resp_type"]
    try:
        resp = RespType(rt) if isinstance(rt, str) else None
    except ValueError:
        resp = None
    if resp is None:
        raise RemoteProtocolError(f"server message has an unknown resp_type {str(rt)[:40]!r}")
    if resp is RespType.START:
        return StartMessage(trace_id)
    if resp is RespType.RESULT:
        segs = obj.get("segments")
        if not isinstance(segs, list):
            raise _Invalid("segments")
        return ResultMessage(trace_id, tuple(_segment_from(s) for s in segs))
    if resp is RespType.EVENT:
        return EventMessage(trace_id, _req_str(obj, "event"), _opt_int(obj, "timestamp"))
    if resp in (RespType.ERROR, RespType.FATAL_ERROR):
        cls = ErrorMessage if resp is RespType.ERROR else FatalErrorMessage
        return cls(trace_id, _req_str(obj, "error_code"), _req_str(obj, "error_msg"))
    reason = obj.get("reason")
    try:
        return EndMessage(trace_id, EndReason(reason) if isinstance(reason, str) else None)  # type: ignore[arg-type]
    except ValueError:
        raise _Invalid("reason") from None


def parse_server_message(data: str | bytes) -> ServerMessage:
    """Parse a server text frame (client side).

    Parameters
    ----------
    data : str or bytes
        The text frame.

    Returns
    -------
    StartMessage, ResultMessage, EventMessage, ErrorMessage, FatalErrorMessage or EndMessage
        A body with ``error_code``/``error_msg`` and no ``resp_type`` is an :class:`ErrorMessage`.
        A missing ``trace_id`` is None (§7.4 allows it on errors).

    Raises
    ------
    RemoteProtocolError
        Not UTF-8/JSON/an object, no or unknown ``resp_type``, or a field of the wrong type.
    TypeError
        ``data`` is neither str nor bytes (caller bug, not peer input).
    """
    try:
        obj = _loads(data, MAX_SERVER_TEXT_BYTES)
    except ValueError as exc:
        raise RemoteProtocolError(f"server message is not valid JSON: {str(exc)[:80]}") from None
    try:
        return _server_from(obj)
    except _Invalid as exc:
        raise RemoteProtocolError(f"server message has an invalid {exc.field!r}") from None

