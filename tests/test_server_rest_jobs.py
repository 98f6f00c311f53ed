"""Transcriber jobs (store, routes, callbacks with retries, durability across a process kill) and flash ASR."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from aiohttp import ClientSession, web
from server_helpers import SENTENCES, encode, silence, speech_pcm, whisper_registry  # noqa: F401
from test_server_rest_support import PROJECT, rest_server, v3_headers

from sis_stream.audio.formats import AudioFormat, wav_bytes
from sis_stream.errors import RequestRejected
from sis_stream.server.jobs import JobManager, JobStore, rfc3339
from sis_stream.server.rest import JOBS, RestSettings
from sis_stream.server.state import METRICS
from sis_stream.text import wer

JOBS_PATH = f"/v1/{PROJECT}/asr/transcriber/jobs"
FLASH = f"/v1/{PROJECT}/asr/flash"
REPO = Path(__file__).resolve().parents[1]


def _wav(pcm: np.ndarray, rate: int, channels: int = 1) -> bytes:
    return wav_bytes(AudioFormat(rate, "pcm", 2, channels), np.ascontiguousarray(pcm).astype("<i2").tobytes())


def _dither(x: np.ndarray, seed: int = 0) -> np.ndarray:
    # A recording's noise floor (sigma 30): the endpointer does not cut on all-zero digital silence.
    noise = np.random.default_rng(seed).normal(0.0, 30.0, len(x))
    return np.clip(x.astype(np.float64) + noise, -32768, 32767).astype(np.int16)


def _two_sentences(rate: int) -> np.ndarray:
    return _dither(np.concatenate([silence(300, rate), speech_pcm(SENTENCES[0], rate), silence(1200, rate),
                                   speech_pcm(SENTENCES[1], rate), silence(600, rate)]))


async def _call(srv, http, method, path, obj=None):
    url = srv.url(path)
    body = json.dumps(obj).encode() if obj is not None else b""
    ctype = "application/json;charset=utf-8" if method != "GET" else "application/json"
    async with http.request(method, url, data=body, headers=v3_headers(method, url, body, content_type=ctype)) as r:
        return r.status, await r.json()


async def _wait_done(srv, http, job_id, timeout_s=60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        st, body = await _call(srv, http, "GET", f"{JOBS_PATH}/{job_id}")
        assert st == 200, body
        if body["status"] != "WAITING":
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} still WAITING after {timeout_s} s")


# -- store ----------------------------------------------------------------------------------------

def test_rfc3339():
    assert rfc3339(1543929029.31) == "2018-12-04T13:10:29.310Z"
    assert rfc3339(None) is None


def test_store_transitions_guard_against_a_second_completion(tmp_path):
    st = JobStore(tmp_path / "j.sqlite3")
    jid = st.insert("p", {"x": 1}, "http://127.0.0.1:1/cb")
    a1 = st.claim(jid)
    a2 = st.claim(jid)  # a restart re-claims a RUNNING job: attempts 2
    assert (a1, a2) == (1, 2)
    assert not st.complete(jid, a1, segments=[])  # the stale worker cannot finish it
    assert st.complete(jid, a2, segments=[{"start_time": 0}], audio_duration=5)
    assert not st.complete(jid, a2, segments=[])  # nor can anyone finish it twice
    assert st.claim(jid) is None
    rec = st.get(jid)
    assert rec.state == "FINISHED" and rec.callback_state == "PENDING" and rec.segments == [{"start_time": 0}]
    body = rec.public_body()
    assert body["status"] == "FINISHED" and body["audio_duration"] == 5 and body["job_id"] == jid
    assert set(body) == {"job_id", "status", "create_time", "start_time", "finish_time", "audio_duration", "segments"}
    st.record_callback(jid, {"attempt": 1, "status": 500}, None)
    st.record_callback(jid, {"attempt": 2, "status": 200}, "DELIVERED")
    rec = st.get(jid)
    assert rec.callback_state == "DELIVERED" and rec.callback_attempts == 2 and len(rec.callback_log) == 2
    st.close()


async def test_retention_then_task_id_is_not_found(tmp_path):
    now = [1_000_000.0]
    st = JobStore(tmp_path / "j.sqlite3", clock=lambda: now[0])

    async def proc(job, stop):
        return [], 1000

    mgr = JobManager(st, proc, retention_s=72 * 3600)
    await mgr.start()
    try:
        jid = mgr.submit("p", {}, None)
        assert await mgr.wait_idle(10)
        assert mgr.get("p", jid).state == "FINISHED"
        with pytest.raises(RequestRejected, match="task id is not found"):
            mgr.get("other-project", jid)
        now[0] += 72 * 3600 - 1
        assert mgr.get("p", jid).state == "FINISHED"
        now[0] += 2
        with pytest.raises(RequestRejected, match="task id is not found") as ei:
            mgr.get("p", jid)
        assert ei.value.error_code == "SIS.0533"
        assert st.expire(72 * 3600) == 1
    finally:
        await mgr.stop()


async def test_submission_limit_and_poison_job(tmp_path):
    st = JobStore(tmp_path / "j.sqlite3")
    gate = asyncio.Event()

    async def proc(job, stop):
        await gate.wait()
        return [], 0

    mgr = JobManager(st, proc, workers=1, max_waiting=2)
    await mgr.start()
    try:
        mgr.submit("p", {}, None)
        mgr.submit("p", {}, None)
        with pytest.raises(RequestRejected) as ei:
            mgr.submit("p", {}, None)
        assert ei.value.error_code == "SIS.0536" and ei.value.http_status == 429
        gate.set()
        assert await mgr.wait_idle(10)
    finally:
        await mgr.stop()
    # a job claimed MAX_ATTEMPTS times without finishing (crash loop) is failed, not retried forever
    st = JobStore(tmp_path / "j2.sqlite3")
    jid = st.insert("p", {}, None)
    for _ in range(3):
        st.claim(jid)

    async def never(job, stop):
        raise AssertionError("a poison job must not be processed again")

    mgr = JobManager(st, never)
    await mgr.start()
    try:
        assert await mgr.wait_idle(10)
        job = mgr.get("p", jid)
        assert job.state == "ERROR" and job.error_code == "SIS.0307"
    finally:
        await mgr.stop()


# -- callbacks ------------------------------------------------------------------------------------

@pytest.fixture
async def receiver():
    """A loopback callback receiver that fails the first ``fail_first`` POSTs of each job."""
    app = web.Application()
    state = {"fail_first": 2, "calls": [], "seen": {}}

    async def cb(request):
        body = await request.json()
        jid = request.headers.get("X-Sis-Callback-Id")
        state["calls"].append((jid, body))
        n = state["seen"][jid] = state["seen"].get(jid, 0) + 1
        return web.Response(status=500 if n <= state["fail_first"] else 200)

    app.router.add_post("/cb", cb)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state["url"] = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/cb"
    yield state
    await runner.cleanup()


async def test_callback_retries_until_the_receiver_accepts(tmp_path, receiver):
    rest = RestSettings(data_dir=tmp_path / "data", fetch_dir=tmp_path / "data", fetch_allow=("127.0.0.1",), callback_backoff_s=0.05,
                        callback_attempts=5)
    (tmp_path / "data").mkdir()
    audio = tmp_path / "data" / "a.wav"
    audio.write_bytes(_wav(speech_pcm(SENTENCES[0], 8000), 8000))
    async with rest_server(tmp_path, rest=rest) as srv, ClientSession() as http:
        st, body = await _call(srv, http, "POST", JOBS_PATH, {"data_url": audio.as_uri(), "config": {
            "audio_format": "auto", "property": "chinese_8k_common", "callback_url": receiver["url"]}})
        assert st == 200 and set(body) == {"job_id"}
        jid = body["job_id"]
        result = await _wait_done(srv, http, jid)
        assert result["status"] == "FINISHED"
        assert await srv.app[JOBS].wait_idle(10)
        job = srv.app[JOBS].store.get(jid)
        assert job.callback_state == "DELIVERED"
        assert [e["status"] for e in job.callback_log] == [500, 500, 200]
        assert [c[0] for c in receiver["calls"]] == [jid] * 3
        assert receiver["calls"][-1][1] == {**result}  # the GET body, job_id included


async def test_callback_gives_up_after_the_attempts(tmp_path, receiver):
    receiver["fail_first"] = 99
    rest = RestSettings(data_dir=tmp_path / "data", fetch_dir=tmp_path / "data", fetch_allow=("127.0.0.1",), callback_backoff_s=0.01,
                        callback_attempts=3)
    (tmp_path / "data").mkdir()
    audio = tmp_path / "data" / "a.pcm"
    audio.write_bytes(encode(speech_pcm(SENTENCES[0], 8000), "ulaw8k8bit"))
    async with rest_server(tmp_path, rest=rest) as srv, ClientSession() as http:
        _st, body = await _call(srv, http, "POST", JOBS_PATH, {"data_url": audio.as_uri(), "config": {
            "audio_format": "ulaw8k8bit", "property": "chinese_8k_common", "callback_url": receiver["url"]}})
        await _wait_done(srv, http, body["job_id"])
        assert await srv.app[JOBS].wait_idle(10)
        job = srv.app[JOBS].store.get(body["job_id"])
        assert job.callback_state == "FAILED" and len(job.callback_log) == 3 and len(receiver["calls"]) == 3


# -- routes ---------------------------------------------------------------------------------------

async def test_submission_validation_and_job_errors(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a16.wav").write_bytes(_wav(speech_pcm(SENTENCES[0], 16000), 16000))
    (data / "junk.mp3").write_bytes(bytes(range(256)) * 8)
    url = (data / "a16.wav").as_uri()
    ok_cfg = {"property": "chinese_8k_common"}
    async with rest_server(tmp_path) as srv, ClientSession() as http:
        for payload, code in [
            ([1], "SIS.0534"),
            ({"config": ok_cfg}, "SIS.0032"),
            ({"data_url": "", "config": ok_cfg}, "SIS.0032"),
            ({"data_url": "http://10.0.0.1/a.wav", "config": ok_cfg}, "SIS.0608"),
            ({"data_url": "ftp://127.0.0.1/a.wav", "config": ok_cfg}, "SIS.0608"),
            ({"data_url": url}, "SIS.0012"),
            ({"data_url": url, "config": {}}, "SIS.0012"),
            ({"data_url": url, "config": {"property": "chinese_99k_common"}}, "SIS.0533"),
            ({"data_url": url, "config": {**ok_cfg, "audio_format": "flac"}}, "SIS.0533"),
            ({"data_url": url, "config": {**ok_cfg, "add_punc": 1}}, "SIS.0533"),
            ({"data_url": url, "config": {**ok_cfg, "speed": 1}}, "SIS.0031"),
            ({"data_url": url, "config": {**ok_cfg, "callback_url": "http://10.0.0.1/cb"}}, "SIS.0533"),
            ({"data_url": url, "config": {**ok_cfg, "callback_url": "http://127.0.0.1/" + "x" * 2048}}, "SIS.0533"),
            ({"data_url": url, "config": {**ok_cfg, "need_analysis_info": {"channel": "BOTH"}}}, "SIS.0533"),
            ({"data_url": url, "config": {**ok_cfg, "need_analysis_info": {"speed": "yes"}}}, "SIS.0533"),
            ({"data_url": url, "config": {**ok_cfg, "vocabulary_id": "NOPE"}}, "SIS.0201"),
            ({"data_url": url, "config": {**ok_cfg, "audio_format": "pcm16k16bit"}}, "SIS.0301"),
            ({"data_url": url, "extra": 1, "config": ok_cfg}, "SIS.0031"),
        ]:
            st, body = await _call(srv, http, "POST", JOBS_PATH, payload)
            assert st >= 400 and body["error_code"] == code, (payload, body)
        # jobs that fail while processing end in ERROR with the code and the times
        for payload, code in [
            ({"data_url": (data / "missing.wav").as_uri(), "config": ok_cfg}, "SIS.0609"),
            ({"data_url": (data / "junk.mp3").as_uri(), "config": {**ok_cfg, "audio_format": "mp3"}}, "SIS.30006"),
            ({"data_url": url, "config": ok_cfg}, "SIS.0301"),  # 16 kHz WAV for an 8 kHz model
            ({"data_url": url, "config": {**ok_cfg, "audio_format": "vox8k4bit"}}, "SIS.0535"),
        ]:
            st, body = await _call(srv, http, "POST", JOBS_PATH, payload)
            assert st == 200, body
            res = await _wait_done(srv, http, body["job_id"])
            assert res["status"] == "ERROR" and res["error_code"] == code, res
            assert {"create_time", "start_time", "finish_time", "error_msg"} <= set(res)
        st, body = await _call(srv, http, "GET", f"{JOBS_PATH}/no-such-job")
        assert (st, body) == (400, {"error_code": "SIS.0533", "error_msg": "task id is not found"})
        m = srv.app[METRICS]
        assert m.calls("long-audio-transcription-post") == (4, 18, 0)
        assert m.calls("long-audio-transcription-get")[1] == 1


@pytest.mark.slow
@pytest.mark.engine
async def test_transcriber_and_flash_with_whisper(tmp_path, whisper_registry):  # noqa: F811
    data = tmp_path / "data"
    (data / "obs" / "bucket-1" / "calls").mkdir(parents=True)
    mono8 = _two_sentences(8000)
    (data / "two.wav").write_bytes(_wav(mono8, 8000))
    left = np.concatenate([speech_pcm(SENTENCES[0], 8000), silence(3000, 8000)])
    right = np.concatenate([silence(3000, 8000), speech_pcm(SENTENCES[2], 8000)])
    n = max(len(left), len(right))
    left, right = (_dither(np.pad(x, (0, n - len(x))), seed) for seed, x in enumerate((left, right)))
    stereo = np.stack([left, right], axis=1).reshape(-1)
    (data / "stereo.wav").write_bytes(_wav(stereo, 8000, 2))
    (data / "obs" / "bucket-1" / "calls" / "a b.wav").write_bytes(_wav(stereo, 8000, 2))
    async with rest_server(tmp_path, registry=whisper_registry) as srv, ClientSession() as http:
        cfg = {"audio_format": "auto", "property": "english_8k_common", "add_punc": "no", "need_word_info": "yes",
               "need_analysis_info": {"diarization": True, "channel": "MONO", "emotion": True, "speed": True}}
        _st, body = await _call(srv, http, "POST", JOBS_PATH, {"data_url": (data / "two.wav").as_uri(), "config": cfg})
        res = await _wait_done(srv, http, body["job_id"])
        assert res["status"] == "FINISHED", res
        assert abs(res["audio_duration"] - len(mono8) // 8) <= 1
        segs = res["segments"]
        assert len(segs) == 2 and segs[0]["end_time"] <= segs[1]["start_time"]
        assert wer(f"{SENTENCES[0]} {SENTENCES[1]}", " ".join(s["result"]["text"] for s in segs)) <= 0.4
        for s in segs:
            info = s["result"]["analysis_info"]
            assert set(info) == {"speed"} and 5 < info["speed"] < 30  # characters per second; no role/emotion
            assert all(s["start_time"] - 400 <= w["start_time"] <= w["end_time"] <= s["end_time"] + 400
                       for w in s["result"]["word_info"])
        cfg2 = {"property": "english_8k_common", "need_analysis_info": {"channel": "RIGHT_AGENT", "speed": False}}
        _st, body = await _call(srv, http, "POST", JOBS_PATH, {"data_url": (data / "stereo.wav").as_uri(),
                                                              "config": cfg2})
        res = await _wait_done(srv, http, body["job_id"])
        roles = [(s["result"]["analysis_info"]["role"], s["result"]["text"]) for s in res["segments"]]
        assert [r for r, _ in roles] == ["USER", "AGENT"], roles  # left first in time; right is the agent
        assert wer(SENTENCES[2], roles[1][1]) <= 0.4
        # flash: per-channel results from the local store; the SDK's leading '&' in the query
        q = "?&property=english_8k_common&audio_format=wav&obs_bucket_name=bucket-1&obs_object_key=calls%2Fa%20b.wav"
        st, body = await _call(srv, http, "POST", FLASH + q)
        assert st == 200, body
        assert [c["channel_id"] for c in body["flash_result"]] == [0, 1]
        assert abs(body["audio_duration"] - n // 8) <= 1
        texts = [" ".join(s["result"]["text"] for s in c["sentences"]) for c in body["flash_result"]]
        assert wer(SENTENCES[0], texts[0]) <= 0.4 and wer(SENTENCES[2], texts[1]) <= 0.4
        assert all("score" in s["result"] for c in body["flash_result"] for s in c["sentences"])
        st, body = await _call(srv, http, "POST", FLASH + q + "&first_channel_only=yes")
        assert [c["channel_id"] for c in body["flash_result"]] == [0]


async def test_flash_errors(tmp_path):
    store = tmp_path / "data" / "obs" / "bkt"
    store.mkdir(parents=True)
    (store / "a.wav").write_bytes(_wav(speech_pcm(SENTENCES[0], 8000), 8000))
    (tmp_path / "data" / "secret.wav").write_bytes(b"x")
    base = "?property=chinese_8k_common&audio_format=wav&obs_bucket_name=bkt"
    async with rest_server(tmp_path) as srv, ClientSession() as http:
        st, body = await _call(srv, http, "POST", FLASH + base + "&obs_object_key=a.wav")
        assert st == 200 and body["flash_result"][0]["channel_id"] == 0
        for q, status, code in [
            (base + "&obs_object_key=missing.wav", 404, "SIS.30002"),
            (base + "&obs_object_key=..%2Fsecret.wav", 400, "SIS.0608"),
            (base, 400, "SIS.0012"),
            ("?property=chinese_8k_common&audio_format=flac&obs_bucket_name=bkt&obs_object_key=a.wav", 400, "SIS.0032"),
            ("?property=nope&audio_format=wav&obs_bucket_name=bkt&obs_object_key=a.wav", 400, "SIS.0032"),
            (base.replace("bkt", "B") + "&obs_object_key=a.wav", 400, "SIS.0032"),
            (base + "&obs_object_key=a.wav&first_channel_only=maybe", 400, "SIS.0032"),
            (base + "&obs_object_key=a.wav&colour=red", 400, "SIS.0031"),
            (base.replace("chinese_8k_common", "chinese_16k_conversation").replace("wav", "wav")
             + "&obs_object_key=a.wav", 400, "SIS.0301"),
        ]:
            st, body = await _call(srv, http, "POST", FLASH + q)
            assert (st, body.get("error_code")) == (status, code), (q, body)


# -- durability across a process kill -----------------------------------------------------------

_SERVER_SCRIPT = r"""
import asyncio, sys, time
from aiohttp import web
from sis_stream.engines.null import NullEngine
from sis_stream.engines.registry import ENGINE_FACTORIES, EngineRegistry
from sis_stream.server import ServerSettings, create_app
from sis_stream.server.rest import REST_SETTINGS, RestSettings

