"""The aiohttp WebSocket pump for RASR: connect, send loop (Framer + Pacer), receive loop, reconnect."""

# Theory of operation
# ===================
#
# This is the only module that awaits for streaming. One StreamRunner drives one recognition
# stream (possibly over several connections) with exactly two tasks, both owned here and
# cancelled by aclose(): the supervisor task (connect, START, the send loop, reconnects) and the
# receive task of the current connection (ws messages -> ClientSession.receive -> mapped events
# -> the bounded EventQueue). No thread is involved; everything runs on the caller's loop.
#
#   user send() --transcode--> Framer (bounded, overflow policy) --pop--> [VAD gate] --> ring
#        --(await the loop's PacingScheduler until the pacer's deadline)--> ws.send_bytes
#        --> pacer.sent(clock())     (an injected clock/sleep: await sleep(pacer.delay(clock())))
#   ws messages --> ClientSession --> time mapping / duplicate filter --> EventQueue --> user
#
# Clocks. Three time lines exist:
#   user ms     position in the audio the user gave (after transcoding); what events report.
#   stream ms   audio actually put on the wire at least once (gated audio is not; keepalive
#               silence is); the replay ring and the "lost ms" accounting use it.
#   conn ms     the server's session clock of the current connection: 0 at its first frame.
# Every frame sent on a connection is recorded (conn ms, stream ms, user ms, duration) in a
# bounded map; result times are mapped back through it, so reconnects (replay restarts the
# server clock), local VAD gating (gaps) and keepalive silence (extra audio) never shift the
# timestamps a user sees.
#
# Reconnect (continue-stream only). The ring keeps every frame sent since the end of the last
# final result (bounded: oldest frames are dropped beyond ``ring_ms``). When the transport is
# lost during a session the user has not ended, the runner reconnects with exponential backoff
# and jitter (attempt limit), sends START again, replays the ring at once, and carries on.
# Finals whose end is not past the last final already delivered are duplicates and dropped.
# ``Reconnected.lost_ms`` is the audio between the last final's end and the oldest frame the
# ring still held (0 when the ring covered the gap). A session whose END was sent is never
# reconnected. Planned rollover: before the 5 h connection limit the runner ends the session
# cleanly (END, finals, END) at a silence boundary and continues on a new connection.

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import os
import random
import struct
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Final, NamedTuple, Protocol

import aiohttp
from yarl import URL

try:  # the fast audio-frame writer (see _FastWriter); absent -> aiohttp's send_bytes is used
    from aiohttp._websocket.helpers import websocket_mask as _ws_mask
    from aiohttp._websocket.writer import WebSocketWriter as _AiohttpWriter
except ImportError:  # pragma: no cover - other aiohttp layouts
    _ws_mask = None
    _AiohttpWriter = None

from ..errors import (
    BufferFullError,
    LocalProtocolError,
    RemoteProtocolError,
    SisConnectionError,
    SisLimitError,
    SisServerError,
)
from .framing import SILENCE_BYTE, Framer
from .pacing import Pacer
from ..protocol import (
    ClientSession,
    ConnectionClosed,
    Ended,
    EndOfStream,
    EndReason,
    ExceededAudio,
    ExceededSilence,
    FinalResult,
    Mode,
    OtherEvent,
    PartialResult,
    Segment,
    ServerError,
    StartConfig,
    Started,
    StartStream,
    VoiceEnd,
    VoiceStart,
    WordInfo,
    api_error,
)

__all__ = [
    "CONNECTION_LIMIT_S",
    "DEFAULT_ROLLOVER_AFTER_S",
    "EVENT_OVERFLOW_POLICIES",
    "EventQueue",
    "PacingScheduler",
    "ReconnectPolicy",
    "Reconnected",
    "RolledOver",
    "StreamRunner",
    "StreamStats",
    "TransportOptions",
    "host_header",
    "open_websocket",
    "ws_url",
]

logger = logging.getLogger(__name__)

#: The server drops a websocket connection after 5 hours (§1.3).
CONNECTION_LIMIT_S: Final = 5 * 3600.0
#: Planned rollover starts this long after the connection opened (15 min before the limit).
DEFAULT_ROLLOVER_AFTER_S: Final = CONNECTION_LIMIT_S - 900.0
#: If no silence boundary came within this time after the rollover was due, roll over anyway.
ROLLOVER_GRACE_S: Final = 600.0
#: Named overflow policies of :class:`EventQueue`.
EVENT_OVERFLOW_POLICIES: Final = ("block", "drop_partial", "error")
#: Upper bound of ``TransportOptions.pacing_coalesce_s`` (how early a frame may be sent).
MAX_PACING_COALESCE_S: Final = 0.01
_DEFAULT_PORTS: Final = {"ws": 80, "http": 80, "wss": 443, "https": 443}


# --- URLs, Host header, connect -----------------------------------------------------------------


def ws_url(endpoint: str, project_id: str, mode: Mode | str) -> str:
    """The websocket URL of ``mode`` under ``endpoint`` (§1.2).

    Parameters
    ----------
    endpoint : str
        ``wss://sis-ext.{region}.myhuaweicloud.com`` (``https`` is read as ``wss``, ``http`` as
        ``ws``), or a loopback server such as ``ws://127.0.0.1:8080``. A path prefix is kept.
    project_id : str
    mode : Mode or str

    Returns
    -------
    str

    Raises
    ------
    ValueError
        Not an absolute ws/wss/http/https URL, or an empty project id.
    """
    u = URL(endpoint)
    scheme = {"https": "wss", "http": "ws"}.get(u.scheme, u.scheme)
    if scheme not in ("ws", "wss") or not u.host:
        raise ValueError(f"endpoint must be an absolute wss:// (or ws://, https://) URL, got {endpoint!r}")
    if not isinstance(project_id, str) or not project_id or "/" in project_id:
        raise ValueError(f"project_id must be a non-empty str without '/', got {project_id!r}")
    base = u.with_scheme(scheme).with_query(None).with_fragment(None)
    prefix = base.raw_path.rstrip("/")
    return str(base.with_path(prefix + Mode(mode).path(project_id), encoded=True))


def host_header(url: str | URL) -> str:
    """The ``Host`` value aiohttp sends for ``url``: host (IDNA, IPv6 bracketed), ``:port`` only
    when it is not the scheme's default (§2.3: the signed host must equal it byte for byte).

    Examples
    --------
    >>> host_header("wss://sis-ext.cn-north-4.myhuaweicloud.com:443/v1/p/rasr/continue-stream")
    'sis-ext.cn-north-4.myhuaweicloud.com'
    >>> host_header("ws://127.0.0.1:8080/x")
    '127.0.0.1:8080'
    """
    u = URL(url) if isinstance(url, str) else url
    host = u.host_port_subcomponent
    if host is None:
        raise ValueError(f"url must be absolute, got {str(u)!r}")
    # yarl already drops the default port of http/https/ws/wss; keep the rule explicit.
    default = _DEFAULT_PORTS.get(u.scheme)
    if u.explicit_port is not None and u.explicit_port == default:
        host = host.rsplit(":", 1)[0]
    return host


