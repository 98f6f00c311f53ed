"""What the middleware does with failures that are not a handler's answer.

* **After a websocket upgrade** no HTTP response can be written any more. An exception escaping
  a websocket handler becomes a SIS ``ERROR`` message on the socket and a close: code 1008 for
  a client mistake (a :class:`~sis_stream.errors.RequestRejected`, JSON nested too deeply) with
  no traceback logged, 1011 for an internal error (logged with its traceback).
  :func:`track_websocket` (an ``on_response_prepare`` signal handler installed by the
  assembler) remembers the websocket of a request for this.
* **Client hang-ups** (the connection closed mid-request) are not server errors: status 499
  (:data:`CLIENT_CLOSED`) in the metrics, one INFO log line.
* **A full disk** (``ENOSPC``/``EDQUOT``, SQLite's "database or disk is full") is HTTP 503
  ``SIS.0302`` "the server cannot store data ...", and an ERROR log line naming the directory;
  everything that does not write keeps working.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import sqlite3
import warnings
from typing import Final

from aiohttp import web

from ..errors import RequestRejected
from .intake import ClientGone

__all__ = [
    "CLIENT_CLOSED",
    "DISK_FULL_BODY",
    "WEBSOCKET",
    "after_upgrade_error",
    "client_gone",
    "disk_full",
    "track_websocket",
]

logger = logging.getLogger(__name__)

#: Status recorded for a request whose client closed the connection (nginx's convention).
CLIENT_CLOSED: Final = 499
#: Answer body when the data directory is full (HTTP 503).
DISK_FULL_BODY: Final = {"error_code": "SIS.0302",
                         "error_msg": "internal service error: the server cannot store data right now (its data "
                                      "directory is full); try again later"}
#: ``request[WEBSOCKET]``: the request's prepared websocket (set by :func:`track_websocket`).
WEBSOCKET: Final = "sis_websocket"
_DISK_ERRNOS: Final = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})


async def track_websocket(request: web.Request, response: web.StreamResponse) -> None:
    """``app.on_response_prepare`` handler: remember a request's websocket response."""
    if isinstance(response, web.WebSocketResponse):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", web.NotAppKeyWarning)
            request[WEBSOCKET] = response


def client_gone(request: web.Request, exc: BaseException) -> bool:
    """True when `exc` comes from the client closing the connection."""
    if isinstance(exc, (ClientGone, ConnectionResetError, BrokenPipeError)):
        return True
    transport = request.transport
    return transport is None or transport.is_closing()


def disk_full(exc: BaseException, request: web.Request | None = None) -> str | None:
    """The directory that is full when `exc` means "no space left", else None."""
    full = False
    path: str | None = None
    if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
        full = True
        path = exc.filename if isinstance(exc.filename, str) else None
    elif isinstance(exc, sqlite3.OperationalError) and "full" in str(exc).lower():
        full = True
    if not full:
        cause = exc.__cause__ or exc.__context__
        return disk_full(cause, request) if cause is not None and cause is not exc else None
    if path is not None:
        return os.path.dirname(os.path.abspath(path))
    return _data_dir(request) or "(unknown directory)"


def _data_dir(request: web.Request | None) -> str | None:
    if request is None:
        return None
    from .rest import data_dir  # the REST data directory, when the REST routes are installed

    with contextlib.suppress(Exception):
        return str(data_dir(request.app))
    from .state import SETTINGS

    settings = request.app.get(SETTINGS)
    d = getattr(settings, "data_dir", None)
    return str(d) if d is not None else None


def _client_mistake(exc: BaseException) -> RequestRejected | None:
    if isinstance(exc, RequestRejected):
        return exc
    if isinstance(exc, RecursionError):
        return RequestRejected("SIS.0032", "the message is nested too deeply")
    return None


async def after_upgrade_error(request: web.Request, exc: BaseException, request_id: str
                              ) -> web.WebSocketResponse | None:
    """Handle `exc` raised after the request's websocket upgrade; None if there was none.

    A client mistake is answered ``ERROR`` (its code) and close 1008; anything else is logged
    with its traceback and answered ``ERROR SIS.0100`` and close 1011.
    """
    ws = request.get(WEBSOCKET)
    if not isinstance(ws, web.WebSocketResponse) or not ws.prepared:
        return None
    mistake = _client_mistake(exc)
    if mistake is not None:
        logger.info("websocket closed after a client error request_id=%s: %s %s", request_id,
                    mistake.error_code, mistake.error_msg)
        code, msg, close = mistake.error_code, mistake.error_msg, 1008
    elif client_gone(request, exc):
        logger.info("websocket client went away request_id=%s (%s)", request_id, type(exc).__name__)
        return ws
    else:
        logger.error("internal error after the websocket upgrade request_id=%s", request_id, exc_info=exc)
        code, msg, close = "SIS.0100", "internal error", 1011
    if not ws.closed:
        with contextlib.suppress(Exception):
            await ws.send_str(json.dumps({"resp_type": "ERROR", "trace_id": request_id, "error_code": code,
                                          "error_msg": msg}, ensure_ascii=False))
        with contextlib.suppress(Exception):
            await ws.close(code=close)
    return ws
