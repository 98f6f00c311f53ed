"""sis_stream: real-time speech recognition over the Huawei Cloud SIS protocols."""

from __future__ import annotations

from ._backend import BACKEND
from .errors import (
    AudioFormatError,
    AuthError,
    BufferFullError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    SisApiError,
    SisConnectionError,
    SisStreamError,
    StreamClosedError,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "BACKEND",
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
