"""Property-based fuzzing of the server (issue 18): every REST body, the RASR and RTTS START
configs and websocket frames. Properties: never a 5xx for a client's input, every error is a
documented SIS/APIG error JSON, never an ERROR log with a traceback.

The server runs on its own event loop in a thread (one per module); hypothesis drives it with
blocking calls. Bounded: ``max_examples`` per test and the ``none`` engine, about 20-40 s in all.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any

import pytest
from aiohttp import ClientSession, WSMsgType
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_server_rest_support import CREDS, DOMAIN, NONE_OVERRIDES, PASSWORD, PROJECT, USER

from sis_stream.protocol import CATALOGUE, TokenRequest
from sis_stream.server import ServerSettings
from sis_stream.server.app import create_app
from sis_stream.server.rest import REST_SETTINGS, RestSettings

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


class _Errors(logging.Handler):
    """Collects ERROR records with a traceback (a client mistake must never produce one)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)


class ServerThread:
    def __init__(self, tmp: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.tmp = tmp
        self.port = 0
        self.token = ""

    def call(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def start(self) -> None:
        from aiohttp import web

        app = create_app(ServerSettings(credentials=CREDS, engine_overrides=NONE_OVERRIDES,
                                        data_dir=self.tmp / "data", idle_timeout_s=5.0))
        app[REST_SETTINGS] = RestSettings(data_dir=self.tmp / "data", fetch_allow=("127.0.0.1:9",),
                                          fetch_dir=self.tmp / "in")
        self.runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2.0, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        self.http = ClientSession()
        body = TokenRequest(USER, PASSWORD, DOMAIN, project_name="cn-north-4").to_dict()
        async with self.http.post(self.url("/v3/auth/tokens"), json=body) as r:
            self.token = r.headers["X-Subject-Token"]

    async def stop(self) -> None:
        await self.http.close()
        await self.runner.cleanup()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def request(self, method: str, path: str, data: bytes) -> tuple[int, Any]:
        async with self.http.request(method, self.url(path), data=data, headers={
                "X-Auth-Token": self.token, "Content-Type": "application/json"}) as r:
            raw = await r.read()
        try:
            return r.status, json.loads(raw) if raw else None
        except ValueError:
            return r.status, raw

    async def ws_exchange(self, path: str, frames: list[str | bytes], replies: int = 2) -> list[Any]:
        out: list[Any] = []
        async with self.http.ws_connect(self.url(path), headers={"X-Auth-Token": self.token}) as ws:
            for f in frames:
                if isinstance(f, bytes):
                    await ws.send_bytes(f)
                else:
                    await ws.send_str(f)
            for i in range(replies):
                try:  # the first answer (to START) always comes; later ones may not
                    msg = await asyncio.wait_for(ws.receive(), 5.0 if i == 0 else 0.3)
                except asyncio.TimeoutError:
                    break
                out.append(msg)
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
        return out


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    (tmp / "in").mkdir()
    srv = ServerThread(tmp)
    srv.call(srv.start())
    errors = _Errors()
    logging.getLogger("sis_stream").addHandler(errors)
    srv.errors = errors
    yield srv
    logging.getLogger("sis_stream").removeHandler(errors)
    srv.call(srv.stop())
    srv.loop.call_soon_threadsafe(srv.loop.stop)
    srv.thread.join(10)


# -- strategies -----------------------------------------------------------------------------------

_text = st.one_of(st.text(max_size=12), st.sampled_from(["\ud800", "a\udfffb", "", " ", "yes", "no", "wav",
                                                         "pcm16k16bit", "english_16k_common", "http://[::1",
                                                         "file:///etc/passwd", "http://127.0.0.1:9/x"]))
_scalar = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20),
                    st.floats(allow_nan=True, allow_infinity=True), _text)
_json = st.recursive(_scalar, lambda c: st.lists(c, max_size=4) | st.dictionaries(_text, c, max_size=4),
                     max_leaves=12)

_FIELDS = {
    "short": (["data", "config"], ["audio_format", "property", "add_punc", "digit_norm", "need_word_info",
                                   "vocabulary_id", "auto_language_detect", "user_words"]),
    "legacy": (["data", "url", "encode_type", "sample_rate"], []),
    "jobs": (["data_url", "config"], ["audio_format", "property", "add_punc", "digit_norm", "need_word_info",
                                      "vocabulary_id", "callback_url", "need_analysis_info"]),
    "tts": (["text", "config"], ["audio_format", "sample_rate", "property", "speed", "pitch", "volume",
                                 "subtitle"]),
    "legacy_tts": (["text", "voice_name", "volume", "sample_rate", "speech_speed", "pitch_rate"], []),
    "vocab": (["name", "description", "language", "contents"], []),
    "rasr": (["command", "config"], ["audio_format", "property", "add_punc", "vad_head", "vad_tail",
                                     "max_seconds", "interim_results", "vocabulary_id", "user_words",
                                     "digit_norm", "need_word_info", "vad_threshold"]),
}
_VALID = {"audio_format": "pcm16k16bit", "property": "english_16k_common", "data": "AAAAAAAA",
          "text": "hello", "name": "fuzz", "contents": ["word"], "command": "START", "data_url": "http://127.0.0.1:9/a"}


