"""REST clients against fake aiohttp routes returning the documented bodies (§11), and the sync wrapper."""

from __future__ import annotations

import asyncio
import base64
import json
import threading

import pytest
from aiohttp import web
from client_fakes import AK, DOMAIN, PROJECT, REGION, SK, USER, FakeSisServer

from sis_stream.errors import (
    SisApiError,
    SisAuthError,
    SisConnectionError,
    SisInvalidRequestError,
    SisNotFoundError,
    SisServerError,
)
from sis_stream.protocol import AccessKeyRecord, AkSk, CredentialStore, SignatureVerifier, Token
from sis_stream.client.rest import IamPassword, SisRestClient

P = f"/v1/{PROJECT}"


class Routes:
    """Fake SIS REST routes; every request's AK/SK signature is verified like APIG does."""

    def __init__(self) -> None:
        self.verifier = SignatureVerifier(CredentialStore([AccessKeyRecord(AK, SK, PROJECT)]), max_failures=1000)
        self.calls: list[tuple[str, str, dict]] = []
        self.fail_next: list[tuple[int, dict]] = []  # (status, body) answered before the real one
        self.jobs_polled = 0

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.middleware])
        r = app.router
        r.add_post(f"{P}/asr/short-audio", self.short_audio)
        r.add_post("/v1.0/voice/asr/sentence", self.legacy)
        r.add_post(f"{P}/asr/transcriber/jobs", self.submit)
        r.add_get(f"{P}/asr/transcriber/jobs/{{job}}", self.query)
        r.add_post(f"{P}/asr/flash", self.flash)
        r.add_post(f"{P}/tts", self.tts)
        r.add_post(f"{P}/asr/vocabularies", self.vocab_create)
        r.add_get(f"{P}/asr/vocabularies", self.vocab_list)
        r.add_get(f"{P}/asr/vocabularies/{{vid}}", self.vocab_get)
        r.add_put(f"{P}/asr/vocabularies/{{vid}}", self.vocab_put)
        r.add_delete(f"{P}/asr/vocabularies/{{vid}}", self.vocab_delete)
        return app

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        body = await request.read()
        headers = [(k.decode(), v.decode()) for k, v in request.raw_headers]
        if any(k.lower() == "authorization" for k, _ in headers):
            try:
                self.verifier.verify(request.method, request.raw_path, headers, body)
            except Exception as exc:  # noqa: BLE001 - AuthRejected
                return web.json_response(exc.body(), status=401)
        elif not any(k.lower() == "x-auth-token" for k, _ in headers):
            return web.json_response({"error_code": "APIG.0301", "error_msg": "x-auth-token not found"}, status=401)
        self.calls.append((request.method, request.raw_path, json.loads(body) if body else {}))
        if self.fail_next:
            status, b = self.fail_next.pop(0)
            return web.json_response(b, status=status, headers={"X-Request-Id": "req-fail"})
        return await handler(request)

    async def short_audio(self, request):
        b = json.loads(await request.read())
        audio = base64.b64decode(b["data"])
        if b["config"]["audio_format"] == "bogus":
            return web.json_response({"error_code": "SIS.0602", "error_msg": "audio format unsupported",
                                      "trace_id": "t-err"}, status=400)
        return web.json_response({"trace_id": "t-1", "result": {
            "text": f"{len(audio)} bytes", "score": 0.9,
            "word_info": [{"start_time": 150, "end_time": 570, "word": "hi"}]}})

    async def legacy(self, request):
        b = json.loads(await request.read())
        if "data" not in b and "url" not in b:
            return web.json_response({"error_code": "SIS.0005", "error_msg": "The service does not exist."}, status=400)
        return web.json_response({"result": {"words": "欢迎使用华为云。"}})

    async def submit(self, request):
        return web.json_response({"job_id": "567e6536-a89c-13c3-a882-826321939656"})

    async def query(self, request):
        self.jobs_polled += 1
        if self.jobs_polled < 3:
            return web.json_response({"status": "WAITING", "create_time": "2018-12-04T13:10:29.310Z"})
        return web.json_response({"status": "FINISHED", "create_time": "2018-12-04T13:10:29.310Z",
                                  "start_time": "x", "finish_time": "y", "audio_duration": 1500, "segments": [
                                      {"start_time": 100, "end_time": 1500, "result": {
                                          "text": "第一句结果。",
                                          "word_info": [{"start_time": 800, "end_time": 1000, "word": "句"}],
                                          "analysis_info": {"role": "AGENT", "emotion": "NORMAL", "speed": 5.62}}}]})

    async def flash(self, request):
        q = request.rel_url.query
        assert request.content_length in (None, 0)
        return web.json_response({"trace_id": "t-f", "audio_duration": 1310, "flash_result": [
            {"channel_id": 0, "sentences": [{"start_time": 560, "end_time": 1320, "result": {
                "text": q["obs_object_key"], "score": 0.831, "word_info": []}}]}]})

    async def tts(self, request):
        return web.json_response({"trace_id": "t-t", "result": {"data": base64.b64encode(b"RIFFwave").decode()}})

    async def vocab_create(self, request):
        return web.json_response({"vocabulary_id": "CFD08A32-6176-4ad7-92F9-11ED015C8109"})

    async def vocab_list(self, request):
        return web.json_response({"count": 1, "result": [
            {"vocabulary_id": "V1", "name": "n", "language": "chinese_mandarin", "description": ""}]})

    async def vocab_get(self, request):
        if request.match_info["vid"] == "missing":
            return web.json_response({"error_code": "SIS.0201", "error_msg": "vocabulary not found"}, status=404)
        return web.json_response({"vocabulary_id": request.match_info["vid"], "name": "n", "description": "",
                                  "language": "chinese_mandarin", "contents": ["华为", "云"]})

    async def vocab_put(self, request):
        return web.json_response({"vocabulary_id": request.match_info["vid"]})

    async def vocab_delete(self, request):
        return web.Response(status=200)


