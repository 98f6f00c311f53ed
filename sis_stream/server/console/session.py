"""Console login sessions: an HttpOnly, SameSite=Strict cookie the API and websocket handlers
accept beside AK/SK and ``X-Auth-Token``.

A login (``POST /console/api/login``, IAM user name, account and password from the credentials
file) creates a session: a random 256-bit id, kept in memory by :class:`ConsoleSessions` with the
user's :class:`~sis_stream.protocol.Principal` and an expiry. The cookie carries only that id:
no password, token or key ever reaches the browser's script, a URL or a log. Sessions end at
logout, at expiry (8 h by default) or when the server restarts.

The server's auth middleware calls :func:`cookie_principal` for a request that carries no
``Authorization`` and no ``X-Auth-Token`` header. CSRF protection, besides SameSite=Strict
(browsers do not send the cookie on cross-site requests, websocket upgrades included):

* a request that changes something (any method but GET/HEAD/OPTIONS) must carry the header
  ``X-Sis-Console: 1`` (a cross-origin page cannot add a custom header without a CORS preflight,
  which this server never grants) and an ``Origin`` equal to the server's own origin;
* a websocket upgrade, or any request whose ``Origin`` header is present, must come from the
  server's own origin (this stops cross-site websocket hijacking in browsers that do not
  apply SameSite to websockets).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from ...errors import AuthRejected
from ...protocol import Principal
from ...protocol.errors import APIG_AUTH_PREFIX

__all__ = [
    "CONSOLE_SESSIONS",
    "COOKIE_NAME",
    "CSRF_HEADER",
    "ConsoleSession",
    "ConsoleSessions",
    "cookie_principal",
    "own_origin",
]

logger = logging.getLogger(__name__)

#: The session cookie's name.
COOKIE_NAME: Final = "sis_console_session"
#: Header every state-changing console request carries (value ``1``).
CSRF_HEADER: Final = "X-Sis-Console"
#: Default session lifetime (seconds).
DEFAULT_TTL_S: Final = 8 * 3600.0
#: Default bound on live sessions (overflow policy ``drop_oldest``: the oldest login ends).
DEFAULT_MAX_SESSIONS: Final = 1024

_SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class ConsoleSession:
    """One login.

    Attributes
    ----------
    principal : Principal
        Who logged in (kind ``"console"``, the IAM user name, the user's project).
    expires_at : float
        On the store's clock.
    """

    principal: Principal
    expires_at: float


class ConsoleSessions:
    """The live console sessions, in memory, bounded.

    Parameters
    ----------
    ttl_s : float
        Lifetime of a session.
    max_sessions : int
        Live sessions kept; one more login ends the oldest (overflow policy ``drop_oldest``).
    clock : callable
        Seconds (default :func:`time.monotonic`).
    """

    def __init__(self, *, ttl_s: float = DEFAULT_TTL_S, max_sessions: int = DEFAULT_MAX_SESSIONS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not ttl_s > 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s!r}")
        if isinstance(max_sessions, bool) or not isinstance(max_sessions, int) or max_sessions < 1:
            raise ValueError(f"max_sessions must be an int >= 1, got {max_sessions!r}")
        self.ttl_s = float(ttl_s)
        self.max_sessions = max_sessions
        self._clock = clock
        self._sessions: OrderedDict[str, ConsoleSession] = OrderedDict()

    def __repr__(self) -> str:  # never the ids: they are credentials
        return f"ConsoleSessions({len(self._sessions)} live, ttl_s={self.ttl_s})"

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, principal: Principal) -> str:
        """Start a session; returns its id (the cookie value)."""
        self._expire()
        while len(self._sessions) >= self.max_sessions:
            self._sessions.popitem(last=False)
            logger.info("console session limit %d reached: the oldest session ended", self.max_sessions)
        sid = secrets.token_urlsafe(32)
        self._sessions[sid] = ConsoleSession(principal, self._clock() + self.ttl_s)
        return sid

    def get(self, sid: str) -> ConsoleSession | None:
        """The live session of `sid`, or None (unknown or expired)."""
        s = self._sessions.get(sid)
        if s is None:
            return None
        if self._clock() >= s.expires_at:
            del self._sessions[sid]
            return None
        return s

    def end(self, sid: str) -> bool:
        """End a session (logout); True if it existed."""
        return self._sessions.pop(sid, None) is not None

    def _expire(self) -> None:
        now = self._clock()
        for sid in [k for k, s in self._sessions.items() if now >= s.expires_at]:
            del self._sessions[sid]


#: ``app[CONSOLE_SESSIONS]``: set by the console's ``setup_console``; absent = no cookie logins.
CONSOLE_SESSIONS: Final = web.AppKey("sis_console_sessions", ConsoleSessions)


def own_origin(request: web.Request) -> str:
    """``scheme://host[:port]`` of the server as the request reached it."""
    return f"{request.scheme}://{request.host}"


def _has_explicit_credentials(request: web.Request) -> bool:
    return "Authorization" in request.headers or "X-Auth-Token" in request.headers


def cookie_principal(request: web.Request, project_id: str | None) -> Principal | None:
    """The principal of a request authenticated by the console cookie, for the auth middleware.

    Parameters
    ----------
    request : aiohttp.web.Request
    project_id : str, optional
        The ``{project_id}`` of the URL; a session of another project is refused.

    Returns
    -------
    Principal or None
        None when the request carries explicit credentials (``Authorization`` or
        ``X-Auth-Token``: they are checked as usual), carries no console cookie, or the console
        is not installed.

    Raises
    ------
    AuthRejected
        Unknown or expired session; a cross-origin request; a state-changing request without
        ``X-Sis-Console: 1``; a session of another project than the URL's (``SIS.0101``).
    """
    sessions = request.app.get(CONSOLE_SESSIONS)
    sid = request.cookies.get(COOKIE_NAME)
    if sessions is None or not sid or _has_explicit_credentials(request):
        return None
    session = sessions.get(sid)
    if session is None:
        raise AuthRejected(APIG_AUTH_PREFIX + "the console session has expired or ended: log in again",
                           reason="bad_session")
    is_ws = request.headers.get("Upgrade", "").lower() == "websocket"
    origin = request.headers.get("Origin")
    if origin is not None and origin != own_origin(request):
        raise AuthRejected(APIG_AUTH_PREFIX + f"console cookie sent from another origin {origin[:100]!r}; "
                           f"expected {own_origin(request)!r}", reason="cross_origin")
    if is_ws and origin is None:
        raise AuthRejected(APIG_AUTH_PREFIX + "a websocket upgrade with the console cookie needs an Origin header",
                           reason="cross_origin")
    unsafe = request.method not in _SAFE_METHODS and not is_ws
    if unsafe and (origin is None or request.headers.get(CSRF_HEADER) != "1"):
        raise AuthRejected(APIG_AUTH_PREFIX + f"a {request.method} with the console cookie needs the header "
                           f"{CSRF_HEADER}: 1 and the server's own Origin", reason="csrf")
    principal = session.principal
    if project_id is not None and project_id != principal.project_id:
        raise AuthRejected("console session verification failed: the user has no access to the project in the URL",
                           reason="wrong_project", error_code="SIS.0101")
    return principal
