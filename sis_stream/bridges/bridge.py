"""The bridge: up to three telephony listeners feeding SIS sessions, the events sinks, ``/metrics``
and the graceful drain."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from aiohttp import web

from .audio_fork import AudioForkListener
from .audiosocket import AudioSocketListener
from .events import EventHub, EventSink
from .metrics import BridgeMetrics
from .session import BridgeContext, LegOptions, SessionSettings
from .twilio import TwilioListener

__all__ = ["LISTENER_KINDS", "Bridge", "parse_address"]

logger = logging.getLogger(__name__)

#: Listener kind -> class, in start order.
LISTENER_KINDS: Final = {"audiosocket": AudioSocketListener, "audio_fork": AudioForkListener,
                         "twilio": TwilioListener}
DEFAULT_HOST: Final = "127.0.0.1"


def parse_address(value: str | int | tuple[str, int], default_host: str = DEFAULT_HOST) -> tuple[str, int]:
    """``"[HOST:]PORT"`` (``":0"`` or ``"0"``: a free port; ``[::1]:PORT`` for IPv6) -> ``(host, port)``.

    Raises
    ------
    ValueError
        Not ``[HOST:]PORT`` with a port in 0..65535.
    """
    if isinstance(value, tuple):
        host, port = value
    elif isinstance(value, int) and not isinstance(value, bool):
        host, port = default_host, value
    elif isinstance(value, str):
        m = re.fullmatch(r"(?:\[([^\]]+)\]|([^:\[\]]*)):(\d+)|(\d+)", value.strip())
        if not m:
            raise ValueError(f"address must be [HOST:]PORT (e.g. 9092, :0, 0.0.0.0:9092), got {value!r}")
        if m.group(4) is not None:
            host, port = default_host, int(m.group(4))
        else:
            host, port = (m.group(1) or m.group(2) or default_host), int(m.group(3))
    else:
        raise TypeError(f"address must be a str, an int or a (host, port) tuple, got {type(value).__name__}")
    if type(port) is not int or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int in 0..65535, got {port!r}")
    return str(host), port


class Bridge:
    """Telephony media forks in, SIS real-time sessions out (use ``async with`` or start/drain).

    Parameters
    ----------
    client : RasrClient
        An open client (``async with``) for the SIS endpoint: Huawei Cloud, any SIS server, or
        the embedded local server (``server.client()``).
    audiosocket, audio_fork, twilio : str, int or (host, port), optional
        Where each listener listens (``"[HOST:]PORT"``; port 0 = a free port); None = off.
    settings : SessionSettings or mapping, optional
        The SIS session of every call (default: continue-stream, ``english_16k_common``). A
        mapping ``{kind: SessionSettings}`` sets it per listener.
    sinks : sequence of EventSink
        Where events go (:class:`~sis_stream.bridges.events.JsonLinesSink`, ``WebhookSink``,
        ``CallbackSink``).
    options : LegOptions, optional
        Queue bound, final timeout, frame length.
    metrics : str, int or (host, port), optional
        Serve ``/metrics`` (Prometheus text) there.

    Examples
    --------
    >>> async def main():                                                    # doctest: +SKIP
    ...     async with embedded_server() as server, server.client() as client:
    ...         async with Bridge(client, audiosocket=":0", sinks=[JsonLinesSink("-")]) as bridge:
    ...             print(bridge.addresses["audiosocket"])
    ...             await bridge.wait_closed()
    """

    def __init__(self, client: Any, *, audiosocket: Any = None, audio_fork: Any = None, twilio: Any = None,
                 settings: SessionSettings | Mapping[str, SessionSettings] | None = None,
                 sinks: Sequence[EventSink] = (), options: LegOptions | None = None, metrics: Any = None) -> None:
        self.hub = EventHub(list(sinks))
        self.metrics = BridgeMetrics()
        self.ctx = BridgeContext(client, self.hub, self.metrics, options or LegOptions())
        self.ctx.idle.set()
        wanted = {"audiosocket": audiosocket, "audio_fork": audio_fork, "twilio": twilio}
        if all(v is None for v in wanted.values()):
            raise ValueError("give at least one listener: audiosocket, audio_fork or twilio")
        self.listeners: dict[str, Any] = {}
        for kind, addr in wanted.items():
            if addr is None:
                continue
            host, port = parse_address(addr)
            if isinstance(settings, Mapping):
                s = settings.get(kind, SessionSettings())
            else:
                s = settings or SessionSettings()
            if not isinstance(s, SessionSettings):
                raise TypeError(f"settings must be SessionSettings, got {type(s).__name__}")
            self.listeners[kind] = LISTENER_KINDS[kind](self.ctx, host, port, s)
        self.metrics_address = parse_address(metrics) if metrics is not None else None
        self.addresses: dict[str, tuple[str, int]] = {}
        self._metrics_runner: web.AppRunner | None = None
        self._stopped = asyncio.Event()
        self._started = False

    async def start(self) -> dict[str, tuple[str, int]]:
        """Start the sinks, the listeners and ``/metrics``; returns ``{kind: (host, port)}``."""
        await self.hub.start()
        self._started = True
        try:
            for kind, lst in self.listeners.items():
                self.addresses[kind] = await lst.start()
            if self.metrics_address is not None:
                self.addresses["metrics"] = await self._start_metrics(*self.metrics_address)
        except BaseException:
            await self.drain(0)
            raise
        return dict(self.addresses)

    async def _start_metrics(self, host: str, port: int) -> tuple[str, int]:
        app = web.Application()

        async def metrics(_request: web.Request) -> web.Response:
            return web.Response(text=self.metrics.render(), content_type="text/plain", charset="utf-8",
                                headers={"X-Content-Type-Options": "nosniff"})

        app.router.add_get("/metrics", metrics)
        self._metrics_runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._metrics_runner.setup()
        site = web.TCPSite(self._metrics_runner, host, port)
        await site.start()
        sock = site._server.sockets[0] if site._server is not None else None  # type: ignore[union-attr]
        return (host, sock.getsockname()[1]) if sock is not None else (host, port)

    @property
    def calls_active(self) -> int:
        return len(self.ctx.calls)

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Graceful stop: take no new calls, let the calls in progress end (at most `timeout_s`),
        then hang up the rest (reason ``shutdown``; their last finals are still awaited), flush
        the events sinks and close everything. Idempotent."""
        if self._stopped.is_set():
            return
        self.ctx.draining = True
        for lst in self.listeners.values():
            await lst.stop_accepting()
        if self.ctx.calls and timeout_s > 0:
            logger.info("draining: waiting up to %g s for %d call(s)", timeout_s, len(self.ctx.calls))
            try:
                await asyncio.wait_for(self.ctx.idle.wait(), timeout_s)
            except asyncio.TimeoutError:
                logger.info("drain timeout: hanging up %d call(s)", len(self.ctx.calls))
        for lst in self.listeners.values():
            await lst.aclose()
        if self.ctx.calls:  # calls whose connection is gone but whose last finals are still due
            try:
                await asyncio.wait_for(self.ctx.idle.wait(), self.ctx.options.final_timeout_s + 10.0)
            except asyncio.TimeoutError:
                logger.warning("%d call(s) did not end in time", len(self.ctx.calls))
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
            self._metrics_runner = None
        if self._started:
            await self.hub.aclose()
        self._stopped.set()

    async def wait_closed(self) -> None:
        """Wait until :meth:`drain` has finished."""
        await self._stopped.wait()

    async def __aenter__(self) -> Bridge:  # noqa: PYI034 - py3.10 has no typing.Self
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.drain(0 if exc[0] is not None else 30.0)