@dataclass(frozen=True)
class TransportOptions:
    """Connection settings shared by the websocket and REST clients.

    Attributes
    ----------
    verify_tls : bool
        Verify the server certificate (default True). ``False`` is the explicit opt-out (the
        official SDK never verifies, §9.1; we do unless told not to).
    ssl_context : ssl.SSLContext or None
        A custom context (e.g. a private CA); wins over ``verify_tls``.
    proxy : str or None
        HTTP proxy URL for aiohttp (websocket and REST); ``proxy_auth`` an ``aiohttp.BasicAuth``.
    trust_env : bool
        Let aiohttp read ``HTTPS_PROXY`` etc. from the environment (default False).
    heartbeat_s : float or None
        aiohttp's websocket ping interval; a missing pong closes the connection (default 10 s,
        like SDK-new's ``connect_lost_timeout``).
    connect_timeout_s : float
        Per connect attempt (default 10 s, §9.1).
    close_timeout_s : float
        How long the close handshake may take (default 5 s).
    start_timeout_s, end_timeout_s : float
        Waits for the START and END answers (default 18 s, the SDK's constant).
    extra_headers : tuple of (str, str)
        Added to the upgrade (e.g. ``("X-Language", "en-us")``); signed with AK/SK too.
    pacing_coalesce_s : float
        Paced frames of all streams on one event loop wait on one shared timer
        (:class:`PacingScheduler`); when it fires, every frame due within this window is sent
        too, up to this much early (default 0.001 s; 0 wakes each deadline on its own; at most
        0.01 s). Only used with the default clock and sleep.
    """

    verify_tls: bool = True
    ssl_context: Any = None
    proxy: str | None = None
    proxy_auth: Any = None
    trust_env: bool = False
    heartbeat_s: float | None = 10.0
    connect_timeout_s: float = 10.0
    close_timeout_s: float = 5.0
    start_timeout_s: float = 18.0
    end_timeout_s: float = 18.0
    extra_headers: tuple[tuple[str, str], ...] = ()
    pacing_coalesce_s: float = 0.001

    def __post_init__(self) -> None:
        pc = self.pacing_coalesce_s
        if isinstance(pc, bool) or not isinstance(pc, (int, float)) or not 0 <= pc <= MAX_PACING_COALESCE_S:
            raise ValueError(f"pacing_coalesce_s must lie in [0, {MAX_PACING_COALESCE_S:g}] s, got {pc!r}")
        if not isinstance(self.verify_tls, bool):
            raise TypeError(f"verify_tls must be a bool, got {type(self.verify_tls).__name__}")
        for name in ("connect_timeout_s", "close_timeout_s", "start_timeout_s", "end_timeout_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {v!r}")
        hb = self.heartbeat_s
        if hb is not None and (isinstance(hb, bool) or not isinstance(hb, (int, float)) or not hb > 0):
            raise ValueError(f"heartbeat_s must be None or > 0, got {hb!r}")

    @property
    def ssl(self) -> Any:
        """The ``ssl=`` argument for aiohttp: the context, ``True`` (verify) or ``False``."""
        if self.ssl_context is not None:
            return self.ssl_context
        return bool(self.verify_tls)


async def open_websocket(
    http: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    options: TransportOptions,
) -> aiohttp.ClientWebSocketResponse:
    """``ws_connect`` with our options; errors mapped to the sis_stream hierarchy.

    Raises
    ------
    SisAuthError
        The upgrade was answered 401/403 (``APIG.0301``).
    SisApiError
        Any other non-101 answer (typed by status).
    SisConnectionError
        Network failure or timeout (``raise ... from exc``).
    """
    try:
        return await http.ws_connect(
            url,
            headers=headers,
            heartbeat=options.heartbeat_s,
            autoping=True,
            ssl=options.ssl,
            proxy=options.proxy,
            proxy_auth=options.proxy_auth,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=options.close_timeout_s),
            max_msg_size=4 * 1024 * 1024,
        )
    except aiohttp.WSServerHandshakeError as exc:
        code = "APIG.0301" if exc.status in (401, 403) else f"HTTP.{exc.status}"
        raise api_error(code, f"websocket upgrade rejected with HTTP {exc.status}: {exc.message}",
                        http_status=exc.status) from exc
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
        raise SisConnectionError(f"websocket connect to {URL(url).with_query(None)} failed: "
                                 f"{type(exc).__name__}: {exc}") from exc


# --- events added by the pump ------------------------------------------------------------------


@dataclass(frozen=True)
class Reconnected:
    """The connection was lost mid-session and re-established (continue-stream).

    Attributes
    ----------
    attempt : int
        Connect attempts this reconnect took (1 = first try succeeded).
    replayed_ms : float
        Audio sent again from the replay ring.
    lost_ms : float
        Audio after the last final result that could not be replayed (the ring had dropped it);
        0 when the ring covered the whole gap.
    trace_id : str or None
        Trace id of the new session.
    """

    attempt: int
    replayed_ms: float
    lost_ms: float
    trace_id: str | None


@dataclass(frozen=True)
class RolledOver:
    """A planned rollover to a new connection (before the 5 h limit) happened at ``user_ms``."""

    user_ms: float
    forced: bool
    trace_id: str | None


@dataclass(frozen=True)
class ReconnectPolicy:
    """Reconnect rules for continue-stream.

    Attributes
    ----------
    enabled : bool
        Default True (continue-stream only; other modes never reconnect).
    max_attempts : int
        Connect attempts per reconnect (default 5).
    base_delay_s, max_delay_s : float
        Backoff ``min(max, base * 2**(k-1))`` before attempt ``k``, times a jitter factor
        uniform in ``[1 - jitter, 1]`` (default 0.5 s, 8 s, jitter 0.5).
    ring_ms : int
        Replay ring capacity in ms of audio (default 30 000).
    """

    enabled: bool = True
    max_attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
    jitter: float = 0.5
    ring_ms: int = 30_000

    def __post_init__(self) -> None:
        if type(self.max_attempts) is not int or self.max_attempts < 1:
            raise ValueError(f"max_attempts must be an int >= 1, got {self.max_attempts!r}")
        if not 0 <= self.base_delay_s <= self.max_delay_s:
            raise ValueError(f"need 0 <= base_delay_s <= max_delay_s, got {self.base_delay_s!r}, "
                             f"{self.max_delay_s!r}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must lie in [0, 1], got {self.jitter!r}")
        if type(self.ring_ms) is not int or self.ring_ms < 0:
            raise ValueError(f"ring_ms must be an int >= 0, got {self.ring_ms!r}")

    def delay(self, attempt: int, rng: Callable[[], float]) -> float:
        """Seconds to wait before connect attempt ``attempt`` (1-based) of a reconnect."""
        d = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        return d * (1.0 - self.jitter * rng())


# --- bounded event queue -------------------------------------------------------------------------


_END: Final = object()


