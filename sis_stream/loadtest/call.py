"""One call of a load test: stream a corpus file in real time and measure what comes back.

Times (``clock``: the event loop's monotonic clock):

- ``connect_ms``: from opening the websocket to the START answer (``async with client.stream``);
- the wire schedule: the first frame goes out when the first audio is handed to the stream
  (``t0``); frame ``k`` is then due at ``Pacer(frame, policy=pace).deadline(k)`` from ``t0``,
  the schedule the client's own pacer keeps (drift-free). A reference time ``E`` (ms of the
  file) is *due* when the frame holding it is due;
- ``final_latency_ms``: per end of speech ``E`` of the file (the corpus' own endpointer), from
  ``E`` due to the arrival of the first final whose ``end_time >= E - cover_ms`` (a final that
  ends well before ``E`` belongs to earlier speech). In ``sentence`` mode only the first end is
  measured, in ``short`` mode only the last (one final per session);
- ``ttfs_ms``: from the first speech onset due to the first result (interim or final).

Harness lateness is part of these figures (a frame sent late reaches the server late); the
run's ``harness_pacing_ms`` says how large it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from ..client.pacing import Pacer
from ..errors import SisApiError
from ..protocol import (
    ConnectionClosed,
    ExceededAudio,
    ExceededSilence,
    FinalResult,
    PartialResult,
    ServerError,
    VoiceEnd,
)
from ..text import char_errors, word_errors
from .corpus import CorpusItem
from .metrics import CallResult, LiveCounters

__all__ = ["CallHandle", "CallSpec", "error_kind", "run_call"]

logger = logging.getLogger(__name__)

#: Audio handed to a stream per send (the stream's input buffer holds 2 s; block policy).
FEED_CHUNK_MS: Final = 500


@dataclass(frozen=True)
class CallSpec:
    """How every call of a run is made.

    Attributes
    ----------
    mode : {"continue", "sentence", "short"}
    config : dict
        The START config (wire names).
    frame_ms : int
        Audio per websocket frame.
    pace : str
        Pacing policy of the client (``realtime``, ``xN``, ``burst-then-realtime``).
    by_chars : bool
        Score by characters (Chinese): the call's CER is its primary accuracy figure.
    cover_ms : int
        How much earlier than a reference end of speech a final may end and still cover it.
    grace_s : float
        A call is cut (``timeout``) when it lasts longer than its audio plus this.
    """

    mode: str
    config: dict[str, Any]
    frame_ms: int = 100
    pace: str = "realtime"
    by_chars: bool = False
    cover_ms: int = 300
    grace_s: float = 30.0
    stream_options: dict[str, Any] = field(default_factory=dict)

    def pacer(self) -> Pacer:
        """A pacer with the client's schedule (to compute when reference times are due)."""
        return Pacer(self.frame_ms / 1000.0, policy=self.pace)


class CallHandle:
    """Lets the run end a call early: :meth:`cut` stops the audio and sends END with cancel."""

    __slots__ = ("_end_task", "_feeder", "_stream", "reason")

    def __init__(self) -> None:
        self.reason: str | None = None
        self._stream: Any = None
        self._feeder: asyncio.Task[None] | None = None
        self._end_task: asyncio.Task[None] | None = None

    @property
    def cut_requested(self) -> bool:
        """Whether :meth:`cut` was called."""
        return self.reason is not None

    def cut(self, reason: str = "cut") -> None:
        """End the call now: no more audio, END with cancel (idempotent)."""
        if self.reason is not None:
            return
        self.reason = reason
        if self._feeder is not None and not self._feeder.done():
            self._feeder.cancel()
        if self._stream is not None:
            self._end_task = asyncio.get_running_loop().create_task(self._end())

    async def _end(self) -> None:
        with contextlib.suppress(Exception):
            await self._stream.end(cancel=True)


def error_kind(exc: BaseException) -> str:
    """The error code counted for an exception: the SIS code, or ``connect:<class>``."""
    code = getattr(exc, "error_code", None)
    if isinstance(exc, SisApiError) and code:
        return str(code)
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "connect:timeout"
    return f"connect:{type(exc).__name__}"


