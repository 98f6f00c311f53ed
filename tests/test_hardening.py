"""Issue 18 regressions: AK/SK body integrity and replays, nothing read before credentials, no
HTTP 500 for client mistakes, websocket error paths, client hang-ups, fetch limits and fairness,
start-up validation of engines, full disk. Each test failed on the code before the fix."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import io
import json
import logging
import socket
import sqlite3
import struct

import pytest
from aiohttp import ClientSession, WSMsgType, web
from test_server_rest_support import (
    AK,
    DOMAIN,
    PASSWORD,
    PROJECT,
    SK,
    USER,
    rest_server,
)

from sis_stream.errors import EngineConfigError
from sis_stream.protocol import (
    AccessKeyRecord,
    AkSk,
    CredentialStore,
    SignatureVerifier,
    Signer,
    TokenRequest,
)
from sis_stream.server import ServerSettings
from sis_stream.server.fetch import FetchPolicy, fetch_url
from sis_stream.server.jobs import FairQueue
from sis_stream.server.rest import VOCABULARIES
from sis_stream.server.serve import serve
from sis_stream.server.state import METRICS

HOST = "127.0.0.1:8080"
URL = f"http://{HOST}/v1/{PROJECT}/asr/short-audio"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _verifier(**kw) -> SignatureVerifier:
    return SignatureVerifier(CredentialStore([AccessKeyRecord(AK, SK, PROJECT)]), **kw)


def _reason(v: SignatureVerifier, method: str, headers: dict, body: bytes) -> str | None:
    from sis_stream.errors import AuthRejected

    try:
        v.verify(method, f"/v1/{PROJECT}/asr/short-audio", headers, body)
    except AuthRejected as exc:
        return exc.reason
    return None


# -- 1. AK/SK body integrity and replays ----------------------------------------------------------

def test_unsigned_content_sha256_header_cannot_swap_the_body():
    body = b'{"data": "AAAA"}'
    h = Signer(AkSk(AK, SK)).sign("POST", URL, {"Content-Type": "application/json"}, body)
    evil = b'{"data": "EVIL"}'
    tampered = {**h, "X-Sdk-Content-Sha256": hashlib.sha256(body).hexdigest()}  # not in SignedHeaders
    assert _reason(_verifier(), "POST", tampered, evil) == "bad_signature"


def test_signed_content_sha256_must_match_the_body_or_be_unsigned_payload():
    body = b"audio bytes"
    signer = Signer(AkSk(AK, SK))
    h = signer.sign("POST", URL, {"X-Sdk-Content-Sha256": hashlib.sha256(body).hexdigest()}, body)
    v = _verifier()
    assert _reason(v, "POST", h, body) is None
    h2 = signer.sign("POST", URL, {"X-Sdk-Content-Sha256": hashlib.sha256(b"other").hexdigest()}, body)
    assert _reason(v, "POST", h2, body) == "bad_signature"
    h3 = signer.sign("POST", URL, {"X-Sdk-Content-Sha256": "UNSIGNED-PAYLOAD"}, b"x")
    assert _reason(v, "POST", h3, b"any body at all") is None
    h4 = signer.sign("POST", URL, {"X-Sdk-Content-Sha256": "not-a-hash"}, body)
    assert _reason(v, "POST", h4, body) == "malformed"


def test_replayed_post_is_rejected_get_is_not_and_memory_is_bounded():
    clock = Clock(1_700_000_000.0)
    v = _verifier(clock=clock, replay_capacity=3)
    signer = Signer(AkSk(AK, SK), clock=clock)
    h = signer.sign("POST", URL, {"Content-Type": "application/json"}, b"{}")
    assert _reason(v, "POST", h, b"{}") is None
    assert _reason(v, "POST", h, b"{}") == "replay"
    g = signer.sign("GET", URL, None, b"")
    assert _reason(v, "GET", g, b"") is None and _reason(v, "GET", g, b"") is None
    for i in range(5):  # fill past the capacity: the oldest entries are dropped (drop_oldest)
        hi = signer.sign("POST", URL, {"X-N": str(i)}, b"{}")
        assert _reason(v, "POST", hi, b"{}") is None
    assert len(v._seen) == 3
    clock.now += 2 * v.max_skew_s + 1  # after the window the entry is forgotten (the date expired anyway)
    assert _reason(v, "POST", h, b"{}") == "expired"
    assert len(v._seen) <= 3


# -- 2. nothing read before credentials; bounded body time -----------------------------------------

async def _raw_request(port: int, head: bytes, body: bytes = b"", *, wait_s: float = 5.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + body)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), wait_s)
    finally:
        writer.close()


async def test_anonymous_post_is_answered_without_reading_its_body(tmp_path):
    async with rest_server(tmp_path) as srv:
        head = (f"POST /v1/{PROJECT}/asr/short-audio HTTP/1.1\r\nHost: {srv.host}\r\n"
                "Content-Type: application/json\r\nContent-Length: 10485760\r\n\r\n").encode()
        answer = await _raw_request(srv.port, head, b"{")  # announces 10 MB, sends one byte
        assert answer.startswith(b"HTTP/1.1 401") and b"APIG.0301" in answer
        assert b"connection: close" in answer.lower()


async def _token(http: ClientSession, srv) -> str:
    body = TokenRequest(USER, PASSWORD, DOMAIN, project_name="cn-north-4").to_dict()
    async with http.post(srv.url("/v3/auth/tokens"), json=body) as r:
        assert r.status == 201
        return r.headers["X-Subject-Token"]


async def test_a_body_that_stalls_is_answered_408_and_closed(tmp_path):
    async with rest_server(tmp_path, body_idle_timeout_s=0.3, body_grace_s=0.2) as srv, ClientSession() as http:
        token = await _token(http, srv)
        head = (f"POST /v1/{PROJECT}/asr/vocabularies HTTP/1.1\r\nHost: {srv.host}\r\nX-Auth-Token: {token}\r\n"
                "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n").encode()
        answer = await _raw_request(srv.port, head, b'{"na')
        assert answer.startswith(b"HTTP/1.1 408") and b"SIS.0032" in answer and b"too slowly" in answer


async def test_unknown_paths_are_404_json_without_credentials(tmp_path):
    async with rest_server(tmp_path) as srv, ClientSession() as http:
        for method, path in [("GET", "/nope"), ("POST", "/v1/x/asr/nothing"), ("GET", "/v2/x")]:
            async with http.request(method, srv.url(path)) as r:
                assert r.status == 404, path
                assert (await r.json())["error_code"] == "APIG.0101"


# -- 3. client mistakes are 400s, never 500 ----------------------------------------------------------

DEEP = b"[" * 20000 + b"]" * 20000


async def _post(http, srv, token, method, path, data: bytes):
    async with http.request(method, srv.url(path), data=data, headers={
            "X-Auth-Token": token, "Content-Type": "application/json"}) as r:
        return r.status, await r.json(content_type=None)


async def test_malformed_bodies_are_400_on_every_rest_route(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    surrogate = b'"\\ud800x"'
    async with rest_server(tmp_path) as srv, ClientSession() as http:
        token = await _token(http, srv)
        p = f"/v1/{PROJECT}"
        cases = [
            *[(m, path, DEEP, code) for m, path, code in [
                ("POST", f"{p}/asr/short-audio", "SIS.0601"), ("POST", "/v1.0/voice/asr/sentence", "SIS.0601"),
                ("POST", f"{p}/asr/transcriber/jobs", "SIS.0534"), ("POST", f"{p}/tts", "SIS.0415"),
                ("POST", "/v1.0/voice/tts", "SIS.0415"), ("POST", f"{p}/asr/vocabularies", "SIS.0032"),
                ("GET", f"{p}/asr/vocabularies", "SIS.0032"), ("PUT", f"{p}/asr/vocabularies/X", "SIS.0032")]],
            ("POST", f"{p}/tts", b'{"text": "hi", "config": {"speed": Infinity}}', "SIS.0415"),
            ("POST", f"{p}/tts", b'{"text": "hi", "config": {"sample_rate": 1e400}}', "SIS.0415"),
            ("POST", f"{p}/tts", b'{"text": "hi", "config": {"pitch": NaN}}', "SIS.0415"),
            ("POST", f"{p}/asr/vocabularies",
             b'{"name": "a", "description": ' + surrogate + b', "contents": ["word"]}', "SIS.0032"),
            ("POST", f"{p}/asr/short-audio", b'{"data": "AAAA", "config": {"audio_format": "pcm16k16bit", '
                                             b'"property": "english_16k_common", "vocabulary_id": '
                                             + surrogate + b'}}', "SIS.0601"),
            ("POST", f"{p}/asr/transcriber/jobs",
             b'{"data_url": "http://[::1", "config": {"property": "chinese_8k_common"}}', "SIS.0608"),
            ("POST", "/v1.0/voice/asr/sentence", b'{"url": "http://[::1"}', "SIS.0608"),
            ("POST", f"{p}/asr/short-audio", json.dumps({"data": "AAAA", "config": {
                "audio_format": "pcm16k16bit", "property": "english_16k_common",
                "user_words": ["word"] * 100_000}}).encode(), "SIS.0032"),
        ]
        for method, path, data, code in cases:
            status, body = await _post(http, srv, token, method, path, data)
            assert status == 400 and body["error_code"] == code, (path, data[:80], status, body)
        # the unauthenticated IAM password
        async with http.post(srv.url("/v3/auth/tokens"), data=b'{"auth": {"identity": {"methods": ["password"], '
                             b'"password": {"user": {"name": "alice", "password": ' + surrogate + b', "domain": '
                             b'{"name": "acme"}}}}, "scope": {"project": {"name": "cn-north-4"}}}}') as r:
            assert r.status == 400 and (await r.json())["error_code"] == "SIS.0032"
        async with http.post(srv.url("/v3/auth/tokens"), data=DEEP) as r:
            assert r.status == 400
        for iface in ("sentence-transcription", "long-audio-transcription-post", "text-to-speech-customization",
                      "vocabulary-create", "vocabulary-list", "vocabulary-update", "iam.tokens"):
            assert srv.app[METRICS].calls(iface)[2] == 0, iface  # no 5xx counted
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# -- 4. websocket error paths --------------------------------------------------------------------

async def _ws_messages(ws, n: int = 5) -> list:
    out = []
    for _ in range(n):
        msg = await asyncio.wait_for(ws.receive(), 10)
        out.append(msg)
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR):
            break
    return out


async def test_rtts_bad_numbers_and_deep_json_are_sis_errors_on_the_socket(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    async with rest_server(tmp_path) as srv, ClientSession() as http:
        token = await _token(http, srv)
        async with http.ws_connect(srv.ws(f"/v1/{PROJECT}/rtts"), headers={"X-Auth-Token": token}) as ws:
            await ws.send_str('{"command": "START", "text": "hello", "config": {"speed": Infinity}}')
            msg = await asyncio.wait_for(ws.receive(), 10)
            assert msg.type == WSMsgType.TEXT and json.loads(msg.data)["resp_type"] == "ERROR"
            await ws.send_str('{"command": "START", "text": "hello", "config": {"volume": 1e999}}')
            msg = await asyncio.wait_for(ws.receive(), 10)
            assert json.loads(msg.data)["error_code"] in ("SIS.0032", "SIS.0601")
            await ws.send_str(DEEP.decode())
            msg = await asyncio.wait_for(ws.receive(), 10)
            assert json.loads(msg.data)["error_code"] == "SIS.0032" and "deep" in json.loads(msg.data)["error_msg"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_rasr_deep_json_after_upgrade_is_an_error_message_not_an_http_500(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    async with rest_server(tmp_path) as srv, ClientSession() as http:
        token = await _token(http, srv)
        async with http.ws_connect(srv.ws(f"/v1/{PROJECT}/rasr/continue-stream"),
                                   headers={"X-Auth-Token": token}) as ws:
            await ws.send_str(DEEP.decode())
            msg = await asyncio.wait_for(ws.receive(), 10)
    assert msg.type == WSMsgType.TEXT and json.loads(msg.data)["resp_type"] in ("ERROR", "FATAL_ERROR")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]


@pytest.mark.parametrize("exc,code,close", [
    (RuntimeError("boom"), "SIS.0100", 1011),
    (RecursionError(), "SIS.0032", 1008),
])
async def test_an_exception_after_the_upgrade_becomes_error_and_close(exc, code, close, caplog):
    # Any websocket handler: the middleware must not write an HTTP 500 into the open socket.
    from server_helpers import running_server

    from sis_stream.server.auth import route

    async def handler(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive()
        raise exc

    async with running_server(ServerSettings(no_auth=True, rest_routes=False)) as srv:
        srv.app.router._frozen = False
        srv.app.router.add_get("/v1/{project_id}/test-ws", route(interface="test")(handler))
        async with ClientSession() as http, http.ws_connect(srv.ws(f"/v1/{PROJECT}/test-ws")) as ws:
            await ws.send_str("go")
            msg = await asyncio.wait_for(ws.receive(), 10)
            assert msg.type == WSMsgType.TEXT and json.loads(msg.data)["error_code"] == code
            msg = await asyncio.wait_for(ws.receive(), 10)
            assert msg.type == WSMsgType.CLOSE and msg.data == close
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert bool(errors) == (code == "SIS.0100")  # a traceback only for the internal error


async def test_rasr_start_with_a_lone_surrogate_is_answered(tmp_path):
    async with rest_server(tmp_path) as srv, ClientSession() as http:
        token = await _token(http, srv)
        async with http.ws_connect(srv.ws(f"/v1/{PROJECT}/rasr/continue-stream"),
                                   headers={"X-Auth-Token": token}) as ws:
            await ws.send_str('{"command": "START", "config": {"audio_format": "pcm16k16bit", '
                              '"property": "english_16k_common", "vocabulary_id": "\\ud800"}}')
            msg = await asyncio.wait_for(ws.receive(), 10)
    assert msg.type == WSMsgType.TEXT and json.loads(msg.data)["error_code"] in ("SIS.0032", "SIS.0201")


def _frame(opcode: int, payload: bytes, *, masked: bool = True) -> bytes:
    head = bytes([0x80 | opcode])
    n = len(payload)
    ln = bytes([(0x80 if masked else 0) | n]) if n < 126 else bytes([(0x80 if masked else 0) | 126]) + struct.pack("!H", n)
    if not masked:
        return head + ln + payload
    key = b"\x01\x02\x03\x04"
    return head + ln + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def _raw_ws(port: int, path: str, token: str, frames: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      f"Sec-WebSocket-Version: 13\r\nX-Auth-Token: {token}\r\n\r\n").encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 101"), head
        await asyncio.sleep(0.05)  # the upgrade is complete before the frames arrive
        writer.write(frames)
        await writer.drain()
        data = b""
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), 10)
            if not chunk:
                return data
            data += chunk
    finally:
        writer.close()


def _close_code(data: bytes) -> int | None:
    i = 0
    while i + 2 <= len(data):  # server frames are unmasked
        op, ln = data[i] & 0x0F, data[i + 1] & 0x7F
        j = i + 2
        if ln == 126:
            ln, j = struct.unpack("!H", data[j:j + 2])[0], j + 2
        if op == 0x8:
            return struct.unpack("!H", data[j:j + 2])[0] if ln >= 2 else None
        i = j + ln
    return None


@pytest.mark.parametrize("frames", [
    _frame(0x1, b'{"command": "START"}', masked=False),
    _frame(0x8, struct.pack("!H", 5000)),
    _frame(0x8, struct.pack("!H", 65535)),
    _frame(0x8, struct.pack("!H", 1006)),
], ids=["unmasked", "close-5000", "close-65535", "close-1006"])
async def test_rtts_closes_protocol_violations_with_1002(tmp_path, frames):
    async with rest_server(tmp_path) as srv, ClientSession() as http:
        token = await _token(http, srv)
        data = await _raw_ws(srv.port, f"/v1/{PROJECT}/rtts", token, frames)
    assert _close_code(data) == 1002


@pytest.mark.parametrize("frames", [
    _frame(0x2, b"\x00" * 3200, masked=False),
    _frame(0x8, struct.pack("!H", 5000)),
], ids=["unmasked", "close-5000"])
async def test_rasr_closes_protocol_violations_with_1002(tmp_path, frames):
    async with rest_server(tmp_path) as srv, ClientSession() as http:
        token = await _token(http, srv)
        data = await _raw_ws(srv.port, f"/v1/{PROJECT}/rasr/continue-stream", token, frames)
    assert _close_code(data) == 1002


# -- 5. client hang-ups ---------------------------------------------------------------------------

async def test_a_client_that_hangs_up_mid_body_is_499_and_info(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    async with rest_server(tmp_path) as srv, ClientSession() as http:
        token = await _token(http, srv)
        _reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write((f"POST /v1/{PROJECT}/asr/vocabularies HTTP/1.1\r\nHost: {srv.host}\r\nX-Auth-Token: {token}\r\n"
                      "Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n{\"name\": ").encode())
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.transport.abort()
        for _ in range(100):
            if srv.app[METRICS].calls("vocabulary-create") != (0, 0, 0):
                break
            await asyncio.sleep(0.02)
        ok, c4, c5 = srv.app[METRICS].calls("vocabulary-create")
        assert (ok, c4, c5) == (0, 1, 0)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("client closed the connection" in r.getMessage() for r in caplog.records)


# -- 8. fetch limits, uniform errors, fairness ------------------------------------------------------

@pytest.fixture
async def origin():
    async def slow(request):
        resp = web.StreamResponse(headers={"Content-Length": "100000"})
        await resp.prepare(request)
        for _ in range(50):
            await resp.write(b"x")
            await asyncio.sleep(0.2)
        return resp

    async def missing(request):
        return web.Response(status=404, text="secret internal page body")

    app = web.Application()
    app.router.add_get("/slow", slow)
    app.router.add_get("/missing", missing)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield site._server.sockets[0].getsockname()[1]
    await runner.cleanup()


async def _fetch_error(url: str, policy: FetchPolicy) -> tuple[str, str]:
    from sis_stream.errors import RequestRejected

    try:
        await fetch_url(url, policy)
    except RequestRejected as exc:
        return exc.error_code, exc.error_msg
    raise AssertionError("no error")


async def test_a_slow_source_is_abandoned_by_the_minimum_rate(origin):
    pol = FetchPolicy(allow_hosts=("127.0.0.1",), min_rate_bps=1000, grace_s=0.3, idle_timeout_s=5.0)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    code, _ = await asyncio.wait_for(_fetch_error(f"http://127.0.0.1:{origin}/slow", pol), 8)
    assert code == "SIS.0609" and loop.time() - t0 < 5.0  # the source would take 10 s


async def test_fetch_errors_are_uniform(origin):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    garbage = await asyncio.start_server(lambda r, w: (w.write(b"SSH-2.0-OpenSSH_9.6 secret-banner\r\n"), w.close()),
                                         "127.0.0.1", 0)
    gport = garbage.sockets[0].getsockname()[1]
    pol = FetchPolicy(allow_hosts=("127.0.0.1",))
    try:
        answers = [await _fetch_error(f"http://127.0.0.1:{p}/{path}", pol)
                   for p, path in [(closed, "a"), (origin, "missing"), (gport, "a")]]
    finally:
        garbage.close()
    msgs = {m.rsplit(":", 1)[-1] for _, m in answers}
    assert {c for c, _ in answers} == {"SIS.0609"} and len(msgs) == 1, answers
    assert not any("secret" in m or "404" in m or "Connect" in m for _, m in answers)


async def test_file_urls_need_an_explicit_input_dir(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"x")
    code, msg = await _fetch_error((tmp_path / "a.wav").as_uri(), FetchPolicy())
    assert code == "SIS.0608" and "--fetch-dir" in msg
    assert await fetch_url((tmp_path / "a.wav").as_uri(), FetchPolicy(input_dir=tmp_path)) == b"x"


async def test_fair_queue_serves_projects_round_robin():
    q = FairQueue(10)
    for i in range(4):
        q.put_nowait("busy", f"b{i}")
    q.put_nowait("other", "o0")
    got = [await q.get() for _ in range(5)]
    assert got.index("o0") <= 1  # not behind the whole backlog of "busy"
    assert [g for g in got if g.startswith("b")] == ["b0", "b1", "b2", "b3"]
    for i in range(10):
        q.put_nowait("p", str(i))
    with pytest.raises(asyncio.QueueFull):
        q.put_nowait("q", "x")


# -- 9. fail fast on configuration ---------------------------------------------------------------

async def test_serve_refuses_to_start_with_a_bad_engine_option(tmp_path):
    settings = ServerSettings(port=0, no_auth=True, rest_routes=False,
                              engine_options={"whisper": {"model_dir": str(tmp_path / "no-model")}})
    out = io.StringIO()
    with pytest.raises(EngineConfigError) as ei:
        await asyncio.wait_for(serve(settings, stop=asyncio.Event(), out=out), 60)
    assert "\n" not in str(ei.value) and "no-model" in str(ei.value)
    assert "listening" not in out.getvalue()


async def test_serve_starts_with_valid_engines():
    settings = ServerSettings(port=0, no_auth=True, rest_routes=False,
                              engine_overrides=("english_16k_common=none",),
                              engine_options={}, registry=None)
    from sis_stream.engines.registry import EngineRegistry

    settings = settings.with_(registry=EngineRegistry({"english_16k_common": "none"}, engine_options={}))
    stop = asyncio.Event()
    out = io.StringIO()
    task = asyncio.create_task(serve(settings, stop=stop, out=out))
    for _ in range(1000):
        if "listening" in out.getvalue():
            break
        await asyncio.sleep(0.02)
    stop.set()
    assert await asyncio.wait_for(task, 20) == 0 and "listening" in out.getvalue()


# -- 10. full disk --------------------------------------------------------------------------------

@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"),
                                   sqlite3.OperationalError("database or disk is full")])
async def test_full_disk_is_503_and_names_the_directory(tmp_path, caplog, error):
    caplog.set_level(logging.INFO)
    async with rest_server(tmp_path) as srv, ClientSession() as http:
        token = await _token(http, srv)

        def full(*_a, **_k):
            raise error

        srv.app[VOCABULARIES].create = full
        status, body = await _post(http, srv, token, "POST", f"/v1/{PROJECT}/asr/vocabularies",
                                   json.dumps({"name": "n", "contents": ["word"]}).encode())
        assert status == 503 and body["error_code"] == "SIS.0302"
        async with http.get(srv.url("/healthz")) as r:  # what needs no disk keeps working
            assert r.status == 200
        status, _ = await _post(http, srv, token, "GET", f"/v1/{PROJECT}/asr/vocabularies", b"")
        assert status == 200
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(str(tmp_path / "data") in m for m in lines), lines


async def test_serve_drops_a_connection_that_never_finishes_its_request_head():
    from sis_stream.engines.registry import EngineRegistry

    settings = ServerSettings(port=0, no_auth=True, rest_routes=False, header_timeout_s=0.5,
                              registry=EngineRegistry({"english_16k_common": "none"}))
    stop, out = asyncio.Event(), io.StringIO()
    task = asyncio.create_task(serve(settings, stop=stop, out=out))
    try:
        for _ in range(1000):
            if "listening" in out.getvalue():
                break
            await asyncio.sleep(0.02)
        port = int(out.getvalue().strip().rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # a slowloris head
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the server
        writer.close()
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


async def test_a_body_read_for_the_signature_is_still_readable_by_the_handler(tmp_path):
    from test_server_rest_support import old_sdk_body, old_sdk_headers

    async with rest_server(tmp_path) as srv, ClientSession() as http:
        body = old_sdk_body({"name": "aksk", "contents": ["hello"]})
        url = srv.url(f"/v1/{PROJECT}/asr/vocabularies")
        async with http.post(url, data=body, headers=old_sdk_headers("POST", url, body, srv.host)) as r:
            assert r.status == 200 and "vocabulary_id" in await r.json()
        # Signed again: within the same second the signature is identical (a replay, 401); in
        # another second it is new and reaches the handler (the name is taken, 400).
        async with http.post(url, data=body, headers=old_sdk_headers("POST", url, body, srv.host)) as r:
            assert (r.status, (await r.json())["error_code"]) in ((401, "APIG.0301"), (400, "SIS.0204"))
