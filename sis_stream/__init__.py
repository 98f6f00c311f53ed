"""sis_stream: real-time speech recognition over the Huawei Cloud SIS protocols."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._backend import BACKEND
from .audio.formats import SIS_FORMATS, AudioFormat, WavAudio, read_wav, write_wav
from .audio.codec import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from .audio.endpoint import Endpointer
from .errors import *  # noqa: F403  (the hierarchy is public; errors.__all__ lists it)
from .errors import __all__ as _errors_all
from .client.framing import Framer
from .client.pacing import Pacer
from .protocol import AkSk, Mode, StartConfig, Token
# Only the classes: the one-shot functions share their submodules' names (sis_stream.audio.resample,
# sis_stream.audio.transcode), and a package attribute of that name would shadow the submodule.
from .audio.resample import StreamResampler
from .audio.transcode import Transcoder
from .audio.vad import EnergyVad

__version__ = "0.1.0"

# The asyncio/aiohttp layer is imported on first use, so `import sis_stream` for the audio
# core stays light (PEP 562).
_LAZY = {
    "RasrClient": "client.rasr",
    "RasrStream": "client.rasr",
    "VadGate": "client.rasr",
    "SyncRasrClient": "client.sync",
    "SisRestClient": "client.rest",
    "IamPassword": "client.rest",
    "TransportOptions": "client.transport",
    "ReconnectPolicy": "client.transport",
}

if TYPE_CHECKING:  # pragma: no cover
    from .client.rasr import RasrClient, RasrStream, VadGate
    from .client.rest import IamPassword, SisRestClient
    from .client.sync import SyncRasrClient
    from .client.transport import ReconnectPolicy, TransportOptions


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
