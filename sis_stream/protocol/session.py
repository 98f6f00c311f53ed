"""Sans-IO SIS websocket sessions (client and server roles) driven by one transition table."""

# Theory of operation
# ===================
#
# Rule 1: everything that decides whether a message is legal, and which state follows, lives in
# the two tables below (SERVER_TRANSITIONS, CLIENT_TRANSITIONS). The classes only map messages to
# triggers, look the trigger up, and perform the documented side effect.
#
# One websocket connection carries any number of recognition sessions, one at a time (§3):
#
#     client                                  server
#     START (text) ------------------------>                     IDLE -> STARTING
#     audio (binary, may follow START at once: the SDK does not wait for the answer)
#                  <------------------------  START             STARTING -> STREAMING
#                  <------------------------  RESULT / EVENT ...
#     END (text)   ------------------------>                     STREAMING -> DRAINING
#                  <------------------------  RESULT (finals)
#                  <------------------------  END (NORMAL)      DRAINING -> IDLE
#     START ... (next session on the same connection)
#
# Server role (ServerSession). Triggers are the client's messages (RECV_*) and the server app's
# decisions (SEND_*). States:
#   IDLE            no session; audio here is an ordering error (answered once, then IGNORING).
#   IGNORING        no session, after an error or a server-side END: audio and END from the
#                   client are dropped silently "until the next START" (§7.4) - they were in
#                   flight when our answer left.
#   STARTING        a valid START arrived; the app has not answered yet. Audio is accepted.
#   STARTING_ENDED  ... and the client's END arrived too (with or without cancel).
#   STREAMING       START answered; audio flows; the app sends RESULT / EVENT.
#   FINISHED        the server sent VOICE_END / EXCEEDED_SILENCE / EXCEEDED_AUDIO: recognition
#                   is over, audio is dropped, the client's END is awaited (no END is sent on
#                   our own: every SDK sends END and waits for END, §1.3 [U], docs/protocol.md).
#   DRAINING        END received; the app sends the remaining finals, then END(NORMAL).
#   CLOSED          FATAL_ERROR sent or transport lost. Late input is ignored.
#   ERROR           the server app misused the session (LocalProtocolError); only
#                   FATAL_ERROR (to tell the client) and transport loss are still accepted.
#
# Client violations never raise on the server: the session answers on the wire itself -
# ERROR, followed by END(ERROR) when the START answer had been sent (STREAMING, FINISHED,
# DRAINING) - emits ProtocolViolation for the app and moves to IGNORING (VIOLATION trigger).
# Violations: invalid JSON / command / config (codes of config.validate_config), START while a
# session is open ("START twice"), END outside a session, a second END, audio before START,
# audio frames above the shard maximum for the session's rate (§5). Undersized frames are
# accepted and counted (the SDK's last frame is often short, §14.7).
# Cancel: END with cancel=true is answered END(CANCEL) by the session at once (or right behind
# the app's START answer when it arrived during STARTING); the app is told with
# EndRequested(cancel=True) and must send nothing more.
# The audio cap (60 s, 5 h in continuous mode) is enforced here: the frame that crosses it is
# truncated, EVENT EXCEEDED_AUDIO is sent and the session becomes FINISHED (AUDIO_CAP trigger).
#
# Client role (ClientSession). Triggers are the user's sends (SEND_*) and the server's messages
# (RECV_*). States: IDLE, STARTING (START sent), STREAMING (START answered), ENDING (END sent),
# ABORTING (server ERROR mid-session; its END(ERROR) is awaited), SERVER_ENDED (the server ended
# the session first; late audio/END from the user are dropped and counted, START may begin a new
# session), CLOSED, ERROR. Audio in STARTING is legal only with early_audio=True (the official
# SDK's behaviour; the docs say to wait, §3). A server message that the table does not allow,
# or that does not parse, raises RemoteProtocolError; a user send the table does not allow raises
# LocalProtocolError. Either moves the client session to ERROR, and every later call raises.

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Final, Union

from ..errors import BufferFullError, LocalProtocolError, RemoteProtocolError, RequestRejected
from .config import Mode, StartConfig, shard_limits
from .errors import error_message
from .events import (
    AudioFrame,
    AudioLimitReached,
    AudioReceived,
    ConnectionClosed,
    Ended,
    EndOfStream,
    EndRequested,
    EndResponse,
    ErrorResponse,
    EventResponse,
    ExceededAudio,
    ExceededSilence,
    FatalErrorResponse,
    FinalResult,
    OtherEvent,
    PartialResult,
    ProtocolViolation,
    ResultResponse,
    ServerError,
    Started,
    StartRequested,
    StartResponse,
    StartStream,
    VoiceEnd,
    VoiceStart,
)
from .messages import (
    EndCommand,
    EndMessage,
    EndReason,
    ErrorMessage,
    EventMessage,
    EventType,
    FatalErrorMessage,
    ResultMessage,
    StartCommand,
    StartMessage,
    parse_client_message,
    parse_server_message,
)

