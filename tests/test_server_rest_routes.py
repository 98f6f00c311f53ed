"""Every REST route: authenticated, counted under its Cloud Eye interface, SIS error bodies; token flow."""

from __future__ import annotations

import json

import pytest
from aiohttp import ClientSession
from test_server_rest_support import (
    DOMAIN,
    PASSWORD,
    PROJECT,
    USER,
    old_sdk_body,
    old_sdk_headers,
    rest_server,
)

from sis_stream.protocol import TokenRequest
from sis_stream.server.rest import RestSettings, rest_settings_from
from sis_stream.server.settings import ServerSettings
from sis_stream.server.state import METRICS

P = PROJECT
#: (method, path, interface): every REST route of the module.
ROUTES = [
    ("POST", f"/v1/{P}/asr/short-audio", "sentence-transcription"),
    ("POST", "/v1.0/voice/asr/sentence", "sentence-transcription"),
    ("POST", f"/v1/{P}/asr/transcriber/jobs", "long-audio-transcription-post"),
    ("GET", f"/v1/{P}/asr/transcriber/jobs/abc", "long-audio-transcription-get"),
    ("POST", f"/v1/{P}/tts", "text-to-speech-customization"),
    ("POST", "/v1.0/voice/tts", "text-to-speech-customization"),
    ("POST", f"/v1/{P}/asr/flash?property=chinese_8k_common", "flash-transcription"),
    ("POST", f"/v1/{P}/asr/vocabularies", "vocabulary-create"),
    ("GET", f"/v1/{P}/asr/vocabularies", "vocabulary-list"),
    ("GET", f"/v1/{P}/asr/vocabularies/abc", "vocabulary-get"),
    ("PUT", f"/v1/{P}/asr/vocabularies/abc", "vocabulary-update"),
    ("DELETE", f"/v1/{P}/asr/vocabularies/abc", "vocabulary-delete"),
    ("GET", f"/v1/{P}/rtts", "real-time-text-to-speech"),
]


async def test_every_route_requires_credentials_and_is_counted(tmp_path):
    async with rest_server(tmp_path) as srv, ClientSession() as http:
        for method, path, _iface in ROUTES:
            async with http.request(method, srv.url(path), data=b"{}",
                                    headers={"Content-Type": "application/json"}) as r:
                body = await r.json()
            assert r.status == 401 and set(body) == {"error_code", "error_msg"}, (path, body)
            assert body["error_code"] == "APIG.0301"
        m = srv.app[METRICS]
        for iface in {i for _m, _p, i in ROUTES}:
            n = sum(1 for _m, _p, i in ROUTES if i == iface)
            assert m.calls(iface) == (0, n, 0), iface


async def test_iam_token_flow_works_on_rest_routes(tmp_path):
    # Token-based SDK flows: POST /v3/auth/tokens (password), then X-Auth-Token on a REST call.
    async with rest_server(tmp_path) as srv, ClientSession() as http:
        req = TokenRequest(USER, PASSWORD, DOMAIN, "cn-north-4").to_dict()
        async with http.post(srv.url("/v3/auth/tokens"), json=req) as r:
            token = r.headers["X-Subject-Token"]
        url = srv.url(f"/v1/{P}/asr/vocabularies")
        async with http.post(url, json={"name": "tok", "contents": ["TOKEN"]},
                             headers={"X-Auth-Token": token}) as r:
            assert r.status == 200, await r.text()
        async with http.get(url, headers={"X-Auth-Token": token + "x"}) as r:
            assert r.status == 401


async def test_unknown_paths_and_methods_answer_json(tmp_path):
    async with rest_server(tmp_path) as srv, ClientSession() as http:
        url = srv.url(f"/v1/{P}/asr/transcriber/jobs")
        body = old_sdk_body(None)
        async with http.delete(url, data=body, headers=old_sdk_headers("DELETE", url, body, srv.host)) as r:
            assert r.status in (404, 405) and "error_code" in await r.json()


def test_rest_settings_from_server_settings(tmp_path):
    # Nothing may be fetched by default, not even loopback (issue 18: no port oracle on loopback).
    rs = rest_settings_from(ServerSettings(host="127.0.0.1", data_dir=tmp_path))
    assert rs.fetch_allow == () and rs.fetch_dir is None and rs.data_dir == tmp_path
    assert rs.transcriber_workers >= 2
    assert rest_settings_from(ServerSettings(host="0.0.0.0")).fetch_allow == ()
    assert rest_settings_from(ServerSettings(fetch_dir=tmp_path)).fetch_dir == tmp_path
    # the server-settings fields the REST module reads when they exist (--fetch-allow ...)
    from types import SimpleNamespace

    ns = SimpleNamespace(host="0.0.0.0", data_dir=None, fetch_allow="files.example,127.0.0.1:9000",
                         flash_store=str(tmp_path), transcriber_workers=3)
    rs = rest_settings_from(ns)
    assert rs.fetch_allow == ("files.example", "127.0.0.1:9000") and rs.transcriber_workers == 3
    assert rs.flash_store == tmp_path


@pytest.mark.parametrize("kw, match", [
    ({"transcriber_workers": 0}, "transcriber_workers"),
    ({"callback_attempts": True}, "callback_attempts"),
    ({"job_retention_s": 0}, "job_retention_s"),
    ({"callback_backoff_s": -1}, "callback_backoff_s"),
    ({"fetch_allow": ("http://x",)}, "HOST"),
])
def test_rest_settings_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        RestSettings(**kw)


def test_error_bodies_are_json_with_two_keys():
    # The catalogue answers the middleware renders carry exactly the two documented keys.
    from sis_stream.protocol.errors import reject

    e = reject("SIS.0201", vocabulary_id="x")
    assert json.loads(json.dumps(e.body())) == {"error_code": "SIS.0201", "error_msg": "vocabulary 'x' does not exist"}
