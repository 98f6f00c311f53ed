"""SIS protocol core (sans-IO): messages, config validation, error catalogue, sessions, auth.

No module here imports asyncio or aiohttp; the transports (client pump, local server) drive
these objects. See ``docs/protocol.md`` for how the pieces fit.
"""

from __future__ import annotations

from .auth import Authenticator, Principal
from .config import (
    AUDIO_FORMATS,
    CONFIG_FIELDS,
    Mode,
    StartConfig,
    mode_from_path,
    shard_limits,
    validate_config,
)
from .credentials import AccessKeyRecord, AkSk, CredentialStore, Token, UserRecord
from .errors import CATALOGUE, ErrorSpec, api_error, error_body, error_message, reject
from .events import (
    AudioFrame,
    AudioLimitReached,
    AudioReceived,
    ConnectionClosed,
    Ended,
    EndOfStream,
    EndRequested,
    EndResponse,
    ErrorResponse,
    EventResponse,
    ExceededAudio,
    ExceededSilence,
    FatalErrorResponse,
    FinalResult,
    OtherEvent,
    PartialResult,
    ProtocolViolation,
    ResultResponse,
    ServerError,
    Started,
    StartRequested,
    StartResponse,
    StartStream,
    VoiceEnd,
    VoiceStart,
)
from .messages import (
    CancelEncoding,
    EndCommand,
    EndMessage,
    EndReason,
    ErrorMessage,
    EventMessage,
    EventType,
    FatalErrorMessage,
    RespType,
    ResultMessage,
    Segment,
    SegmentResult,
    StartCommand,
    StartMessage,
    WordInfo,
    parse_client_message,
    parse_server_message,
)
from .properties import PROPERTIES, Interface, PropertyInfo, lookup_property, properties_for
from .session import (
    CLIENT_TRANSITIONS,
    IDLE_TIMEOUT_S,
    SERVER_TRANSITIONS,
    ClientSession,
    ClientState,
    ServerSession,
    ServerState,
    ServerStats,
    Trigger,
)
from .signer import SignatureVerifier, Signer
from .token import IssuedToken, TokenClaims, TokenIssuer, TokenRequest, TokenService

__all__ = [
    # config / properties
    "Mode", "StartConfig", "validate_config", "mode_from_path", "AUDIO_FORMATS",
    "CONFIG_FIELDS", "shard_limits", "Interface", "PropertyInfo", "PROPERTIES", "properties_for",
    "lookup_property",
    # errors
    "CATALOGUE", "ErrorSpec", "error_message", "error_body", "reject", "api_error",
    # messages
    "RespType", "EventType", "EndReason", "CancelEncoding", "WordInfo", "SegmentResult", "Segment",
    "StartCommand", "EndCommand", "StartMessage", "ResultMessage", "EventMessage", "ErrorMessage",
    "FatalErrorMessage", "EndMessage", "parse_client_message", "parse_server_message",
    # sessions and events
    "ServerSession", "ClientSession", "ServerState", "ClientState", "ServerStats", "Trigger",
    "SERVER_TRANSITIONS", "CLIENT_TRANSITIONS", "IDLE_TIMEOUT_S",
    "StartStream", "AudioFrame", "EndOfStream", "Started", "PartialResult", "FinalResult",
    "VoiceStart", "VoiceEnd", "ExceededSilence", "ExceededAudio", "OtherEvent", "ServerError",
    "Ended", "ConnectionClosed", "StartRequested", "AudioReceived", "EndRequested",
    "AudioLimitReached", "ProtocolViolation", "StartResponse", "ResultResponse", "EventResponse",
    "ErrorResponse", "FatalErrorResponse", "EndResponse",
    # auth
    "AkSk", "Token", "CredentialStore", "AccessKeyRecord", "UserRecord", "Signer",
    "SignatureVerifier", "TokenRequest", "TokenClaims", "TokenIssuer", "TokenService",
    "IssuedToken", "Authenticator", "Principal",
]
