"""The console's server side without a browser: pages and headers, login and the session cookie
(HttpOnly, SameSite=Strict) accepted by REST and websocket routes beside AK/SK and tokens, the
CSRF and origin checks, uploads for file jobs, the monitor data and its ring."""

from __future__ import annotations

import json
import logging
import re

import pytest
from aiohttp import ClientSession, WSServerHandshakeError
from server_helpers import none_settings, running_server

from sis_stream.protocol import AccessKeyRecord, CredentialStore, Principal, UserRecord
from sis_stream.server import METRICS
from sis_stream.server.console.monitor import MonitorRing, parse_prometheus, snapshot
from sis_stream.server.console.routes import MAX_UPLOADS, STATIC_DIR
from sis_stream.server.console.session import COOKIE_NAME, ConsoleSessions

USER, DOMAIN, PASSWORD, PROJECT = "bob", "acme", "s3cret-Passw0rd", "proj-a"
CREDS = CredentialStore([AccessKeyRecord("AK" * 10, "S" * 40, PROJECT)],
                        [UserRecord(USER, PASSWORD, DOMAIN, PROJECT, "cn-north-4"),
                         UserRecord("eve", "other-password", DOMAIN, "proj-b", "cn-north-4")])


def settings(**kw):
    base = {"no_auth": False, "rest_routes": True, "credentials": CREDS}
    base.update(kw)
    return none_settings(**base)


@pytest.fixture
async def srv(tmp_path):
    async with running_server(settings(data_dir=tmp_path / "data")) as s:
        yield s


def origin(s) -> str:
    return s.http("").rstrip("/")


def console_headers(s, sid: str | None = None, **extra: str) -> dict[str, str]:
    h = {"X-Sis-Console": "1", "Origin": origin(s), **extra}
    if sid:
        h["Cookie"] = f"{COOKIE_NAME}={sid}"
    return h


async def login(http: ClientSession, s, password: str = PASSWORD, user: str = USER) -> str:
    async with http.post(s.http("/console/api/login"), headers=console_headers(s),
                         json={"domain": DOMAIN, "name": user, "password": password}) as r:
        assert r.status == 200, await r.text()
        return r.cookies[COOKIE_NAME].value


async def test_browser_root_redirects_and_clients_keep_json(srv):
    async with ClientSession() as http:
        async with http.get(srv.http("/"), headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"},
                            allow_redirects=False) as r:
            assert r.status == 302 and r.headers["Location"] == "/console/"
        async with http.get(srv.http("/"), headers={"Accept": "application/json"}) as r:
            assert r.status == 200 and (await r.json())["server"] == "sis-stream"
        async with http.get(srv.http("/console"), allow_redirects=False) as r:
            assert r.status == 302 and r.headers["Location"] == "/console/"


async def test_pages_and_static_files(srv):
    async with ClientSession() as http:
        for path, ctype in (("/console/", "text/html"), ("/console/monitor", "text/html"),
                            ("/console/static/app.js", "text/javascript"),
                            ("/console/static/capture-worklet.js", "text/javascript"),
                            ("/console/static/console.css", "text/css")):
            async with http.get(srv.http(path)) as r:
                assert r.status == 200, path
                assert r.content_type == ctype, path
                csp = r.headers["Content-Security-Policy"]
                assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
                assert r.headers["X-Content-Type-Options"] == "nosniff"
        for bad in ("/console/static/..%2Fsession.py", "/console/static/missing.js", "/console/static/App.JS",
                    "/console/static/.hidden.js"):
            async with http.get(srv.http(bad)) as r:
                assert r.status == 404, bad
    # Nothing is loaded from outside the server: no absolute URL in any page, script or style.
    for f in STATIC_DIR.iterdir():
        text = f.read_text(encoding="utf-8")
        assert not re.search(r"""(src|href|from|import|url)\s*[=(]?\s*["']?(https?:)?//""", text), f.name