__all__ = [
    "Trigger",
    "ServerState",
    "ClientState",
    "SERVER_TRANSITIONS",
    "CLIENT_TRANSITIONS",
    "ServerSession",
    "ClientSession",
    "ServerStats",
    "IDLE_TIMEOUT_S",
    "MAX_PENDING_EVENTS",
]

logger = logging.getLogger(__name__)

#: Seconds without any client message after which the server sends FATAL_ERROR SIS.0304 (§5).
IDLE_TIMEOUT_S: Final = 20.0
#: Events a session holds before the caller must drain them (BufferFullError beyond).
MAX_PENDING_EVENTS: Final = 4096


class Trigger(Enum):
    """What can happen to a session (keys of the transition tables)."""

    RECV_START = "recv START"
    RECV_AUDIO = "recv audio"
    RECV_END = "recv END"
    RECV_END_CANCEL = "recv END(cancel)"
    RECV_RESULT = "recv RESULT"
    RECV_EVENT = "recv EVENT"
    RECV_ERROR = "recv ERROR"
    RECV_FATAL = "recv FATAL_ERROR"
    SEND_START = "send START"
    SEND_AUDIO = "send audio"
    SEND_END = "send END"
    SEND_RESULT = "send RESULT"
    SEND_EVENT = "send EVENT"
    SEND_EVENT_TERMINAL = "send EVENT (VOICE_END/EXCEEDED_*)"
    SEND_ERROR = "send ERROR"
    SEND_FATAL = "send FATAL_ERROR"
    AUDIO_CAP = "audio cap reached"
    VIOLATION = "client violation"
    LOST = "transport lost"


class ServerState(Enum):
    """States of :class:`ServerSession` (see the theory of operation)."""

    #: No session; waiting for START.
    IDLE = "IDLE"
    #: No session; late audio/END are dropped until the next START.
    IGNORING = "IGNORING"
    #: Valid START received, app answer pending.
    STARTING = "STARTING"
    #: Valid START and END received, app answer pending.
    STARTING_ENDED = "STARTING_ENDED"
    #: START answered; audio flows.
    STREAMING = "STREAMING"
    #: Recognition over (VOICE_END/EXCEEDED_*); waiting for the client's END.
    FINISHED = "FINISHED"
    #: END received; app sends finals, then END.
    DRAINING = "DRAINING"
    #: FATAL_ERROR sent or transport lost.
    CLOSED = "CLOSED"
    #: The app misused the session.
    ERROR = "ERROR"


class ClientState(Enum):
    """States of :class:`ClientSession` (see the theory of operation)."""

    #: Connected, no session.
    IDLE = "IDLE"
    #: START sent, answer pending.
    STARTING = "STARTING"
    #: START answered; audio may be sent.
    STREAMING = "STREAMING"
    #: END sent; finals and END pending.
    ENDING = "ENDING"
    #: Server ERROR mid-session; its END(ERROR) pending; audio/END dropped.
    ABORTING = "ABORTING"
    #: The server ended the session first; audio/END dropped; START allowed.
    SERVER_ENDED = "SERVER_ENDED"
    #: FATAL_ERROR received or transport lost.
    CLOSED = "CLOSED"
    #: A protocol error was raised; every later call raises.
    ERROR = "ERROR"


S, C, T = ServerState, ClientState, Trigger

#: Marker: the message is legal but dropped (counted, no event).
DROP: Final = "drop"

_ANY_SERVER_EXIT: Final = {T.SEND_FATAL: S.CLOSED, T.LOST: S.CLOSED}

