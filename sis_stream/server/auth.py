"""The server's request middleware: authentication, the metrics interface name, error bodies.

Every request passes :func:`sis_middleware`:

1. It names the request's Cloud Eye ``interface`` (the route's declared name, see :func:`route`,
   else ``"<METHOD> <canonical path>"``) and gives it a request id (``X-Request-Id`` answer header).
2. Unless the route is declared ``public``, it authenticates the request with the protocol
   core's :class:`~sis_stream.protocol.Authenticator` (AK/SK ``SDK-HMAC-SHA256`` signature or
   ``X-Auth-Token``; the websocket upgrade GET included) and stores the
   :class:`~sis_stream.protocol.Principal` in ``request["principal"]``. A failure is answered
   HTTP 401 with the API-gateway body ``{"error_code": "APIG.0301", "error_msg": ...}`` (a token
   of another project: 401 ``SIS.0101``). With ``no_auth`` every request gets an anonymous
   principal scoped to the URL's project. The credential headers are checked before any byte of
   the body is read (:meth:`~sis_stream.protocol.Authenticator.check_headers`); the body is read
   (:func:`.intake.read_body`: size cap, minimum rate) only to verify a signature that covers it.
   Unknown paths and methods skip authentication: 404/405 JSON.
3. It turns exceptions into SIS JSON answers: :class:`~sis_stream.errors.RequestRejected` ->
   its status and body; :class:`~sis_stream.errors.AuthRejected` -> 401 body; aiohttp HTTP
   errors -> a JSON body (404 ``APIG.0101``); after a websocket upgrade, an ``ERROR`` message
   and a close (:mod:`.guard`); a client that hung up -> 499, logged at INFO; a full disk ->
   503 ``SIS.0302``; anything else -> 500 ``SIS.0100`` (logged with the request id, never with
   credentials). A response to a request whose body was not read closes the connection.
4. It records the call in ``app[METRICS]`` (status, latency, project, ``request["audio_ms"]``),
   except for websocket responses (their handler reports per recognition session) and requests
   that set ``request[METRICS_DONE] = True``.

Declaring a route::

    @route(interface="asr.short-audio")            # authenticated, metrics under this name
    async def short_audio(request): ...

    @route(interface="iam.tokens", public=True)    # no credentials needed
    async def tokens(request): ...
"""

from __future__ import annotations

import logging
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from aiohttp import web

from ..errors import AuthRejected, RequestRejected
from ..protocol import Authenticator, Principal, error_body
from .guard import CLIENT_CLOSED, DISK_FULL_BODY, after_upgrade_error, client_gone, disk_full
from .intake import body_consumed, read_body
from .console.session import cookie_principal
from .state import AUTHENTICATOR, METRICS

__all__ = [
    "ANONYMOUS",
    "AUDIO_MS",
    "record_audio",
    "INTERFACE",
    "INTERFACE_ATTR",
    "METRICS_DONE",
    "PRINCIPAL",
    "PUBLIC_ATTR",
    "REQUEST_ID",
    "authenticate_request",
    "json_error",
    "mark_metrics_done",
    "route",
    "route_interface",
    "sis_middleware",
]

logger = logging.getLogger(__name__)

#: ``request[...]`` keys set by the middleware (plain strings: aiohttp requests are dict-like).
PRINCIPAL: Final = "principal"
INTERFACE: Final = "interface"
REQUEST_ID: Final = "request_id"
#: A handler sets ``request[AUDIO_MS]`` to the audio it processed (usage accounting).
AUDIO_MS: Final = "audio_ms"
#: A handler that reported metrics itself sets ``request[METRICS_DONE] = True``.
METRICS_DONE: Final = "metrics_done"
#: Handler attributes set by :func:`route`.
INTERFACE_ATTR: Final = "sis_interface"
PUBLIC_ATTR: Final = "sis_public"
#: Principal kind in ``no_auth`` mode.
ANONYMOUS: Final = "anonymous"

H = TypeVar("H", bound=Callable[..., Awaitable[web.StreamResponse]])


def route(*, interface: str | None = None, public: bool = False) -> Callable[[H], H]:
    """Declare a handler's metrics ``interface`` name and whether it needs credentials.

    Parameters
    ----------
    interface : str, optional
        The Cloud Eye ``interface`` label (default ``"<METHOD> <canonical path>"``).
    public : bool
        True for routes without authentication (``/``, ``/metrics``, ``/v3/auth/tokens``).
    """
    def deco(handler: H) -> H:
        if interface is not None:
            setattr(handler, INTERFACE_ATTR, interface)
        setattr(handler, PUBLIC_ATTR, bool(public))
        return handler
    return deco


def _put(request: web.Request, key: str, value: Any) -> None:
    # The documented string keys (request["principal"]); aiohttp nudges towards RequestKey once
    # per key with a warning, which we silence here: other modules read these plain names.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", web.NotAppKeyWarning)
        request[key] = value


def record_audio(request: web.Request, audio_ms: float) -> None:
    """Record the audio a handler processed, for the per-project usage accounting."""
    _put(request, AUDIO_MS, float(audio_ms))


def mark_metrics_done(request: web.Request) -> None:
    """Tell the middleware not to record this request in the metrics (the handler did, or it is
    the metrics/health endpoint itself)."""
    _put(request, METRICS_DONE, True)


