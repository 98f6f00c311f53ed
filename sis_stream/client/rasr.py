"""The async user API for real-time recognition: ``RasrClient`` and its ``RasrStream``."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from typing import Any, Final

import aiohttp

from ..audio.formats import AudioFormat
from ..errors import LocalProtocolError, StreamClosedError
from .framing import Framer
from .pacing import Pacer
from ..protocol import AkSk, Ended, Mode, StartConfig, Token, validate_config
from .rest import AuthProvider, IamPassword
from .events import END_OF_EVENTS, EventQueue, StreamStats
from .runner import StreamRunner
from .transport import (
    DEFAULT_ROLLOVER_AFTER_S,
    ReconnectPolicy,
    TransportOptions,
    open_websocket,
    upgrade_trace_config,
    ws_url,
)

__all__ = ["MODES", "RasrClient", "RasrStream", "VadGate"]

logger = logging.getLogger(__name__)

#: User-facing mode names -> protocol modes.
MODES: Final = {
    "continue": Mode.CONTINUE_STREAM,
    "sentence": Mode.SENTENCE_STREAM,
    "short": Mode.SHORT_STREAM,
    "short-audio": Mode.SHORT_AUDIO,
}


def _mode(mode: str | Mode) -> Mode:
    if isinstance(mode, Mode):
        return mode
    if mode in MODES:
        return MODES[mode]
    try:
        return Mode(mode)
    except ValueError:
        raise ValueError(f"mode must be one of {sorted(MODES)} (or a SIS path name), got {mode!r}") from None


class VadGate:
    """Local VAD gating: send speech (with pre-roll and hangover), hold back silence.

    Parameters
    ----------
    audio_format : AudioFormat or str
        The session format (the frames the gate sees).
    sensitivity : float
        :class:`~sis_stream.audio.vad.EnergyVad` sensitivity (0..1).
    preroll_ms, hangover_ms : int
        Audio sent before speech starts / kept after it ends (bounded).

    Withheld audio is never sent, so the transport sends a frame at least every ``keepalive_s``
    anyway (the 20 s idle rule). Result timestamps stay on the user's audio clock.
    """

    def __init__(self, audio_format: AudioFormat | str, *, sensitivity: float = 0.5, preroll_ms: int = 300,
                 hangover_ms: int = 500) -> None:
        from ..audio.vad import EnergyVad

        fmt = AudioFormat.from_sis(audio_format) if isinstance(audio_format, str) else audio_format
        if not isinstance(fmt, AudioFormat):
            raise TypeError(f"audio_format must be an AudioFormat or SIS name, got {type(audio_format).__name__}")
        for name, v in (("preroll_ms", preroll_ms), ("hangover_ms", hangover_ms)):
            if type(v) is not int or not 0 <= v <= 10_000:
                raise ValueError(f"{name} must be an int in [0, 10000] ms, got {v!r}")
        self.vad = EnergyVad(fmt.rate_hz, 10, sensitivity, encoding=fmt.encoding)
        self._bpms = fmt.bytes_per_second / 1000.0
        self.preroll_ms = preroll_ms
        self.hangover_ms = hangover_ms
        self._pre: deque[tuple[bytes, float]] = deque()
        self._pre_ms = 0.0
        self._hang = 0.0

    def process(self, frame: bytes, user_ms: float) -> list[tuple[bytes, float]]:
        """Frames to send for this frame: ``[]`` (withheld) or pre-roll + frame."""
        dur = len(frame) / self._bpms
        speech = bool(self.vad.process(frame).any())
        if speech:
            out = list(self._pre) + [(frame, user_ms)]
            self._pre.clear()
            self._pre_ms = 0.0
            self._hang = float(self.hangover_ms)
            return out
        if self._hang > 0:
            self._hang -= dur
            return [(frame, user_ms)]
        self._pre.append((frame, user_ms))
        self._pre_ms += dur
        while self._pre and self._pre_ms - len(self._pre[0][0]) / self._bpms >= self.preroll_ms:
            old = self._pre.popleft()
            self._pre_ms -= len(old[0]) / self._bpms
        if self.preroll_ms == 0:
            self._pre.clear()
            self._pre_ms = 0.0
        return []


class RasrClient:
    """Async client for the SIS real-time websocket interfaces.

    Parameters
    ----------
    endpoint : str
        ``wss://sis-ext.{region}.myhuaweicloud.com`` (``https://`` accepted) or a test server.
    project_id : str
    auth : AkSk, Token or IamPassword
        AK/SK signs every upgrade (Host quirk handled); a token goes in ``X-Auth-Token``; IAM
        password credentials fetch a token once and cache it.
    options : TransportOptions, optional
        TLS verification (on by default), proxy, heartbeat, timeouts.
    session : aiohttp.ClientSession, optional
        Shared session (not closed here). By default one is created with an unlimited connector.

    Examples
    --------
    >>> async def main():                                                   # doctest: +SKIP
    ...     async with RasrClient(endpoint, pid, auth=AkSk(ak, sk)) as client:
    ...         cfg = {"audio_format": "pcm16k16bit", "property": "chinese_16k_general"}
    ...         async with client.stream("continue", config=cfg, input_format="pcm16k16bit") as s:
    ...             sender = asyncio.create_task(s.feed(chunks()))
    ...             async for event in s:
    ...                 print(event)
    """

    def __init__(self, endpoint: str, project_id: str, auth: AkSk | Token | IamPassword, *,
                 options: TransportOptions | None = None,
                 session: aiohttp.ClientSession | None = None) -> None:
        ws_url(endpoint, project_id, Mode.CONTINUE_STREAM)  # validates both
        if not isinstance(auth, (AkSk, Token, IamPassword)):
            raise TypeError(f"auth must be AkSk, Token or IamPassword, got {type(auth).__name__}")
        options = TransportOptions() if options is None else options
        if not isinstance(options, TransportOptions):
            raise TypeError(f"options must be TransportOptions, got {type(options).__name__}")
        self.endpoint = endpoint
        self.project_id = project_id
        self.options = options
        self._auth_in = auth
        self._http = session
        self._own = session is None
        self._auth: AuthProvider | None = None
        self._streams: set[RasrStream] = set()

    async def __aenter__(self) -> RasrClient:  # noqa: PYI034 - py3.10 has no typing.Self
        if self._http is None:
            self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                               trust_env=self.options.trust_env,
                                               trace_configs=[upgrade_trace_config()])
        self._auth = AuthProvider(self._auth_in, self._http, self.options)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every open stream, then the session if this client created it."""
        for s in list(self._streams):
            await s.aclose()
        if self._own and self._http is not None:
            await self._http.close()
        self._http = None

    async def _connect(self, mode: Mode) -> Any:
        if self._http is None or self._auth is None:
            raise RuntimeError("use 'async with RasrClient(...) as client:' first")
        url = ws_url(self.endpoint, self.project_id, mode)
        headers = await self._auth.headers("GET", url, dict(self.options.extra_headers), b"")
        return await open_websocket(self._http, url, headers, self.options)

    def stream(
        self,
        mode: str | Mode = "continue",
        config: StartConfig | Mapping[str, Any] | None = None,
        *,
        input_format: AudioFormat | str | None = None,
        frame_ms: int = 100,
        pacing: str | Mapping[str, Any] | None = "realtime",
        overflow: str = "block",
        max_buffer_ms: int | None = None,
        vad: VadGate | bool | None = None,
        reconnect: ReconnectPolicy | None = None,
        keepalive_s: float | None = 10.0,
        rollover_after_s: float | None = DEFAULT_ROLLOVER_AFTER_S,
        events_max: int = 1024,
        events_overflow: str = "block",
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[Any]] | None = None,
        rng: Callable[[], float] | None = None,
    ) -> RasrStream:
        """A recognition stream (use ``async with``).

        Parameters
        ----------
        mode : {"continue", "sentence", "short", "short-audio"}
        config : StartConfig or mapping
            START config; a mapping uses the wire names (``"yes"``/``"no"`` flags), e.g.
            ``{"audio_format": "ulaw8k8bit", "property": "chinese_8k_common"}``.
        input_format : AudioFormat or str, optional
            Format of the bytes given to :meth:`RasrStream.send`; transcoded/resampled to the
            session's ``audio_format`` when different (default: already the session format).
        frame_ms : int
            Frame length (inside the shard limits; default 100).
        pacing : str, mapping or None
            ``"realtime"`` (default), ``"x4"`` etc., ``"burst-then-realtime"``, a mapping of
            :class:`~sis_stream.client.pacing.Pacer` arguments, or None (as fast as the socket takes it).
        overflow : {"block", "drop_oldest", "error"}
            Input buffer policy (:class:`~sis_stream.client.framing.Framer`).
        max_buffer_ms : int, optional
            Input buffer bound (default 2 s or two frames).
        vad : VadGate or bool, optional
            Local VAD gating (True = default :class:`VadGate`).
        reconnect : ReconnectPolicy, optional
            Continue-stream reconnect/replay rules.
        keepalive_s : float or None
            Longest gap between frames (< 20 s idle rule; default 10).
        rollover_after_s : float or None
            Planned rollover age of a connection (continue-stream).
        events_max, events_overflow : int, str
            Event queue bound and policy (``block``, ``drop_partial``, ``error``).
        clock, sleep, rng : callables, optional
            Injected time source, sleep and jitter source (tests, benchmarks).

        Raises
        ------
        ValueError, TypeError, RequestRejected, AudioFormatError
            Bad arguments (before anything is sent).
        """
        m = _mode(mode)
        if config is None:
            raise TypeError("config is required: a StartConfig or a mapping with audio_format and property")
        if isinstance(config, StartConfig):
            if config.mode is not m:
                raise ValueError(f"config was built for {config.mode.value}, the stream is {m.value}")
            cfg = config
        elif isinstance(config, Mapping):
            cfg = validate_config(dict(config), m)
        else:
            raise TypeError(f"config must be a StartConfig or a mapping, got {type(config).__name__}")
        return RasrStream(self, m, cfg, input_format=input_format, frame_ms=frame_ms, pacing=pacing,
                          overflow=overflow, max_buffer_ms=max_buffer_ms, vad=vad,
                          reconnect=reconnect or ReconnectPolicy(), keepalive_s=keepalive_s,
                          rollover_after_s=rollover_after_s, events_max=events_max,
                          events_overflow=events_overflow, clock=clock, sleep=sleep, rng=rng)


