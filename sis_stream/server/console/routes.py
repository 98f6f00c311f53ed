"""The console's routes and ``setup_console(app)``.

=================================  =======  ===========================================================
route                              auth     what
=================================  =======  ===========================================================
``GET /console``, ``/console/``    public   the experience center (``static/index.html``)
``GET /console/monitor``           public   the monitoring page (``static/monitor.html``)
``GET /console/static/{name}``     public   the pages' ES modules, CSS and worklet
``GET /console/api/session``       public   who is logged in, the project id, whether login is needed
``POST /console/api/login``        public   IAM user name, account and password -> session cookie
``POST /console/api/logout``       public   ends the session, clears the cookie
``POST /console/api/uploads``      any      stores an audio file for a transcriber job -> ``data_url``
``GET /console/api/uploads/{n}``   public   an upload, by its random 96-bit name (the job's fetcher)
``GET /console/api/monitor``       public   :func:`.monitor.snapshot` now + the ring of the last hour
=================================  =======  ===========================================================

"any" = the cookie, AK/SK or ``X-Auth-Token`` (through the server's middleware). The monitor data
is what the public ``/metrics`` already shows. ``GET /`` asked for HTML (``Accept: text/html``,
a browser) is redirected to ``/console/``; other clients keep the JSON answer.

The pages send every recognition, TTS and hot-word request to the real SIS API routes
(``/v1/{project_id}/...``, the RASR websockets), authenticated by the session cookie
(:mod:`.session`), so what the console shows is what an SDK gets. Console routes are not
counted in the metrics, except the login (interface ``console.login``), whose failures count as
auth rejections.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from ...errors import AuthRejected
from ...protocol import Principal
from ...protocol.errors import APIG_AUTH_PREFIX, reject
from ..auth import PRINCIPAL, mark_metrics_done, route
from ..intake import loads_json, read_body
from ..rest import FETCH_POLICY, JOBS, data_dir
from ..state import CREDENTIALS, SETTINGS
from .monitor import MONITOR, MonitorRing, snapshot
from .session import CONSOLE_SESSIONS, COOKIE_NAME, CSRF_HEADER, ConsoleSessions, own_origin

__all__ = ["MAX_UPLOADS", "STATIC_DIR", "console_redirect", "setup_console"]

logger = logging.getLogger(__name__)

#: Where the pages live (installed with the package).
STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
#: Uploaded files kept for transcriber jobs (overflow policy ``drop_oldest``: the oldest file is
#: deleted; a job that has not read it yet then ends in ERROR SIS.0609).
MAX_UPLOADS: Final = 32
#: Sub-folder of the data directory holding the uploads.
UPLOAD_DIR: Final = "console-uploads"
#: Project id shown in ``--no-auth`` mode when the credentials name none.
NO_AUTH_PROJECT: Final = "local"

_STATIC_NAME: Final = re.compile(r"^[a-z0-9][a-z0-9_-]*\.(js|css|html)$")
_CONTENT_TYPES: Final = {"js": "text/javascript", "css": "text/css", "html": "text/html"}
_UPLOAD_EXT: Final = re.compile(r"\.([A-Za-z0-9]{1,5})$")
_UPLOAD_NAME: Final = re.compile(r"^[0-9a-f]{24}\.[a-z0-9]{1,5}$")
#: Content-Security-Policy of every console page: nothing from outside the server.
CSP: Final = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
              "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
              "form-action 'self'; frame-ancestors 'none'")
_HEADERS: Final = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                   "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache",
                   "X-Frame-Options": "DENY"}


def _file_response(name: str) -> web.Response:
    m = _STATIC_NAME.match(name)
    path = STATIC_DIR / name
    if m is None or not path.is_file():
        raise web.HTTPNotFound(reason=f"no console file {name[:80]!r}")
    return web.Response(body=path.read_bytes(), content_type=_CONTENT_TYPES[m.group(1)], charset="utf-8",
                        headers=_HEADERS)


@route(interface="console.page", public=True)
async def index_page(request: web.Request) -> web.StreamResponse:
    """``/console/`` (``/console`` redirects here)."""
    mark_metrics_done(request)
    if request.path == "/console":
        raise web.HTTPFound("/console/")
    return _file_response("index.html")


@route(interface="console.page", public=True)
async def monitor_page(request: web.Request) -> web.Response:
    """``/console/monitor``."""
    mark_metrics_done(request)
    return _file_response("monitor.html")


@route(interface="console.page", public=True)
async def static_file(request: web.Request) -> web.Response:
    """One file of ``static/`` (names: lower-case letters, digits, ``_``, ``-``; .js/.css/.html)."""
    mark_metrics_done(request)
    return _file_response(request.match_info["name"])


def _default_project(app: web.Application) -> str:
    pids = sorted(app[CREDENTIALS].project_ids)
    return pids[0] if pids else NO_AUTH_PROJECT


@route(interface="console.session", public=True)
async def session_info(request: web.Request) -> web.Response:
    """``{"auth_required", "logged_in", "user", "project_id"}``."""
    mark_metrics_done(request)
    app = request.app
    if app[SETTINGS].no_auth:
        return web.json_response({"auth_required": False, "logged_in": True, "user": None,
                                  "project_id": _default_project(app)}, headers={"Cache-Control": "no-store"})
    sid = request.cookies.get(COOKIE_NAME)
    s = app[CONSOLE_SESSIONS].get(sid) if sid else None
    body: dict[str, Any] = {"auth_required": True, "logged_in": s is not None,
                            "user": s.principal.name if s else None,
                            "project_id": s.principal.project_id if s else None}
    return web.json_response(body, headers={"Cache-Control": "no-store"})


def _check_csrf(request: web.Request) -> None:
    origin = request.headers.get("Origin")
    if request.headers.get(CSRF_HEADER) != "1" or (origin is not None and origin != own_origin(request)):
        raise AuthRejected(APIG_AUTH_PREFIX + f"console requests need the header {CSRF_HEADER}: 1 and the "
                           "server's own Origin", reason="csrf", http_status=403, error_code="APIG.0302")


async def _json_object(request: web.Request) -> dict[str, Any]:
    body = loads_json(await read_body(request), "SIS.0032")  # size, rate, depth and value limits
    if not isinstance(body, dict):
        raise reject("SIS.0032", f"the body must be a JSON object, got {type(body).__name__}")
    return body


@route(interface="console.login", public=True)
async def login(request: web.Request) -> web.Response:
    """Check an IAM user's password (``{"domain", "name", "password"}``; an empty ``domain``
    means the account of the same name) and start a session (HttpOnly, SameSite=Strict cookie)."""
    _check_csrf(request)
    app = request.app
    body = await _json_object(request)
    fields = {}
    for key in ("name", "password", "domain"):
        v = body.get(key, "")
        if not isinstance(v, str):
            raise reject("SIS.0032", f"'{key}' must be a string, got {type(v).__name__}")
        fields[key] = v
    if not fields["name"] or not fields["password"]:
        raise reject("SIS.0012", "'name' and 'password' are required")
    domain = fields["domain"] or fields["name"]
    user = app[CREDENTIALS].user(fields["name"], domain)
    # Compare even for an unknown user so the timing does not tell which users exist.
    expected = user.password if user is not None else "\x00" * 16
    ok = hmac.compare_digest(expected.encode("utf-8"), fields["password"].encode("utf-8"))
    if user is None or not ok:
        logger.info("console login refused user=%s domain=%s", fields["name"][:64], domain[:64])
        raise AuthRejected(APIG_AUTH_PREFIX + "the username or password is wrong", reason="bad_credentials")
    sessions = app[CONSOLE_SESSIONS]
    sid = sessions.create(Principal("console", user.name, user.project_id))
    logger.info("console login user=%s project_id=%s", user.name, user.project_id)
    resp = web.json_response({"user": user.name, "project_id": user.project_id},
                             headers={"Cache-Control": "no-store"})
    resp.set_cookie(COOKIE_NAME, sid, httponly=True, samesite="Strict", path="/", secure=request.secure,
                    max_age=int(sessions.ttl_s))
    return resp


@route(interface="console.logout", public=True)
async def logout(request: web.Request) -> web.Response:
    """End the session of the cookie (if any) and clear the cookie."""
    mark_metrics_done(request)
    _check_csrf(request)
    sid = request.cookies.get(COOKIE_NAME)
    if sid:
        request.app[CONSOLE_SESSIONS].end(sid)
    resp = web.json_response({"logged_in": False})
    resp.del_cookie(COOKIE_NAME, path="/")
    return resp


def _upload_target(request: web.Request) -> tuple[Path, str]:
    """Where an upload goes and the ``data_url`` prefix the transcriber reads it from."""
    app = request.app
    policy = app.get(FETCH_POLICY)
    if policy is not None and policy.input_dir is not None:
        folder = policy.input_dir / UPLOAD_DIR
        return folder, folder.resolve().as_uri() + "/"
    host, port = request.url.host or "", request.url.port or (443 if request.secure else 80)
    if policy is not None and policy.host_allowed(host, port):
        return data_dir(app) / UPLOAD_DIR, f"{request.scheme}://{request.host}/console/api/uploads/"
    raise reject("SIS.0608", "file jobs from the console need a place the transcriber may read the upload "
                             "from: start the server with --fetch-dir DIR, or allow its own address "
                             f"(--fetch-allow {host}:{port})")


@route(interface="console.upload")
async def upload(request: web.Request) -> web.Response:
    """Keep the request body as a file and answer the ``data_url`` a transcriber job of this
    server can read it from (``X-Upload-Name`` gives the extension).

    With a local input directory (``--fetch-dir``) the file goes to its ``console-uploads/``
    folder and the URL is ``file://``; otherwise it goes to the data directory and the URL is
    this server's ``/console/api/uploads/<random name>`` (the transcriber must be allowed to
    fetch from the server's own address, as it is by default on loopback).
    """
    mark_metrics_done(request)
    app = request.app
    if JOBS not in app:
        raise reject("SIS.0032", "uploads need the server's REST routes (transcriber jobs), which are disabled")
    folder, prefix = _upload_target(request)
    data = await read_body(request)
    if not data:
        raise reject("SIS.0601", "the upload is empty: send the audio file as the request body")
    m = _UPLOAD_EXT.search(request.headers.get("X-Upload-Name", ""))
    ext = m.group(1).lower() if m else "bin"
    folder.mkdir(parents=True, exist_ok=True)
    old = sorted(folder.iterdir(), key=lambda p: p.stat().st_mtime)
    for p in old[: max(0, len(old) - MAX_UPLOADS + 1)]:
        p.unlink(missing_ok=True)
    name = f"{secrets.token_hex(12)}.{ext}"
    (folder / name).write_bytes(data)
    principal = request.get(PRINCIPAL)
    logger.info("console upload bytes=%d user=%s", len(data), getattr(principal, "name", "?"))
    return web.json_response({"data_url": prefix + name, "bytes": len(data)})


@route(interface="console.upload-read", public=True)
async def upload_file(request: web.Request) -> web.Response:
    """An uploaded file, by its random name (read by the transcriber's fetcher)."""
    mark_metrics_done(request)
    name = request.match_info["name"]
    if _UPLOAD_NAME.match(name) is None or JOBS not in request.app:
        raise web.HTTPNotFound(reason="no such upload")
    path = data_dir(request.app) / UPLOAD_DIR / name
    if not path.is_file():
        raise web.HTTPNotFound(reason="no such upload (uploads are kept for the last 32 files)")
    return web.Response(body=path.read_bytes(), content_type="application/octet-stream",
                        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})