class EventQueue:
    """Bounded FIFO between the receive loop and the user, with a named overflow policy.

    Policies: ``block`` (the receive loop waits, so TCP back-pressure reaches the server),
    ``drop_partial`` (drop the oldest queued :class:`PartialResult`; block if there is none:
    finals are never dropped), ``error`` (raise :class:`BufferFullError`, which fails the stream).
    """

    def __init__(self, maxsize: int = 1024, overflow: str = "block") -> None:
        if type(maxsize) is not int or maxsize < 1:
            raise ValueError(f"maxsize must be an int >= 1, got {maxsize!r}")
        if overflow not in EVENT_OVERFLOW_POLICIES:
            raise ValueError(f"overflow must be one of {EVENT_OVERFLOW_POLICIES}, got {overflow!r}")
        self.maxsize = maxsize
        self.overflow = overflow
        self._q: deque[object] = deque()
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._closed = False
        self.dropped = 0
        self.overruns = 0

    def __len__(self) -> int:
        return len(self._q)

    async def put(self, item: object) -> None:
        """Queue ``item`` under the overflow policy."""
        while len(self._q) >= self.maxsize and not self._closed:
            self.overruns += 1
            if self.overflow == "error":
                raise BufferFullError(f"event queue full ({self.maxsize} events): iterate the stream "
                                      "faster or use overflow='block'/'drop_partial'")
            if self.overflow == "drop_partial":
                victim = next((e for e in self._q if isinstance(e, PartialResult)), None)
                if victim is not None:
                    self._q.remove(victim)
                    self.dropped += 1
                    break
            self._writable.clear()
            await self._writable.wait()
        self._q.append(item)
        self._readable.set()

    def close(self) -> None:
        """No more items; :meth:`get` returns the end marker once drained."""
        self._closed = True
        self._readable.set()
        self._writable.set()

    async def get(self) -> object:
        """Next item, or the module's end marker after :meth:`close`."""
        while not self._q:
            if self._closed:
                return _END
            self._readable.clear()
            await self._readable.wait()
        item = self._q.popleft()
        self._writable.set()
        return item

    def get_nowait(self) -> object | None:
        """Next item or None."""
        if not self._q:
            return None
        item = self._q.popleft()
        self._writable.set()
        return item


# --- replay ring and time map ------------------------------------------------------------------


class _Sent(NamedTuple):
    """Layout of one frame put on the wire (ring entries are indexed by the constants below).

    The runner stores PLAIN tuples of this layout, not ``_Sent`` instances: the GC untracks an
    exact tuple of atomic values at its first look, but never a tuple subclass (CPython only
    untracks ``PyTuple_CheckExact`` objects). As NamedTuples, a thousand streams' rings and time
    maps pushed ~20,000 tracked objects a second into the oldest generation, and the full
    collections this triggered (100-200 ms each at N=1000) were the pacing p99. ``_Ring`` and
    ``_TimeMap`` accept either form.
    """

    data: bytes
    stream_ms: float
    user_ms: float
    dur_ms: float
    keepalive: bool

    @property
    def user_dur(self) -> float:
        return 0.0 if self.keepalive else self.dur_ms


class _Mapped(NamedTuple):
    """Layout of a frame's place on the connection's clock (no audio bytes: the map only maps
    times). Stored as plain tuples, like :class:`_Sent`."""

    conn_ms: float
    stream_ms: float
    user_ms: float
    dur_ms: float
    keepalive: bool


# field indexes of the _Sent / _Mapped layouts
_DATA = _CONN = 0
_STREAM, _USER, _DUR, _KA = 1, 2, 3, 4


@dataclass
class StreamStats:
    """Counters of one stream (all connections)."""

    frames_sent: int = 0
    bytes_sent: int = 0
    audio_ms_sent: float = 0.0  #: unique audio (stream clock), replays excluded
    replayed_ms: float = 0.0
    lost_ms: float = 0.0
    reconnects: int = 0
    rollovers: int = 0
    keepalive_frames: int = 0
    gated_ms: float = 0.0
    duplicate_finals: int = 0
    stale_partials: int = 0
    dropped_after_end: int = 0
    connections: int = 0
    ring_dropped_ms: float = 0.0
    pacing: Any = field(default=None, repr=False)


class _TimeMap:
    """conn ms -> (user ms, stream ms) through the frames sent on one connection (bounded)."""

    def __init__(self, max_entries: int) -> None:
        self._e: deque[tuple[float, float, float, float, bool]] = deque()  # _Mapped layout
        self._max = max_entries
        self._anchor: tuple[float, float, float] | None = None  # conn, user, stream at the cut
        self.conn_pos = 0.0

    def add(self, s: tuple) -> None:
        """Map the next frame on this connection (``s`` in the :class:`_Sent` layout)."""
        dur = s[_DUR]
        self._e.append((self.conn_pos, s[_STREAM], s[_USER], dur, s[_KA]))
        self.conn_pos += dur
        if len(self._e) > self._max:
            self._cut()

    def _cut(self) -> None:
        conn, stream, user, dur, ka = self._e.popleft()
        self._anchor = (conn + dur, user + (0.0 if ka else dur), stream + dur)

    def trim(self, conn_end: float) -> None:
        while self._e and self._e[0][_CONN] + self._e[0][_DUR] <= conn_end:
            self._cut()

    def map(self, t: float) -> tuple[float, float]:
        for conn, stream, user, dur, ka in reversed(self._e):
            if conn <= t:
                d = min(t - conn, dur)
                extra = t - conn - d  # past the last frame: extrapolate 1:1
                return (user + (0.0 if ka else d) + extra, stream + d + extra)
        if self._anchor is not None:
            c, u, st = self._anchor
            return (u + (t - c), st + (t - c))
        if self._e:
            conn, stream, user = self._e[0][:3]
            return (user + (t - conn), stream + (t - conn))
        return (t, t)


class _Ring:
    """Frames sent since the end of the last final (bounded by ``cap_ms``; oldest dropped)."""

    def __init__(self, cap_ms: float) -> None:
        self.cap_ms = cap_ms
        self._e: deque[tuple] = deque()  # _Sent layout
        self.ms = 0.0
        self.dropped_ms = 0.0

    def add(self, s: tuple) -> None:
        """Keep frame ``s`` (:class:`_Sent` layout) for replay."""
        dur = s[_DUR]
        if self.cap_ms <= 0:
            self.dropped_ms += dur
            return
        self._e.append(s)
        self.ms += dur
        while self.ms > self.cap_ms + 1e-9 and self._e:
            old = self._e.popleft()[_DUR]
            self.ms -= old
            self.dropped_ms += old

    def trim(self, stream_end: float) -> None:
        while self._e and self._e[0][_STREAM] + self._e[0][_DUR] <= stream_end + 1e-6:
            self.ms -= self._e.popleft()[_DUR]

    def clear(self) -> None:
        self._e.clear()
        self.ms = 0.0

    def start_stream_ms(self, next_stream_ms: float) -> float:
        return self._e[0][_STREAM] if self._e else next_stream_ms

    def __iter__(self) -> Iterator[tuple]:
        return iter(list(self._e))

    def __len__(self) -> int:
        return len(self._e)


# --- shared pacing timer -----------------------------------------------------------------------


