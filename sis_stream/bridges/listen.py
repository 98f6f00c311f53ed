"""The listening socket of a bridge listener (AudioSocket's own loop reader, aiohttp's SockSite)."""

from __future__ import annotations

import socket

__all__ = ["listening_socket"]


def listening_socket(info: tuple, *, v6only: bool = False, backlog: int = 1024) -> socket.socket:
    """A non-blocking socket bound and listening on one ``getaddrinfo`` entry `info`
    (``SO_REUSEADDR``; ``IPV6_V6ONLY`` on an IPv6 address when `v6only`); closed on failure."""
    family, type_, proto, _, addr = info
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if v6only and family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
