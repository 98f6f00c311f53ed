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
    "SisAuthError",
    "SisInvalidRequestError",
    "SisNotFoundError",
    "SisLimitError",
    "SisServerError",
    "RequestRejected",
    "AuthRejected",
    "EngineError",
    "EngineUnavailableError",
    "EngineConfigError",
    "PropertyNotSupportedError",
    "EngineOverloadedError",
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


# --- typed SIS answers (protocol core, issue 10); chosen by sis_stream.protocol.errors.api_error ---


class SisAuthError(SisApiError, AuthError):
    """The service rejected the credentials (APIG.0301, SIS.0101/0102/0103)."""


class SisInvalidRequestError(SisApiError):
    """The service rejected the request itself: bad config, bad order, bad body (HTTP 400 family)."""


class SisNotFoundError(SisApiError):
    """A named resource or API does not exist (SIS.0005, SIS.0201, APIG.0101, ...)."""


class SisLimitError(SisApiError):
    """A quota or limit was hit: concurrency (SIS.0312), audio too long (SIS.0309), table counts, ..."""


class SisServerError(SisApiError):
    """The service failed internally or timed out (5xx family, SIS.0304 audio wait timeout, ...)."""


class RequestRejected(SisStreamError, ValueError):
    """A request breaks the SIS rules; carries the answer a SIS server gives for it.

    Raised by the protocol core when it validates a START config, a command or a REST body
    (server side), and by clients validating their own config before sending it.

    Parameters
    ----------
    error_code : str
        The SIS code, e.g. ``"SIS.0032"``.
    error_msg : str
        The message the server sends, e.g. ``"'audio_format' is invalid"``.
    http_status : int, optional
        Status for a REST answer (default 400).
    """

    def __init__(self, error_code: str, error_msg: str, *, http_status: int = 400) -> None:
        super().__init__(f"{error_code}: {error_msg}")
        self.error_code = error_code
        self.error_msg = error_msg
        self.http_status = http_status

    def body(self) -> dict[str, str]:
        """The ``{"error_code", "error_msg"}`` answer body."""
        return {"error_code": self.error_code, "error_msg": self.error_msg}


class AuthRejected(AuthError):
    """A server-side authentication check failed (AK/SK signature or token).

    Carries the API-gateway style answer (HTTP 401, ``APIG.0301``) and a machine-readable
    ``reason``; never the credentials, the expected signature or the token.

    Parameters
    ----------
    error_msg : str
        The answer message, e.g. ``"Incorrect IAM authentication information: verify aksk
        signature fail"``.
    reason : str
        Why, for logs and metrics: ``"missing"``, ``"malformed"``, ``"unknown_ak"``,
        ``"bad_signature"``, ``"expired"``, ``"locked"``, ``"bad_token"``, ``"token_expired"``,
        ``"wrong_project"``.
    error_code : str, optional
        Default ``"APIG.0301"``.
    http_status : int, optional
        Default 401.
    """

    def __init__(
        self,
        error_msg: str,
        *,
        reason: str,
        error_code: str = "APIG.0301",
        http_status: int = 401,
    ) -> None:
        super().__init__(f"{error_code}: {error_msg}")
        self.error_code = error_code
        self.error_msg = error_msg
        self.reason = reason
        self.http_status = http_status

    def body(self) -> dict[str, str]:
        """The ``{"error_code", "error_msg"}`` answer body."""
        return {"error_code": self.error_code, "error_msg": self.error_msg}


class EngineError(SisStreamError):
    """Base of the errors raised by the recognition engines (``sis_stream.engines``)."""


class EngineUnavailableError(EngineError, RuntimeError):
    """An engine's package or model files cannot be loaded (e.g. the ``engines`` extra is missing)."""


class EngineConfigError(EngineError, ValueError):
    """A bad engine setting: unknown engine name, language the model lacks, bad model directory."""


class PropertyNotSupportedError(EngineConfigError):
    """No configured engine can serve this SIS ``property``.

    Attributes
    ----------
    property : str
        The SIS ``property`` value that was asked for.
    sis_error_code : str
        The SIS code a server should answer with (``"SIS.0032"``, invalid config value).
    """

    sis_error_code = "SIS.0032"

    def __init__(self, property: str, reason: str) -> None:  # noqa: A002 - SIS field name
        super().__init__(f"'property' {property!r} is not supported by the configured engines: {reason}")
        self.property = property
        self.reason = reason


class EngineOverloadedError(EngineError, BufferFullError):
    """The engine executor's bounded queue (or a decoder pool) is full under the ``reject`` policy."""