def _make_pacer(pacing: str | Mapping[str, Any] | None, frame_s: float, clock: Callable[[], float]) -> Pacer | None:
    if pacing is None:
        return None
    if isinstance(pacing, str):
        return Pacer(frame_s, policy=pacing, clock=clock)
    if isinstance(pacing, Mapping):
        return Pacer(frame_s, clock=clock, **dict(pacing))
    raise TypeError(f"pacing must be a policy str, a mapping of Pacer arguments or None, got {type(pacing).__name__}")


class RasrStream:
    """One recognition session (continue-stream: possibly over several connections).

    Use ``async with client.stream(...) as stream``; send audio with :meth:`send` or
    :meth:`feed`, read typed events with ``async for event in stream``, finish with :meth:`end`.
    Leaving the block ends the session (END, or END with cancel when an exception is raised)
    and cancels every task the stream owns.

    Events: :class:`~sis_stream.protocol.Started`, ``PartialResult``, ``FinalResult``,
    ``VoiceStart``, ``VoiceEnd``, ``ExceededSilence``, ``ExceededAudio``, ``ServerError``,
    ``Ended``, ``ConnectionClosed``, plus :class:`~sis_stream.client.events.Reconnected` and
    :class:`~sis_stream.client.events.RolledOver`. Result times are ms of the audio given to
    :meth:`send` (after transcoding), whatever happened on the wire.
    """

    def __init__(self, client: RasrClient, mode: Mode, config: StartConfig, *, input_format: Any, frame_ms: int,
                 pacing: Any, overflow: str, max_buffer_ms: int | None, vad: Any, reconnect: ReconnectPolicy,
                 keepalive_s: float | None, rollover_after_s: float | None, events_max: int, events_overflow: str,
                 clock: Any, sleep: Any, rng: Any) -> None:
        self.client = client
        self.mode = mode
        self.config = config
        fmt = AudioFormat.from_sis(config.audio_format)
        self.audio_format = fmt
        self.framer = Framer(fmt, frame_ms, max_buffer_ms=max_buffer_ms, overflow=overflow)
        self._transcoder = None
        if input_format is not None:
            src = AudioFormat.from_sis(input_format) if isinstance(input_format, str) else input_format
            if not isinstance(src, AudioFormat):
                raise TypeError(f"input_format must be an AudioFormat or SIS name, got {type(input_format).__name__}")
            if src != fmt:
                from ..audio.transcode import Transcoder  # the audio conversion chain

                self._transcoder = Transcoder(src, fmt)
        if vad is True:
            vad = VadGate(fmt)
        elif vad is False:
            vad = None
        if vad is not None and not hasattr(vad, "process"):
            raise TypeError(f"vad must be a VadGate, True/False or None, got {type(vad).__name__}")
        self._kw = {"pacing": pacing, "frame_s": frame_ms / 1000.0, "gate": vad, "reconnect": reconnect,
                    "keepalive_s": keepalive_s, "rollover_after_s": rollover_after_s,
                    "events": EventQueue(events_max, events_overflow), "clock": clock, "sleep": sleep,
                    "rng": rng}
        self._runner: StreamRunner | None = None
        self._ended_seen = False
        self._closed = False

    # -- lifecycle --------------------------------------------------------------------------------

    async def __aenter__(self) -> RasrStream:  # noqa: PYI034 - py3.10 has no typing.Self
        kw = self._kw
        loop = asyncio.get_running_loop()
        clock = kw["clock"] or loop.time
        self._runner = StreamRunner(
            connect=lambda: self.client._connect(self.mode), config=self.config, framer=self.framer,
            pacer=_make_pacer(kw["pacing"], kw["frame_s"], clock), gate=kw["gate"], reconnect=kw["reconnect"],
            keepalive_s=kw["keepalive_s"], rollover_after_s=kw["rollover_after_s"], events=kw["events"],
            clock=clock, sleep=kw["sleep"] or asyncio.sleep, rng=kw["rng"] or random.random,
            options=self.client.options)
        self.client._streams.add(self)
        self._runner.start()
        # Wait for the START answer (or failure) so connect/auth errors raise here.
        r = self._runner
        try:
            await _wait_started(r)
        except BaseException:
            await self.aclose()
            raise
        if r.error is not None:
            err = r.error
            await self.aclose()
            raise err
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if self._runner is not None and not self._runner._finished.is_set():
                if exc_type is None:
                    await self.end()
                    await self._drain()
                else:
                    await self.end(cancel=True)
        finally:
            await self.aclose()

    async def _drain(self) -> None:
        assert self._runner is not None
        while True:
            item = await self._runner.events.get()
            if not _is_item(item):
                return

    async def aclose(self) -> None:
        """Cancel the stream's tasks and close its connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._runner is not None:
            await self._runner.aclose()
        self.client._streams.discard(self)

    # -- audio ----------------------------------------------------------------------------------

    async def send(self, chunk: bytes | bytearray | memoryview) -> None:
        """Send audio in the input format (any length; framed, paced, transcoded on the way).

        Raises
        ------
        TypeError
            Not bytes-like.
        LocalProtocolError
            After :meth:`end`.
        BufferFullError
            Input buffer full under ``overflow="error"``.
        """
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise TypeError(f"audio chunk must be bytes-like, got {type(chunk).__name__}")
        r = self._require()
        if self._transcoder is not None:
            chunk = self._transcoder.process(bytes(chunk))
            if not chunk:
                return
        await r.feed(bytes(chunk) if not isinstance(chunk, bytes) else chunk)

    def send_nowait(self, chunk: bytes | bytearray | memoryview) -> float:
        """Send audio without waiting (``overflow="drop_oldest"`` or ``"error"``); return the ms
        of audio lost by this call (the oldest buffered audio dropped to make room, or the chunk
        itself once the server ended the session). Unpaced streams send due frames inline.

        Raises
        ------
        TypeError, LocalProtocolError, BufferFullError
            As :meth:`send`; LocalProtocolError also under ``overflow="block"``.
        """
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise TypeError(f"audio chunk must be bytes-like, got {type(chunk).__name__}")
        r = self._require()
        if self._transcoder is not None:
            chunk = self._transcoder.process(bytes(chunk))
            if not chunk:
                return 0.0
        return r.feed_nowait(chunk)

    async def feed(self, chunks: AsyncIterable[bytes]) -> None:
        """Send every chunk of an async iterable (does not call :meth:`end`)."""
        async for c in chunks:
            await self.send(c)

    async def end(self, cancel: bool = False) -> None:
        """Flush and send END (``cancel=True``: END with cancel, no more results).

        Returns when END is on the wire; iterate to get the remaining finals and ``Ended``.
        """
        r = self._require()
        if self._transcoder is not None and not r._end_requested and not cancel:
            try:
                tail = self._transcoder.flush()
            except StreamClosedError:
                tail = b""
            if tail and not r._server_finished:
                await r.feed(tail)
        await r.end(cancel)

    def _require(self) -> StreamRunner:
        if self._runner is None:
            raise LocalProtocolError("use 'async with client.stream(...) as stream:' first")
        return self._runner

    # -- events ---------------------------------------------------------------------------------

    def __aiter__(self) -> RasrStream:
        return self

    async def __anext__(self) -> object:
        r = self._require()
        item = await r.events.get()
        if not _is_item(item):
            if r.error is not None:
                err, r.error = r.error, None
                raise err
            raise StopAsyncIteration
        if isinstance(item, Ended):
            self._ended_seen = True
        return item

    @property
    def stats(self) -> StreamStats:
        """Counters (frames, bytes, replay, lost ms, keepalives, pacing stats...)."""
        return self._require().stats

    @property
    def trace_id(self) -> str | None:
        """Trace id of the current server session."""
        return self._require().trace_id


def _is_item(item: object) -> bool:
    return item is not END_OF_EVENTS


async def _wait_started(r: StreamRunner) -> None:
    await r.ready.wait()
