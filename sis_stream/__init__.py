"""sis_stream: real-time speech recognition over the Huawei Cloud SIS protocols."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._backend import BACKEND
from .audio import SIS_FORMATS, AudioFormat, WavAudio, read_wav, write_wav
from .codec import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from .endpoint import Endpointer
from .errors import *  # noqa: F403  (the hierarchy is public; errors.__all__ lists it)
from .errors import __all__ as _errors_all
from .framing import Framer
from .pacing import Pacer
from .protocol import AkSk, Mode, StartConfig, Token
# Only the classes: the one-shot functions share their submodules' names (sis_stream.resample,
# sis_stream.transcode), and a package attribute of that name would shadow the submodule.
from .resample import StreamResampler
from .transcode import Transcoder
from .vad import EnergyVad

__version__ = "0.1.0"

# The asyncio/aiohttp layer is imported on first use, so `import sis_stream` for the audio
# core stays light (PEP 562).
_LAZY = {
    "RasrClient": "client",
    "RasrStream": "client",
    "VadGate": "client",
    "SyncRasrClient": "sync",
    "SisRestClient": "rest_client",
    "IamPassword": "rest_client",
    "TransportOptions": "transport",
    "ReconnectPolicy": "transport",
}

if TYPE_CHECKING:  # pragma: no cover
    from .client import RasrClient, RasrStream, VadGate
    from .rest_client import IamPassword, SisRestClient
    from .sync import SyncRasrClient
    from .transport import ReconnectPolicy, TransportOptions


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sis_stream' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


__all__ = [
    "__version__",
    "BACKEND",
    # audio core
    "AudioFormat",
    "SIS_FORMATS",
    "WavAudio",
    "read_wav",
    "write_wav",
    "ulaw_encode",
    "ulaw_decode",
    "alaw_encode",
    "alaw_decode",
    "StreamResampler",
    "Transcoder",
    "EnergyVad",
    "Endpointer",
    "Framer",
    "Pacer",
    # protocol
    "Mode",
    "StartConfig",
    "AkSk",
    "Token",
    # client (imported lazily)
    *_LAZY,
    # errors
    *_errors_all,
]