class PacingScheduler:
    """One timer per event loop for the paced sends of all streams on it.

    ``asyncio.sleep`` per frame costs every stream its own ``TimerHandle`` (a Python object,
    pushed on the loop's heap with Python-level comparisons) and, when N streams are due at
    different instants, one event-loop iteration (an ``epoll_wait``) per frame. Here the
    deadlines (absolute, from each stream's :class:`~sis_stream.client.pacing.Pacer`: the schedule
    stays drift-free) go into one heap of plain tuples, and a single loop timer is armed for the
    earliest one. When it fires, every waiter due within ``coalesce_s`` is woken in the same
    loop iteration, and the timer fires at most once per ``coalesce_s`` window (the next fire
    is at the earliest deadline minus ``coalesce_s``, but not before the end of the window just
    served), so 1000 streams with phases spread over a frame need at most one loop wake-up per
    ``coalesce_s`` instead of 1000 per frame. A waiter is never woken late by the coalescing,
    and at most ``coalesce_s`` early.

    Two kinds of waiters: :meth:`wait_until` (a future for a task to await) and :meth:`call_at`
    (a callback run from the timer, used by the stream runner's fast path, which sends its due
    frames right there without waking its task). Heap entries are ``(when, token)`` tuples of
    atomic values, which the GC stops tracking at once.

    The heap is bounded by the number of waiting streams (one entry per paced stream; a
    cancelled or disarmed waiter's entry leaves the heap when its deadline passes). Use
    :meth:`for_loop` to get the loop's shared instance.

    Parameters
    ----------
    loop : asyncio.AbstractEventLoop
    coalesce_s : float
        Wake-up window in seconds (0 <= coalesce_s <= 0.01).
    """

    _instances: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, PacingScheduler]] = \
        weakref.WeakKeyDictionary()

    def __init__(self, loop: asyncio.AbstractEventLoop, coalesce_s: float = 0.001) -> None:
        if isinstance(coalesce_s, bool) or not isinstance(coalesce_s, (int, float)) \
                or not 0 <= coalesce_s <= MAX_PACING_COALESCE_S:
            raise ValueError(f"coalesce_s must lie in [0, {MAX_PACING_COALESCE_S:g}] s, got {coalesce_s!r}")
        # weak: the per-loop cache is keyed weakly by the loop, so no strong path back to it
        self._loop_ref = weakref.ref(loop)
        self.coalesce_s = float(coalesce_s)
        self._heap: list[tuple[float, int]] = []  # (when, token)
        self._futs: dict[int, asyncio.Future[None]] = {}  # token -> waiter (wait_until)
        self._cbs: dict[int, Callable[[int], bool]] = {}  # token -> callback (call_at)
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        #: Loop timers fired and waiters woken so far (wakeups / fires = coalescing factor).
        self.fires = 0
        self.wakeups = 0
        self._firing = False

    @classmethod
    def for_loop(cls, loop: asyncio.AbstractEventLoop, coalesce_s: float = 0.001) -> PacingScheduler:
        """The shared scheduler of ``loop`` for this ``coalesce_s`` (created on first use)."""
        per_loop = cls._instances.get(loop)
        if per_loop is None:
            per_loop = cls._instances[loop] = {}
        sched = per_loop.get(coalesce_s)
        if sched is None:
            sched = per_loop[coalesce_s] = cls(loop, coalesce_s)
        return sched

    def __len__(self) -> int:
        return len(self._heap)

    def wait_until(self, when: float) -> asyncio.Future[None]:
        """A future resolved (with None) once ``loop.time() >= when - coalesce_s``.

        Await it; cancelling it (or the awaiting task) is safe.
        """
        loop = self._loop_ref()
        if loop is None:
            raise RuntimeError("PacingScheduler used after its event loop was garbage-collected")
        fut = loop.create_future()
        self._futs[self._push(loop, when)] = fut
        return fut

    def call_at(self, when: float, callback: Callable[[int], bool]) -> int:
        """Call ``callback(token)`` from the shared timer once ``loop.time() >= when - coalesce_s``.

        The callback-driven form of :meth:`wait_until`, for a sender that does its per-frame
        work synchronously (no task wake-up per frame). It runs inside the timer callback, so
        it must be short and should not raise (an exception goes to the loop's exception
        handler); it returns whether it did anything (counted in :attr:`wakeups`). There is
        no cancel: a caller that no longer wants the call ignores it, by comparing the token
        (the int returned here) with the one it armed last. A callback that calls
        :meth:`call_at` again for a time already due runs on the next timer, i.e. after the
        loop has polled its sockets.

        Returns
        -------
        int
            The token passed to ``callback``.
        """
        loop = self._loop_ref()
        if loop is None:
            raise RuntimeError("PacingScheduler used after its event loop was garbage-collected")
        token = self._push(loop, when)
        self._cbs[token] = callback
        return token

    def _push(self, loop: asyncio.AbstractEventLoop, when: float) -> int:
        # Heap entries are (float, int) tuples: the GC untracks them at its first look, so the
        # per-frame entries of a thousand streams never reach the older generations.
        token = next(self._seq)
        heapq.heappush(self._heap, (when, token))
        if when < self._timer_at and not self._firing:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = when
            self._timer = loop.call_at(when - self.coalesce_s, self._fire)
        return token

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = float("inf")
        loop = self._loop_ref()
        if loop is None:
            return
        self.fires += 1
        heap = self._heap
        now = loop.time()
        horizon = now + self.coalesce_s
        pop = heapq.heappop
        # Take every due entry first: a callback re-arming for a due time lands in the heap
        # and runs on the next timer, never in this pass (it cannot starve the loop).
        due = []
        while heap and heap[0][0] <= horizon:
            due.append(pop(heap)[1])
        self._firing = True
        woken = 0
        futs, cbs = self._futs, self._cbs
        try:
            for token in due:
                fut = futs.pop(token, None)
                if fut is not None:
                    if not fut.done():
                        fut.set_result(None)
                        woken += 1
                    continue
                try:
                    if cbs.pop(token)(token):
                        woken += 1
                except Exception as exc:  # noqa: BLE001 - one bad callback must not stop the timer
                    loop.call_exception_handler({"message": "PacingScheduler callback failed",
                                                 "exception": exc})
        finally:
            self._firing = False
            self.wakeups += woken
            if heap:
                # At most one fire per window: every deadline left is past `horizon`, so firing
                # again at `horizon` still wakes each before its deadline (never late, at most
                # coalesce_s early), and dense deadlines (1000 streams) share one loop wake-up
                # per window instead of one per loop iteration.
                self._timer_at = heap[0][0]
                self._timer = loop.call_at(max(self._timer_at - self.coalesce_s, horizon), self._fire)


class _FastWriter:
    """Writes binary (audio) frames of one aiohttp client websocket straight to its transport.

    aiohttp's ``send_bytes`` is a coroutine per frame (``send_bytes`` -> ``send_frame`` ->
    ``_write_websocket_frame`` -> ``transport.write``). For an uncompressed, masked client
    connection the frame is a 4-byte header (for 126..65535 bytes), a 4-byte mask and the
    masked payload (RFC 6455 §5.2-5.3); built here with aiohttp's own mask helper (C when
    built) and one ``transport.write``. The masks come from ``os.urandom`` (drawn 4 KiB at a
    time), as RFC 6455 §10.3 asks for an unpredictable mask.

    Only used when the connection is an aiohttp ``WebSocketWriter`` with masking on and no
    compression, and only while aiohttp's protocol is not pausing writes (flow control): then
    the caller falls back to ``await ws.send_bytes`` (which drains). Text frames (START, END)
    always go through aiohttp.
    """

    __slots__ = ("_pool", "_pos", "protocol", "transport", "writer")

    _H1 = struct.Struct("!BB").pack
    _H2 = struct.Struct("!BBH").pack
    _H3 = struct.Struct("!BBQ").pack
    _POOL = 4096

    def __init__(self, writer: Any) -> None:
        self.writer = writer
        self.transport = writer.transport
        self.protocol = writer.protocol
        self._pool = b""
        self._pos = self._POOL

    @classmethod
    def for_ws(cls, ws: Any) -> _FastWriter | None:
        """The fast writer of ``ws``, or None when its writer is not the known aiohttp kind."""
        if _ws_mask is None or _AiohttpWriter is None:
            return None
        w = getattr(ws, "_writer", None)
        if type(w) is not _AiohttpWriter or w.use_mask is not True or w.compress:
            return None
        if not isinstance(getattr(w, "transport", None), asyncio.WriteTransport) \
                or not hasattr(w.protocol, "writing_paused") or not hasattr(w, "_closing"):
            return None
        return cls(w)

    def ready(self) -> bool:
        """Whether :meth:`write` may be used now (writes are not paused by flow control)."""
        return not self.protocol.writing_paused

    def write(self, payload: bytes) -> bool:
        """Write one masked binary frame; False when the connection is closing (lost)."""
        if self.writer._closing or self.transport.is_closing():
            return False
        pos = self._pos
        if pos >= self._POOL:
            self._pool = os.urandom(self._POOL)
            pos = 0
        self._pos = pos + 4
        mask = self._pool[pos:pos + 4]
        n = len(payload)
        if n < 126:
            head = self._H1(0x82, 0x80 | n)
        elif n < 65536:
            head = self._H2(0x82, 0xFE, n)
        else:
            head = self._H3(0x82, 0xFF, n)
        body = bytearray(payload)
        _ws_mask(mask, body)
        self.transport.write(head + mask + body)
        return True