async def test_login_sets_a_strict_httponly_cookie(srv):
    async with ClientSession() as http:
        async with http.post(srv.http("/console/api/login"), headers=console_headers(srv),
                             json={"domain": DOMAIN, "name": USER, "password": PASSWORD}) as r:
            assert r.status == 200
            assert await r.json() == {"user": USER, "project_id": PROJECT}
            raw = r.headers["Set-Cookie"]
        attrs = {a.strip().split("=")[0].lower() for a in raw.split(";")}
        assert {"httponly", "samesite", "path"} <= attrs
        assert "SameSite=Strict" in raw and "Path=/" in raw
        sid = raw.split(";")[0].split("=", 1)[1]
        assert PASSWORD not in raw and len(sid) >= 40
        async with http.get(srv.http("/console/api/session"), headers={"Cookie": f"{COOKIE_NAME}={sid}"}) as r:
            assert await r.json() == {"auth_required": True, "logged_in": True, "user": USER, "project_id": PROJECT}


@pytest.mark.parametrize("body", [
    {"domain": DOMAIN, "name": USER, "password": "wrong"},
    {"domain": "other", "name": USER, "password": PASSWORD},
    {"domain": DOMAIN, "name": "nobody", "password": PASSWORD},
])
async def test_wrong_password_is_refused(srv, body):
    async with ClientSession() as http, \
            http.post(srv.http("/console/api/login"), headers=console_headers(srv), json=body) as r:
        assert r.status == 401
        assert (await r.json())["error_code"] == "APIG.0301"
        assert "Set-Cookie" not in r.headers
    assert srv.app[METRICS].calls("console.login")[1] == 1


async def test_login_needs_the_csrf_header_and_own_origin(srv):
    body = {"domain": DOMAIN, "name": USER, "password": PASSWORD}
    async with ClientSession() as http:
        for headers in ({}, {"X-Sis-Console": "1", "Origin": "http://evil.example"}):
            async with http.post(srv.http("/console/api/login"), headers=headers, json=body) as r:
                assert r.status == 403
                assert "X-Sis-Console" in (await r.json())["error_msg"]
                assert "Set-Cookie" not in r.headers
        async with http.post(srv.http("/console/api/login"), headers=console_headers(srv), data=b"[1]") as r:
            assert r.status == 400


async def test_cookie_authenticates_rest_calls_with_csrf_checks(srv):
    vocab = srv.http(f"/v1/{PROJECT}/asr/vocabularies")
    body = {"name": "cookie_words", "language": "english", "contents": ["hello"]}
    async with ClientSession() as http:
        sid = await login(http, srv)
        cookie = {"Cookie": f"{COOKIE_NAME}={sid}"}
        async with http.get(vocab, headers=cookie) as r:  # a read needs no CSRF header
            assert r.status == 200, await r.text()
        async with http.post(vocab, headers=cookie, json=body) as r:  # no X-Sis-Console, no Origin
            assert r.status == 401 and "X-Sis-Console" in (await r.json())["error_msg"]
        async with http.post(vocab, headers={**cookie, "X-Sis-Console": "1", "Origin": "http://evil.example"},
                             json=body) as r:
            assert r.status == 401 and "another origin" in (await r.json())["error_msg"]
        async with http.get(vocab, headers={**cookie, "Origin": "http://evil.example"}) as r:
            assert r.status == 401
        async with http.post(vocab, headers=console_headers(srv, sid), json=body) as r:
            assert r.status == 200, await r.text()
        # Another project's URL: SIS.0101, as for a token of another project.
        async with http.get(srv.http("/v1/proj-b/asr/vocabularies"), headers=cookie) as r:
            assert r.status == 401 and (await r.json())["error_code"] == "SIS.0101"
        # Explicit credentials are checked as usual, the cookie does not rescue a bad token.
        async with http.get(vocab, headers={**cookie, "X-Auth-Token": "bogus"}) as r:
            assert r.status == 401
        # Logout ends the session on the server: the old cookie is refused.
        async with http.post(srv.http("/console/api/logout"), headers=console_headers(srv, sid)) as r:
            assert r.status == 200
        async with http.get(vocab, headers=cookie) as r:
            assert r.status == 401 and "log in again" in (await r.json())["error_msg"]
        async with http.get(vocab) as r:  # and without anything: the usual missing-token answer
            assert r.status == 401 and "x-auth-token not found" in (await r.json())["error_msg"]


