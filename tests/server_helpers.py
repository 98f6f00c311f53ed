"""Fixtures and helpers for tests of the local server (websocket and REST suites share them).

* :func:`speech_pcm` - espeak-ng speech (``en-us+m3``, 150 wpm) as int16 PCM at 8 or 16 kHz,
  cached; :func:`encode` - to any SIS ``audio_format``.
* :class:`RunningServer` / :func:`running_server` - the app on a loopback port (aiohttp runner),
  ``.http(path)`` / ``.ws(path)`` URLs, ``.app`` for the shared state.
* :func:`whisper_registry` - ONE engine registry per test session (the Whisper model loads once).
* :func:`run_ws_session` - a whole START..audio..END exchange through the protocol core's
  :class:`~sis_stream.protocol.ClientSession` over the real aiohttp websocket client, sending
  like the official SDK (audio right behind START, 4000-byte frames, short last frame).

Use from a test module: ``from server_helpers import *`` (tests/ is on ``sys.path``) and declare
the fixtures you need; ``pytest_plugins`` is not required because the fixtures are imported.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from aiohttp import ClientSession as HttpClient
from aiohttp import WSMsgType, web

from sis_stream.audio import codec
from sis_stream.engines.registry import EngineRegistry
from sis_stream.protocol import (
    AudioFrame,
    ClientSession,
    ClientState,
    EndOfStream,
    Mode,
    StartConfig,
    StartStream,
)
from sis_stream.server import ServerSettings, create_app

__all__ = [
    "SENTENCES",
    "RunningServer",
    "WsResult",
    "encode",
    "none_settings",
    "run_ws_session",
    "running_server",
    "silence",
    "speech_pcm",
    "whisper_registry",
]

#: Short test sentences (espeak-ng at 150 wpm: about 1.5-2.5 s each).
SENTENCES = (
    "i would like to book a table for two people",
    "please call me back tomorrow morning",
    "open the door and turn on the light",
)


@functools.lru_cache(maxsize=32)
def _speech16(text: str) -> np.ndarray:
    from scipy.signal import resample_poly

    from sis_stream.engines import espeak

    if not espeak.available():
        pytest.skip("espeak-ng (espeakng-loader) is not installed: no test speech")
    syn = espeak.synthesize(text, voice="en-us+m3", rate_wpm=150)
    x = resample_poly(syn.samples.astype(np.float64), 320, 441)  # 22050 -> 16000 (test input only)
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def speech_pcm(text: str, rate_hz: int = 16000) -> np.ndarray:
    """Synthesised speech of `text` as int16 PCM at `rate_hz` (8000 or 16000), read-only, cached."""
    x = _speech16(text)
    if rate_hz == 8000:
        from scipy.signal import resample_poly

        x = np.clip(np.rint(resample_poly(x.astype(np.float64), 1, 2)), -32768, 32767).astype(np.int16)
    elif rate_hz != 16000:
        raise ValueError(f"rate_hz must be 8000 or 16000, got {rate_hz}")
    x.flags.writeable = False
    return x


def silence(ms: int, rate_hz: int = 16000, seed: int = 0) -> np.ndarray:
    """`ms` of a quiet noise floor (~ -64 dBFS, seeded): real microphones never send digital zeros."""
    n = ms * rate_hz // 1000
    return np.clip(np.round(np.random.default_rng(seed).normal(0.0, 20.0, n)), -32768, 32767).astype(np.int16)


def encode(pcm: np.ndarray, audio_format: str) -> bytes:
    """int16 PCM -> the bytes of a SIS ``audio_format`` (``pcm16k16bit``, ``ulaw8k8bit``...)."""
    if audio_format.startswith("pcm"):
        return pcm.astype("<i2").tobytes()
    law = "ulaw" if audio_format.startswith("ulaw") else "alaw"
    return bytes(codec.encode(np.ascontiguousarray(pcm), law))


@dataclass
class RunningServer:
    """A server app on a loopback port."""

    app: web.Application
    runner: web.AppRunner
    port: int
    scheme: str = "http"

    def http(self, path: str) -> str:
        """``http://127.0.0.1:PORT/path``."""
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def ws(self, path: str) -> str:
        """``ws://127.0.0.1:PORT/path``."""
        return f"{'wss' if self.scheme == 'https' else 'ws'}://127.0.0.1:{self.port}{path}"


@contextlib.asynccontextmanager
async def running_server(settings: ServerSettings, ssl_context: Any = None) -> AsyncIterator[RunningServer]:
    """Run ``create_app(settings)`` on 127.0.0.1 (free port) for the duration of the block."""
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=5.0, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        yield RunningServer(app, runner, port, "https" if ssl_context is not None else "http")
    finally:
        await runner.cleanup()


@pytest.fixture(scope="session")
def whisper_registry() -> EngineRegistry:
    """The default property map (English -> whisper, bundled tiny.en), loaded once per session."""
    pytest.importorskip("faster_whisper")
    reg = EngineRegistry(engine_options={"whisper": {"num_workers": 2}})
    yield reg
    reg.close()


def none_settings(**kw: Any) -> ServerSettings:
    """No-auth settings routing the English properties to the ``none`` engine, REST routes off."""
    overrides = ("english_16k_common=none", "english_8k_common=none", "chinese_8k_common=none")
    base: dict[str, Any] = {"no_auth": True, "engine_overrides": overrides, "rest_routes": False,
                            "interim_interval_s": 0.05, "idle_check_s": 0.02}
    base.update(kw)
    return ServerSettings(**base)


