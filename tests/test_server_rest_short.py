"""Short-audio REST (v1 and the legacy v1.0 sentence API of seed 003): decoding, errors, recognition."""

from __future__ import annotations

import base64
import io
import json
import sys

import numpy as np
import pytest
from aiohttp import ClientSession
from server_helpers import SENTENCES, encode, speech_pcm, whisper_registry  # noqa: F401
from test_server_rest_support import PROJECT, old_sdk_body, old_sdk_headers, rest_server, v3_headers

from sis_stream.audio.formats import AudioFormat, wav_bytes
from sis_stream.errors import RequestRejected
from sis_stream.server.decode import decode_audio
from sis_stream.server.rest import RestSettings
from sis_stream.server.rest_short import parse_short_audio
from sis_stream.server.state import METRICS
from sis_stream.text import wer

SHORT = f"/v1/{PROJECT}/asr/short-audio"
LEGACY = "/v1.0/voice/asr/sentence"


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _wav(pcm: np.ndarray, rate: int, channels: int = 1) -> bytes:
    return wav_bytes(AudioFormat(rate, "pcm", 2, channels), np.ascontiguousarray(pcm).astype("<i2").tobytes())


def _mp3(pcm: np.ndarray, rate: int) -> bytes:
    av = pytest.importorskip("av")
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp3") as c:
        s = c.add_stream("libmp3lame", rate=rate)
        s.layout = "mono"
        fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm, dtype=np.int16).reshape(1, -1), format="s16",
                                        layout="mono")
        fr.sample_rate = rate
        for p in (*s.encode(fr), *s.encode(None)):
            c.mux(p)
    return buf.getvalue()


def _req(data: bytes | str, **config):
    cfg = {"audio_format": "pcm16k16bit", "property": "english_16k_common", **config}
    return {"data": _b64(data) if isinstance(data, bytes) else data, "config": cfg}


async def _post(srv, http, path, obj, *, style="v3"):
    url = srv.url(path)
    body = json.dumps(obj).encode() if style == "v3" else old_sdk_body(obj)
    if style == "none":
        headers = {"Content-Type": "application/json"}
    elif style == "v3":
        headers = v3_headers("POST", url, body)
    else:
        headers = old_sdk_headers("POST", url, body, srv.host)
    async with http.post(url, data=body, headers=headers) as r:
        return r.status, await r.json()


# -- decoding -------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, rate", [("pcm16k16bit", 16000), ("pcm8k16bit", 8000), ("ulaw8k8bit", 8000),
                                       ("alaw16k8bit", 16000), ("ulaw16k8bit", 16000), ("alaw8k8bit", 8000)])
def test_raw_formats_decode(fmt, rate):
    pcm = speech_pcm(SENTENCES[0], rate)
    audio = decode_audio(encode(pcm, fmt), fmt)
    assert audio.rate_hz == rate and audio.channels.shape == (1, len(pcm))
    err = np.abs(audio.channels[0].astype(np.int32) - pcm.astype(np.int32)).max()
    assert err == 0 if fmt.startswith("pcm") else err < 1100  # G.711 quantisation only