#: state -> trigger -> next state, or (next state, DROP). Missing entry = illegal.
SERVER_TRANSITIONS: Final[dict[ServerState, dict[Trigger, object]]] = {
    S.IDLE: {
        T.RECV_START: S.STARTING,
        T.SEND_ERROR: S.IGNORING,  # an error outside a session: ERROR only
        T.VIOLATION: S.IGNORING,
        **_ANY_SERVER_EXIT,
    },
    S.IGNORING: {
        T.RECV_START: S.STARTING,
        T.RECV_AUDIO: (S.IGNORING, DROP),
        T.RECV_END: (S.IGNORING, DROP),
        T.RECV_END_CANCEL: (S.IGNORING, DROP),
        T.SEND_ERROR: S.IGNORING,
        T.VIOLATION: S.IGNORING,
        **_ANY_SERVER_EXIT,
    },
    S.STARTING: {
        T.RECV_AUDIO: S.STARTING,  # the SDK streams right behind START (§14.7)
        T.RECV_END: S.STARTING_ENDED,
        T.RECV_END_CANCEL: S.STARTING_ENDED,
        T.SEND_START: S.STREAMING,
        T.SEND_ERROR: S.IGNORING,  # START rejected: ERROR only, no END (§7.4)
        T.VIOLATION: S.IGNORING,
        **_ANY_SERVER_EXIT,
    },
    S.STARTING_ENDED: {
        T.RECV_AUDIO: (S.STARTING_ENDED, DROP),  # audio after END
        T.SEND_START: S.DRAINING,  # ...or IDLE at once after END(CANCEL) when cancel was asked
        T.SEND_ERROR: S.IGNORING,
        T.VIOLATION: S.IGNORING,
        **_ANY_SERVER_EXIT,
    },
    S.STREAMING: {
        T.RECV_AUDIO: S.STREAMING,
        T.RECV_END: S.DRAINING,
        T.RECV_END_CANCEL: S.IDLE,  # answered END(CANCEL) by the session
        T.SEND_RESULT: S.STREAMING,
        T.SEND_EVENT: S.STREAMING,
        T.SEND_EVENT_TERMINAL: S.FINISHED,
        T.AUDIO_CAP: S.FINISHED,  # EVENT EXCEEDED_AUDIO sent by the session
        T.SEND_END: S.IGNORING,  # server-initiated END: the client's END may cross it
        T.SEND_ERROR: S.IGNORING,  # ERROR + END(ERROR)
        T.VIOLATION: S.IGNORING,  # ERROR + END(ERROR)
        **_ANY_SERVER_EXIT,
    },
    S.FINISHED: {
        T.RECV_AUDIO: (S.FINISHED, DROP),  # "later audio is ignored" (§7.2)
        T.RECV_END: S.DRAINING,
        T.RECV_END_CANCEL: S.IDLE,
        T.SEND_RESULT: S.FINISHED,
        T.SEND_END: S.IGNORING,
        T.SEND_ERROR: S.IGNORING,
        T.VIOLATION: S.IGNORING,
        **_ANY_SERVER_EXIT,
    },
    S.DRAINING: {
        T.RECV_AUDIO: (S.DRAINING, DROP),  # audio after END
        T.SEND_RESULT: S.DRAINING,
        T.SEND_EVENT: S.DRAINING,
        T.SEND_EVENT_TERMINAL: S.DRAINING,
        T.SEND_END: S.IDLE,
        T.SEND_ERROR: S.IGNORING,
        T.VIOLATION: S.IGNORING,
        **_ANY_SERVER_EXIT,
    },
    S.CLOSED: {
        T.LOST: S.CLOSED,
    },
    S.ERROR: {
        **_ANY_SERVER_EXIT,
    },
}

#: Server states in which the START answer has been sent (an error then also sends END(ERROR)).
SERVER_SESSION_OPEN: Final = frozenset({S.STREAMING, S.FINISHED, S.DRAINING})

_ANY_CLIENT_EXIT: Final = {T.RECV_FATAL: C.CLOSED, T.LOST: C.CLOSED}

#: state -> trigger -> next state, or (next state, DROP). Missing entry = illegal.
CLIENT_TRANSITIONS: Final[dict[ClientState, dict[Trigger, object]]] = {
    C.IDLE: {
        T.SEND_START: C.STARTING,
        T.RECV_ERROR: C.IDLE,  # an error about something outside a session
        **_ANY_CLIENT_EXIT,
    },
    C.SERVER_ENDED: {
        T.SEND_START: C.STARTING,
        T.SEND_AUDIO: (C.SERVER_ENDED, DROP),
        T.SEND_END: (C.SERVER_ENDED, DROP),
        T.RECV_ERROR: C.SERVER_ENDED,
        T.RECV_END: C.SERVER_ENDED,  # a stray END after the server ended: tolerated
        **_ANY_CLIENT_EXIT,
    },
    C.STARTING: {
        T.RECV_START: C.STREAMING,
        T.SEND_AUDIO: C.STARTING,  # only with early_audio=True
        T.RECV_ERROR: C.SERVER_ENDED,  # START rejected: no END follows (§7.4)
        **_ANY_CLIENT_EXIT,
    },
    C.STREAMING: {
        T.SEND_AUDIO: C.STREAMING,
        T.SEND_END: C.ENDING,
        T.RECV_RESULT: C.STREAMING,
        T.RECV_EVENT: C.STREAMING,
        T.RECV_ERROR: C.ABORTING,
        T.RECV_END: C.SERVER_ENDED,  # the server ended first (e.g. shutting down)
        **_ANY_CLIENT_EXIT,
    },
    C.ENDING: {
        T.RECV_RESULT: C.ENDING,
        T.RECV_EVENT: C.ENDING,
        T.RECV_END: C.IDLE,
        T.RECV_ERROR: C.ABORTING,
        **_ANY_CLIENT_EXIT,
    },
    C.ABORTING: {
        T.SEND_AUDIO: (C.ABORTING, DROP),
        T.SEND_END: (C.ABORTING, DROP),
        T.RECV_END: C.SERVER_ENDED,
        T.RECV_ERROR: C.ABORTING,
        **_ANY_CLIENT_EXIT,
    },
    C.CLOSED: {},
    C.ERROR: {},
}

del S, C, T


def _lookup(table: dict, state: Enum, trigger: Trigger) -> tuple[Enum, bool] | None:
    """``(next_state, dropped)`` or None if ``trigger`` is illegal in ``state``."""
    entry = table[state].get(trigger)
    if entry is None:
        return None
    if isinstance(entry, tuple):
        return entry[0], True
    return entry, False