@pytest.fixture
async def routes():
    r = Routes()
    runner = web.AppRunner(r.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    r.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    yield r
    await runner.cleanup()


async def no_sleep(_s):
    await asyncio.sleep(0)


@pytest.fixture
async def rest(routes):
    async with SisRestClient(routes.url, PROJECT, AkSk(AK, SK), sleep=no_sleep) as c:
        yield c


async def test_short_audio(rest, routes):
    r = await rest.recognize_short_audio(b"\x00" * 320, {"audio_format": "pcm16k16bit",
                                                          "property": "chinese_16k_general"})
    assert r.text == "320 bytes" and r.trace_id == "t-1" and r.result.score == 0.9
    assert r.result.words[0].word == "hi" and r.result.words[0].start_time == 150


async def test_short_audio_error_is_typed_with_trace_id(rest):
    with pytest.raises(SisInvalidRequestError) as ei:
        await rest.recognize_short_audio(b"x", {"audio_format": "bogus", "property": "chinese_16k_general"})
    e = ei.value
    assert (e.error_code, e.error_msg, e.trace_id, e.http_status) == ("SIS.0602", "audio format unsupported", "t-err", 400)


async def test_short_audio_validation(rest):
    with pytest.raises(TypeError, match="audio must be bytes"):
        await rest.recognize_short_audio("x", {"audio_format": "wav", "property": "p"})
    with pytest.raises(ValueError, match="missing"):
        await rest.recognize_short_audio(b"x", {"audio_format": "wav"})


async def test_legacy_sentence(rest, routes):
    r = await rest.recognize_sentence_legacy(b"RIFF", encode_type="wav", sample_rate="16k")
    assert r.text == "欢迎使用华为云。"
    assert routes.calls[-1][2]["sample_rate"] == "16k"
    with pytest.raises(ValueError, match="sample_rate"):
        await rest.recognize_sentence_legacy(b"x", sample_rate="44k")
    with pytest.raises(ValueError, match="audio bytes or an OBS url"):
        await rest.recognize_sentence_legacy()


async def test_transcriber_submit_query_wait(rest, routes):
    job = await rest.submit_transcription("https://bucket.obs/x.wav", {"property": "chinese_8k_common"})
    assert job == "567e6536-a89c-13c3-a882-826321939656"
    done = await rest.wait_transcription(job, poll_s=1.0)
    assert done.status == "FINISHED" and routes.jobs_polled == 3
    seg = done.segments[0]
    assert (seg.start_time, seg.end_time, seg.result.text) == (100, 1500, "第一句结果。")
    assert seg.analysis["role"] == "AGENT" and done.audio_duration == 1500


async def test_transcriber_wait_times_out(rest):
    with pytest.raises(TimeoutError, match="still WAITING"):
        await rest.wait_transcription("j", poll_s=1.0, timeout_s=1.0)


async def test_flash_query_is_signed(rest, routes):
    r = await rest.recognize_flash(property="chinese_8k_common", audio_format="wav", obs_bucket_name="test",
                                   obs_object_key="data/0601/test.wav", add_punc="no")
    assert r.sentences[0].result.text == "data/0601/test.wav" and r.audio_duration == 1310
    assert routes.calls[-1][0] == "POST"


async def test_tts(rest):
    r = await rest.synthesize("你好", sample_rate="16000")
    assert r.audio == b"RIFFwave" and r.trace_id == "t-t"
    with pytest.raises(ValueError, match="sample_rate"):
        await rest.synthesize("x", sample_rate=8000)
    with pytest.raises(ValueError, match="shorter than 500"):
        await rest.synthesize("x" * 500)


async def test_hot_words_crud(rest, routes):
    vid = await rest.create_vocabulary("n", ["华为", "云"])
    assert vid == "CFD08A32-6176-4ad7-92F9-11ED015C8109"
    assert routes.calls[-1][2] == {"name": "n", "description": "", "language": "chinese_mandarin",
                                   "contents": ["华为", "云"]}
    lst = await rest.list_vocabularies(limit=5)
    assert lst.count == 1 and lst.vocabularies[0].vocabulary_id == "V1"
    assert "limit=5" in routes.calls[-1][1]
    v = await rest.get_vocabulary("V1")
    assert v.contents == ("华为", "云")
    assert await rest.update_vocabulary("V1", "n", ["云"]) == "V1"
    assert await rest.delete_vocabulary("V1") is None
    with pytest.raises(SisNotFoundError, match="SIS.0201"):
        await rest.get_vocabulary("missing")


async def test_get_is_retried_on_5xx_post_is_not(rest, routes):
    routes.fail_next = [(503, {"error_code": "SIS.0302", "error_msg": "internal"})] * 2
    v = await rest.get_vocabulary("V1")  # two 503s then success: idempotent GET retried
    assert v.vocabulary_id == "V1"
    routes.fail_next = [(503, {"error_code": "SIS.0302", "error_msg": "internal"})]
    with pytest.raises(SisServerError) as ei:
        await rest.create_vocabulary("n", ["云"])
    assert ei.value.trace_id == "req-fail"  # X-Request-Id
    assert [m for m, _, _ in routes.calls].count("POST") == 1


async def test_retries_exhausted_raise_last_error(rest, routes):
    routes.fail_next = [(500, {"error_code": "SIS.0100", "error_msg": "internal"})] * 3
    with pytest.raises(SisServerError, match="SIS.0100"):
        await rest.get_vocabulary("V1")


async def test_bad_signature_is_auth_error(routes):
    async with SisRestClient(routes.url, PROJECT, AkSk(AK, "bad")) as c:
        with pytest.raises(SisAuthError) as ei:
            await c.get_vocabulary("V1")
    assert ei.value.error_code == "APIG.0301" and ei.value.http_status == 401


async def test_non_sis_error_body(routes):
    routes.fail_next = [(502, {"unexpected": True})] * 3
    async with SisRestClient(routes.url, PROJECT, Token("tok"), max_retries=0) as c:
        with pytest.raises(SisApiError, match="HTTP 502"):
            await c.get_vocabulary("V1")


async def test_connection_refused_is_connection_error():
    async with SisRestClient("http://127.0.0.1:9", PROJECT, Token("t"), max_retries=1, sleep=no_sleep) as c:
        with pytest.raises(SisConnectionError, match="GET"):
            await c.get_vocabulary("V1")


def test_rest_constructor_validation():
    with pytest.raises(ValueError, match="endpoint"):
        SisRestClient("wss://x", PROJECT, Token("t"))
    with pytest.raises(ValueError, match="max_retries"):
        SisRestClient("https://x", PROJECT, Token("t"), max_retries=-1)
    with pytest.raises(RuntimeError, match="async with"):
        asyncio.run(SisRestClient("https://x", PROJECT, Token("t")).get_vocabulary("v"))


async def test_iam_token_wrong_password():
    async with FakeSisServer() as srv:
        cred = IamPassword(USER, "nope", DOMAIN, REGION, iam_endpoint=srv.http_url)
        async with SisRestClient(srv.http_url, PROJECT, cred) as c:
            with pytest.raises(SisAuthError, match="username or password"):
                await c.get_vocabulary("v")


# --- sync wrapper -------------------------------------------------------------------------------


class _ThreadServer:
    """FakeSisServer on its own loop thread (the sync client blocks the calling thread)."""

    def __enter__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.srv = FakeSisServer()
        asyncio.run_coroutine_threadsafe(self.srv.__aenter__(), self.loop).result(10)
        return self.srv

    def __exit__(self, *exc):
        asyncio.run_coroutine_threadsafe(self.srv.__aexit__(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


U8 = {"audio_format": "ulaw8k8bit", "property": "chinese_8k_common"}


def test_sync_iterator_and_callbacks():
    from sis_stream.protocol import Ended, FinalResult
    from sis_stream.client.sync import SyncRasrClient

    before = threading.active_count()
    with _ThreadServer() as srv, SyncRasrClient(srv.url, PROJECT, AkSk(AK, SK)) as client:
        with client.stream("continue", U8, pacing=None) as s:
            for k in range(12):
                s.send(bytes([k]) * 800)
            s.end()
            evs = list(s)
        assert [e.text for e in evs if isinstance(e, FinalResult)] == ["b0", "b10"]
        assert isinstance(evs[-1], Ended)
        got: list[object] = []
        with client.stream("short", U8, pacing=None, on_event=got.append) as s2:
            s2.send(bytes([7]) * 800)
        assert [e.text for e in got if isinstance(e, FinalResult)] == ["b7"]
        with pytest.raises(RuntimeError, match="on_event"):  # noqa: SIM117 - reads better nested
            with client.stream("short", U8, pacing=None, on_event=print) as s3:
                list(s3)
    assert threading.active_count() == before  # the loop thread is gone