def _due_ms(pacer: Pacer, t0: float, frame_ms: int, at_ms: float) -> float:
    # The frame holding audio time `at_ms` (a time on a frame boundary belongs to the frame it
    # ends), as a clock time in ms.
    k = max(0, int(-(-at_ms // frame_ms)) - 1)
    return (t0 + (pacer.deadline(k) - pacer.deadline(0))) * 1000.0


async def run_call(client: Any, item: CorpusItem, spec: CallSpec, *, index: int, slot: int,
                   origin: float, handle: CallHandle | None = None,
                   clock: Callable[[], float] | None = None, live: LiveCounters | None = None) -> CallResult:
    """Run one call of `item` on `client` and return what it measured (never raises for
    connection or server failures: they are counted in :attr:`CallResult.errors`).

    Parameters
    ----------
    client : RasrClient
        An open client (``async with``).
    item : CorpusItem
    spec : CallSpec
    index, slot : int
        Call number and stream slot (for the records).
    origin : float
        Clock time the run started (``started_s``/``ended_s`` are relative to it).
    handle : CallHandle, optional
        For the run to cut the call.
    clock : callable, optional
        Default: the running loop's ``time``.
    live : LiveCounters, optional
        Updated as finals and errors arrive (the progress line).
    """
    loop = asyncio.get_running_loop()
    now = clock or loop.time
    h = handle or CallHandle()
    res = CallResult(index=index, slot=slot, file=item.name, started_s=now() - origin)
    speech = item.speech
    if spec.mode == "sentence":
        ends = [e for _, e in speech[:1]]
    elif spec.mode == "short":
        ends = [speech[-1][1]] if speech else []
    else:
        ends = [e for _, e in speech]
    onset = speech[0][0] if speech else None
    pacer = spec.pacer()
    pacer.start(0.0)
    timer = loop.call_later(item.duration_ms / 1000.0 / pacer.speed + spec.grace_s, h.cut, "timeout")
    texts: list[str] = []
    c0 = now()
    try:
        try:
            stream_cm = client.stream(spec.mode, config=dict(spec.config), frame_ms=spec.frame_ms,
                                      pacing=spec.pace, **spec.stream_options)
            stream = await stream_cm.__aenter__()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - counted: connect failures are measurements
            res.errors.append(error_kind(exc))
            res.outcome = "error"
            return res
        res.connect_ms = (now() - c0) * 1000.0
        h._stream = stream
        t0_box: list[float] = []
        server_done = asyncio.Event()

        async def feed() -> None:
            data = item.audio
            step = max(1, item.audio_format.frame_bytes(FEED_CHUNK_MS))
            for i in range(0, len(data), step):
                if server_done.is_set():
                    break
                if not t0_box:
                    t0_box.append(now())
                await stream.send(data[i : i + step])
            await stream.end()

        exc_info: BaseException | None = None
        try:
            if h.cut_requested:
                h._end_task = loop.create_task(h._end())
            else:
                h._feeder = loop.create_task(feed())
            next_end = 0
            first_result = None
            async for ev in stream:
                if isinstance(ev, (PartialResult, FinalResult)):
                    t = now()
                    if first_result is None:
                        first_result = t
                    if isinstance(ev, PartialResult):
                        res.partials += 1
                        continue
                    res.finals += 1
                    if live is not None:
                        live.finals += 1
                    if ev.text:
                        texts.append(ev.text)
                    if t0_box:
                        seg_end = float(ev.segment.end_time)
                        while next_end < len(ends) and ends[next_end] <= seg_end + spec.cover_ms:
                            due = _due_ms(pacer, t0_box[0], spec.frame_ms, ends[next_end])
                            res.final_latency_ms.append((t - origin, t * 1000.0 - due))
                            if live is not None:
                                live.recent.append(res.final_latency_ms[-1])
                            next_end += 1
                elif isinstance(ev, ServerError):
                    res.errors.append(ev.error_code or ("FATAL_ERROR" if ev.fatal else "ERROR"))
                    server_done.set()
                elif isinstance(ev, ConnectionClosed):
                    if ev.during_session and not h.cut_requested:
                        res.errors.append("closed" + (f":{ev.error_code}" if ev.error_code else ""))
                    server_done.set()
                elif isinstance(ev, (VoiceEnd, ExceededSilence, ExceededAudio)):
                    server_done.set()  # the server ignores later audio (the client ENDs itself)
            if first_result is not None and t0_box and onset is not None:
                res.ttfs_ms = first_result * 1000.0 - _due_ms(pacer, t0_box[0], spec.frame_ms, onset)
            res.missed_ends = len(ends) - next_end
        except asyncio.CancelledError as exc:
            exc_info = exc  # leaving the stream with it sends END cancel and closes at once
            raise
        except Exception as exc:  # noqa: BLE001 - transport failures are measurements too
            exc_info = exc
            res.errors.append(f"stream:{type(exc).__name__}")
        finally:
            if h._feeder is not None and not h._feeder.done():
                h._feeder.cancel()
            if h._feeder is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await h._feeder
            with contextlib.suppress(Exception):
                stats = stream.stats
                res.audio_s = stats.audio_ms_sent / 1000.0
                res.pacing = stats.pacing
            if isinstance(exc_info, asyncio.CancelledError):
                await stream.aclose()
            else:
                await stream_cm.__aexit__(type(exc_info) if exc_info else None, exc_info, None)
        if h.cut_requested and h.reason != "timeout":
            res.outcome = "cut"
        elif res.errors or h.reason == "timeout":
            if h.reason == "timeout":
                res.errors.append("timeout")
            res.outcome = "error"
        elif item.reference is not None:
            hyp = " ".join(texts)
            res.words = word_errors(item.reference, hyp)
            res.chars = char_errors(item.reference, hyp)
        res.hypothesis = " ".join(texts)
        return res
    finally:
        timer.cancel()
        res.ended_s = now() - origin
        if live is not None and res.errors:
            live.errors += len(res.errors)
            live.error_times.extend([res.ended_s] * len(res.errors))
