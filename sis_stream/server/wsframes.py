"""A websocket response that holds clients to RFC 6455 framing rules aiohttp's reader lets pass.

aiohttp's frame reader accepts unmasked client frames and any close code from 3000 up (5000,
65535), and 1006/1015 only by its own table. :class:`StrictWebSocketResponse` puts a small
frame checker in front of it:

* every client frame must be masked (RFC 6455 5.1: "a server MUST close the connection upon
  receiving a frame that is not masked");
* a close frame's code must be one a peer may send (1000-1003, 1007-1014, 3000-4999; 7.4);

A violation closes the connection with 1002 (protocol error): the handler's ``receive`` returns
an ``ERROR`` message, exactly as for the protocol errors aiohttp detects itself. Use it instead of
``web.WebSocketResponse`` (same arguments).
"""

from __future__ import annotations

import logging
from typing import Any, Final

from aiohttp import WSCloseCode, web
from aiohttp.http_websocket import WebSocketError

__all__ = ["FrameChecker", "StrictWebSocketResponse", "valid_close_code"]

logger = logging.getLogger(__name__)

_OP_CLOSE: Final = 0x8


def valid_close_code(code: int) -> bool:
    """Whether a peer may send `code` in a close frame (RFC 6455 7.4, IANA registry)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


class FrameChecker:
    """Sits between the connection and aiohttp's ``WebSocketReader`` (same ``feed_data`` /
    ``feed_eof`` interface); passes valid frames on, fails the reader's queue on a violation.

    Header bytes (and the first two payload bytes of a close frame) are held back until the
    frame can be judged, so the reader never sees part of a bad frame.
    """

    def __init__(self, inner: Any, queue: Any) -> None:
        self._inner = inner
        self._queue = queue
        self._pending = bytearray()
        self._skip = 0
        self._failed = False

    def feed_eof(self) -> None:
        self._inner.feed_eof()

    def _fail(self, out: bytearray, why: str) -> tuple[bool, bytes]:
        if out:
            self._inner.feed_data(bytes(out))
        self._failed = True
        logger.info("websocket protocol error from the client: %s", why)
        self._queue.set_exception(WebSocketError(WSCloseCode.PROTOCOL_ERROR, why))
        return False, b""

    def feed_data(self, data: bytes | bytearray | memoryview) -> tuple[bool, bytes]:
        if self._failed:
            return False, b""
        data = bytes(data)
        out = bytearray()
        i, n = 0, len(data)
        pending = self._pending
        while i < n:
            if self._skip:
                take = min(self._skip, n - i)
                out += data[i:i + take]
                i += take
                self._skip -= take
                continue
            pending.append(data[i])
            i += 1
            if len(pending) < 2:
                continue
            ln = pending[1] & 0x7F
            masked = pending[1] & 0x80
            ext = 2 if ln == 126 else 8 if ln == 127 else 0
            hlen = 2 + ext + (4 if masked else 0)
            if len(pending) < hlen:
                continue
            if not masked:
                return self._fail(out, "the client sent an unmasked frame (RFC 6455 5.1)")
            length = ln if ext == 0 else int.from_bytes(pending[2:2 + ext], "big")
            if (pending[0] & 0x0F) == _OP_CLOSE and 2 <= length <= 125:
                if len(pending) < hlen + 2:
                    continue
                key = pending[2 + ext:hlen]
                code = ((pending[hlen] ^ key[0]) << 8) | (pending[hlen + 1] ^ key[1])
                if not valid_close_code(code):
                    return self._fail(out, f"invalid close code {code}")
                length -= 2
            out += pending
            pending.clear()
            self._skip = length
        if out:
            return self._inner.feed_data(bytes(out))
        return False, b""


class StrictWebSocketResponse(web.WebSocketResponse):
    """``web.WebSocketResponse`` with a :class:`FrameChecker` in front of its frame reader."""

    def _post_start(self, request: Any, protocol: Any, writer: Any) -> None:
        super()._post_start(request, protocol, writer)
        # aiohttp hands the connection's bytes to request.protocol's payload parser; wrap it.
        # (Bytes that arrived with the upgrade request were already parsed by then.)
        proto = request.protocol
        parser = getattr(proto, "_payload_parser", None)
        queue = getattr(self, "_reader", None)
        if parser is not None and queue is not None and hasattr(queue, "set_exception"):
            proto._payload_parser = FrameChecker(parser, queue)
        else:  # pragma: no cover - another aiohttp layout: keep aiohttp's own checks
            logger.warning("strict websocket framing unavailable with this aiohttp version")
