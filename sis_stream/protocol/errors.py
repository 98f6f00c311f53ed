"""The SIS/APIG error catalogue: codes, HTTP status, message templates, typed client exceptions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ..errors import (
    AuthRejected,
    RequestRejected,
    SisApiError,
    SisAuthError,
    SisInvalidRequestError,
    SisLimitError,
    SisNotFoundError,
    SisServerError,
)

__all__ = [
    "ErrorSpec",
    "CATALOGUE",
    "error_message",
    "error_body",
    "reject",
    "api_error",
    "APIG_AUTH_PREFIX",
    "RequestRejected",
    "AuthRejected",
]

#: Prefix of every API-gateway authentication message (sis-protocol.md §2.2).
APIG_AUTH_PREFIX: Final = "Incorrect IAM authentication information: "


@dataclass(frozen=True)
class ErrorSpec:
    """One catalogue entry.

    Attributes
    ----------
    code : str
        ``"SIS.0032"``, ``"APIG.0301"``, ...
    http_status : int
        Status of a REST answer carrying this code. The docs only ever show 400 for SIS codes;
        the others are our choice by meaning (401 auth, 404 not found, 429 limits, 5xx internal).
    message : str
        The generic message (used when no parameters are given).
    template : str or None
        A ``str.format`` template for the parametrised form, e.g. ``"'{field}' is invalid"``.
    kind : str
        ``"auth"``, ``"invalid"``, ``"not_found"``, ``"limit"`` or ``"server"``: selects the typed
        client exception.
    """

    code: str
    http_status: int
    message: str
    template: str | None = None
    kind: str = "invalid"


def _e(code: str, status: int, message: str, template: str | None = None, kind: str = "") -> ErrorSpec:
    if not kind:
        kind = {401: "auth", 403: "auth", 404: "not_found", 429: "limit"}.get(
            status, "server" if status >= 500 or status == 408 else "invalid")
    return ErrorSpec(code, status, message, template, kind)


#: Every code of sis-protocol.md §8 plus the two API-gateway codes. Exact documented texts are
#: kept verbatim ("'audio_format' is invalid", "'audio_format' is not match model", "The service
#: does not exist.", "real name authentication missing", "Audio format is invalid!", "Invalid data
#: found when processing input", "wait voice timeout"); the rest are English restatements.
CATALOGUE: Final[dict[str, ErrorSpec]] = {s.code: s for s in (
    _e("SIS.0001", 500, "connection error"),
    _e("SIS.0002", 500, "internal error"),
    _e("SIS.0003", 500, "the token lacks user information, or an internal error occurred"),
    _e("SIS.0005", 404, "The service does not exist."),
    _e("SIS.0012", 400, "a required field is missing", "'{field}' is required"),
    _e("SIS.0022", 403, "the product cannot be purchased", kind="invalid"),
    _e("SIS.0023", 400, "purchasing the product failed"),
    _e("SIS.0024", 400, "updating the limit is not allowed"),
    _e("SIS.0031", 400, "unsupported request parameter", "'{field}' is not supported"),
    _e("SIS.0032", 400, "the json in the request is invalid", "'{field}' is invalid"),
    _e("SIS.0033", 504, "engine response timeout"),
    _e("SIS.0100", 500, "internal error"),
    _e("SIS.0101", 401, "token verification failed", "token verification failed: {detail}"),
    _e("SIS.0102", 401, "authentication information is missing"),
    _e("SIS.0103", 403, "real name authentication missing"),
    _e("SIS.0201", 404, "the vocabulary does not exist", "vocabulary '{vocabulary_id}' does not exist"),
    _e("SIS.0202", 404, "no vocabulary has been created"),
    _e("SIS.0203", 400, "some hot words are too long or illegal", "hot word '{word}' is too long or illegal"),
    _e("SIS.0204", 400, "the vocabulary name already exists", "vocabulary name '{name}' already exists"),
    _e("SIS.0205", 400, "the language is not supported", "language '{language}' is not supported"),
    _e("SIS.0206", 500, "saving the hot words failed"),
    _e("SIS.0207", 500, "the hot word content is corrupted"),
    _e("SIS.0208", 400, "too many vocabularies", "too many vocabularies: at most {limit}", kind="limit"),
    _e("SIS.0301", 400, "'audio_format' is not match model"),
    _e("SIS.0302", 500, "internal service error"),
    _e("SIS.0303", 500, "engine connection failed"),
    _e("SIS.0304", 408, "wait voice timeout"),
    _e("SIS.0305", 500, "engine error"),
    _e("SIS.0306", 500, "recognition error"),
    _e("SIS.0307", 500, "task error"),
    _e("SIS.0309", 400, "real-time audio is too long",
       "real-time audio is too long: at most {limit_s} s in {mode} mode", kind="limit"),
    _e("SIS.0312", 429, "max concurrency exceeded", "max concurrency exceeded: at most {limit} sessions"),
    _e("SIS.0401", 500, "speech synthesis error"),
    _e("SIS.0402", 400, "'sample_rate' is invalid"),
    _e("SIS.0403", 400, "too many characters to synthesise",
       "too many characters to synthesise: at most {limit}", kind="limit"),
    _e("SIS.0410", 400, "'audio_format' is invalid"),
    _e("SIS.0411", 400, "'property' is invalid"),
    _e("SIS.0412", 504, "speech synthesis engine connection timeout"),
    _e("SIS.0413", 500, "speech synthesis internal error"),
    _e("SIS.0414", 504, "speech synthesis wait timeout"),
    _e("SIS.0415", 400, "the request body is invalid"),
    _e("SIS.0416", 408, "waited too long for the text"),
    _e("SIS.0417", 500, "speech synthesis engine error"),
    _e("SIS.0418", 400, "this connection already has a synthesis task"),
    _e("SIS.0506", 403, "proxy not found or OBS not authorised", kind="invalid"),
    _e("SIS.0533", 400, "invalid transcriber parameter", "'{field}' is invalid"),
    _e("SIS.0534", 400, "the request body is invalid"),
    _e("SIS.0535", 400, "Audio format is invalid!"),
    _e("SIS.0536", 429, "the transcriber submission limit is reached"),
    _e("SIS.0537", 400, "the audio file is too large", kind="limit"),
    _e("SIS.0538", 504, "the transcriber task timed out"),
    _e("SIS.0601", 400, "invalid parameter", "'{field}' is invalid"),
    _e("SIS.0602", 400, "the audio format is not supported", "audio format '{audio_format}' is not supported"),
    _e("SIS.0604", 400, "the audio file size or text length is out of range",
       "{what} is too large: at most {limit}", kind="limit"),
    _e("SIS.0605", 500, "internal error"),
    _e("SIS.0608", 400, "illegal URL"),
    _e("SIS.0609", 400, "downloading the audio from the URL failed"),
    _e("SIS.0701", 400, "the input is too large", kind="limit"),
    _e("SIS.0702", 400, "invalid parameter", "'{field}' is invalid"),
    _e("SIS.30002", 404, "the OBS audio does not exist"),
    _e("SIS.30003", 500, "downloading from OBS failed"),
    _e("SIS.30004", 500, "downloading the hot word file failed"),
    _e("SIS.30006", 400, "Invalid data found when processing input"),
    _e("SIS.30007", 500, "the engine failed to load the hot words"),
    _e("SIS.30008", 500, "transcription failed"),
    _e("APIG.0301", 401, APIG_AUTH_PREFIX + "verify aksk signature fail", APIG_AUTH_PREFIX + "{detail}"),
    _e("APIG.0101", 404, "The API does not exist or has not been published in the environment"),
)}


def _spec(code: str) -> ErrorSpec:
    try:
        return CATALOGUE[code]
    except KeyError:
        raise ValueError(f"unknown error code {code!r}: expected one of the catalogue codes "
                         f"(SIS.xxxx of sis-protocol.md §8, APIG.0301, APIG.0101)") from None


def error_message(code: str, **params: object) -> str:
    """The message for ``code``: the template filled with ``params``, or the generic text.

    Parameters
    ----------
    code : str
        A catalogue code.
    **params
        Template fields, e.g. ``field="vad_tail"`` for ``SIS.0032``.

    Returns
    -------
    str

    Raises
    ------
    ValueError
        Unknown code, parameters given for a code without a template, or a template field missing.
    """
    spec = _spec(code)
    if not params:
        return spec.message
    if spec.template is None:
        raise ValueError(f"{code} has no message template; got parameters {sorted(params)}")
    try:
        return spec.template.format(**params)
    except (KeyError, IndexError) as exc:
        raise ValueError(f"{code} template {spec.template!r} needs {exc}; got {sorted(params)}") from None


def error_body(code: str, message: str | None = None, **params: object) -> dict[str, str]:
    """An ``{"error_code", "error_msg"}`` answer body.

    Parameters
    ----------
    code : str
        A catalogue code.
    message : str, optional
        Explicit message; default :func:`error_message` ``(code, **params)``.
    **params
        Template fields.

    Returns
    -------
    dict
    """
    return {"error_code": code, "error_msg": message if message is not None else error_message(code, **params)}


def reject(code: str, message: str | None = None, **params: object) -> RequestRejected:
    """A :class:`RequestRejected` for ``code`` with the catalogue HTTP status (to ``raise``).

    Parameters
    ----------
    code : str
    message : str, optional
    **params
        Template fields.

    Returns
    -------
    RequestRejected
    """
    spec = _spec(code)
    msg = message if message is not None else error_message(code, **params)
    return RequestRejected(code, msg, http_status=spec.http_status)


_KIND_TO_CLASS: Final[dict[str, type[SisApiError]]] = {
    "auth": SisAuthError,
    "invalid": SisInvalidRequestError,
    "not_found": SisNotFoundError,
    "limit": SisLimitError,
    "server": SisServerError,
}


def api_error(
    error_code: str,
    error_msg: str,
    *,
    trace_id: str | None = None,
    http_status: int | None = None,
) -> SisApiError:
    """The typed client exception for a SIS answer (to ``raise``).

    Unknown codes map by HTTP status (401/403 auth, 404 not found, 429 limit, >= 500 server,
    otherwise invalid request); with no status either, a plain :class:`SisApiError`.

    Parameters
    ----------
    error_code, error_msg : str
        As received.
    trace_id : str, optional
        ``trace_id`` (websocket) or ``X-Request-Id`` (REST).
    http_status : int, optional
        Status of a REST answer.

    Returns
    -------
    SisApiError
        An instance of :class:`SisAuthError`, :class:`SisInvalidRequestError`,
        :class:`SisNotFoundError`, :class:`SisLimitError` or :class:`SisServerError`.
    """
    spec = CATALOGUE.get(error_code)
    if spec is not None:
        cls = _KIND_TO_CLASS[spec.kind]
    elif http_status is None:
        cls = SisApiError
    elif http_status in (401, 403):
        cls = SisAuthError
    elif http_status == 404:
        cls = SisNotFoundError
    elif http_status == 429:
        cls = SisLimitError
    elif http_status >= 500:
        cls = SisServerError
    else:
        cls = SisInvalidRequestError
    return cls(error_code, error_msg, trace_id=trace_id, http_status=http_status)
