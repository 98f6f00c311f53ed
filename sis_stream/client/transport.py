"""Connecting to RASR: the websocket URL, the ``Host`` header, :func:`open_websocket`, and the
connection settings a user passes (:class:`TransportOptions`, :class:`ReconnectPolicy`).

The pump that runs over these connections is :mod:`.runner` (see its theory of operation).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from yarl import URL

from ..errors import SisConnectionError
from ..protocol import Mode, api_error
from .scheduler import MAX_PACING_COALESCE_S

__all__ = [
    "CONNECTION_LIMIT_S",
    "DEFAULT_ROLLOVER_AFTER_S",
    "ReconnectPolicy",
    "TransportOptions",
    "host_header",
    "open_websocket",
    "upgrade_trace_config",
    "ws_url",
]

#: The server drops a websocket connection after 5 hours (§1.3).
CONNECTION_LIMIT_S: Final = 5 * 3600.0
#: Planned rollover starts this long after the connection opened (15 min before the limit).
DEFAULT_ROLLOVER_AFTER_S: Final = CONNECTION_LIMIT_S - 900.0
_DEFAULT_PORTS: Final = {"ws": 80, "http": 80, "wss": 443, "https": 443}
#: Most of a rejected upgrade's body that is read (the SIS answers are a few hundred bytes).
_MAX_REJECT_BODY: Final = 64 * 1024
#: Where the trace hook puts the body of a rejected upgrade for :func:`open_websocket`.
_REJECT_BODY: contextvars.ContextVar[list[bytes] | None] = contextvars.ContextVar(
    "sis_stream_reject_body", default=None)


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


async def _keep_reject_body(_session: Any, _ctx: Any, params: Any) -> None:
    # aiohttp's ws_connect raises WSServerHandshakeError without the body of a non-101 answer,
    # which is where SIS says which credential failed; read it here, before ws_connect checks
    # the status. Only for calls of open_websocket (the context variable is set there).
    sink = _REJECT_BODY.get()
    resp = params.response
    if sink is None or resp.status == 101 or resp.status < 400:
        return
    try:
        got = 0
        while got < _MAX_REJECT_BODY:
            chunk = await asyncio.wait_for(resp.content.read(_MAX_REJECT_BODY - got), 5.0)
            if not chunk:
                break
            sink.append(chunk)
            got += len(chunk)
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError, ValueError):
        pass  # the status alone is reported then


def upgrade_trace_config() -> aiohttp.TraceConfig:
    """An aiohttp trace config that lets :func:`open_websocket` report the server's own reason
    (``error_code`` / ``error_msg`` of the body) when the websocket upgrade is refused. The
    sessions :class:`~sis_stream.client.rasr.RasrClient` creates have it; add it to your own
    ``aiohttp.ClientSession(trace_configs=[...])`` when you pass one in."""
    tc = aiohttp.TraceConfig()
    tc.on_request_end.append(_keep_reject_body)
    return tc


#: What to do about the usual upgrade rejections (matched in the server's ``error_msg``).
_AUTH_HINTS: Final = (
    ("signature expired", ("this machine's clock differs from the server's by more than 15 "
                           "minutes; fix the clock (X-Sdk-Date is signed)")),
    ("verify aksk signature fail", ("check that the SK is this AK's secret: an unknown AK and a "
                                    "wrong SK get the same answer")),
    ("no access to the project", "check the project id: it must be the project of the AK or token"),
    ("not scoped to the project", "check the project id: it must be the token's project"),
    ("token expires", "the token has expired: get a new one"),
    ("decrypt token fail", "the token is not one this server issued, or is damaged: get a new one"),
    ("x-auth-token not found", "no credentials were sent: give AK/SK or a token"),
)


def _hint(msg: str) -> str:
    for needle, hint in _AUTH_HINTS:
        if needle in msg:
            return f"; {hint}"
    return ""


def _reject_reason(body: bytes) -> tuple[str | None, str | None]:
    try:
        doc = json.loads(body.decode("utf-8", "replace"))
    except ValueError:
        return None, None
    if not isinstance(doc, dict):
        return None, None
    code, msg = doc.get("error_code"), doc.get("error_msg")
    return (code if isinstance(code, str) and code else None,
            msg if isinstance(msg, str) and msg else None)


async def open_websocket(
    http: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    options: TransportOptions,
) -> aiohttp.ClientWebSocketResponse:
    """``ws_connect`` with our options; errors mapped to the sis_stream hierarchy.

    A refused upgrade is reported with the server's ``error_code`` and ``error_msg`` (which
    credential failed: wrong SK, unknown AK, clock skew, wrong project, bad or expired token)
    when the session has :func:`upgrade_trace_config`; else with the HTTP status alone.

    Raises
    ------
    SisAuthError
        The upgrade was answered 401/403 (``APIG.0301`` unless the body names another code).
    SisApiError
        Any other non-101 answer (typed by status).
    SisConnectionError
        Network failure or timeout (``raise ... from exc``).
    """
    sink: list[bytes] = []
    token = _REJECT_BODY.set(sink)
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
        code, msg = _reject_reason(b"".join(sink))
        if code is None:
            code = "APIG.0301" if exc.status in (401, 403) else f"HTTP.{exc.status}"
        where = f"websocket upgrade rejected with HTTP {exc.status}"
        text = f"{msg} ({where}{_hint(msg)})" if msg else f"{where}: {exc.message}"
        raise api_error(code, text, http_status=exc.status) from None
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
        raise SisConnectionError(f"websocket connect to {URL(url).with_query(None)} failed: "
                                 f"{type(exc).__name__}: {exc}") from exc
    finally:
        _REJECT_BODY.reset(token)


# --- reconnect policy --------------------------------------------------------------------------


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
