"""Authentication of the local server: AK/SK on the websocket upgrade and REST-style routes,
IAM tokens (the old SDK's token-only flow), rejections as APIG.0301 bodies, no-auth mode."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from aiohttp import ClientSession as HttpClient
from aiohttp import WSServerHandshakeError
from server_helpers import (
    SENTENCES,
    config_for,
    encode,
    run_ws_session,
    running_server,
    silence,
    speech_pcm,
)

from sis_stream.protocol import (
    AccessKeyRecord,
    AkSk,
    CredentialStore,
    Mode,
    Signer,
    TokenRequest,
    UserRecord,
)
from sis_stream.server import ServerSettings
from sis_stream.server.auth import PRINCIPAL, route
from sis_stream.server.settings import load_credentials

PID = "0123456789abcdef0123456789abcdef"
OTHER = "ffffffffffffffffffffffffffffffff"
AK, SK = "AKTESTLOCAL000000000", "SKtestLocalSecretKey000000000000000000000"
CREDS = CredentialStore(
    [AccessKeyRecord(AK, SK, PID), AccessKeyRecord("AKOTHER0000000000000", "SKother" + "0" * 33, OTHER)],
    [UserRecord("alice", "s3cret-pass", "acme", PID, "cn-north-4")],
)


def _settings(**kw) -> ServerSettings:
    base = {"credentials": CREDS, "engine_overrides": ("english_16k_common=none",), "rest_routes": False}
    base.update(kw)
    return ServerSettings(**base)


def _audio() -> bytes:
    return encode(np.concatenate([silence(200), speech_pcm(SENTENCES[1]), silence(700)]), "pcm16k16bit")


async def _token(http: HttpClient, url: str, password: str = "s3cret-pass") -> tuple[int, str | None, dict]:
    body = TokenRequest("alice", password, "acme", project_name="cn-north-4").to_dict()
    r = await http.post(url, data=json.dumps(body), headers={"Content-Type": "application/json"})
    return r.status, r.headers.get("X-Subject-Token"), await r.json()


async def test_aksk_signed_websocket_upgrade_runs_a_session() -> None:
    async with running_server(_settings()) as srv, HttpClient() as http:
        url = srv.ws(Mode.CONTINUE_STREAM.path(PID))
        headers = Signer(AkSk(AK, SK)).sign_websocket(url)  # signed Host = 127.0.0.1:PORT
        res = await run_ws_session(http, url, config_for(Mode.CONTINUE_STREAM), _audio(), headers=headers)
        assert res.frames[-1]["reason"] == "NORMAL" and len(res.finals()) == 1


@pytest.mark.parametrize("case", ["missing", "bad_signature", "unknown_ak", "wrong_project", "tampered_path"])
async def test_websocket_upgrade_rejections_are_401(case: str) -> None:
    async with running_server(_settings()) as srv, HttpClient() as http:
        url = srv.ws(Mode.CONTINUE_STREAM.path(PID))
        headers: dict[str, str] = {}
        if case == "bad_signature":
            headers = Signer(AkSk(AK, "X" * 40)).sign_websocket(url)
        elif case == "unknown_ak":
            headers = Signer(AkSk("AKNOBODY000000000000", SK)).sign_websocket(url)
        elif case == "wrong_project":
            headers = Signer(AkSk("AKOTHER0000000000000", "SKother" + "0" * 33)).sign_websocket(url)
        elif case == "tampered_path":
            headers = Signer(AkSk(AK, SK)).sign_websocket(srv.ws(Mode.SENTENCE_STREAM.path(PID)))
        with pytest.raises(WSServerHandshakeError) as ei:
            await http.ws_connect(url, headers=headers)
        assert ei.value.status == 401
        # the same request as a plain GET shows the API-gateway body
        r = await http.get(srv.http(Mode.CONTINUE_STREAM.path(PID)),
                           headers={k: v for k, v in headers.items() if k.lower() != "host"})
        body = await r.json()
        assert r.status == 401 and body["error_code"] == "APIG.0301"
        assert body["error_msg"].startswith("Incorrect IAM authentication information")
        assert r.headers.get("X-Request-Id")
        metrics = await (await http.get(srv.http("/metrics"))).text()
        assert 'api_calls_with_4xx_response{interface="rasr.continue-stream"} 2' in metrics


async def test_token_flow_like_the_old_sdk(caplog) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_server(_settings()) as srv, HttpClient() as http:
        status, token, body = await _token(http, srv.http("/v3/auth/tokens"))
        assert status == 201 and token and token.startswith("MII")
        assert body["token"]["project"]["id"] == PID
        url = srv.ws(Mode.SENTENCE_STREAM.path(PID))
        res = await run_ws_session(http, url, config_for(Mode.SENTENCE_STREAM), _audio(),
                                   headers={"X-Auth-Token": token})
        assert res.frames[0]["resp_type"] == "START" and res.frames[-1]["reason"] == "NORMAL"
        # a token is scoped to its project
        with pytest.raises(WSServerHandshakeError) as ei:
            await http.ws_connect(srv.ws(Mode.SENTENCE_STREAM.path(OTHER)), headers={"X-Auth-Token": token})
        assert ei.value.status == 401
        with pytest.raises(WSServerHandshakeError):
            await http.ws_connect(url, headers={"X-Auth-Token": token[:-4] + "AAAA"})
        status, token2, body = await _token(http, srv.http("/v3/auth/tokens"), password="wrong")
        assert status == 401 and token2 is None and body["error_code"] == "APIG.0301"
        r = await http.post(srv.http("/v3/auth/tokens"), data=b"{not json")
        assert r.status == 400 and (await r.json())["error_code"] in ("SIS.0032", "SIS.0012")
    logs = caplog.text
    assert "s3cret-pass" not in logs and token not in logs and SK not in logs  # never log credentials


async def test_no_auth_mode_and_public_routes() -> None:
    async with running_server(_settings(no_auth=True)) as srv, HttpClient() as http:
        url = srv.ws(Mode.SHORT_STREAM.path("anyproject"))
        res = await run_ws_session(http, url, config_for(Mode.SHORT_STREAM), _audio())
        assert res.frames[-1]["reason"] == "NORMAL"
    async with running_server(_settings()) as srv, HttpClient() as http:
        for path in ("/", "/metrics", "/healthz"):
            assert (await http.get(srv.http(path))).status == 200
        r = await http.get(srv.http("/v1/x/nothing-here"))
        assert r.status in (401, 404)


async def test_route_decorator_principal_and_errors() -> None:
    from aiohttp import web

    from sis_stream.protocol import reject

    @route(interface="test.echo")
    async def echo(request: web.Request) -> web.Response:
        p = request[PRINCIPAL]
        if request.query.get("fail") == "reject":
            raise reject("SIS.0032", field="data")
        if request.query.get("fail") == "boom":
            raise RuntimeError("internal detail")
        return web.json_response({"kind": p.kind, "name": p.name, "project_id": p.project_id})

    async with running_server(_settings()) as srv, HttpClient() as http:
        srv.app.router._frozen = False
        srv.app.router.add_post("/v1/{project_id}/echo", echo)
        url = srv.http(f"/v1/{PID}/echo")
        body = b'{"a": 1}'
        h = Signer(AkSk(AK, SK)).sign("POST", url, {"Content-Type": "application/json"}, body)
        h.pop("Host")
        r = await http.post(url, data=body, headers=h)
        assert r.status == 200 and await r.json() == {"kind": "aksk", "name": AK, "project_id": PID}
        r = await http.post(url, data=b'{"a": 2}', headers=h)  # body changed after signing
        assert r.status == 401
        h = Signer(AkSk(AK, SK)).sign("POST", url + "?fail=reject", {"Content-Type": "application/json"}, body)
        h.pop("Host")
        r = await http.post(url + "?fail=reject", data=body, headers=h)
        assert r.status == 400 and await r.json() == {"error_code": "SIS.0032", "error_msg": "'data' is invalid"}
        h = Signer(AkSk(AK, SK)).sign("POST", url + "?fail=boom", {"Content-Type": "application/json"}, body)
        h.pop("Host")
        r = await http.post(url + "?fail=boom", data=body, headers=h)
        j = await r.json()
        assert r.status == 500 and j["error_code"] == "SIS.0100" and "internal detail" not in j["error_msg"]
        metrics = await (await http.get(srv.http("/metrics"))).text()
        assert 'successful_calls_of_service{interface="test.echo"} 1' in metrics
        assert 'api_calls_with_5xx_response{interface="test.echo"} 1' in metrics
        assert f'sis_usage_calls_total{{project_id="{PID}",interface="test.echo"}} 1' in metrics


def test_load_credentials_file_env_and_errors(tmp_path) -> None:
    f = tmp_path / "creds.json"
    f.write_text(json.dumps({"access_keys": [{"ak": AK, "sk": SK, "project_id": PID}], "users": []}))
    assert load_credentials(f).access_key(AK).project_id == PID
    assert load_credentials(None, {"SIS_STREAM_CREDENTIALS": str(f)}).access_key(AK) is not None
    env = {"SIS_STREAM_AK": AK, "SIS_STREAM_SK": SK, "SIS_STREAM_PROJECT_ID": PID}
    assert load_credentials(None, env).access_key(AK).project_id == PID
    assert len(load_credentials(None, {})) == 0
    with pytest.raises(ValueError, match="set all of"):
        load_credentials(None, {"SIS_STREAM_AK": AK})
    bad = tmp_path / "bad.json"
    bad.write_text('{"access_keys": [{"ak": "x"}]}')
    with pytest.raises(ValueError) as ei:
        load_credentials(bad)
    assert SK not in str(ei.value)
    with pytest.raises(FileNotFoundError):
        load_credentials(tmp_path / "missing.json")


def test_settings_validation() -> None:
    with pytest.raises(ValueError, match="port must be"):
        ServerSettings(port=70000)
    with pytest.raises(ValueError, match="tls_cert and tls_key"):
        ServerSettings(tls_cert="a.pem")
    with pytest.raises(ValueError, match="max_sessions must be"):
        ServerSettings(max_sessions=0)
    with pytest.raises(TypeError, match="engine_overrides"):
        ServerSettings(engine_overrides="english_16k_common=none")
    with pytest.raises(ValueError, match="token_secret"):
        ServerSettings(token_secret=b"short")
    with pytest.raises(TypeError, match="clock must be callable"):
        ServerSettings(clock=3)
    s = ServerSettings(tls_cert="c.pem", tls_key="k.pem")
    assert s.scheme == "https" and "sk" not in json.dumps(s.public_dict()).lower().replace("skew", "")


def _sdk_old_flow(http_base: str, ws_url: str, audio: bytes) -> list[dict]:
    """The old official RasrClient's flow, with the same libraries it uses (stdlib HTTP for the
    token, websocket-client for the socket): token first, X-Auth-Token on the upgrade, START then
    audio at once, 4000-byte frames every 40 ms, END with cancel as a string, pings every 5 s."""
    import threading
    import time
    import urllib.request

    websocket = pytest.importorskip("websocket")
    body = {"auth": {"identity": {"password": {"user": {"name": "alice", "password": "s3cret-pass",
                                                        "domain": {"name": "acme"}}},
                                  "methods": ["password"]},
                     "scope": {"project": {"name": "cn-north-4"}}}}
    req = urllib.request.Request(http_base + "/v3/auth/tokens", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        token = resp.headers["X-Subject-Token"]
    got: list[dict] = []

    def on_open(ws) -> None:  # noqa: ANN001
        def send() -> None:
            ws.send(json.dumps({"command": "START", "config": {
                "audio_format": "pcm16k16bit", "property": "english_16k_common", "add_punc": "no",
                "vad_head": 10000, "vad_tail": 500, "max_seconds": 30, "interim_results": "no"}}))
            for i in range(0, len(audio), 4000):
                ws.send(audio[i:i + 4000], opcode=websocket.ABNF.OPCODE_BINARY)
                time.sleep(0.04)
            ws.send(json.dumps({"command": "END", "cancel": "false"}))
        threading.Thread(target=send, daemon=True).start()

    def on_message(ws, message) -> None:  # noqa: ANN001
        m = json.loads(message)
        got.append(m)
        _ = m["resp_type"], m["trace_id"]  # the SDK reads both unconditionally
        if m["resp_type"] == "END":
            ws.close()

    app = websocket.WebSocketApp(ws_url, header=[f"X-Auth-Token: {token}"], on_open=on_open, on_message=on_message)
    app.run_forever(ping_interval=5, ping_timeout=4)
    return got


async def test_sdk_style_websocket_client_token_flow() -> None:
    import asyncio

    audio = encode(np.concatenate([silence(200), speech_pcm(SENTENCES[1]), silence(700)]), "pcm16k16bit")
    async with running_server(_settings()) as srv:
        got = await asyncio.wait_for(asyncio.to_thread(
            _sdk_old_flow, srv.http(""), srv.ws(Mode.CONTINUE_STREAM.path(PID)), audio), 60)
    assert [m["resp_type"] for m in got] == ["START", "RESULT", "END"]
    assert got[-1]["reason"] == "NORMAL"