def _new_trace_id() -> str:
    return str(uuid.uuid4())


@dataclass
class ServerStats:
    """Counters of one :class:`ServerSession` (whole connection)."""

    frames_received: int = 0
    bytes_received: int = 0
    undersized_frames: int = 0
    dropped_frames: int = 0
    dropped_bytes: int = 0
    sessions_started: int = 0
    sessions_ended: int = 0
    violations: int = 0
    stale_responses: int = 0


ServerResponse = Union[StartResponse, ResultResponse, EventResponse, ErrorResponse, FatalErrorResponse,
                       EndResponse]


class _EventQueue:
    """Bounded FIFO of events (policy: raise BufferFullError when the caller never drains)."""

    def __init__(self) -> None:
        self._q: deque = deque()

    def put(self, event: object) -> None:
        if len(self._q) >= MAX_PENDING_EVENTS:
            raise BufferFullError(f"{MAX_PENDING_EVENTS} session events pending: drain events() "
                                  "after every receive()")
        self._q.append(event)

    def get(self) -> object | None:
        return self._q.popleft() if self._q else None

    def drain(self) -> Iterator:
        while self._q:
            yield self._q.popleft()


class ServerSession:
    """The server role of one SIS websocket connection (sans-IO).

    Feed every websocket message to :meth:`receive` and write the text frames it returns; then
    handle :meth:`events` and turn decisions into frames with :meth:`send`.

    Parameters
    ----------
    mode : Mode or str
        Which endpoint the connection was opened on.
    trace_id_factory : callable, optional
        Makes a trace id per START (and one for the connection); default ``uuid4`` strings.
    clock : callable, optional
        Monotonic seconds for the idle rule; default :func:`time.monotonic`.
    idle_timeout_s : float, optional
        Default :data:`IDLE_TIMEOUT_S` (20 s).
    max_audio_ms : int, optional
        Audio cap per session; default ``mode.max_audio_ms`` (60 s; 5 h continuous).

    Examples
    --------
    >>> s = ServerSession("continue-stream")
    >>> s.receive('{"command": "START", "config": {"audio_format": "pcm16k16bit", '
    ...           '"property": "chinese_16k_general"}}')
    []
    >>> [type(e).__name__ for e in s.events()]
    ['StartRequested']
    >>> s.send(StartResponse())  # doctest: +ELLIPSIS
    ['{"resp_type": "START", "trace_id": "..."}']
    """

    def __init__(
        self,
        mode: Mode | str,
        *,
        trace_id_factory: Callable[[], str] = _new_trace_id,
        clock: Callable[[], float] = time.monotonic,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        max_audio_ms: int | None = None,
    ) -> None:
        self.mode = Mode(mode)
        self._new_trace = trace_id_factory
        self._clock = clock
        self.idle_timeout_s = float(idle_timeout_s)
        self.max_audio_ms = self.mode.max_audio_ms if max_audio_ms is None else int(max_audio_ms)
        if self.max_audio_ms <= 0:
            raise ValueError(f"max_audio_ms must be > 0, got {max_audio_ms!r}")
        self.connection_trace_id: str = trace_id_factory()
        self._state = ServerState.IDLE
        self._events = _EventQueue()
        self._last_rx = clock()
        self.stats = ServerStats()
        self._reset_session()

    # -- public state ---------------------------------------------------------------------------

    @property
    def state(self) -> ServerState:
        """The current :class:`ServerState`."""
        return self._state

    @property
    def config(self) -> StartConfig | None:
        """The START config of the current session (None between sessions)."""
        return self._config

    @property
    def trace_id(self) -> str:
        """Trace id of the current session, or of the connection between sessions."""
        return self._trace_id if self._trace_id is not None else self.connection_trace_id

    @property
    def audio_bytes(self) -> int:
        """Audio bytes accepted in the current session."""
        return self._audio_bytes

    @property
    def audio_ms(self) -> float:
        """Audio accepted in the current session, in ms (the session audio clock)."""
        if self._config is None:
            return 0.0
        # Not AudioFormat.duration_ms: a client may send an odd byte count of 16-bit PCM.
        return self._audio_bytes * 1000 / self._config.format_info.bytes_per_second

    def events(self) -> Iterator[object]:
        """Yield and remove the pending events, oldest first."""
        return self._events.drain()

    def next_event(self) -> object | None:
        """Remove and return the oldest pending event, or None."""
        return self._events.get()

    # -- table plumbing -------------------------------------------------------------------------

    def _reset_session(self) -> None:
        self._config: StartConfig | None = None
        self._trace_id: str | None = None
        self._audio_bytes = 0
        self._cancel_pending = False

    def _transition(self, trigger: Trigger) -> bool:
        """Apply ``trigger``; return True if the message is dropped. LocalProtocolError if illegal."""
        step = _lookup(SERVER_TRANSITIONS, self._state, trigger)
        if step is None:
            raise LocalProtocolError(f"{trigger.value} is not allowed in server state {self._state.value}")
        self._state = step[0]  # type: ignore[assignment]
        return step[1]

    def _wire_error(self, code: str, msg: str) -> list[str]:
        """ERROR (+ END(ERROR) if the START answer was sent) for the current session."""
        out = [ErrorMessage(self.trace_id, code, msg).to_json()]
        if self._state in SERVER_SESSION_OPEN:
            out.append(EndMessage(self.trace_id, EndReason.ERROR).to_json())
            self.stats.sessions_ended += 1
        return out

    def _violation(self, code: str, msg: str) -> list[str]:
        ended = self._state in SERVER_SESSION_OPEN
        out = self._wire_error(code, msg)
        self._transition(Trigger.VIOLATION)
        self._reset_session()
        self.stats.violations += 1
        self._events.put(ProtocolViolation(code, msg, ended))
        logger.debug("client violation %s: %s (trace_id=%s)", code, msg, self.connection_trace_id)
        return out

    # -- inbound --------------------------------------------------------------------------------

    def receive(self, message: str | bytes | None) -> list[str]:
        """Feed one websocket message from the client.

        Parameters
        ----------
        message : str, bytes or None
            A text frame (str), a binary frame (bytes: audio), or None when the transport was lost.

        Returns
        -------
        list of str
            Text frames the session answers on its own (errors, END(CANCEL), EXCEEDED_AUDIO);
            usually empty. Send them before anything else.

        Raises
        ------
        LocalProtocolError
            The session is in ERROR (the app misused it earlier).
        TypeError
            ``message`` is not str, bytes or None.
        """
        if self._state is ServerState.ERROR and message is not None:
            raise LocalProtocolError("the server session is in ERROR after an earlier misuse")
        if message is None:
            was_open = self._state not in (ServerState.IDLE, ServerState.IGNORING, ServerState.CLOSED)
            if self._state is not ServerState.CLOSED:
                self._events.put(ConnectionClosed(None, was_open))
            self._transition(Trigger.LOST)
            self._reset_session()
            return []
        if self._state is ServerState.CLOSED:
            return []  # raced with our FATAL_ERROR / close
        self._last_rx = self._clock()
        if isinstance(message, (bytes, bytearray, memoryview)):
            return self._receive_audio(bytes(message))
        if not isinstance(message, str):
            raise TypeError(f"message must be str, bytes or None, got {type(message).__name__}")
        try:
            cmd = parse_client_message(message, self.mode)
        except RequestRejected as exc:
            return self._violation(exc.error_code, exc.error_msg)
        if isinstance(cmd, StartCommand):
            return self._receive_start(cmd)
        return self._receive_end(cmd)

    def _receive_start(self, cmd: StartCommand) -> list[str]:
        if _lookup(SERVER_TRANSITIONS, self._state, Trigger.RECV_START) is None:
            return self._violation("SIS.0032", "'command' is invalid: START received while a session "
                                               "is open (START twice)")
        self._transition(Trigger.RECV_START)
        self._reset_session()
        self._config = cmd.config
        self._trace_id = self._new_trace()
        self.stats.sessions_started += 1
        self._events.put(StartRequested(cmd.config, self._trace_id))
        return []

    def _receive_end(self, cmd: EndCommand) -> list[str]:
        trigger = Trigger.RECV_END_CANCEL if cmd.cancel else Trigger.RECV_END
        step = _lookup(SERVER_TRANSITIONS, self._state, trigger)
        if step is None:
            what = "END received outside a session" if self._state is ServerState.IDLE else "END received twice"
            return self._violation("SIS.0032", f"'command' is invalid: {what}")
        before = self._state
        if self._transition(trigger):
            return []
        self._events.put(EndRequested(cmd.cancel))
        if cmd.cancel and before in SERVER_SESSION_OPEN:
            out = [EndMessage(self.trace_id, EndReason.CANCEL).to_json()]
            self.stats.sessions_ended += 1
            self._reset_session()
            return out
        if cmd.cancel:
            self._cancel_pending = True  # END(CANCEL) goes out right behind the START answer
        return []

    def _receive_audio(self, data: bytes) -> list[str]:
        self.stats.frames_received += 1
        self.stats.bytes_received += len(data)
        if self._state in (ServerState.IDLE,):
            return self._violation("SIS.0032", "audio received before START: send START after the "
                                               "handshake, then the audio in chunks")
        step = _lookup(SERVER_TRANSITIONS, self._state, Trigger.RECV_AUDIO)
        if step is None or step[1]:
            # Dropped (IGNORING, FINISHED, after END); CLOSED/ERROR never get here.
            if step is not None:
                self._state = step[0]  # type: ignore[assignment]
            self.stats.dropped_frames += 1
            self.stats.dropped_bytes += len(data)
            return []
        assert self._config is not None  # every RECV_AUDIO-accepting state has a config
        lo, hi = shard_limits(self._config.rate_hz)
        if len(data) > hi:
            return self._violation("SIS.0032", f"audio frame of {len(data)} bytes is too large: at most "
                                               f"{hi} bytes per frame at {self._config.rate_hz} Hz, "
                                               "send the audio in chunks")
        undersized = len(data) < lo
        if undersized:
            self.stats.undersized_frames += 1
        cap = self._cap_bytes()
        out: list[str] = []
        if self._state is ServerState.STREAMING and self._audio_bytes + len(data) > cap:
            keep = max(0, cap - self._audio_bytes)
            if keep:
                self._events.put(AudioReceived(data[:keep], self._audio_bytes, undersized))
                self._audio_bytes += keep
            self.stats.dropped_frames += 1 if not keep else 0
            self.stats.dropped_bytes += len(data) - keep
            self._transition(Trigger.AUDIO_CAP)
            ms = int(self.max_audio_ms)
            out.append(EventMessage(self.trace_id, EventType.EXCEEDED_AUDIO.value, ms).to_json())
            self._events.put(AudioLimitReached(ms))
            return out
        self._transition(Trigger.RECV_AUDIO)
        self._events.put(AudioReceived(data, self._audio_bytes, undersized))
        self._audio_bytes += len(data)
        return out

    def _cap_bytes(self) -> int:
        assert self._config is not None
        return self.max_audio_ms * self._config.format_info.bytes_per_second // 1000

    # -- outbound -------------------------------------------------------------------------------

    def send(self, response: ServerResponse) -> list[str]:
        """Turn an app decision into text frames.

        Parameters
        ----------
        response : StartResponse, ResultResponse, EventResponse, ErrorResponse, FatalErrorResponse or EndResponse

        Returns
        -------
        list of str
            The text frames to write, in order.

        Raises
        ------
        LocalProtocolError
            The response is not legal now (e.g. RESULT before the START answer, an event the mode
            does not have, interim results the client did not ask for, END(CANCEL/ERROR) sent by
            hand). The session moves to ERROR.
        TypeError
            Not a response event (the session moves to ERROR as well).
        """
        try:
            return self._send(response)
        except Exception:
            if self._state is not ServerState.CLOSED:
                self._state = ServerState.ERROR
            raise

    def _send(self, r: ServerResponse) -> list[str]:
        if isinstance(r, FatalErrorResponse):
            self._transition(Trigger.SEND_FATAL)
            out = [FatalErrorMessage(self.trace_id, r.error_code, r.error_msg).to_json()]
            self._reset_session()
            return out
        if self._state is ServerState.ERROR:
            raise LocalProtocolError("the server session is in ERROR; only FatalErrorResponse is allowed")
        tid = getattr(r, "trace_id", None)
        if tid is not None and tid != self._trace_id:
            # An answer for a session that is already over: drop it, never apply it to another.
            self.stats.stale_responses += 1
            logger.debug("dropped %s for finished session %s", type(r).__name__, tid)
            return []
        if isinstance(r, StartResponse):
            self._transition(Trigger.SEND_START)
            out = [StartMessage(self.trace_id).to_json()]
            if self._cancel_pending:
                out.append(EndMessage(self.trace_id, EndReason.CANCEL).to_json())
                self.stats.sessions_ended += 1
                self._state = ServerState.IDLE  # table note: STARTING_ENDED + cancel ends at once
                self._reset_session()
            return out
        if isinstance(r, ResultResponse):
            self._check_segments(r)
            self._transition(Trigger.SEND_RESULT)
            return [ResultMessage(self.trace_id, r.segments).to_json()]
        if isinstance(r, EventResponse):
            if r.event.value not in self.mode.events:
                raise LocalProtocolError(f"EVENT {r.event.value} does not exist in {self.mode.value} mode "
                                         f"(allowed: {sorted(self.mode.events)})")
            trigger = Trigger.SEND_EVENT_TERMINAL if r.event.ends_recognition else Trigger.SEND_EVENT
            self._transition(trigger)
            return [EventMessage(self.trace_id, r.event.value, r.timestamp).to_json()]
        if isinstance(r, ErrorResponse):
            if _lookup(SERVER_TRANSITIONS, self._state, Trigger.SEND_ERROR) is None:
                raise LocalProtocolError(f"ERROR cannot be sent in server state {self._state.value}")
            out = self._wire_error(r.error_code, r.error_msg)
            self._transition(Trigger.SEND_ERROR)
            self._reset_session()
            return out
        if isinstance(r, EndResponse):
            if r.reason is not EndReason.NORMAL:
                raise LocalProtocolError(f"END({r.reason.value}) is sent by the session itself "
                                         "(cancel, ErrorResponse); send EndResponse(NORMAL)")
            self._transition(Trigger.SEND_END)
            out = [EndMessage(self.trace_id, EndReason.NORMAL).to_json()]
            self.stats.sessions_ended += 1
            self._reset_session()
            return out
        raise TypeError(f"not a server response event: {type(r).__name__}")

    def _check_segments(self, r: ResultResponse) -> None:
        cfg = self._config
        if cfg is None:
            raise LocalProtocolError(f"RESULT cannot be sent in server state {self._state.value}")
        for seg in r.segments:
            if seg.start_time < 0 or seg.end_time < seg.start_time:
                raise LocalProtocolError(f"segment times must satisfy 0 <= start_time <= end_time, got "
                                         f"{seg.start_time}..{seg.end_time}")
            if not seg.is_final and not cfg.interim_results:
                raise LocalProtocolError("interim result sent but the START asked interim_results=no")
            if seg.result is not None and seg.result.word_info is not None and not cfg.need_word_info:
                raise LocalProtocolError("word_info sent but the START asked need_word_info=no")

    # -- idle rule ------------------------------------------------------------------------------

    def idle_deadline(self) -> float:
        """Clock time at which :meth:`expire_idle` fires (last client message + idle timeout)."""
        return self._last_rx + self.idle_timeout_s

    def expire_idle(self, now: float | None = None) -> list[str]:
        """Apply the 20 s rule: FATAL_ERROR SIS.0304 if nothing arrived for ``idle_timeout_s``.

        Parameters
        ----------
        now : float, optional
            Clock time; default ``clock()``.

        Returns
        -------
        list of str
            ``[FATAL_ERROR]`` (then close the connection; the session is CLOSED and a
            :class:`ConnectionClosed` event is queued) or ``[]``.
        """
        if self._state in (ServerState.CLOSED, ServerState.ERROR):
            return []
        now = self._clock() if now is None else now
        if now < self.idle_deadline():
            return []
        was_open = self._state not in (ServerState.IDLE, ServerState.IGNORING)
        out = self._send(FatalErrorResponse("SIS.0304", error_message("SIS.0304")))
        self._events.put(ConnectionClosed("SIS.0304", was_open))
        return out