async def test_cookie_authenticates_the_websocket_from_its_own_origin_only(srv):
    url = srv.ws(f"/v1/{PROJECT}/rasr/continue-stream")
    start = {"command": "START", "config": {"audio_format": "pcm16k16bit", "property": "english_16k_common"}}
    async with ClientSession() as http:
        sid = await login(http, srv)
        cookie = {"Cookie": f"{COOKIE_NAME}={sid}"}
        async with http.ws_connect(url, headers=cookie, origin=origin(srv)) as ws:
            await ws.send_str(json.dumps(start))
            msg = json.loads((await ws.receive(timeout=10)).data)
            assert msg["resp_type"] == "START"
            await ws.send_bytes(b"\0" * 3200)
            await ws.send_str(json.dumps({"command": "END", "cancel": False}))
            while msg["resp_type"] != "END":
                msg = json.loads((await ws.receive(timeout=10)).data)
        for headers, kw in ((cookie, {"origin": "http://evil.example"}), (cookie, {}), ({}, {"origin": origin(srv)})):
            with pytest.raises(WSServerHandshakeError) as exc:
                async with http.ws_connect(url, headers=headers, **kw):
                    pass
            assert exc.value.status == 401


async def test_credentials_never_reach_the_logs(srv, caplog):
    caplog.set_level(logging.DEBUG)
    async with ClientSession() as http:
        async with http.post(srv.http("/console/api/login"), headers=console_headers(srv),
                             json={"domain": DOMAIN, "name": USER, "password": "wrong-" + PASSWORD}) as r:
            assert r.status == 401
        sid = await login(http, srv)
        async with http.get(srv.http(f"/v1/{PROJECT}/asr/vocabularies"), headers={"Cookie": f"{COOKIE_NAME}={sid}"}):
            pass
    text = caplog.text
    assert "console login user=bob" in text
    assert PASSWORD not in text and sid not in text


async def test_no_auth_mode_needs_no_login(tmp_path):
    async with running_server(none_settings(rest_routes=True, data_dir=tmp_path)) as s, ClientSession() as http:
        async with http.get(s.http("/console/api/session")) as r:
            body = await r.json()
        assert body["auth_required"] is False and body["logged_in"] is True and body["project_id"] == "local"


async def test_uploads_for_file_jobs(tmp_path):
    inputs = tmp_path / "inputs"
    # Without a local input directory nor a fetchable own address: a clear refusal.
    async with running_server(settings(data_dir=tmp_path / "d1")) as s, ClientSession() as http:
        sid = await login(http, s)
        async with http.post(s.http("/console/api/uploads"), headers=console_headers(s, sid), data=b"RIFF") as r:
            assert r.status == 400
            assert "--fetch-dir" in (await r.json())["error_msg"]
    # With --fetch-dir: file:// URLs below it, the oldest uploads dropped beyond the bound.
    async with running_server(settings(data_dir=tmp_path / "d2", fetch_dir=inputs)) as s, ClientSession() as http:
        sid = await login(http, s)
        urls = []
        for i in range(MAX_UPLOADS + 3):
            async with http.post(s.http("/console/api/uploads"), data=b"x%d" % i,
                                 headers=console_headers(s, sid, **{"X-Upload-Name": "a.WAV"})) as r:
                assert r.status == 200
                urls.append((await r.json())["data_url"])
        assert urls[-1].startswith((inputs / "console-uploads").resolve().as_uri()) and urls[-1].endswith(".wav")
        assert len(list((inputs / "console-uploads").iterdir())) == MAX_UPLOADS
        async with http.post(s.http("/console/api/uploads"), data=b"x") as r:  # no credentials
            assert r.status == 401
    # With the server's own address allowed: an http URL the fetcher can read back.
    async with running_server(settings(data_dir=tmp_path / "d3", fetch_allow=("127.0.0.1",))) as s, \
            ClientSession() as http:
        sid = await login(http, s)
        async with http.post(s.http("/console/api/uploads"), data=b"audio bytes",
                             headers=console_headers(s, sid, **{"X-Upload-Name": "x.ogg"})) as r:
            url = (await r.json())["data_url"]
        assert url.startswith(s.http("/console/api/uploads/"))
        async with http.get(url) as r:
            assert r.status == 200 and await r.read() == b"audio bytes"
        async with http.get(s.http("/console/api/uploads/../../jobs.sqlite3")) as r:
            assert r.status == 404


