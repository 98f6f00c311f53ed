"""Where the load goes, and the safety rule: no load on a host that is not ours by accident.

A load test against a non-loopback host needs credentials given on purpose (AK/SK or a token):
the run refuses it otherwise, so a typo in ``--endpoint`` cannot turn into a flood on a third
party. Loopback targets (``127.0.0.0/8``, ``::1``, ``localhost``) may run without credentials
(a local ``sis-stream serve --no-auth``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..protocol import AkSk, Token

__all__ = ["LoadTarget", "TargetRefused", "check_target", "is_loopback_url"]


class TargetRefused(ValueError):
    """A non-loopback target without credentials."""


def is_loopback_url(url: str) -> bool:
    """Whether `url`'s host is a loopback address (by literal address or ``localhost``; names are
    not resolved, so any other name counts as remote)."""
    host = urlsplit(url if "://" in url else f"ws://{url}").hostname or ""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class LoadTarget:
    """A SIS endpoint to load, or the embedded local server.

    Attributes
    ----------
    endpoint : str or None
        ``ws://``/``wss://`` URL; None: start a local server in this process with
        `server_factory`.
    project_id : str
    auth : AkSk or Token or None
        None only for a loopback endpoint (a placeholder token is sent).
    engine_overrides : tuple of str
        ``PROPERTY=ENGINE`` routes of the embedded server.
    server_settings : dict
        Other settings of the embedded server (``max_sessions``...).
    verify_tls : bool
    server_factory : callable, optional
        For ``endpoint=None``: ``server_factory(engine_overrides=..., **server_settings)`` gives an
        async context manager yielding a server with ``.client()``, such as
        :func:`sis_stream.server.embedded.embedded_server` (passed in, not imported: the load
        test sits beside the server in the layers).
    """

    endpoint: str | None = None
    project_id: str = "local"
    auth: AkSk | Token | None = field(default=None, repr=False)
    engine_overrides: tuple[str, ...] = ()
    server_settings: dict[str, Any] = field(default_factory=dict)
    verify_tls: bool = True
    server_factory: Callable[..., Any] | None = field(default=None, repr=False, compare=False)

    @property
    def embedded(self) -> bool:
        """Whether the run starts the embedded server."""
        return self.endpoint is None

    def describe(self) -> str:
        """The endpoint URL or ``embedded local server (routes)`` (no credentials)."""
        if self.endpoint is None:
            routes = ", ".join(self.engine_overrides) or "default engines"
            return f"embedded local server ({routes})"
        return self.endpoint


def check_target(target: LoadTarget) -> LoadTarget:
    """Apply the safety rule; return the target with its auth filled in for loopback.

    Raises
    ------
    TargetRefused
        A non-loopback endpoint without credentials.
    """
    if target.endpoint is None:
        if target.server_factory is None:
            raise ValueError("a LoadTarget without endpoint needs server_factory "
                             "(e.g. sis_stream.server.embedded.embedded_server)")
        return target
    if target.auth is None:
        if not is_loopback_url(target.endpoint):
            raise TargetRefused(
                f"refusing to load {target.endpoint}: it is not a loopback address and no credentials "
                "were given; load tests against another host need its AK/SK or token on purpose "
                "(--ak/--sk, --token or SIS_AK/SIS_SK/SIS_TOKEN)")
        return LoadTarget(target.endpoint, target.project_id, Token("no-auth"), target.engine_overrides,
                          dict(target.server_settings), target.verify_tls, target.server_factory)
    return target
