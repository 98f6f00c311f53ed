"""Reading client input safely: request bodies (size cap, minimum transfer rate) and strict JSON.

Request bodies are read lazily by aiohttp; nothing in the server reads one before the request's
credentials were checked (:mod:`.auth`). :func:`read_body` is the only body reader: it refuses a
``Content-Length`` over the limit before reading anything, stops at the limit while reading, and
drops a client that sends slower than a minimum rate (``min_body_rate_bps`` after a grace
period) or pauses longer than ``body_idle_timeout_s``: HTTP 408 ``SIS.0032``, connection closed.
A client that hangs up mid-body raises :class:`ClientGone` (counted as 499, logged at INFO).

:func:`loads_json` parses client JSON strictly: no ``NaN``/``Infinity``, no lone surrogates
(``"\\ud800"``), nesting at most :data:`MAX_JSON_DEPTH` deep; every violation is a
:class:`~sis_stream.errors.RequestRejected` with the route's code, never an internal error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from typing import Any, Final

from aiohttp import web

from ..errors import RequestRejected
from ..protocol.errors import reject

__all__ = [
    "BODY",
    "DEFAULT_BODY_GRACE_S",
    "DEFAULT_BODY_IDLE_S",
    "DEFAULT_MIN_BODY_RATE_BPS",
    "MAX_JSON_DEPTH",
    "ClientGone",
    "body_consumed",
    "check_json_value",
    "loads_json",
    "read_body",
]

logger = logging.getLogger(__name__)

#: ``request[BODY]``: the body once read (the middleware reads it to verify an AK/SK signature).
BODY: Final = "sis_body"
#: Minimum transfer rate of a request body after the grace period (bytes per second).
DEFAULT_MIN_BODY_RATE_BPS: Final = 16 * 1024
#: Longest pause between two pieces of a request body.
DEFAULT_BODY_IDLE_S: Final = 10.0
#: Time a body may take before the minimum rate applies.
DEFAULT_BODY_GRACE_S: Final = 5.0
#: Deepest JSON nesting accepted (SIS bodies are at most 4 levels deep).
MAX_JSON_DEPTH: Final = 32


class ClientGone(Exception):
    """The client closed the connection before its request was read (not a server error)."""


def _store(request: web.Request, body: bytes) -> bytes:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", web.NotAppKeyWarning)
        request[BODY] = body
    # aiohttp caches the body of request.read() in this attribute: fill it, so a handler that
    # calls request.read() after the middleware read the body gets the same bytes, not b"".
    if hasattr(request, "_read_bytes") and request._read_bytes is None:
        request._read_bytes = body
    return body


def body_consumed(request: web.Request) -> bool:
    """True when the request has no body or it was read to its end."""
    if not request.can_read_body or request.get(BODY) is not None:
        return True
    return request.content.is_eof()


def _settings(request: web.Request) -> tuple[int, float, float, float]:
    from .state import SETTINGS  # the settings are optional (route modules tested alone)

    s = request.app.get(SETTINGS)
    return (int(getattr(s, "max_body_bytes", 16 * 1024 * 1024)),
            float(getattr(s, "min_body_rate_bps", DEFAULT_MIN_BODY_RATE_BPS)),
            float(getattr(s, "body_idle_timeout_s", DEFAULT_BODY_IDLE_S)),
            float(getattr(s, "body_grace_s", DEFAULT_BODY_GRACE_S)))


def _too_slow(got: int, elapsed: float, rate: float, idle: bool) -> RequestRejected:
    why = "no data for too long" if idle else f"slower than {rate:.0f} bytes/s"
    return RequestRejected("SIS.0032", f"the request body arrived too slowly ({why}: {got} bytes in "
                                       f"{elapsed:.1f} s); send the body at once", http_status=408)


async def read_body(request: web.Request) -> bytes:
    """The request body, read under the server's limits (cached: later calls return it).

    Raises
    ------
    aiohttp.web.HTTPRequestEntityTooLarge
        Over ``max_body_bytes`` (answered 413 ``SIS.0604``).
    RequestRejected
        408 ``SIS.0032`` when the body arrives slower than the minimum rate or stalls.
    ClientGone
        The client closed the connection mid-body.
    """
    cached = request.get(BODY)
    if cached is not None:
        return cached
    if not request.can_read_body:
        return _store(request, b"")
    limit, rate, idle_s, grace_s = _settings(request)
    declared = request.content_length
    if declared is not None and declared > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=declared)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    buf = bytearray()
    while True:
        now = loop.time()
        # Minimum rate: by now at least (elapsed - grace) * rate bytes must have arrived; the
        # next piece must come before that bound (and before the idle timeout) is crossed.
        rate_deadline = t0 + grace_s + (len(buf) + 1) / rate
        timeout = min(idle_s, rate_deadline - now)
        if timeout <= 0:
            raise _too_slow(len(buf), now - t0, rate, False)
        try:
            chunk = await asyncio.wait_for(request.content.readany(), timeout)
        except asyncio.TimeoutError:
            raise _too_slow(len(buf), loop.time() - t0, rate, timeout >= idle_s) from None
        except (ConnectionError, EOFError) as exc:
            raise ClientGone(f"{type(exc).__name__}: {exc}") from None
        except Exception as exc:  # aiohttp's payload errors (content length short of its header)
            if _is_payload_error(exc):
                raise ClientGone(f"{type(exc).__name__}: {exc}") from None
            raise
        if not chunk:
            break
        buf += chunk
        if len(buf) > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(buf))
    return _store(request, bytes(buf))


def _is_payload_error(exc: BaseException) -> bool:
    from aiohttp import http_exceptions
    from aiohttp.client_exceptions import ClientPayloadError
    from aiohttp.web_protocol import RequestPayloadError

    return isinstance(exc, (RequestPayloadError, ClientPayloadError, http_exceptions.HttpProcessingError))


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def check_json_value(value: Any, code: str, depth: int = 0) -> None:
    """Reject what :func:`json.loads` lets through but SIS bodies never contain: nesting deeper
    than :data:`MAX_JSON_DEPTH`, non-finite numbers, strings with lone surrogates.

    Raises
    ------
    RequestRejected
        With `code` (the route's malformed-body code).
    """
    if depth > MAX_JSON_DEPTH:
        raise reject(code, f"the JSON is nested too deeply: at most {MAX_JSON_DEPTH} levels")
    if isinstance(value, str):
        _check_str(value, code)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise reject(code, f"the JSON contains a non-finite number ({value!r})")
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_str(k, code)
            check_json_value(v, code, depth + 1)
    elif isinstance(value, list):
        for v in value:
            check_json_value(v, code, depth + 1)


def _check_str(s: str, code: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise reject(code, "the JSON contains a string that is not valid Unicode (a lone surrogate "
                           "\\ud800-\\udfff escape)") from None


def loads_json(raw: bytes | str, code: str = "SIS.0032") -> Any:
    """Parse client JSON strictly (see the module docstring).

    Raises
    ------
    RequestRejected
        `code`: not JSON, not UTF-8, ``NaN``/``Infinity``, nested too deeply, lone surrogates.
    """
    depth = _max_depth(raw)
    if depth > MAX_JSON_DEPTH:
        raise reject(code, f"the JSON is nested too deeply: at most {MAX_JSON_DEPTH} levels")
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except RecursionError:
        raise reject(code, f"the JSON is nested too deeply: at most {MAX_JSON_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise reject(code, f"the request body is not valid JSON: {exc}") from None
    check_json_value(value, code)
    return value


def _max_depth(raw: bytes | str) -> int:
    """Bracket depth outside strings (cheap pre-check, so a 20,000-deep array never reaches the
    recursive parser)."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
    if data.count(b"[") + data.count(b"{") <= MAX_JSON_DEPTH:
        return 0
    depth = best = 0
    in_str = esc = False
    for b in data:
        if in_str:
            if esc:
                esc = False
            elif b == 0x5C:
                esc = True
            elif b == 0x22:
                in_str = False
        elif b == 0x22:
            in_str = True
        elif b in (0x5B, 0x7B):
            depth += 1
            if depth > best:
                best = depth
                if best > MAX_JSON_DEPTH:
                    return best
        elif b in (0x5D, 0x7D):
            depth -= 1
    return best
