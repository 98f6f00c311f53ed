"""TTS: v1 and legacy REST, the RTTS websocket, parameter mapping, errors, and a TTS -> ASR round trip."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from aiohttp import ClientSession, WSMsgType
from server_helpers import whisper_registry  # noqa: F401 - session fixture
from test_server_rest_support import PROJECT, old_sdk_body, old_sdk_headers, rest_server, v3_headers

from sis_stream.engines import espeak
from sis_stream.audio.formats import read_wav
from sis_stream.audio.codec import decode as g711_decode
from sis_stream.protocol import AkSk, Signer
from sis_stream.server.state import METRICS
from sis_stream.server.synthesis import TtsParams, espeak_parameters, espeak_voice, parse_tts_config
from sis_stream.text import wer

pytestmark = pytest.mark.skipif(not espeak.available(), reason="espeak-ng (tts extra) not installed")

TTS = f"/v1/{PROJECT}/tts"
TEXT = "please call me back tomorrow morning"


async def _post(srv, http, path, obj, *, v3=True):
    url = srv.url(path)
    body = json.dumps(obj).encode() if v3 else old_sdk_body(obj)
    headers = v3_headers("POST", url, body) if v3 else old_sdk_headers("POST", url, body, srv.host)
    async with http.post(url, data=body, headers=headers) as r:
        return r.status, await r.json()


def _duration_s(wav_b64: str) -> tuple[float, int, np.ndarray]:
    w = read_wav(base64.b64decode(wav_b64))
    pcm = np.frombuffer(w.data, "<i2")
    return len(pcm) / w.format.rate_hz, w.format.rate_hz, pcm


# -- mapping ----------------------------------------------------------------------------------

def test_property_voices_map_to_espeak_variants():
    assert espeak_voice("chinese_xiaoyan_common") == ("cmn+f3", 0)
    assert espeak_voice("chinese_xiaoyu_common") == ("cmn+m3", 0)
    assert espeak_voice("chinese_xiaowang_common")[0] == "cmn+f4"
    assert espeak_voice("english_alvin_common") == ("en-us+m3", 0)
    assert espeak_voice("english_amy_common") == ("en-us+f3", 0)


def test_speed_pitch_volume_mapping():
    p = espeak_parameters(TtsParams("x", "english_alvin_common", speed=0, pitch=0, volume=50))
    assert (p["rate_wpm"], p["pitch"], p["volume"]) == (170, 50, 100)
    fast = espeak_parameters(TtsParams("x", "english_alvin_common", speed=500, pitch=500, volume=100))
    slow = espeak_parameters(TtsParams("x", "english_alvin_common", speed=-500, pitch=-500, volume=0))
    assert (fast["rate_wpm"], fast["pitch"], fast["volume"]) == (340, 100, 200)
    assert (slow["rate_wpm"], slow["pitch"], slow["volume"]) == (85, 0, 0)
    assert espeak_parameters(TtsParams("x", "english_alvin_common", speed=-90))["rate_wpm"] == 150


@pytest.mark.parametrize("text, config, code", [
    (None, {}, "SIS.0012"),
    ("", {}, "SIS.0601"),
    ("x" * 501, {}, "SIS.0604"),
    ("hi", [], "SIS.0415"),
    ("hi", {"bogus": 1}, "SIS.0415"),
    ("hi", {"audio_format": "ogg"}, "SIS.0410"),
    ("hi", {"sample_rate": "22050"}, "SIS.0402"),
    ("hi", {"sample_rate": "abc"}, "SIS.0402"),
    ("hi", {"property": "chinese_nobody_common"}, "SIS.0411"),
    ("hi", {"property": "chinese_huanvxia_literature", "sample_rate": "8000"}, "SIS.0402"),
    ("hi", {"speed": 501}, "SIS.0601"),
    ("hi", {"pitch": "0"}, "SIS.0601"),
    ("hi", {"volume": 101}, "SIS.0601"),
    ("hi", {"subtitle": "word_level"}, "SIS.0415"),
])
def test_tts_validation_branches(text, config, code):
    from sis_stream.errors import RequestRejected

    with pytest.raises(RequestRejected) as ei:
        parse_tts_config(text, config)
    assert ei.value.error_code == code


def test_500_characters_are_accepted_and_int_rate_tolerated():
    p = parse_tts_config("x" * 500, {"sample_rate": 16000})
    assert p.rate_hz == 16000 and p.audio_format == "wav" and p.property == "chinese_xiaoyan_common"


# -- routes -----------------------------------------------------------------------------------

async def test_v1_tts_wav_pcm_mp3_at_both_rates(tmp_path):
    async with rest_server(tmp_path) as srv, ClientSession() as http:
        durations = {}
        for rate in ("8000", "16000"):
            st, body = await _post(srv, http, TTS, {"text": TEXT, "config": {"property": "english_alvin_common",
                                                                             "sample_rate": rate}})
            assert st == 200 and set(body) == {"trace_id", "result"}
            dur, got_rate, pcm = _duration_s(body["result"]["data"])
            assert got_rate == int(rate)
            assert 1.0 < dur < 6.0  # six words at ~170 words/min
            assert np.abs(pcm.astype(np.int32)).max() > 1000  # not silence
            durations[rate] = dur
        assert abs(durations["8000"] - durations["16000"]) < 0.05
        st, body = await _post(srv, http, TTS, {"text": TEXT, "config": {"audio_format": "pcm", "sample_rate": "16000",
                                                                         "property": "english_alvin_common"}})
        raw = base64.b64decode(body["result"]["data"])
        assert st == 200 and len(raw) % 2 == 0 and abs(len(raw) / 32000 - durations["16000"]) < 0.05
        av = pytest.importorskip("av")
        st, body = await _post(srv, http, TTS, {"text": TEXT, "config": {"audio_format": "mp3", "sample_rate": "16000",
                                                                         "property": "english_alvin_common"}})
        assert st == 200
        with av.open(io.BytesIO(base64.b64decode(body["result"]["data"]))) as c:
            frames = list(c.decode(c.streams.audio[0]))
        assert frames[0].sample_rate == 16000
        assert abs(sum(f.samples for f in frames) / 16000 - durations["16000"]) < 0.2
        assert srv.app[METRICS].calls("text-to-speech-customization") == (4, 0, 0)


async def test_speed_and_volume_change_the_audio(tmp_path):
    async with rest_server(tmp_path) as srv, ClientSession() as http:
        async def synth(**cfg):
            _st, body = await _post(srv, http, TTS, {"text": TEXT, "config": {"property": "english_amy_common", **cfg}})
            return _duration_s(body["result"]["data"])
        slow, _, _ = await synth(speed=-500)
        fast, _, _ = await synth(speed=500)
        assert slow > 2.0 * fast
        _, _, loud = await synth(volume=100)
        _, _, quiet = await synth(volume=10)
        assert np.abs(loud.astype(np.int32)).max() > 3 * np.abs(quiet.astype(np.int32)).max()


async def test_v1_tts_errors_and_chinese_voice(tmp_path):
    async with rest_server(tmp_path) as srv, ClientSession() as http:
        st, body = await _post(srv, http, TTS, {"text": "欢迎使用语音云服务。"}, v3=False)  # old SDK signing
        assert st == 200 and _duration_s(body["result"]["data"])[0] > 0.5
        st, body = await _post(srv, http, TTS, {"text": "x" * 501})
        assert (st, body["error_code"]) == (400, "SIS.0604")
        st, body = await _post(srv, http, TTS, {"text": "hi", "config": {"property": "nobody"}})
        assert (st, body["error_code"]) == (400, "SIS.0411")
        st, body = await _post(srv, http, TTS, {"config": {}})
        assert (st, body["error_code"]) == (400, "SIS.0012")
        url = srv.url(TTS)
        async with http.post(url, data=b"{not json", headers=v3_headers("POST", url, b"{not json")) as r:
            assert r.status == 400 and (await r.json())["error_code"] == "SIS.0415"
        assert srv.app[METRICS].calls("text-to-speech-customization")[1] == 4


async def test_legacy_tts(tmp_path):
    async with rest_server(tmp_path) as srv, ClientSession() as http:
        st, body = await _post(srv, http, "/v1.0/voice/tts", {"text": "欢迎使用华为云", "voice_name": "xiaoyu",
                                                               "volume": 0, "sample_rate": "16k",
                                                               "speech_speed": 0, "pitch_rate": 0}, v3=False)
        assert st == 200 and set(body) == {"result"}
        assert _duration_s(body["result"]["data"])[1] == 16000
        st, body = await _post(srv, http, "/v1.0/voice/tts", {"text": "你好"}, v3=False)
        assert st == 200 and _duration_s(body["result"]["data"])[1] == 8000  # "8k" default
        for payload, code in [({"text": "x" * 501}, "SIS.0403"), ({"text": "hi", "voice_name": "bob"}, "SIS.0411"),
                              ({"text": "hi", "volume": 21}, "SIS.0601"), ({"text": "hi", "sample_rate": "8000"},
                                                                          "SIS.0402")]:
            st, body = await _post(srv, http, "/v1.0/voice/tts", payload, v3=False)
            assert (st, body["error_code"]) == (400, code), payload


async def test_without_espeak_the_routes_answer_a_clear_error(tmp_path, monkeypatch):
    def unavailable():
        raise espeak.EspeakUnavailableError("espeak-ng is not installed: `pip install 'sis-stream[tts]'`")

    monkeypatch.setattr(espeak, "_get_engine", unavailable)
    async with rest_server(tmp_path) as srv, ClientSession() as http:
        st, body = await _post(srv, http, TTS, {"text": "hello"})
        assert st == 500 and body["error_code"] == "SIS.0401" and "pip install" in body["error_msg"]


# -- RTTS websocket -------------------------------------------------------------------------------

async def _rtts(srv, http, messages, *, read_until=("END", "FATAL_ERROR"), max_msgs=2000):
    url = srv.ws(f"/v1/{PROJECT}/rtts")
    headers = Signer(AkSk(*_aksk())).sign_websocket(url)
    frames, audio = [], bytearray()
    async with http.ws_connect(url, headers=headers) as ws:
        for m in messages:
            await ws.send_str(json.dumps(m))
        for _ in range(max_msgs):
            msg = await ws.receive(timeout=30)
            if msg.type == WSMsgType.BINARY:
                audio += msg.data
            elif msg.type == WSMsgType.TEXT:
                frames.append(json.loads(msg.data))
                if frames[-1]["resp_type"] in read_until:
                    break
            else:
                frames.append({"closed": ws.close_code})
                break
        closed = ws.closed
    return frames, bytes(audio), closed


def _aksk():
    from test_server_rest_support import AK, SK

    return AK, SK


async def test_rtts_streams_the_same_audio(tmp_path):
    cfg = {"audio_format": "pcm", "sample_rate": "16000", "property": "english_alvin_common"}
    async with rest_server(tmp_path) as srv, ClientSession() as http:
        frames, audio, _ = await _rtts(srv, http, [{"command": "START", "text": TEXT, "config": cfg}])
        assert [f["resp_type"] for f in frames] == ["START", "END"]
        assert frames[1]["reason"] == "NORMAL" and frames[0]["trace_id"] == frames[1]["trace_id"]
        _st, body = await _post(srv, http, TTS, {"text": TEXT, "config": cfg})
        rest_pcm = base64.b64decode(body["result"]["data"])
        # same synthesis as POST /tts (espeak-ng itself varies by a few samples between runs)
        assert abs(len(audio) - len(rest_pcm)) < 0.02 * 32000
        assert np.abs(np.frombuffer(audio, "<i2").astype(np.int32)).max() > 1000
        frames, alaw, _ = await _rtts(srv, http, [{"command": "START", "text": TEXT,
                                                  "config": {**cfg, "audio_format": "alaw"}}])
        assert abs(len(alaw) * 2 - len(audio)) < 0.02 * 32000  # one byte per sample
        decoded = np.frombuffer(g711_decode(alaw, "alaw"), "<i2").astype(np.int32)
        assert np.abs(decoded).max() > 1000
        assert srv.app[METRICS].calls("real-time-text-to-speech") == (2, 0, 0)


async def test_rtts_errors(tmp_path):
    async with rest_server(tmp_path, idle_timeout_s=0.3) as srv, ClientSession() as http:
        start = {"command": "START", "text": "hi", "config": {"audio_format": "pcm"}}
        frames, _, _ = await _rtts(srv, http, [{"command": "START", "text": "hi", "config": {"audio_format": "wav"}},
                                               start], read_until=("END",))
        assert frames[0]["resp_type"] == "ERROR" and frames[0]["error_code"] == "SIS.0410"
        assert [f["resp_type"] for f in frames[1:]] == ["START", "END"]  # a bad START started nothing
        frames, _, _ = await _rtts(srv, http, [start, start], read_until=("ERROR",))
        assert frames[-1]["error_code"] == "SIS.0418"
        frames, _, _ = await _rtts(srv, http, [], read_until=())
        assert frames[0]["resp_type"] == "FATAL_ERROR" and frames[0]["error_code"] == "SIS.0416"
        assert "closed" in frames[-1]  # the server closes the connection after FATAL_ERROR
        url = srv.ws(f"/v1/{PROJECT}/rtts")
        async with http.get(url.replace("ws://", "http://"), headers={"Upgrade": "websocket"}) as r:
            assert r.status == 401  # the upgrade is authenticated too


# -- round trip -----------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.engine
async def test_english_tts_to_whisper_asr_round_trip(tmp_path, whisper_registry):  # noqa: F811
    # en-us+m3 (english_alvin_common) at ~150 words/min (speed -90) -> short-audio, WER <= 0.4.
    async with rest_server(tmp_path, registry=whisper_registry) as srv, ClientSession() as http:
        for rate, prop in (("16000", "english_16k_common"), ("8000", "english_8k_common")):
            _st, body = await _post(srv, http, TTS, {"text": TEXT, "config": {
                "property": "english_alvin_common", "sample_rate": rate, "speed": -90}})
            st, res = await _post(srv, http, f"/v1/{PROJECT}/asr/short-audio", {
                "data": body["result"]["data"], "config": {"audio_format": "wav", "property": prop}})
            assert st == 200, res
            assert wer(TEXT, res["result"]["text"]) <= 0.4, (rate, res["result"]["text"])
