"""Exceptions raised by sis_stream on purpose; every one derives from SisStreamError."""

from __future__ import annotations

__all__ = [
    "SisStreamError",
    "AudioFormatError",
    "StreamClosedError",
    "BufferFullError",
    "ProtocolError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "SisConnectionError",
    "AuthError",
    "SisApiError",
]


class SisStreamError(Exception):
    """Base class of every exception sis_stream raises on purpose."""


class AudioFormatError(SisStreamError, ValueError):
    """Bad sample rate, frame geometry, encoding or container (WAV) header."""


class StreamClosedError(SisStreamError, RuntimeError):
    """``process()`` was called on a stream object after ``flush()`` ended it."""


class BufferFullError(SisStreamError):
    """A bounded buffer or queue overflowed under the ``error`` overflow policy."""


class ProtocolError(SisStreamError):
    """Abstract base of protocol violations; never raised directly (h11 style)."""


class LocalProtocolError(ProtocolError):
    """The caller misused a session: audio before START, a send after close, ..."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something invalid or unexpected.

    Parameters
    ----------
    message : str
        What was wrong.
    close_code : int, optional
        WebSocket close code to use when closing because of this error (default 1002,
        protocol error).
    """

    def __init__(self, message: str, close_code: int = 1002) -> None:
        super().__init__(message)
        self.close_code = close_code


class SisConnectionError(SisStreamError):
    """The transport failed (wraps aiohttp / OS errors: ``raise ... from exc``)."""


class AuthError(SisStreamError):
    """Credentials are missing or were rejected. Never carries the credentials themselves."""


class SisApiError(SisStreamError):
    """An error answer from a SIS service: ``{"error_code", "error_msg"}`` plus context.

    Attributes
    ----------
    error_code : str
        The SIS/APIG code, e.g. ``"SIS.0032"``.
    error_msg : str
        The service's message.
    trace_id : str or None
        The ``trace_id`` (WebSocket) or ``X-Request-Id`` / ``request_id`` (REST), when given.
    http_status : int or None
        HTTP status of a REST answer; None on the WebSocket.
    """

    def __init__(
        self,
        error_code: str,
        error_msg: str,
        *,
        trace_id: str | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(f"{error_code}: {error_msg}")
        self.error_code = error_code
        self.error_msg = error_msg
        self.trace_id = trace_id
        self.http_status = http_status
