"""The local SIS server started in-process on a free loopback port (the CLI's default endpoint)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import string
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from ..protocol import AccessKeyRecord, AkSk, CredentialStore, Token

_SK_ALPHABET: Final = string.ascii_letters + string.digits

__all__ = ["EMBEDDED_PROJECT_ID", "LOOPBACK", "EmbeddedServer", "embedded_server"]

logger = logging.getLogger(__name__)

#: The embedded server only ever binds the IPv4 loopback interface.
LOOPBACK: Final = "127.0.0.1"
#: Project id the embedded server's credentials belong to.
EMBEDDED_PROJECT_ID: Final = "local"


@dataclass(frozen=True)
class EmbeddedServer:
    """Where a running embedded server listens and how to talk to it.

    Attributes
    ----------
    url : str
        ``ws://127.0.0.1:PORT``: the ``endpoint`` for :class:`~sis_stream.client.rasr.RasrClient`.
    port : int
        The port the kernel picked.
    project_id : str
        The project id to put in websocket paths.
    auth : AkSk or Token
        Credentials the server accepts: a random AK/SK pair made for this server only (never
        printed), or a placeholder token when the server runs without authentication.
    app : aiohttp.web.Application
        The running application (tests read its metrics and settings).
    """

    url: str
    port: int
    project_id: str
    auth: AkSk | Token = field(repr=False)
    app: web.Application = field(repr=False, compare=False)

    @property
    def http_url(self) -> str:
        """``http://127.0.0.1:PORT`` (REST routes, ``/metrics``)."""
        return f"http://{LOOPBACK}:{self.port}"

    def client(self, **kwargs: Any) -> Any:
        """A :class:`~sis_stream.client.rasr.RasrClient` for this server (use ``async with``)."""
        from ..client.rasr import RasrClient

        return RasrClient(self.url, self.project_id, self.auth, **kwargs)


def _loopback_socket() -> socket.socket:
    # Bind port 0 ourselves: the kernel picks a free port and we read it back without touching
    # aiohttp internals; SockSite then serves on this very socket (no race with another binder).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((LOOPBACK, 0))
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


@contextlib.asynccontextmanager
async def embedded_server(
    *,
    engine_overrides: Sequence[str] = (),
    registry: Any = None,
    auth: bool = True,
    **settings: Any,
) -> AsyncIterator[EmbeddedServer]:
    """Run the SIS-compatible local server in the current event loop on ``127.0.0.1:<free port>``.

    Parameters
    ----------
    engine_overrides : sequence of str, optional
        ``PROPERTY=ENGINE`` items (``english_16k_common=pocketsphinx``), as ``serve --engine``.
    registry : EngineRegistry, optional
        A ready engine registry to share (tests load the Whisper model once); not closed here.
    auth : bool, optional
        True (default): the server accepts only a random AK/SK pair made for it, which
        :attr:`EmbeddedServer.auth` carries, so no other local process can use the port while
        it runs. False: no authentication (the server's ``no_auth`` mode).
    **settings
        Other :class:`~sis_stream.server.ServerSettings` fields (``max_sessions``,
        ``interim_interval_s``, ...). ``host``/``port``/``credentials`` are chosen here.

    Yields
    ------
    EmbeddedServer

    Raises
    ------
    ValueError
        `settings` names ``host``, ``port``, ``credentials`` or ``no_auth``, or a bad value.
    EngineConfigError
        Bad engine overrides.

    Examples
    --------
    >>> async def main():                                          # doctest: +SKIP
    ...     async with embedded_server() as server, server.client() as client:
    ...         cfg = {"audio_format": "pcm16k16bit", "property": "english_16k_common"}
    ...         async with client.stream("continue", config=cfg) as stream:
    ...             ...
    """
    from . import ServerSettings, create_app
    from .state import ENGINES

    reserved = {"host", "port", "credentials", "credentials_file", "no_auth"} & settings.keys()
    if reserved:
        raise ValueError(f"embedded_server chooses {', '.join(sorted(reserved))} itself")
    if auth:
        # A fresh key pair shaped like Huawei's (20-character AK, 40-character SK), letters
        # and digits only: a token_urlsafe SK could start with "-", which a command line then
        # takes for an option (`--sk -x...`).
        creds = AkSk(secrets.token_hex(10).upper(),
                     "".join(secrets.choice(_SK_ALPHABET) for _ in range(40)))
        store = CredentialStore([AccessKeyRecord(creds.ak, creds.sk, EMBEDDED_PROJECT_ID)])
        client_auth: AkSk | Token = creds
    else:
        store = CredentialStore()
        client_auth = Token("no-auth")
    scratch: tempfile.TemporaryDirectory[str] | None = None
    if settings.get("data_dir") is None:
        # The REST modules keep vocabularies/jobs in data_dir; ours lives as long as the server.
        scratch = tempfile.TemporaryDirectory(prefix="sis-stream-embedded-")
        settings["data_dir"] = Path(scratch.name)
    cfg = ServerSettings(
        host=LOOPBACK,
        port=0,
        credentials=store,
        no_auth=not auth,
        engine_overrides=tuple(engine_overrides),
        registry=registry,
        **settings,
    )
    app = create_app(cfg)
    if registry is None:
        # One-time model builds (the Moonshine fold, first run only) before the first session,
        # whose START answer would otherwise wait for it.
        await asyncio.to_thread(app[ENGINES].prepare)
    runner = web.AppRunner(app, handle_signals=False, access_log=None,
                           shutdown_timeout=cfg.shutdown_timeout_s)
    await runner.setup()
    sock = _loopback_socket()
    try:
        site = web.SockSite(runner, sock)
        await site.start()
        port = sock.getsockname()[1]
        logger.debug("embedded SIS server listening on %s:%d", LOOPBACK, port)
        yield EmbeddedServer(f"ws://{LOOPBACK}:{port}", port, EMBEDDED_PROJECT_ID, client_auth, app)
    finally:
        try:
            await runner.cleanup()
        finally:
            sock.close()
            if scratch is not None:
                scratch.cleanup()