ClientEvent = Union[Started, PartialResult, FinalResult, VoiceStart, VoiceEnd, ExceededSilence, ExceededAudio,
                    OtherEvent, ServerError, Ended, ConnectionClosed]

_EVENT_CLASSES: Final = {
    EventType.VOICE_START: VoiceStart,
    EventType.VOICE_END: VoiceEnd,
    EventType.EXCEEDED_SILENCE: ExceededSilence,
    EventType.EXCEEDED_AUDIO: ExceededAudio,
}


class ClientSession:
    """The client role of one SIS websocket connection (sans-IO).

    :meth:`send` turns :class:`StartStream` / :class:`AudioFrame` / :class:`EndOfStream` into frames
    (str = text, bytes = binary); :meth:`receive` takes every server message; :meth:`events`
    yields what happened.

    Parameters
    ----------
    mode : Mode or str
        The endpoint the connection was opened on (selects the config form).
    early_audio : bool, optional
        Allow audio before the START answer, like the official SDK (default False: the docs say
        to wait, §3).
    """

    def __init__(self, mode: Mode | str, *, early_audio: bool = False) -> None:
        self.mode = Mode(mode)
        self.early_audio = bool(early_audio)
        self._state = ClientState.IDLE
        self._events = _EventQueue()
        self._config: StartConfig | None = None
        self.trace_id: str | None = None
        self.frames_sent = 0
        self.bytes_sent = 0
        self.dropped_frames = 0
        # largest legal audio frame of the config last STARTed (for the send_audio fast path)
        self._audio_max = -1

    @property
    def state(self) -> ClientState:
        """The current :class:`ClientState`."""
        return self._state

    @property
    def config(self) -> StartConfig | None:
        """The config of the last START sent."""
        return self._config

    def events(self) -> Iterator[object]:
        """Yield and remove the pending events, oldest first."""
        return self._events.drain()

    def next_event(self) -> object | None:
        """Remove and return the oldest pending event, or None."""
        return self._events.get()

    def _step(self, trigger: Trigger, exc_type: type[Exception]) -> bool:
        if self._state is ClientState.ERROR:
            raise LocalProtocolError("the client session is in ERROR after an earlier protocol error")
        step = _lookup(CLIENT_TRANSITIONS, self._state, trigger)
        if step is None:
            raise exc_type(f"{trigger.value} is not allowed in client state {self._state.value}")
        self._state = step[0]  # type: ignore[assignment]
        return step[1]

    # -- outbound -------------------------------------------------------------------------------

    def send(self, event: StartStream | AudioFrame | EndOfStream) -> list[str | bytes]:
        """Frames to write for ``event``.

        Returns
        -------
        list of str or bytes
            ``[text]`` for START/END, ``[binary]`` for audio, ``[]`` when the frame is dropped
            (the server already ended the session).

        Raises
        ------
        LocalProtocolError
            Not legal now (audio before the START answer without ``early_audio``, audio after END,
            START while a session is open, a frame above the shard maximum, a config for another
            mode). The session moves to ERROR.
        TypeError
            Not a client event.
        """
        try:
            return self._send(event)
        except Exception:
            self._state = ClientState.ERROR
            raise

    def send_audio(self, data: bytes) -> bytes | None:
        """The binary frame to write for one audio frame, or None when it is dropped.

        Same rules, errors and counters as ``send(AudioFrame(data))``, without the event
        object and the list (the per-frame path of a pump sending thousands of frames a
        second): in STREAMING a legal ``bytes`` frame is checked against the shard maximum
        cached at START and returned as is; every other case goes through :meth:`send`.

        Returns
        -------
        bytes or None
            ``data`` to write, or None when the frame is dropped (the server already ended
            the session).

        Raises
        ------
        LocalProtocolError, TypeError
            As :meth:`send`.
        """
        if self._state is ClientState.STREAMING and type(data) is bytes and len(data) <= self._audio_max:
            self.frames_sent += 1
            self.bytes_sent += len(data)
            return data
        out = self.send(AudioFrame(data))
        return out[0] if out else None  # type: ignore[return-value]

    def _send(self, event: object) -> list[str | bytes]:
        if isinstance(event, AudioFrame):
            if self._state is ClientState.STARTING and not self.early_audio:
                raise LocalProtocolError("audio before the START answer (pass early_audio=True to allow)")
            if self._step(Trigger.SEND_AUDIO, LocalProtocolError):
                self.dropped_frames += 1
                return []
            assert self._config is not None
            hi = self._audio_max  # shard maximum of the config STARTed
            if len(event.data) > hi:
                raise LocalProtocolError(f"audio frame of {len(event.data)} bytes exceeds the shard "
                                         f"maximum of {hi} bytes at {self._config.rate_hz} Hz")
            self.frames_sent += 1
            self.bytes_sent += len(event.data)
            return [event.data]
        if isinstance(event, StartStream):
            if event.config.mode is not self.mode:
                raise LocalProtocolError(f"config is for {event.config.mode.value}, the connection is "
                                         f"{self.mode.value}")
            self._step(Trigger.SEND_START, LocalProtocolError)
            self._config = event.config
            self._audio_max = shard_limits(event.config.rate_hz)[1]
            self.trace_id = None
            return [StartCommand(event.config).to_json()]
        if isinstance(event, EndOfStream):
            if self._step(Trigger.SEND_END, LocalProtocolError):
                return []
            return [EndCommand(event.cancel, event.encoding).to_json()]
        raise TypeError(f"not a client event: {type(event).__name__}")

    # -- inbound --------------------------------------------------------------------------------

    def receive(self, message: str | bytes | None) -> None:
        """Feed one websocket message from the server (None = transport lost).

        Raises
        ------
        RemoteProtocolError
            Binary frame, unparsable text, or a message the table does not allow now. The session
            moves to ERROR.
        LocalProtocolError
            The session is already in ERROR.
        """
        if self._state is ClientState.ERROR:
            if message is None:
                return  # the transport going away after an error is expected
            raise LocalProtocolError("the client session is in ERROR after an earlier protocol error")
        try:
            self._receive(message)
        except RemoteProtocolError:
            self._state = ClientState.ERROR
            raise

    def _receive(self, message: str | bytes | None) -> None:
        if message is None:
            if self._state is ClientState.CLOSED:
                return
            during = self._state not in (ClientState.IDLE, ClientState.SERVER_ENDED)
            self._step(Trigger.LOST, RemoteProtocolError)
            self._events.put(ConnectionClosed(None, during))
            return
        if self._state is ClientState.CLOSED:
            return  # late frames after FATAL_ERROR
        if isinstance(message, (bytes, bytearray, memoryview)):
            raise RemoteProtocolError("the server sent a binary frame on a recognition connection")
        msg = parse_server_message(message)
        if msg.trace_id is not None and isinstance(msg, StartMessage):
            self.trace_id = msg.trace_id
        tid = msg.trace_id if msg.trace_id is not None else self.trace_id
        if isinstance(msg, StartMessage):
            self._step(Trigger.RECV_START, RemoteProtocolError)
            self._events.put(Started(tid))
        elif isinstance(msg, ResultMessage):
            self._step(Trigger.RECV_RESULT, RemoteProtocolError)
            for seg in msg.segments:
                self._events.put(FinalResult(seg, tid) if seg.is_final else PartialResult(seg, tid))
        elif isinstance(msg, EventMessage):
            self._step(Trigger.RECV_EVENT, RemoteProtocolError)
            et = msg.event_type
            if et is None:
                self._events.put(OtherEvent(msg.event, msg.timestamp, tid))
            else:
                self._events.put(_EVENT_CLASSES[et](msg.timestamp, tid))
        elif isinstance(msg, FatalErrorMessage):
            during = self._state not in (ClientState.IDLE, ClientState.SERVER_ENDED)
            self._step(Trigger.RECV_FATAL, RemoteProtocolError)
            self._events.put(ServerError(msg.error_code, msg.error_msg, tid, fatal=True))
            self._events.put(ConnectionClosed(msg.error_code, during))
        elif isinstance(msg, ErrorMessage):
            self._step(Trigger.RECV_ERROR, RemoteProtocolError)
            self._events.put(ServerError(msg.error_code, msg.error_msg, tid))
        elif isinstance(msg, EndMessage):
            self._step(Trigger.RECV_END, RemoteProtocolError)
            self._events.put(Ended(msg.reason, tid))