def test_wav_stereo_and_mp3_decode():
    pcm = speech_pcm(SENTENCES[1], 16000)
    st = decode_audio(_wav(np.stack([pcm, pcm // 2], axis=1).reshape(-1), 16000, 2), "wav")
    assert st.channels.shape == (2, len(pcm)) and np.array_equal(st.channels[1], pcm // 2)
    mp3 = decode_audio(_mp3(pcm, 16000), "mp3")
    assert mp3.rate_hz == 16000 and abs(mp3.channels.shape[1] - len(pcm)) < 3000
    assert decode_audio(_mp3(pcm, 16000), "auto").rate_hz == 16000  # detection


def test_compressed_formats_without_pyav_are_sis_0602(monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # import av -> ImportError
    with pytest.raises(RequestRejected, match="needs the optional PyAV package") as ei:
        decode_audio(b"\xff\xfb" + bytes(400), "mp3")
    assert ei.value.error_code == "SIS.0602"


@pytest.mark.parametrize("data, fmt, code, match", [
    (b"RIFF\x00\x00\x00\x00WAVEjunk", "wav", "SIS.0602", "WAV audio cannot be read"),
    (b"not a wav at all", "wav", "SIS.0602", "WAV"),
    (b"\x00" * 100, "vox8k4bit", "SIS.0602", "not supported"),
    (bytes(range(256)) * 4, "mp3", "SIS.0602", "no audio|Invalid data"),
])
def test_undecodable_audio(data, fmt, code, match):
    with pytest.raises(RequestRejected, match=match) as ei:
        decode_audio(data, fmt)
    assert ei.value.error_code == code


@pytest.mark.parametrize("body, code, match", [
    ([], "SIS.0601", "JSON object"),
    ({"data": "AAAA"}, "SIS.0012", "'config' is required"),
    ({"config": {"audio_format": "pcm16k16bit", "property": "english_16k_common"}}, "SIS.0012", "'data'"),
    (_req("AAAA", audio_format=None), "SIS.0032", "'audio_format' is invalid"),
    (_req("AAAA", audio_format="flac"), "SIS.0032", "'audio_format' is invalid"),
    (_req("AAAA", property="klingon_16k_common"), "SIS.0032", "'property' is invalid"),
    (_req("AAAA", audio_format="pcm8k16bit"), "SIS.0301", "not match model"),
    (_req("AAAA", add_punc="maybe"), "SIS.0032", "'add_punc' is invalid"),
    (_req("AAAA", need_word_info=True), "SIS.0032", "'need_word_info' is invalid"),
    (_req("AAAA", colour="blue"), "SIS.0031", "'colour' is not supported"),
    (_req("AAAA", vocabulary_id=7), "SIS.0032", "'vocabulary_id' is invalid"),
    (_req("AAAA", user_words="x"), "SIS.0032", "'user_words' is invalid"),
    (_req("not base64!"), "SIS.0601", "not base64"),
    (_req(12), "SIS.0601", "base64 string"),
    (_req("A" * (4 * 1024 * 1024 + 4)), "SIS.0604", "too large"),
])
def test_short_audio_request_validation(body, code, match):
    if isinstance(body, dict) and "config" in body and body["config"].get("audio_format", "x") is None:
        del body["config"]["audio_format"]
        code, match = "SIS.0012", "'audio_format' is required"
    with pytest.raises(RequestRejected, match=match) as ei:
        parse_short_audio(body)
    assert ei.value.error_code == code


# -- routes (none engine: real timings, empty text) -----------------------------------------------

async def test_short_audio_route_success_and_errors(tmp_path):
    pcm16 = speech_pcm(SENTENCES[0], 16000)
    async with rest_server(tmp_path) as srv, ClientSession() as http:
        for fmt, rate in (("pcm16k16bit", 16000), ("ulaw8k8bit", 8000), ("wav", 16000)):
            pcm = speech_pcm(SENTENCES[0], rate)
            data = _wav(pcm, rate) if fmt == "wav" else encode(pcm, fmt)
            prop = "english_16k_common" if rate == 16000 else "english_8k_common"
            st, body = await _post(srv, http, SHORT, _req(data, audio_format=fmt, property=prop, need_word_info="yes"),
                                   style="old")
            assert st == 200, body
            assert set(body) == {"trace_id", "result"} and set(body["result"]) == {"text", "score", "word_info"}
        st, body = await _post(srv, http, SHORT, _req(_mp3(pcm16, 16000), audio_format="mp3"))
        assert st == 200 and "word_info" not in body["result"]
        cases = [
            (_req(_wav(pcm16, 16000), audio_format="wav", property="english_8k_common"), 400, "SIS.0301"),
            (_req(_wav(np.stack([pcm16, pcm16], 1).reshape(-1), 16000, 2), audio_format="wav"), 400, "SIS.0602"),
            (_req(np.zeros(61 * 16000, np.int16).tobytes()), 400, "SIS.0604"),  # 61 s > 1 min
            (_req(b"RIFF1234WAVEfmt ", audio_format="wav"), 400, "SIS.0602"),
            (_req(pcm16.tobytes(), vocabulary_id="NO-SUCH"), 404, "SIS.0201"),
            (_req("%%%"), 400, "SIS.0601"),
        ]
        for req, status, code in cases:
            st, body = await _post(srv, http, SHORT, req)
            assert (st, body["error_code"]) == (status, code), body
            assert set(body) == {"error_code", "error_msg"}
        st, body = await _post(srv, http, SHORT, _req(pcm16.tobytes()), style="none")
        assert st == 401 and body["error_code"] == "APIG.0301"
        ok, c4, c5 = srv.app[METRICS].calls("sentence-transcription")
        assert (ok, c4, c5) == (4, len(cases) + 1, 0)


async def test_legacy_sentence_route(tmp_path):
    rest = RestSettings(data_dir=tmp_path / "data", fetch_dir=tmp_path / "data", fetch_allow=("127.0.0.1",))
    pcm8 = speech_pcm(SENTENCES[2], 8000)
    async with rest_server(tmp_path, rest=rest) as srv, ClientSession() as http:
        st, body = await _post(srv, http, LEGACY, {"data": _b64(_wav(pcm8, 8000)), "encode_type": "wav",
                                                   "sample_rate": "8k"}, style="old")
        assert st == 200 and set(body) == {"result"} and set(body["result"]) == {"words"}
        f = tmp_path / "data" / "clip.wav"
        f.write_bytes(_wav(pcm8, 8000))
        st, body = await _post(srv, http, LEGACY, {"url": f.as_uri()}, style="old")  # 8k, wav by default
        assert st == 200, body
        for payload, status, code in [
            ({"encode_type": "wav"}, 400, "SIS.0012"),
            ({"data": _b64(_wav(pcm8, 8000)), "sample_rate": "16k"}, 400, "SIS.0301"),
            ({"data": _b64(_wav(pcm8, 8000)), "sample_rate": "44k"}, 400, "SIS.0032"),
            ({"data": "AAAA", "encode_type": "flac"}, 400, "SIS.0032"),
            ({"url": "http://10.1.2.3/x.wav"}, 400, "SIS.0608"),
            ({"url": "file:///etc/passwd"}, 400, "SIS.0608"),
        ]:
            st, body = await _post(srv, http, LEGACY, payload, style="old")
            assert (st, body["error_code"]) == (status, code), (payload, body)


# -- real recognition -------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.engine
async def test_whisper_recognises_wav_mp3_and_legacy(tmp_path, whisper_registry):  # noqa: F811
    rest = RestSettings(data_dir=tmp_path / "data", legacy_property_16k="english_16k_common")
    text = SENTENCES[0]
    pcm = speech_pcm(text, 16000)
    async with rest_server(tmp_path, rest=rest, registry=whisper_registry) as srv, ClientSession() as http:
        st, body = await _post(srv, http, SHORT, _req(_wav(pcm, 16000), audio_format="wav", need_word_info="yes",
                                                      add_punc="no", digit_norm="no"))
        assert st == 200, body
        res = body["result"]
        assert wer(text, res["text"]) <= 0.4 and 0.0 < res["score"] <= 1.0
        assert res["word_info"] and all(0 <= w["start_time"] <= w["end_time"] <= len(pcm) // 16 + 1
                                        for w in res["word_info"])
        assert not any(c in res["text"] for c in ".,!?")  # add_punc=no
        st, body = await _post(srv, http, SHORT, _req(_mp3(pcm, 16000), audio_format="mp3"))
        assert st == 200 and wer(text, body["result"]["text"]) <= 0.4
        st, body = await _post(srv, http, LEGACY, {"data": _b64(_wav(pcm, 16000)), "sample_rate": "16k"}, style="old")
        assert st == 200 and wer(text, body["result"]["words"]) <= 0.4


def test_resampling_uses_our_resampler_and_falls_back_for_other_rates():
    from sis_stream.audio.resample import resample
    from sis_stream.server.decode import resample_pcm

    x = speech_pcm(SENTENCES[1], 16000)
    assert np.array_equal(resample_pcm(x, 16000, 8000), resample(x, 16000, 8000))  # ours, bit for bit
    pytest.importorskip("av")
    y = resample_pcm(x[:12000], 12000, 16000)  # a pair ours does not support: libswresample
    assert y.dtype == np.int16 and abs(len(y) - 16000) < 64
