"""What the two websocket listeners (mod_audio_fork, Twilio) share: the aiohttp site on
``host:port``, connection tracking for the shutdown drain, and a bounded outbound queue per
connection so that in-band messages never make the media path await."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSCloseCode, web

from .listen import listening_socket
from .session import BridgeContext, SessionSettings

__all__ = ["Outbox", "WsListener"]

logger = logging.getLogger(__name__)


class Outbox:
    """Bounded queue of JSON messages to one websocket, sent by its own task.

    ``put`` never blocks: beyond `max_messages` the oldest queued message is dropped
    (``drop_oldest``, counted in :attr:`dropped`).
    """

    def __init__(self, ws: web.WebSocketResponse, max_messages: int = 256) -> None:
        self.ws = ws
        self.max_messages = max_messages
        self._q: deque[str] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self.dropped = 0
        self.sent = 0
        self._task = asyncio.get_running_loop().create_task(self._run())

    def put(self, message: dict[str, Any]) -> None:
        if self._closing:
            return
        if len(self._q) >= self.max_messages:
            self._q.popleft()
            self.dropped += 1
        self._q.append(json.dumps(message, ensure_ascii=False))
        self._wake.set()

    async def _run(self) -> None:
        while True:
            if not self._q:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            text = self._q.popleft()
            if self.ws.closed:
                self._q.clear()
                continue
            try:
                await self.ws.send_str(text)
                self.sent += 1
            except (ConnectionError, RuntimeError) as exc:
                logger.debug("in-band message not sent: %s", exc)
                self._q.clear()

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Send what is queued (bounded), then stop the task."""
        self._closing = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        except asyncio.TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class WsListener:
    """Base of the websocket listeners: one aiohttp application on ``host:port``.

    Subclasses implement :meth:`handle` (one websocket = one call).
    """

    source = "ws"
    protocols: tuple[str, ...] = ()

    def __init__(self, ctx: BridgeContext, host: str, port: int, settings: SessionSettings) -> None:
        self.ctx = ctx
        self.host = host
        self.port = port
        self.settings = settings
        self.connections: set[web.WebSocketResponse] = set()
        self._runner: web.AppRunner | None = None
        self._site: web.SockSite | None = None
        ctx.metrics.listener(self.source)

    async def start(self) -> tuple[str, int]:
        """Start listening; returns the bound ``(host, port)``."""
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._entry)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        sock = listening_socket(infos[0])
        self._site = web.SockSite(self._runner, sock)
        await self._site.start()
        bound = sock.getsockname()
        self.port = bound[1]
        return bound[0], bound[1]

    async def _entry(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=self.protocols, max_msg_size=4 * 1024 * 1024, autoping=True)
        if not ws.can_prepare(request).ok:
            return web.Response(status=400, text=f"this is the {self.source} bridge: connect with a websocket "
                                                 "upgrade\n")
        if self.ctx.draining:
            return web.Response(status=503, text="the bridge is shutting down and takes no new calls\n")
        await ws.prepare(request)
        self.connections.add(ws)
        try:
            await self.handle(request, ws)
        except asyncio.CancelledError:
            raise
        except Exception:  # one bad connection must never take the listener down
            logger.exception("%s: connection handler failed", self.source)
        finally:
            self.connections.discard(ws)
            if not ws.closed:
                await ws.close()
        return ws

    async def handle(self, request: web.Request, ws: web.WebSocketResponse) -> None:  # pragma: no cover
        raise NotImplementedError

    def error(self, call_id: str, channel: int | str, code: str, message: str, **extra: Any) -> None:
        """Emit an ``error`` event of this listener."""
        self.ctx.metrics.listener(self.source).errors += 1
        self.ctx.hub.emit(call_id, self.source, channel, "error", code=code, message=message, **extra)
        logger.warning("%s %s: %s", self.source, call_id, message)

    async def stop_accepting(self) -> None:
        """Close the listening socket (calls in progress continue)."""
        if self._site is not None:
            await self._site.stop()
            self._site = None

    async def aclose(self) -> None:
        """Close every connection (calls end with reason ``shutdown``), then the application."""
        await self.stop_accepting()
        for ws in list(self.connections):
            with contextlib.suppress(Exception):
                await ws.close(code=WSCloseCode.GOING_AWAY, message=b"bridge shutting down")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def receive_first(ws: web.WebSocketResponse, timeout_s: float) -> Any:
    """The first message, or None after `timeout_s`."""
    try:
        return await ws.receive(timeout=timeout_s)
    except asyncio.TimeoutError:
        return None


CloseFn = Callable[[], Awaitable[None]]
