"""SSRF-safe fetch: allow-list, schemes, user info, redirects, size caps, file:// confinement."""

from __future__ import annotations

import os
import socket

import pytest
from aiohttp import web

from sis_stream.errors import RequestRejected
from sis_stream.server.fetch import FetchPolicy, default_allow_hosts, fetch_url, parse_fetch_allow


@pytest.fixture
async def origin():
    """A loopback HTTP server with the pages the tests need; yields its port."""
    app = web.Application()
    state = {}

    async def ok(_r):
        return web.Response(body=b"A" * 100)

    async def big(_r):
        return web.Response(body=b"B" * 5000)

    async def chunked(r):
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(r)
        for _ in range(10):  # 10 x 300 bytes, no Content-Length
            await resp.write(b"C" * 300)
        await resp.write_eof()
        return resp

    async def redirect(r):
        raise web.HTTPFound(r.query["to"].replace("PORT", str(state["port"])))

    async def loop_redirect(_r):
        raise web.HTTPFound("/loop")

    async def missing(_r):
        return web.Response(status=404)

    app.router.add_get("/ok", ok)
    app.router.add_get("/big", big)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/loop", loop_redirect)
    app.router.add_get("/missing", missing)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state["port"] = site._server.sockets[0].getsockname()[1]
    yield state["port"]
    await runner.cleanup()


def _policy(tmp_path, **kw):
    return FetchPolicy(allow_hosts=("127.0.0.1",), input_dir=tmp_path, max_bytes=1000,
                       connect_timeout_s=2.0, total_timeout_s=5.0, **kw)


async def _code(url, policy, **kw):
    with pytest.raises(RequestRejected) as ei:
        await fetch_url(url, policy, **kw)
    return ei.value.error_code, ei.value.error_msg


async def test_allowed_host_is_fetched(origin, tmp_path):
    assert await fetch_url(f"http://127.0.0.1:{origin}/ok", _policy(tmp_path)) == b"A" * 100


async def test_same_host_redirect_is_followed(origin, tmp_path):
    url = f"http://127.0.0.1:{origin}/redirect?to=/ok"
    assert await fetch_url(url, _policy(tmp_path)) == b"A" * 100


@pytest.mark.parametrize("url_tpl, code, match", [
    ("http://localhost:PORT/ok", "SIS.0608", "not on the fetch allow-list"),  # another host name
    ("http://10.0.0.1/ok", "SIS.0608", "not on the fetch allow-list"),
    ("http://169.254.169.254/latest/meta-data", "SIS.0608", "not on the fetch allow-list"),
    ("ftp://127.0.0.1/ok", "SIS.0608", "scheme 'ftp'"),
    ("gopher://127.0.0.1:PORT/", "SIS.0608", "scheme 'gopher'"),
    ("data:audio/wav;base64,AAAA", "SIS.0608", "scheme 'data'"),
    ("127.0.0.1/ok", "SIS.0608", "scheme"),
    ("http://127.0.0.1@evil.example/ok", "SIS.0608", "user information"),
    ("http://user:pw@127.0.0.1:PORT/ok", "SIS.0608", "user information"),
    # redirects: to another host, another port, another scheme
    ("http://127.0.0.1:PORT/redirect?to=http://localhost:PORT/ok", "SIS.0608", "not on the fetch allow-list"),
    ("http://127.0.0.1:PORT/redirect?to=http://10.0.0.1/ok", "SIS.0608", "allow-list"),
    ("http://127.0.0.1:PORT/redirect?to=http://127.0.0.1:1/ok", "SIS.0608", "redirect to another"),
    ("http://127.0.0.1:PORT/redirect?to=file:///etc/passwd", "SIS.0608", "scheme 'file'"),
    ("http://127.0.0.1:PORT/loop", "SIS.0609", "more than 3 redirects"),
    ("http://127.0.0.1:PORT/missing", "SIS.0609", "the source could not be read"),
    ("http://127.0.0.1:PORT/big", "SIS.0537", "too large: 5000 bytes"),  # Content-Length over the cap
    ("http://127.0.0.1:PORT/chunked", "SIS.0537", "too large"),  # streamed past the cap
    ("", "SIS.0032", "data url is empty"),
])
async def test_ssrf_attempts_and_failures_are_rejected(origin, tmp_path, url_tpl, code, match):
    got_code, msg = await _code(url_tpl.replace("PORT", str(origin)), _policy(tmp_path))
    assert got_code == code and match in msg


async def test_oversize_code_is_the_callers(origin, tmp_path):
    code, _ = await _code(f"http://127.0.0.1:{origin}/big", _policy(tmp_path), too_large_code="SIS.0604")
    assert code == "SIS.0604"


async def test_connection_refused_is_sis_0609(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, msg = await _code(f"http://127.0.0.1:{port}/x", _policy(tmp_path))
    assert code == "SIS.0609" and "failed" in msg


async def test_port_pinned_allow_list_entry(origin, tmp_path):
    pol = FetchPolicy(allow_hosts=(f"127.0.0.1:{origin + 1 if origin < 65535 else origin - 1}",), input_dir=tmp_path)
    code, _ = await _code(f"http://127.0.0.1:{origin}/ok", pol)
    assert code == "SIS.0608"
    pol = FetchPolicy(allow_hosts=(f"127.0.0.1:{origin}",), input_dir=tmp_path)
    assert await fetch_url(f"http://127.0.0.1:{origin}/ok", pol) == b"A" * 100


async def test_file_urls_only_below_the_data_dir(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.wav").write_bytes(b"x" * 10)
    (tmp_path / "secret").write_bytes(b"s")
    os.symlink(tmp_path / "secret", data / "link")
    pol = FetchPolicy(input_dir=data, max_bytes=50)
    assert await fetch_url((data / "a.wav").as_uri(), pol) == b"x" * 10
    for url, code in [((tmp_path / "secret").as_uri(), "SIS.0608"),
                      ((data / "link").as_uri(), "SIS.0608"),  # symlink out of the directory
                      (f"file://{data}/../secret", "SIS.0608"),
                      ("file://otherhost/etc/passwd", "SIS.0608"),
                      ((data / "nope.wav").as_uri(), "SIS.0609")]:
        assert (await _code(url, pol))[0] == code, url
    (data / "jobs.sqlite3").write_bytes(b"db")
    (data / "vocabularies.sqlite3-wal").write_bytes(b"db")
    for name in ("jobs.sqlite3", "vocabularies.sqlite3-wal"):
        code, msg = await _code((data / name).as_uri(), pol)
        assert code == "SIS.0608" and msg.endswith("the server's own databases cannot be read")
    (data / "big.wav").write_bytes(b"x" * 51)
    assert (await _code((data / "big.wav").as_uri(), pol))[0] == "SIS.0537"
    assert (await _code((data / "a.wav").as_uri(), FetchPolicy()))[0] == "SIS.0608"  # no data dir


def test_default_allow_list_is_loopback_only_on_loopback():
    assert default_allow_hosts("127.0.0.1") == ("127.0.0.1", "localhost", "::1")
    assert default_allow_hosts("::1") == ("127.0.0.1", "localhost", "::1")
    assert default_allow_hosts("0.0.0.0") == ()
    assert default_allow_hosts("192.168.1.10") == ()


def test_parse_fetch_allow():
    assert parse_fetch_allow("A.example, 127.0.0.1:8080,[::1]:9000,,") == ("a.example", "127.0.0.1:8080", "[::1]:9000")
    for bad in ("http://x", "x/y", "u@x", "x:0", "x:abc"):
        with pytest.raises(ValueError, match="HOST|port"):
            parse_fetch_allow(bad)