# --- the runner ----------------------------------------------------------------------------------


class FrameGate(Protocol):
    """Local VAD gating: ``process(frame, user_ms) -> [(frame, user_ms), ...]`` to send."""

    def process(self, frame: bytes, user_ms: float) -> list[tuple[bytes, float]]: ...


Connector = Callable[[], Awaitable[Any]]
_LOST, _DONE, _ROLLOVER = "lost", "done", "rollover"


class StreamRunner:
    """Drive one recognition stream over one or more websocket connections.

    Parameters
    ----------
    connect : async callable
        Returns an open aiohttp websocket (a new connection per call; auth is done there).
    config : StartConfig
    framer : Framer
        The bounded input buffer (the user feeds it through :meth:`feed`).
    pacer : Pacer or None
        None sends frames as fast as the socket takes them.
    gate : FrameGate or None
        Optional local VAD gating.
    reconnect : ReconnectPolicy
    keepalive_s : float or None
        Send a frame of silence (the shard minimum) when no frame went out for this long, so
        the 20 s idle rule never fires (default 10 s; None disables).
    rollover_after_s : float or None
        Planned rollover age of a connection (default 4 h 45 min).
    events : EventQueue
    clock, sleep : callables
        Monotonic seconds and ``await sleep(s)``; default the loop's.
    rng : callable
        Uniform [0, 1) for backoff jitter.
    options : TransportOptions
    """

    def __init__(
        self,
        *,
        connect: Connector,
        config: StartConfig,
        framer: Framer,
        pacer: Pacer | None,
        gate: FrameGate | None = None,
        reconnect: ReconnectPolicy = ReconnectPolicy(),
        keepalive_s: float | None = 10.0,
        rollover_after_s: float | None = DEFAULT_ROLLOVER_AFTER_S,
        events: EventQueue | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        options: TransportOptions = TransportOptions(),
    ) -> None:
        if keepalive_s is not None and not 0 < keepalive_s < 20:
            raise ValueError(f"keepalive_s must lie in (0, 20) s to beat the 20 s idle rule, got {keepalive_s!r}")
        if rollover_after_s is not None and not 0 < rollover_after_s < CONNECTION_LIMIT_S:
            raise ValueError(f"rollover_after_s must lie in (0, {CONNECTION_LIMIT_S:g}), got {rollover_after_s!r}")
        self.mode = config.mode
        self.config = config
        self.framer = framer
        self.pacer = pacer
        self.gate = gate
        self.reconnect = reconnect
        self.keepalive_s = keepalive_s
        self.rollover_after_s = rollover_after_s
        self.events = events if events is not None else EventQueue()
        self.options = options
        self._connect = connect
        self._loop = asyncio.get_running_loop()
        self._clock = clock if clock is not None else self._loop.time
        self._sleep = sleep
        self._rng = rng
        # The shared timer needs loop time and a real sleep; injected ones (tests) are used as is.
        self._sched: PacingScheduler | None = None
        if pacer is not None and sleep is asyncio.sleep and (clock is None or clock == self._loop.time):
            self._sched = PacingScheduler.for_loop(self._loop, options.pacing_coalesce_s)
        fmt = framer.audio_format
        self._bytes_per_ms = fmt.bytes_per_second / 1000.0
        lo = fmt.shard_limits[0]
        self._keepalive_frame = bytes([SILENCE_BYTE[fmt.encoding]]) * lo
        self.stats = StreamStats()
        if pacer is not None:
            self.stats.pacing = pacer.stats
        self._ring = _Ring(float(reconnect.ring_ms) if self._can_reconnect else 0.0)
        self._map_max = max(64, 4 * int(reconnect.ring_ms / max(framer.frame_ms, 1)) + 64)
        self._map = _TimeMap(self._map_max)
        self._stream_pos = 0.0  # stream ms of the next new frame
        self._user_pos = 0.0  # user ms of the next popped frame
        self._last_final_stream = 0.0
        self._last_final_user = 0.0
        self._last_sent_user_end: float | None = None
        # user intent and connection state
        self._wakeup = asyncio.Event()
        self._room = asyncio.Event()
        self._end_requested = False
        self._cancel = False
        self._end_sent = asyncio.Event()
        self._finished = asyncio.Event()
        self._end_or_finished = asyncio.Event()  # set with _end_sent and with _finished
        self._server_finished = False  # VOICE_END / EXCEEDED_* seen: stop sending audio
        self._session: ClientSession | None = None
        self._ws: Any = None
        self._recv_task: asyncio.Task | None = None
        self._task: asyncio.Task | None = None
        self._started: asyncio.Future | None = None
        self._ended: asyncio.Future | None = None
        self._lost = False
        self._internal_end = False
        self._conn_opened_at = 0.0
        self._silence_boundary = False
        self._first_connection = True
        self._pending_reconnect: tuple[int, float, float] | None = None
        self._closed_reported = False
        self._starved = True
        #: Set once the first START is answered, rejected, or the runner finished.
        self.ready = asyncio.Event()
        self._gated_frame = b""
        self._gated_user_ms = 0.0
        # fast path (see _pump_fast): direct frame writer of the connection, generation of the
        # armed scheduler callback (bumped to disarm), the future the send task waits on
        self._fastw: _FastWriter | None = None
        self._fast_token = -1  # token of the armed scheduler callback (-1: none)
        self._fast_cb: Callable[[int], bool] | None = None  # _fast_step while pumping
        self._fast_fut: asyncio.Future[bool] | None = None
        self.error: BaseException | None = None
        self.trace_id: str | None = None

    @property
    def _can_reconnect(self) -> bool:
        return self.mode is Mode.CONTINUE_STREAM and self.reconnect.enabled

    # -- user side ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the supervisor task (owned; cancelled by :meth:`aclose`)."""
        if self._task is not None:
            raise LocalProtocolError("StreamRunner.start() called twice")
        self._task = self._loop.create_task(self._run(), name="sis-stream-runner")

    async def feed(self, chunk: bytes) -> None:
        """Put session-format bytes into the framer under its overflow policy.

        ``block`` waits for room (back-pressure); ``drop_oldest`` and ``error`` return at once
        (the latter raises :class:`BufferFullError`).
        """
        if self._end_requested:
            raise LocalProtocolError("send() after end()")
        if self._server_finished or self._finished.is_set():
            # the server ended the session (VOICE_END, EXCEEDED_*, error): audio is pointless
            self.stats.dropped_after_end += 1
            return
        view = memoryview(chunk)
        while view.nbytes:
            taken = self.framer.feed(view)
            view = view[taken:]
            self._wakeup.set()
            if view.nbytes:
                if self._finished.is_set() or self._server_finished:
                    self.stats.dropped_after_end += 1
                    return
                self._room.clear()
                await self._room.wait()

    async def end(self, cancel: bool = False) -> None:
        """Flush the framer and send END (``cancel`` discards what the server has not decoded).

        Returns once END is on the wire (or the stream is already over); iterate the events to
        get the remaining finals and :class:`Ended`. ``end(cancel=True)`` while an earlier
        ``end()`` is still sending buffered audio turns it into END with cancel: the audio not
        yet sent is dropped.
        """
        if not self._end_requested:
            self._end_requested = True
            self._cancel = bool(cancel)
            self._wakeup.set()
        elif cancel and not self._cancel and not self._end_sent.is_set():
            # end(cancel=True) while an earlier end() still sends the buffered audio in real
            # time: drop what is left and send END with cancel instead (once END is on the
            # wire, it cannot be taken back: the call then just waits).
            self._cancel = True
            self._wakeup.set()
        # One event for "END sent or runner finished" (one future while waiting, instead of two
        # tasks and asyncio.wait: a thousand streams waiting here for minutes add less garbage
        # to the GC's oldest generation).
        await self._end_or_finished.wait()

    async def wait_finished(self) -> None:
        """Wait until the supervisor finished."""
        await self._finished.wait()

    async def aclose(self) -> None:
        """Cancel both tasks, close the websocket (close handshake) and end the event queue."""
        for t in (self._task, self._recv_task):
            if t is not None and not t.done():
                t.cancel()
        for t in (self._task, self._recv_task):
            if t is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        await self._close_ws()
        self._finished.set()
        self._end_or_finished.set()
        self.ready.set()
        self._room.set()
        self.events.close()

    # -- supervisor -------------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            attempt_info: tuple[int, float, float] | None = None
            while True:
                if attempt_info is None:
                    ws = await self._connect()
                else:
                    ws = await self._reconnect_ws()
                    if ws is None:
                        self.error = SisConnectionError(
                            f"connection lost and {self.reconnect.max_attempts} reconnect attempts failed")
                        await self.events.put(ConnectionClosed(None, True))
                        return
                outcome = await self._run_connection(ws)
                if outcome == _DONE or self.error is not None:
                    return
                if outcome == _ROLLOVER:
                    attempt_info = None
                    continue
                # lost mid-session
                if not self._can_reconnect or self._end_requested or self._end_sent.is_set() \
                        or self._server_finished:
                    if not self._closed_reported:
                        await self.events.put(ConnectionClosed(None, True))
                    return
                attempt_info = (0, 0.0, 0.0)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - surfaced to the user by the stream
            self.error = exc
            logger.debug("stream failed: %r", exc)
        finally:
            await self._close_ws()
            await self._stop_recv()
            self._finished.set()
            self._end_or_finished.set()
            self.ready.set()
            self._room.set()
            self.events.close()

    async def _reconnect_ws(self) -> Any:
        pol = self.reconnect
        for attempt in range(1, pol.max_attempts + 1):
            await self._sleep(pol.delay(attempt, self._rng))
            try:
                ws = await self._connect()
            except (SisConnectionError, OSError, SisServerError, SisLimitError) as exc:
                logger.info("reconnect attempt %d/%d failed: %s", attempt, pol.max_attempts, exc)
                continue
            replayed = self._ring.ms
            lost = max(0.0, self._ring.start_stream_ms(self._stream_pos) - self._last_final_stream)
            self.stats.reconnects += 1
            self.stats.replayed_ms += replayed
            self.stats.lost_ms += lost
            self._pending_reconnect = (attempt, replayed, lost)
            return ws
        return None

    async def _run_connection(self, ws: Any) -> str:
        self._ws = ws
        self._fastw = _FastWriter.for_ws(ws)
        self.stats.connections += 1
        self._session = ClientSession(self.mode)
        self._started = self._loop.create_future()
        self._ended = self._loop.create_future()
        self._lost = False
        self._internal_end = False
        self._map = _TimeMap(self._map_max)
        self._recv_task = self._loop.create_task(self._recv_loop(ws, self._session), name="sis-stream-recv")
        self._conn_opened_at = self._clock()
        if self.rollover_after_s is not None and self.mode is Mode.CONTINUE_STREAM:
            self._rollover_at: float | None = self._conn_opened_at + self.rollover_after_s
            self._rollover_force_at = self._conn_opened_at + min(self.rollover_after_s + ROLLOVER_GRACE_S,
                                                                 CONNECTION_LIMIT_S - 60.0)
        else:
            self._rollover_at = None
        try:
            await self._send_text(self._session.send(StartStream(self.config)))
            ok = await self._wait_future(self._started, self.options.start_timeout_s, "START")
            if not ok:
                return _LOST if self._lost else _DONE
            self._first_connection = False
            for s in self._ring:  # replay
                self._map.add(s)
                await self._send_audio(s[_DATA])
            self._starved = True  # the schedule (re)starts with the first frame on this connection
            return await self._send_loop()
        finally:
            await self._close_ws()
            await self._stop_recv()

    async def _wait_future(self, fut: asyncio.Future, timeout: float, what: str) -> bool:
        try:
            return bool(await asyncio.wait_for(asyncio.shield(fut), timeout))
        except asyncio.TimeoutError:
            raise SisConnectionError(f"no {what} answer within {timeout:g} s") from None

    async def _send_text(self, frames: list[str | bytes]) -> None:
        for f in frames:
            try:
                await self._ws.send_str(f)  # type: ignore[arg-type]
            except (ConnectionResetError, aiohttp.ClientError) as exc:
                self._mark_lost(exc)

    async def _send_audio(self, data: bytes) -> bool:
        """Send one audio frame now (no pacing, no bookkeeping); False if dropped or lost."""
        assert self._session is not None
        frame = self._session.send_audio(data)
        if frame is None:
            return False
        fw = self._fastw
        if fw is not None and fw.ready():
            if not fw.write(frame):
                self._mark_lost(None)
                return False
        else:
            try:
                await self._ws.send_bytes(frame)  # type: ignore[union-attr]
            except (ConnectionResetError, aiohttp.ClientError) as exc:
                self._mark_lost(exc)
                return False
        self.stats.frames_sent += 1
        self.stats.bytes_sent += len(frame)
        return True

    def _mark_lost(self, exc: BaseException | None) -> None:
        logger.debug("transport lost: %r", exc)
        self._lost = True
        self._wakeup.set()

    def _next_frames(self) -> list[tuple[bytes, float, bool]] | None:
        """Next frames to send as (data, user_ms, keepalive), [] if a frame was gated, None if
        the framer is empty."""
        popped = self._pop_frame()
        if popped is None:
            return None
        frame, user_ms, dur = popped
        if self.gate is None:
            return [(frame, user_ms, False)]
        out = self.gate.process(frame, user_ms)
        self._gated_frame, self._gated_user_ms = frame, user_ms
        if not out:
            self.stats.gated_ms += dur
            self._silence_boundary = True
        return [(f, u, False) for f, u in out]

    def _pop_frame(self) -> tuple[bytes, float, float] | None:
        """The next buffered frame as (data, user_ms, duration_ms), the user clock moved past it;
        None if the framer is empty."""
        frame = self.framer.pop()
        if frame is None:
            return None
        self._room.set()
        dur = len(frame) / self._bytes_per_ms
        user_ms = self._user_pos
        self._user_pos += dur
        return frame, user_ms, dur

    def _resume_pacing(self, now: float, user_ms: float, keepalive: bool) -> None:
        """Restart the schedule at `now` if the input ran dry (or VAD withheld audio) before
        this frame: audio that did not exist yet cannot be late, so no catch-up burst."""
        assert self.pacer is not None
        if self._starved or (not keepalive and self._last_sent_user_end is not None
                             and abs(user_ms - self._last_sent_user_end) > 1e-6):
            self.pacer.reanchor(now)
            self._starved = False

    def _after_send(self, ok: bool, now: float, user_ms: float, dur: float, keepalive: bool) -> None:
        """Pacing and position bookkeeping once a frame was written (`ok`) or not."""
        if ok and self.pacer is not None:
            self.pacer.sent(now)
        if not keepalive:
            self._last_sent_user_end = user_ms + dur
        self._last_send_at = now

    async def _send_one(self, data: bytes, user_ms: float, keepalive: bool) -> bool:
        if self.pacer is not None:
            self._resume_pacing(self._clock(), user_ms, keepalive)
            now = self._clock()
            d = self.pacer.delay(now)
            if d > 0:
                if self._sched is not None:
                    await self._sched.wait_until(now + d)
                else:
                    await self._sleep(d)
            if self._lost:
                return False
        dur = len(data) / self._bytes_per_ms
        self._record_frame(data, user_ms if not keepalive else self._user_pos, dur, keepalive)
        ok = await self._send_audio(data)
        self._after_send(ok, self._clock(), user_ms, dur, keepalive)
        return ok

    def _record_frame(self, data: bytes, user_ms: float, dur: float, keepalive: bool) -> None:
        """Replay ring, time map and counters for a frame about to be sent."""
        s = (data, self._stream_pos, user_ms, dur, keepalive)  # _Sent layout, a plain tuple
        self._stream_pos += dur
        self.stats.audio_ms_sent += dur
        self._ring.add(s)
        self.stats.ring_dropped_ms = self._ring.dropped_ms
        self._map.add(s)

    # -- fast path ---------------------------------------------------------------------------------
    #
    # The common case of a paced stream (shared timer, no VAD gate, a plain aiohttp connection
    # that is not pausing writes, whole frames buffered, nothing else to do) is run without
    # waking the send task per frame: the task arms a PacingScheduler callback and waits on one
    # future; the callback sends every frame that is due (the same bookkeeping as _send_one,
    # the frame written straight to the transport), re-arms itself for the next deadline and
    # hands back to the task (resolves the future) as soon as anything needs the general loop:
    # empty framer, lost/ended/error, END with cancel, rollover due, flow control. The task
    # then runs one iteration of the general loop, which deals with it, and re-enters.

    #: At most this many frames per callback (a catch-up burst then yields to the loop).
    _FAST_BATCH: Final = 8

    def _fast_possible(self) -> bool:
        return self._sched is not None and self.gate is None and self._fastw is not None

    async def _pump_fast(self) -> bool:
        """Run the fast path until it hands back; True when a frame was dropped or lost (the
        connection is over, as when _send_one returns False)."""
        fut: asyncio.Future[bool] = self._loop.create_future()
        self._fast_fut = fut
        self._fast_token = -1
        # one bound method per pump, not per frame (dropped afterwards: no runner <-> method cycle)
        self._fast_cb = self._fast_step
        self._fast_run()
        try:
            return await fut
        finally:
            self._fast_token = -1  # disarm a pending callback
            self._fast_fut = None
            self._fast_cb = None

    def _fast_step(self, token: int) -> bool:
        if token != self._fast_token:
            return False  # stale (disarmed)
        self._fast_token = -1
        self._fast_run()
        return True

    def _fast_run(self) -> None:
        try:
            self._fast_send()
        except BaseException as exc:  # noqa: BLE001 - raised in the send task, like _send_one
            self._fast_token = -1
            fut = self._fast_fut
            if fut is not None and not fut.done():
                fut.set_exception(exc)

    def _fast_send(self) -> None:
        pacer, sched, fw, framer, clock = self.pacer, self._sched, self._fastw, self.framer, self._clock
        cb = self._fast_cb
        assert pacer is not None and sched is not None and fw is not None and self._session is not None
        assert cb is not None
        ended, rollover_at = self._ended, self._rollover_at
        failed = False
        for _ in range(self._FAST_BATCH):
            now = clock()
            if self._lost or self.error is not None or self._server_finished \
                    or (self._end_requested and self._cancel) or (ended is not None and ended.done()) \
                    or (rollover_at is not None and now >= rollover_at) or not fw.ready() \
                    or not framer.frames_ready:  # empty: the general loop waits for input
                break
            self._resume_pacing(now, self._user_pos, False)
            d = pacer.delay(now)
            if d > sched.coalesce_s:
                self._fast_token = sched.call_at(now + d, cb)
                return
            popped = self._pop_frame()
            if popped is None:
                break
            data, user_ms, dur = popped
            self._silence_boundary = False
            self._record_frame(data, user_ms, dur, False)
            frame = self._session.send_audio(data)
            ok = frame is not None and fw.write(frame)
            if ok:
                self.stats.frames_sent += 1
                self.stats.bytes_sent += len(frame)  # type: ignore[arg-type]
            self._after_send(ok, clock(), user_ms, dur, False)
            if not ok:
                if frame is not None:
                    self._mark_lost(None)
                failed = True
                break
        else:  # batch limit: more frames are due; continue on the next timer
            self._fast_token = sched.call_at(clock(), cb)
            return
        fut = self._fast_fut
        if fut is not None and not fut.done():
            fut.set_result(failed)

    async def _send_loop(self) -> str:
        self._last_send_at = self._clock()
        fast_next = True
        while True:
            if self.error is not None:
                return _DONE
            if self._lost:
                return _LOST
            if self._ended is not None and self._ended.done():
                return _DONE
            if self._server_finished:
                return await self._finish(cancel=False)
            if self._rollover_at is not None and self._clock() >= self._rollover_at:
                if self._silence_boundary:
                    return await self._rollover(forced=False)
                if self._rollover_forced():
                    return await self._rollover(forced=True)
            if self._end_requested and self._cancel:
                return await self._finish(cancel=True)
            if fast_next and self._fast_possible():
                if await self._pump_fast():
                    return _LOST
                fast_next = False  # the next iteration runs the general loop once
                continue
            fast_next = True
            self._wakeup.clear()
            frames = self._next_frames()
            if frames == [] and self.keepalive_s is not None and \
                    self._clock() - self._last_send_at >= self.keepalive_s:
                frames = [(self._gated_frame, self._gated_user_ms, False)]  # beat the idle rule
                self.stats.keepalive_frames += 1
            if frames is None:
                if self._end_requested:
                    if not self._cancel:
                        for f in self.framer.flush():
                            for data, u, k in self._gate_tail(f):
                                if not await self._send_one(data, u, k):
                                    return _LOST
                    return await self._finish(cancel=self._cancel)
                await self._idle_wait()
                continue
            if frames:
                self._silence_boundary = False  # a final arriving while this frame waits sets it again
            for data, u, k in frames:
                if not await self._send_one(data, u, k):
                    return _LOST

    def _gate_tail(self, frame: bytes) -> list[tuple[bytes, float, bool]]:
        dur = len(frame) / self._bytes_per_ms
        u = self._user_pos
        self._user_pos += dur
        if self.gate is None:
            return [(frame, u, False)]
        return [(f, x, False) for f, x in self.gate.process(frame, u)]

    async def _idle_wait(self) -> None:
        self._starved = True
        timeout = None
        if self.keepalive_s is not None:
            timeout = self._last_send_at + self.keepalive_s - self._clock()
            if timeout <= 0:
                self.stats.keepalive_frames += 1
                await self._send_one(self._keepalive_frame, self._user_pos, True)
                return
        if self.rollover_after_s is not None:
            left = self._conn_opened_at + self.rollover_after_s - self._clock()
            timeout = left if timeout is None else min(timeout, left)
            self._silence_boundary = True  # nothing to send: a natural boundary
            if left <= 0:
                return
        try:
            await asyncio.wait_for(self._wakeup.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    def _rollover_due(self) -> bool:
        return self._rollover_at is not None and self._clock() >= self._rollover_at

    def _rollover_forced(self) -> bool:
        return self._rollover_at is not None and self._clock() >= self._rollover_force_at

    async def _rollover(self, forced: bool) -> str:
        self._internal_end = True
        outcome = await self._finish(cancel=False, internal=True)
        if outcome != _DONE:
            return outcome
        self._ring.clear()  # END(cancel=false) made the server decode everything sent
        self._last_final_stream = self._stream_pos
        self.stats.rollovers += 1
        await self.events.put(RolledOver(self._user_pos, forced, self.trace_id))
        return _ROLLOVER

    async def _finish(self, cancel: bool, internal: bool = False) -> str:
        assert self._session is not None and self._ended is not None
        await self._send_text(self._session.send(EndOfStream(cancel=cancel)))
        if not internal:
            self._end_sent.set()
            self._end_or_finished.set()
        if self._lost:
            return _LOST
        await self._wait_future(self._ended, self.options.end_timeout_s, "END")
        return _LOST if (self._lost and not self._ended.result()) else _DONE

    # -- receive loop ----------------------------------------------------------------------------

    async def _recv_loop(self, ws: Any, session: ClientSession) -> None:
        try:
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    session.receive(msg.data)
                elif msg.type is aiohttp.WSMsgType.BINARY:
                    session.receive(msg.data)  # raises RemoteProtocolError
                else:
                    break
                await self._dispatch(session)
                if session.state.name in ("CLOSED",):
                    break
        except (RemoteProtocolError, BufferFullError) as exc:
            self.error = exc
            self._resolve(self._started, False)
            self._resolve(self._ended, False)
            self._mark_lost(exc)  # the supervisor sees self.error and stops (never reconnects)
            return
        except (aiohttp.ClientError, ConnectionResetError) as exc:
            logger.debug("receive failed: %r", exc)
        session.receive(None)
        await self._dispatch(session)
        self._mark_lost(None)
        self._resolve(self._started, False)
        self._resolve(self._ended, False)

    @staticmethod
    def _resolve(fut: asyncio.Future | None, value: bool) -> None:
        if fut is not None and not fut.done():
            fut.set_result(value)

    async def _dispatch(self, session: ClientSession) -> None:
        for ev in session.events():
            out = self._map_event(ev)
            if out is not None:
                await self.events.put(out)

    def _map_event(self, ev: object) -> object | None:
        if isinstance(ev, Started):
            self.trace_id = ev.trace_id
            self._resolve(self._started, True)
            self.ready.set()
            if self._pending_reconnect is not None:
                a, rep, lost = self._pending_reconnect
                self._pending_reconnect = None
                return Reconnected(a, rep, lost, ev.trace_id)
            return ev if self.stats.connections == 1 else None
        if isinstance(ev, (PartialResult, FinalResult)):
            seg, stream_end = self._map_segment(ev.segment)
            if isinstance(ev, FinalResult):
                if stream_end <= self._last_final_stream + 0.5 and self.stats.connections > 1 \
                        and self._last_final_stream > 0:
                    self.stats.duplicate_finals += 1
                    return None
                self._last_final_stream = max(self._last_final_stream, stream_end)
                self._last_final_user = max(self._last_final_user, float(seg.end_time))
                self._ring.trim(stream_end)
                self._map.trim(ev.segment.end_time)
                self._silence_boundary = True
                return FinalResult(seg, ev.trace_id)
            if stream_end <= self._last_final_stream and self.stats.connections > 1:
                self.stats.stale_partials += 1
                return None
            return PartialResult(seg, ev.trace_id)
        if isinstance(ev, (VoiceStart, VoiceEnd, ExceededSilence, ExceededAudio)):
            ts = ev.timestamp
            if ts is not None:
                ts = round(self._map.map(ts)[0])
            if not isinstance(ev, VoiceStart):
                self._server_finished = True
                self._room.set()
                self._wakeup.set()
            return replace(ev, timestamp=ts)
        if isinstance(ev, Ended):
            self._resolve(self._ended, True)
            self._wakeup.set()
            if self._internal_end and ev.reason is EndReason.NORMAL:
                return None
            return ev
        if isinstance(ev, ServerError):
            if not ev.fatal and self._session is not None and self._session.state.name == "SERVER_ENDED":
                # START rejected: no END follows (§7.4)
                self._resolve(self._started, False)
                self._resolve(self._ended, True)
                self.ready.set()
            self._wakeup.set()
            return ev
        if isinstance(ev, ConnectionClosed):
            self._mark_lost(None)
            if ev.error_code is not None:  # FATAL_ERROR: report, never reconnect
                self._server_finished = True
                self._resolve(self._started, False)
                self._resolve(self._ended, True)
                self._closed_reported = True
                return ev
            if self._can_reconnect and ev.during_session and not self._end_sent.is_set() \
                    and not self._end_requested and not self._server_finished:
                return None  # the supervisor reconnects (or reports after the last attempt)
            if not ev.during_session:
                return None
            self._server_finished = True
            self._closed_reported = True
            return ev
        if isinstance(ev, OtherEvent):
            return ev
        return ev

    def _map_segment(self, seg: Segment) -> tuple[Segment, float]:
        start_u, _ = self._map.map(seg.start_time)
        end_u, end_s = self._map.map(seg.end_time)
        result = seg.result
        if result is not None and result.word_info:
            words = tuple(
                WordInfo(None if w.start_time is None else round(self._map.map(w.start_time)[0]),
                         None if w.end_time is None else round(self._map.map(w.end_time)[0]), w.word)
                for w in result.word_info)
            result = replace(result, word_info=words)
        return replace(seg, start_time=round(start_u), end_time=round(end_u), result=result), end_s

    # -- teardown ---------------------------------------------------------------------------------

    async def _stop_recv(self) -> None:
        t = self._recv_task
        self._recv_task = None
        if t is not None and t is not asyncio.current_task():
            if not t.done():
                # the websocket is closed by now, so the loop ends on its own; cancel if it hangs
                with contextlib.suppress(asyncio.TimeoutError, Exception):
                    await asyncio.wait_for(asyncio.shield(t), self.options.close_timeout_s)
            if not t.done():
                t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    async def _close_ws(self) -> None:
        ws = self._ws
        self._ws = None
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                await ws.close()
