"""Shared helpers of the REST suites (``from test_server_rest_support import *``), plus tests of them.

* :func:`rest_server` - ``create_app`` with real AK/SK + user credentials, the ``none`` engine for the
  Mandarin/English properties unless a registry is given, and a :class:`RestSettings` of the
  test's choosing (injected before start-up), on a loopback port.
* :func:`old_sdk_headers` / :func:`v3_headers` - request headers exactly as the old SDK
  (``content-type;host;x-sdk-date`` signed, ``content-length`` added unsigned, ``json.dumps`` body)
  and the v3 SDK (``X-Project-Id`` and ``User-Agent`` signed) build them (sis-protocol.md §14.2-3).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from sis_stream.protocol import AccessKeyRecord, AkSk, CredentialStore, Signer, UserRecord
from sis_stream.server import ServerSettings, create_app
from sis_stream.server.rest import REST_SETTINGS, RestSettings

__all__ = [
    "AK",
    "CREDS",
    "DOMAIN",
    "NONE_OVERRIDES",
    "OTHER_PROJECT",
    "PASSWORD",
    "PROJECT",
    "SK",
    "USER",
    "V3_UA",
    "RestServer",
    "old_sdk_body",
    "old_sdk_headers",
    "rest_server",
    "v3_headers",
]

AK = "AKTESTREST0000000000"
SK = "SKtestRestSecretKey000000000000000000000"
PROJECT = "0123456789abcdef0123456789abcdef"
OTHER_PROJECT = "fedcba9876543210fedcba9876543210"
USER, PASSWORD, DOMAIN = "alice", "s3cret-pass", "acme"
CREDS = CredentialStore([AccessKeyRecord(AK, SK, PROJECT)],
                        [UserRecord(USER, PASSWORD, DOMAIN, PROJECT, "cn-north-4")])
#: Route the properties the tests use to the ``none`` engine (empty text, real timings).
NONE_OVERRIDES = ("english_16k_common=none", "english_8k_common=none", "chinese_8k_common=none",
                  "chinese_16k_common=none", "chinese_16k_general=none")
V3_UA = "huaweicloud-usdk-python/3.0; os/Linux; platform/Linux-6.1-x86_64; arch/x86_64; python/3.11.7; app/0f1e2d3c"


@dataclass
class RestServer:
    app: web.Application
    port: int

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def ws(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"


@contextlib.asynccontextmanager
async def rest_server(tmp_path: Any, *, rest: RestSettings | None = None, registry: Any = None,
                      **settings_kw: Any) -> AsyncIterator[RestServer]:
    """The whole server app on 127.0.0.1 with authentication on and the REST settings given."""
    kw: dict[str, Any] = {"credentials": CREDS, "data_dir": tmp_path / "data"}
    if registry is not None:
        kw["registry"] = registry
    else:
        kw["engine_overrides"] = NONE_OVERRIDES
    kw.update(settings_kw)
    app = create_app(ServerSettings(**kw))
    app[REST_SETTINGS] = rest if rest is not None else RestSettings(data_dir=tmp_path / "data",
                                                                    fetch_dir=tmp_path / "data",
                                                                    fetch_allow=("127.0.0.1",))
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=5.0, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        yield RestServer(app, port)
    finally:
        await runner.cleanup()


def old_sdk_body(obj: Any) -> bytes:
    """``json.dumps`` as the old SDK sends it (``", "`` separators, non-ASCII escaped)."""
    return json.dumps(obj).encode("utf-8") if obj is not None else b""


def old_sdk_headers(method: str, url: str, body: bytes, host: str) -> dict[str, str]:
    """Headers of an old-SDK REST call: signed content-type;host;x-sdk-date, then content-length."""
    h = Signer(AkSk(AK, SK)).sign(method, url, {"Content-Type": "application/json", "host": host}, body)
    h["content-length"] = str(len(body))
    return h


def v3_headers(method: str, url: str, body: bytes, *, content_type: str = "application/json;charset=utf-8",
               project: str = PROJECT) -> dict[str, str]:
    """Headers of a v3 SDK call (X-Project-Id, User-Agent signed)."""
    return Signer(AkSk(AK, SK)).sign_v3(method, url, project, {"Content-Type": content_type}, body,
                                        user_agent=V3_UA)


def test_old_sdk_headers_sign_the_documented_set():
    # The helper must produce exactly the old SDK's signed-header set (§14.2).
    h = old_sdk_headers("POST", "http://127.0.0.1:1/v1/p/asr/short-audio", b"{}", "127.0.0.1:1")
    assert "SignedHeaders=content-type;host;x-sdk-date," in h["Authorization"]
    assert h["content-length"] == "2"


def test_v3_headers_sign_user_agent_and_project():
    h = v3_headers("GET", "http://127.0.0.1:1/v1/p/asr/vocabularies?limit=10&offset=0", b"")
    assert "SignedHeaders=content-type;host;user-agent;x-project-id;x-sdk-date," in h["Authorization"]