def _route_handler(request: web.Request) -> Any:
    try:
        return request.match_info.route.handler
    except Exception:  # noqa: BLE001 - system routes (404/405) have odd handlers
        return None


def route_interface(request: web.Request) -> str:
    """The ``interface`` label of a request (declared name, else method and canonical path)."""
    handler = _route_handler(request)
    name = getattr(handler, INTERFACE_ATTR, None)
    if name:
        return str(name)
    resource = getattr(request.match_info.route, "resource", None)
    canonical = getattr(resource, "canonical", None) if resource is not None else None
    return f"{request.method} {canonical}" if canonical else "unmatched"


def json_error(status: int, body: dict[str, str], request_id: str | None = None) -> web.Response:
    """A JSON error answer carrying ``X-Request-Id`` (the v3 SDK reads it)."""
    headers = {"X-Request-Id": request_id} if request_id else None
    return web.json_response(body, status=status, headers=headers)


def _raw_headers(request: web.Request) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers]


async def authenticate_request(request: web.Request, authenticator: Authenticator | None) -> Principal:
    """Authenticate one request (``authenticator=None`` = no-auth mode: anonymous principal).

    Raises
    ------
    AuthRejected
        Missing or bad credentials, or credentials of another project than the URL's.
    """
    project_id = request.match_info.get("project_id")
    if authenticator is None:
        return Principal(ANONYMOUS, ANONYMOUS, project_id or "")
    # The browser console's session cookie (only when no Authorization / X-Auth-Token is sent).
    console = cookie_principal(request, project_id)
    if console is not None:
        return console
    # Nothing is read before the credential headers pass: a request without (valid) credentials
    # is answered from its headers alone; a token needs no body; only an AK/SK signature that
    # covers the body makes us read it (under the size and transfer-rate limits of read_body).
    pending = authenticator.check_headers(_raw_headers(request), project_id=project_id)
    if isinstance(pending, Principal):
        return pending
    body = await read_body(request) if pending.needs_body else b""
    return authenticator.verify_body(pending, request.method, request.raw_path, body)


def _http_error_body(exc: web.HTTPException) -> dict[str, str]:
    if exc.status == 404:
        return error_body("APIG.0101")
    if exc.status == 413:
        return {"error_code": "SIS.0604", "error_msg": "the request body is too large"}
    if exc.status == 405:
        return {"error_code": "APIG.0101", "error_msg": f"method {exc.reason}: the API does not support it"}
    code = "SIS.0100" if exc.status >= 500 else "SIS.0032"
    return {"error_code": code, "error_msg": exc.reason or "request failed"}


@web.middleware
async def sis_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
    """The middleware described in the module docstring (install it first)."""
    app = request.app
    t0 = time.perf_counter()
    rid = request.headers.get("X-Request-Id") or uuid.uuid4().hex
    _put(request, REQUEST_ID, rid)
    iface = route_interface(request)
    _put(request, INTERFACE, iface)
    metrics = app[METRICS]
    # Unknown paths and methods (aiohttp's system routes) are answered 404/405 without looking
    # at credentials: they do nothing, and a 401 would hide the real mistake.
    public = (bool(getattr(_route_handler(request), PUBLIC_ATTR, False))
              or getattr(request.match_info, "http_exception", None) is not None)
    project_id = request.match_info.get("project_id")
    resp: web.StreamResponse | None = None
    try:
        if not public:
            principal = await authenticate_request(request, app[AUTHENTICATOR])
            _put(request, PRINCIPAL, principal)
            project_id = principal.project_id or project_id
        resp = await handler(request)
    except AuthRejected as exc:
        metrics.rejected("auth")
        logger.info("auth rejected request_id=%s interface=%s reason=%s", rid, iface, exc.reason)
        resp = json_error(exc.http_status, exc.body(), rid)
    except RequestRejected as exc:
        resp = await after_upgrade_error(request, exc, rid) or json_error(exc.http_status, exc.body(), rid)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        resp = json_error(exc.status, _http_error_body(exc), rid)
    except Exception as exc:
        resp = await after_upgrade_error(request, exc, rid)
        if resp is not None:
            pass
        elif client_gone(request, exc):
            logger.info("client closed the connection request_id=%s interface=%s (%s)", rid, iface,
                        type(exc).__name__)
            resp = json_error(CLIENT_CLOSED, {"error_code": "SIS.0032",
                                              "error_msg": "the client closed the connection"}, rid)
        elif (full := disk_full(exc, request)) is not None:
            logger.error("data directory full request_id=%s interface=%s directory=%s: %s", rid, iface,
                         full, exc)
            resp = json_error(503, DISK_FULL_BODY, rid)
        else:
            logger.exception("internal error request_id=%s interface=%s", rid, iface)
            resp = json_error(500, error_body("SIS.0100"), rid)
    if not resp.prepared and not body_consumed(request):
        # An unread body (rejected before it was read): close instead of draining it.
        resp.force_close()
    if not isinstance(resp, web.WebSocketResponse) and not request.get(METRICS_DONE):
        latency_ms = (time.perf_counter() - t0) * 1000.0
        if not resp.prepared:
            resp.headers.setdefault("X-Request-Id", rid)
        metrics.observe(iface, resp.status, latency_ms, project_id, float(request.get(AUDIO_MS, 0.0)))
    return resp