@st.composite
def _structured(draw: Any, kind: str) -> Any:
    """A body shaped like the route's: known keys, each valid, random, or missing."""
    top, cfg = _FIELDS[kind]
    body: dict[str, Any] = {}
    for key in top:
        if key == "config" and cfg:
            config = {}
            for ck in cfg:
                choice = draw(st.integers(0, 3))
                if choice == 1:
                    config[ck] = _VALID.get(ck, "yes")
                elif choice == 2:
                    config[ck] = draw(_json)
            if draw(st.booleans()):
                config[draw(_text)] = draw(_json)
            body[key] = config if draw(st.integers(0, 5)) else draw(_json)
            continue
        choice = draw(st.integers(0, 2))
        if choice == 1:
            body[key] = _VALID.get(key, "yes")
        elif choice == 2:
            body[key] = draw(_json)
    return body


def _encode(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode("utf-8")


_deep = st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n)
_raw = st.one_of(st.binary(max_size=64), _deep, st.sampled_from([b"{", b"NaN", b"[Infinity]", b'{"a": 1e999}',
                                                                 b'"\\ud800"', b"\xff\xfe", b""]))


def _check_http(srv: ServerThread, status: int, body: Any, what: Any) -> None:
    assert status < 500 or (isinstance(body, dict) and body.get("error_code") == "SIS.0401"), (status, body, what)
    if status >= 400:
        assert isinstance(body, dict) and isinstance(body.get("error_msg"), str), (status, body, what)
        assert body.get("error_code") in CATALOGUE, (status, body, what)
    assert not srv.errors.records, [r.getMessage() for r in srv.errors.records]


_ROUTES = {
    "short": ("POST", f"/v1/{PROJECT}/asr/short-audio"),
    "legacy": ("POST", "/v1.0/voice/asr/sentence"),
    "jobs": ("POST", f"/v1/{PROJECT}/asr/transcriber/jobs"),
    "tts": ("POST", f"/v1/{PROJECT}/tts"),
    "legacy_tts": ("POST", "/v1.0/voice/tts"),
    "vocab": ("POST", f"/v1/{PROJECT}/asr/vocabularies"),
}


@pytest.mark.parametrize("kind", list(_ROUTES))
@FUZZ
@given(data=st.data())
def test_rest_bodies_never_5xx(server, kind, data):
    method, path = _ROUTES[kind]
    body = data.draw(st.one_of(_structured(kind).map(_encode), _json.map(_encode), _raw))
    status, answer = server.call(server.request(method, path, body))
    _check_http(server, status, answer, body[:200])


@FUZZ
@given(body=st.one_of(_structured("vocab").map(_encode), _json.map(_encode), _raw),
       method=st.sampled_from(["PUT", "GET"]))
def test_vocabulary_update_and_list_bodies_never_5xx(server, body, method):
    path = f"/v1/{PROJECT}/asr/vocabularies" + ("/NOPE" if method == "PUT" else "")
    status, answer = server.call(server.request(method, path, body))
    _check_http(server, status, answer, body[:200])


def _check_ws(srv: ServerThread, msgs: list[Any], what: Any) -> None:
    assert msgs, ("no answer at all", what)
    for m in msgs:
        if m.type == WSMsgType.TEXT:
            frame = json.loads(m.data)
            assert frame.get("resp_type") in ("START", "RESULT", "EVENT", "ERROR", "FATAL_ERROR", "END"), frame
            if "error_code" in frame:
                assert frame["error_code"] in CATALOGUE and not frame["error_code"].startswith("SIS.01"), (frame, what)
        elif m.type == WSMsgType.CLOSE:
            assert m.data != 1011, what
    assert not srv.errors.records, [r.getMessage() for r in srv.errors.records]


_frames = st.lists(st.one_of(_json.map(lambda v: json.dumps(v, allow_nan=True)), st.binary(max_size=200),
                             _deep.map(bytes.decode)), max_size=3)


@FUZZ
@given(start=st.one_of(_structured("rasr"), _json), frames=_frames,
       mode=st.sampled_from(["rasr/short-stream", "rasr/sentence-stream", "rasr/continue-stream", "asr/short-audio"]))
def test_rasr_start_configs_and_frames(server, start, frames, mode):
    first = json.dumps(start, allow_nan=True)
    msgs = server.call(server.ws_exchange(f"/v1/{PROJECT}/{mode}", [first, *frames]))
    _check_ws(server, msgs, (first[:200], frames))


@FUZZ
@given(start=st.one_of(_structured("tts").map(lambda b: {"command": "START", **b}), _json), frames=_frames)
def test_rtts_start_and_frames(server, start, frames):
    first = json.dumps(start, allow_nan=True)
    msgs = server.call(server.ws_exchange(f"/v1/{PROJECT}/rtts", [first, *frames], replies=1))
    _check_ws(server, msgs, (first[:200], frames))