async def test_monitor_data_counts_calls(srv):
    async with ClientSession() as http:
        sid = await login(http, srv)
        for _ in range(3):
            async with http.get(srv.http(f"/v1/{PROJECT}/asr/vocabularies"), headers={"Cookie": f"{COOKIE_NAME}={sid}"}):
                pass
        async with http.get(srv.http(f"/v1/{PROJECT}/asr/vocabularies/nope"), headers={"Cookie": f"{COOKIE_NAME}={sid}"}):
            pass
        async with http.get(srv.http("/console/api/monitor")) as r:
            data = await r.json()
    now = data["now"]
    assert now["interfaces"]["vocabulary-list"]["ok"] == 3
    get = now["interfaces"]["vocabulary-get"]
    assert get["ok"] == 0 and get["c4xx"] == 1 and get["c5xx"] == 0 and get["p95_ms"] is not None
    assert now["sessions"]["limit"] > 0 and now["engine"]["workers"] >= 1
    assert now["jobs"] == {"waiting": 0, "running": 0}
    assert {"project_id": PROJECT, "interface": "vocabulary-list", "calls": 3, "audio_s": 0.0} in now["usage"]
    assert data["samples"] and data["interval_s"] == 10.0
    # The console's own routes are not counted, except the login.
    assert not any(k.startswith("console.") and k != "console.login" for k in now["interfaces"])


def test_prometheus_parser_and_percentile(tmp_path):
    text = ('# HELP x y\nsuccessful_calls_of_service{interface="a\\"b"} 5\nbad line here\n'
            'sis_call_delay_ms_bucket{interface="a",le="+Inf"} 7\n')
    assert list(parse_prometheus(text)) == [("successful_calls_of_service", {"interface": 'a"b'}, 5.0),
                                            ("sis_call_delay_ms_bucket", {"interface": "a", "le": "+Inf"}, 7.0)]


async def test_monitor_ring_is_bounded(srv):
    ring = MonitorRing(srv.app, interval_s=10, span_s=30)
    for _ in range(5):
        ring.sample()
    assert len(ring.samples) == 3
    m = srv.app[METRICS]
    for ms in [1.0] * 19 + [400.0]:
        m.observe("test-iface", 200, ms, PROJECT)
    row = snapshot(srv.app)["interfaces"]["test-iface"]
    assert row["count"] == 20 and row["p95_ms"] == 5.0 and row["avg_ms"] == pytest.approx(20.95)
    m.observe("test-iface", 200, 60000.0, PROJECT)
    m.observe("test-iface", 503, 60000.0, PROJECT)
    assert snapshot(srv.app)["interfaces"]["test-iface"]["c5xx"] == 1
    with pytest.raises(ValueError):
        MonitorRing(srv.app, interval_s=0)


def test_console_sessions_expire_and_are_bounded():
    t = [0.0]
    store = ConsoleSessions(ttl_s=10, max_sessions=2, clock=lambda: t[0])
    p = Principal("console", USER, PROJECT)
    a, b = store.create(p), store.create(p)
    assert store.get(a) is not None and a != b
    c = store.create(p)  # drop_oldest
    assert store.get(a) is None and store.get(b) is not None and store.get(c) is not None
    t[0] = 10.0
    assert store.get(b) is None and len(store) == 1
    assert a not in repr(store)
    with pytest.raises(ValueError):
        ConsoleSessions(max_sessions=0)