@dataclass
class WsResult:
    """What a websocket exchange produced."""

    frames: list[dict] = field(default_factory=list)  # every text frame, parsed, in order
    events: list[object] = field(default_factory=list)  # ClientSession events, in order
    close_code: int | None = None

    def of(self, resp_type: str) -> list[dict]:
        """Frames with this ``resp_type``."""
        return [f for f in self.frames if f.get("resp_type") == resp_type]

    def finals(self) -> list[dict]:
        """Final segments, in order."""
        return [s for f in self.of("RESULT") for s in f["segments"] if s["is_final"]]

    def text(self) -> str:
        """All final texts joined."""
        return " ".join(s["result"]["text"] for s in self.finals()).strip()


async def _read_until_end(ws: Any, client: ClientSession | None, out: WsResult, timeout: float) -> None:
    async def loop() -> None:
        while True:
            msg = await ws.receive()
            if msg.type == WSMsgType.TEXT:
                out.frames.append(json.loads(msg.data))
                if client is not None:
                    client.receive(msg.data)
                    out.events.extend(client.events())
                if out.frames[-1].get("resp_type") in ("END", "FATAL_ERROR"):
                    return
                if client is not None and client.state in (ClientState.SERVER_ENDED, ClientState.CLOSED):
                    return  # ERROR (+END(ERROR)) or a server-side END: nothing more comes
            else:
                out.close_code = ws.close_code
                if client is not None:
                    client.receive(None)
                    out.events.extend(client.events())
                return
    await asyncio.wait_for(loop(), timeout)


async def _read_until_started(ws: Any, client: ClientSession, out: WsResult, timeout: float) -> None:
    async def loop() -> None:
        while client.state is ClientState.STARTING:
            msg = await ws.receive()
            if msg.type != WSMsgType.TEXT:
                out.close_code = ws.close_code
                client.receive(None)
                out.events.extend(client.events())
                return
            out.frames.append(json.loads(msg.data))
            client.receive(msg.data)
            out.events.extend(client.events())
    await asyncio.wait_for(loop(), timeout)


async def run_ws_session(
    http: HttpClient,
    url: str,
    config: StartConfig,
    audio: bytes,
    *,
    frame_bytes: int = 4000,
    frame_interval_s: float = 0.0,
    cancel: bool = False,
    timeout: float = 60.0,
    ws: Any = None,
    headers: dict[str, str] | None = None,
    wait_start: bool = False,
) -> WsResult:
    """One START..audio..END exchange like the official SDK (audio right behind START).

    Parameters
    ----------
    http : aiohttp.ClientSession
    url : str
        ``ws://.../v1/{pid}/rasr/<mode>``.
    config : StartConfig
    audio : bytes
        In ``config.audio_format``; sent in `frame_bytes` frames (the last one shorter).
    frame_interval_s : float
        Pause between frames (0 = as fast as possible; the SDK sleeps 0.04 s).
    cancel : bool
        Send END with cancel.
    ws : websocket, optional
        Reuse an open connection (several sessions per connection).
    wait_start : bool
        Wait for the START answer before sending audio (the docs' way; the SDK does not wait).
    """
    own = ws is None
    if own:
        ws = await http.ws_connect(url, headers=headers, autoping=True)
    client = ClientSession(config.mode, early_audio=True)
    out = WsResult()
    try:
        for f in client.send(StartStream(config)):
            await ws.send_str(f)
        if wait_start:
            await _read_until_started(ws, client, out, timeout)
        for i in range(0, len(audio), frame_bytes):
            for f in client.send(AudioFrame(audio[i:i + frame_bytes])):
                await ws.send_bytes(f)
            if frame_interval_s:
                await asyncio.sleep(frame_interval_s)
        # The SDK may send END before the START answer; the protocol core's client waits for it.
        await _read_until_started(ws, client, out, timeout)
        if client.state is ClientState.STREAMING:
            for f in client.send(EndOfStream(cancel=cancel)):
                await ws.send_str(f)
        if not out.frames or out.frames[-1].get("resp_type") not in ("END", "FATAL_ERROR"):
            await _read_until_end(ws, client, out, timeout)
    finally:
        if own:
            await ws.close()
    return out


def config_for(mode: Mode | str, audio_format: str = "pcm16k16bit", prop: str | None = None, **kw: Any) -> StartConfig:
    """A StartConfig for `mode` (english property matching the format's rate)."""
    mode = Mode(mode)
    if prop is None:
        # RASR has no English 8 kHz property (§4.3): 8 kHz RASR tests use chinese_8k_common,
        # routed to the none engine by none_settings().
        if "8k" not in audio_format:
            prop = "english_16k_common"
        else:
            prop = "english_8k_common" if mode is Mode.SHORT_AUDIO else "chinese_8k_common"
    if mode is Mode.SHORT_AUDIO:
        kw = {k: v for k, v in kw.items() if k not in ("vad_head", "vad_tail", "max_seconds")}
    return StartConfig(mode=mode, audio_format=audio_format, property=prop, **kw)


def events_named(result: WsResult) -> list[str]:
    """The EVENT names received, in order."""
    return [f["event"] for f in result.of("EVENT")]


__all__ += ["config_for", "events_named"]


def as_bytes(chunks: Sequence[np.ndarray], audio_format: str = "pcm16k16bit") -> bytes:
    """Concatenate PCM chunks and encode them."""
    return encode(np.concatenate(chunks), audio_format)


__all__ += ["as_bytes"]
