"""Blocking wrapper for scripts: the async client on its own event loop in one background thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from concurrent.futures import Future
from typing import Any, TypeVar

from .rasr import RasrClient, RasrStream
from ..protocol import AkSk, StartConfig, Token
from .rest import IamPassword
from .transport import TransportOptions

__all__ = ["SyncRasrClient", "SyncStream"]

T = TypeVar("T")


class SyncRasrClient:
    """Blocking :class:`~sis_stream.client.rasr.RasrClient`: one event-loop thread per client (not per
    stream); every call is submitted to it and waited for.

    Parameters
    ----------
    endpoint, project_id, auth, options
        As :class:`~sis_stream.client.rasr.RasrClient`.
    timeout_s : float or None
        Longest wait of a blocking call that should answer promptly (connect, START, END,
        the next event; default 60 s; None waits forever). :meth:`SyncStream.send` and
        :meth:`SyncStream.end` wait as long as pacing needs: they time out only when no audio
        frame has left for `timeout_s`. A timeout raises :class:`TimeoutError` naming the call
        and the limit.

    Examples
    --------
    >>> with SyncRasrClient(endpoint, pid, AkSk(ak, sk)) as client:          # doctest: +SKIP
    ...     with client.stream("short", cfg, on_event=print) as s:
    ...         for chunk in chunks:
    ...             s.send(chunk)
    ...         s.end()
    """

    def __init__(self, endpoint: str, project_id: str, auth: AkSk | Token | IamPassword, *,
                 options: TransportOptions | None = None, timeout_s: float | None = 60.0) -> None:
        self.timeout_s = timeout_s
        self._client = RasrClient(endpoint, project_id, auth, options=options)  # validates first
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sis-stream-sync", daemon=True)
        self._thread.start()
        self._closed = False
        try:
            self._call(self._client.__aenter__(), what="opening the client")
        except BaseException:
            self._stop_loop()
            raise

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None | bool = False, *,
              what: str = "the call") -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("the SyncRasrClient is closed")
        limit = self.timeout_s if timeout is False else timeout
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(limit)  # type: ignore[arg-type]
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise TimeoutError(f"{what} did not finish within {limit:g} s (SyncRasrClient timeout_s; "
                               "None waits forever)") from None

    def _call_paced(self, coro: Coroutine[Any, Any, T], progress: Callable[[], float], *,
                    what: str) -> T:
        """Wait for a call that takes as long as pacing needs: it times out only when
        `progress()` (audio sent) has not moved for ``timeout_s``."""
        if self._closed:
            coro.close()
            raise RuntimeError("the SyncRasrClient is closed")
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        limit = self.timeout_s
        if limit is None:
            return fut.result()
        last, since = progress(), time.monotonic()
        while True:
            try:
                return fut.result(min(limit, 1.0))
            except concurrent.futures.TimeoutError:
                now, seen = time.monotonic(), progress()
                if seen != last:
                    last, since = seen, now
                elif now - since >= limit:
                    fut.cancel()
                    raise TimeoutError(
                        f"{what}: no audio frame left for {limit:g} s (the server stopped taking "
                        f"audio or the connection stalled; {last:.0f} ms of audio were sent). "
                        "SyncRasrClient timeout_s sets this limit") from None

    def __enter__(self) -> SyncRasrClient:  # noqa: PYI034 - py3.10 has no typing.Self
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every stream and the client, then stop the loop thread (idempotent)."""
        if self._closed:
            return
        try:
            self._call(self._client.close(), what="closing the client")
        finally:
            self._closed = True
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()

    def stream(self, mode: str = "continue", config: StartConfig | Mapping[str, Any] | None = None, *,
               on_event: Callable[[object], Any] | None = None, **kwargs: Any) -> SyncStream:
        """A blocking stream; arguments as :meth:`RasrClient.stream`.

        Parameters
        ----------
        on_event : callable, optional
            Called (on the loop thread) with every event; without it, iterate the stream.
        """
        if on_event is not None and not callable(on_event):
            raise TypeError(f"on_event must be callable, got {type(on_event).__name__}")
        s = self._call(_make_stream(self._client, mode, config, kwargs), what="creating the stream")
        return SyncStream(self, s, on_event)


async def _make_stream(client: RasrClient, mode: str, config: Any, kwargs: dict[str, Any]) -> RasrStream:
    return client.stream(mode, config, **kwargs)


class SyncStream:
    """Blocking view of one :class:`~sis_stream.client.rasr.RasrStream` (use ``with``)."""

    def __init__(self, owner: SyncRasrClient, stream: RasrStream, on_event: Callable[[object], Any] | None) -> None:
        self._owner = owner
        self._stream = stream
        self._on_event = on_event
        self._pump: Future[None] | None = None
        self.callback_errors: list[BaseException] = []

    def __enter__(self) -> SyncStream:  # noqa: PYI034 - py3.10 has no typing.Self
        self._owner._call(self._stream.__aenter__(), what="connecting and starting the stream")
        if self._on_event is not None:
            self._pump = asyncio.run_coroutine_threadsafe(self._run_callbacks(), self._owner._loop)
        return self

    async def _run_callbacks(self) -> None:
        assert self._on_event is not None
        async for ev in self._stream:
            try:
                self._on_event(ev)
            except Exception as exc:  # noqa: BLE001 - a callback bug must not kill the stream; kept for the caller
                self.callback_errors.append(exc)

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if self._pump is not None and exc_type is None:
                self._owner._call_paced(self._stream.end(), self._sent_ms, what="SyncStream.end")
                try:
                    self._pump.result(self._owner.timeout_s)
                except concurrent.futures.TimeoutError:
                    raise TimeoutError(f"the final results did not arrive within "
                                       f"{self._owner.timeout_s:g} s after END") from None
        finally:
            self._owner._call(self._stream.__aexit__(exc_type, exc, tb), what="closing the stream")

    def _sent_ms(self) -> float:
        return float(self._stream.stats.audio_ms_sent)

    def send(self, chunk: bytes) -> None:
        """Send audio (any length). Blocks while the input buffer is full under
        ``overflow="block"``, i.e. as long as real-time pacing of a long buffer needs.

        Raises
        ------
        TimeoutError
            No audio frame left for ``timeout_s`` seconds (a stalled connection).
        """
        self._owner._call_paced(self._stream.send(chunk), self._sent_ms, what="SyncStream.send")

    def end(self, cancel: bool = False) -> None:
        """Flush the buffered audio (at the stream's pace) and send END."""
        self._owner._call_paced(self._stream.end(cancel), self._sent_ms, what="SyncStream.end")

    def __iter__(self) -> Iterator[object]:
        if self._on_event is not None:
            raise RuntimeError("events go to on_event; iterate only streams opened without a callback")
        while True:
            try:
                yield self._owner._call(self._stream.__anext__(), what="waiting for the next event")
            except StopAsyncIteration:
                return

    @property
    def stats(self) -> Any:
        """The stream's counters."""
        return self._stream.stats