@route(interface="console.monitor", public=True)
async def monitor_data(request: web.Request) -> web.Response:
    """``{"interval_s", "span_s", "now": snapshot, "samples": [snapshot, ...]}``."""
    mark_metrics_done(request)
    ring = request.app[MONITOR]
    body = {"interval_s": ring.interval_s, "span_s": ring.span_s, "now": snapshot(request.app),
            "samples": list(ring.samples)}
    return web.json_response(body, headers={"Cache-Control": "no-store"})


@web.middleware
async def console_redirect(request: web.Request, handler: Any) -> web.StreamResponse:
    """``GET /`` from a browser (``Accept`` names ``text/html``) -> 302 ``/console/``."""
    if request.method == "GET" and request.path == "/" and "text/html" in request.headers.get("Accept", ""):
        mark_metrics_done(request)
        raise web.HTTPFound("/console/")
    return await handler(request)


def setup_console(app: web.Application, *, sample_interval_s: float = 10.0, span_s: float = 3600.0) -> None:
    """Install the console: routes, the redirect of ``GET /`` for browsers, the session store
    ``app[CONSOLE_SESSIONS]`` (the auth middleware then accepts the cookie) and the monitor ring
    ``app[MONITOR]`` sampled from startup to cleanup.

    Parameters
    ----------
    app : aiohttp.web.Application
        Not started yet (its middleware list is still open).
    sample_interval_s, span_s : float
        The monitor ring's sampling interval and history.
    """
    app[CONSOLE_SESSIONS] = ConsoleSessions()
    app[MONITOR] = MonitorRing(app, interval_s=sample_interval_s, span_s=span_s)
    app.middlewares.append(console_redirect)
    r = app.router
    r.add_get("/console", index_page)
    r.add_get("/console/", index_page)
    r.add_get("/console/monitor", monitor_page)
    r.add_get("/console/static/{name}", static_file)
    r.add_get("/console/api/session", session_info)
    r.add_post("/console/api/login", login)
    r.add_post("/console/api/logout", logout)
    r.add_post("/console/api/uploads", upload)
    r.add_get("/console/api/uploads/{name}", upload_file)
    r.add_get("/console/api/monitor", monitor_data)
    app.on_startup.append(_on_startup)
    app.on_cleanup.append(_on_cleanup)


async def _on_startup(app: web.Application) -> None:
    await app[MONITOR].start()


async def _on_cleanup(app: web.Application) -> None:
    await app[MONITOR].stop()