data_dir, delay_s = sys.argv[1], float(sys.argv[2])

class SlowNullEngine(NullEngine):
    # The none engine made slow (a sleep per sentence), so the test can kill the server mid-job.
    def new_stream(self, **kw):
        stream = super().new_stream(**kw)
        fin = stream._finalize
        def slow():
            time.sleep(delay_s)
            return fin()
        stream._finalize = slow
        return stream

async def main():
    reg = EngineRegistry(["chinese_8k_common=none"], factories={**ENGINE_FACTORIES, "none": lambda **o: SlowNullEngine()})
    app = create_app(ServerSettings(no_auth=True, registry=reg, data_dir=data_dir))
    app[REST_SETTINGS] = RestSettings(data_dir=data_dir, fetch_dir=data_dir, fetch_allow=("127.0.0.1",), callback_backoff_s=0.05,
                                  transcriber_workers=1)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print("PORT", site._server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def _start_server(script: Path, data: Path, delay_s: float) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, str(script), str(data), str(delay_s)], stdout=subprocess.PIPE,  # noqa: ASYNC220
                            cwd=str(REPO), env={**os.environ, "PYTHONUNBUFFERED": "1"})
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
    assert line.startswith(b"PORT "), line
    return proc, int(line.split()[1])


def _states(db: Path) -> dict[str, tuple[str, str]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return {r[0]: (r[1], r[2]) for r in con.execute("SELECT job_id, state, callback_state FROM jobs")}
    finally:
        con.close()


@pytest.mark.slow
async def test_jobs_survive_a_process_kill_and_finish_exactly_once(tmp_path, receiver):
    receiver["fail_first"] = 0
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.wav").write_bytes(_wav(_two_sentences(8000), 8000))  # two sentences: two slow finalizes
    script = tmp_path / "server.py"
    script.write_text(_SERVER_SCRIPT)
    proc, port = await _start_server(script, data, 0.6)
    job_ids: list[str] = []
    try:
        async with ClientSession() as http:
            for _ in range(4):
                async with http.post(f"http://127.0.0.1:{port}{JOBS_PATH}", json={
                        "data_url": (data / "a.wav").as_uri(),
                        "config": {"property": "chinese_8k_common", "callback_url": receiver["url"]}}) as r:
                    job_ids.append((await r.json())["job_id"])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # kill once one job is done (callback delivered) and one is running
            st = _states(data / "jobs.sqlite3")
            if (any(v == ("FINISHED", "DELIVERED") for v in st.values())
                    and any(v[0] == "RUNNING" for v in st.values())):
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError(f"never saw a finished and a running job: {st}")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    before = _states(data / "jobs.sqlite3")
    assert sum(v[0] == "RUNNING" for v in before.values()) == 1
    assert any(v[0] == "WAITING" for v in before.values())
    proc, port = await _start_server(script, data, 0.0)
    try:
        async with ClientSession() as http:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                st = _states(data / "jobs.sqlite3")
                if all(v == ("FINISHED", "DELIVERED") for v in st.values()):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"jobs did not all finish after the restart: {st}")
            for jid in job_ids:
                async with http.get(f"http://127.0.0.1:{port}{JOBS_PATH}/{jid}") as r:
                    assert (await r.json())["status"] == "FINISHED"
            await asyncio.sleep(0.3)  # room for a (wrong) duplicate callback to arrive
    finally:
        proc.terminate()
        proc.wait(10)
    assert sorted(receiver["seen"]) == sorted(job_ids)
    assert all(n == 1 for n in receiver["seen"].values()), receiver["seen"]  # no loss, no duplicate
