"""The moonshine engine: the folded model transcribes real speech, bounded, as the interface says.

The first fold of a test session takes several seconds (it is cached in a session-wide folder).
"""

from __future__ import annotations

import numpy as np
import onnx  # noqa: F401  (installed by the test extra)
import pytest
from realspeech import asterisk_prompts, librivox

from sis_stream.audio.resample import resample
from sis_stream.engines import moonshine_fold
from sis_stream.engines.moonshine_model import (
    EXTRA_TOKENS,
    TOKENS_PER_SECOND,
    MoonshineModel,
    shipped_model_dir,
)
from sis_stream.errors import EngineConfigError, EngineUnavailableError
from sis_stream.text import word_errors


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("moonshine-cache")


@pytest.fixture(scope="module")
def engine(cache_dir):
    from sis_stream.engines.moonshine import MoonshineEngine

    return MoonshineEngine(cache_dir=cache_dir, precision="float32")


def _total(errs):
    total = errs[0]
    for e in errs[1:]:
        total = total + e
    return total


def test_real_speech_8k_and_16k(engine):
    errs = []
    for u in asterisk_prompts()[:12]:
        with engine.new_stream(language="en") as s:
            s.accept(resample(u.pcm, 8000, 16000))
            hyp = s.finalize()
        assert hyp.is_final and hyp.start_ms == 0 and 0 < hyp.score <= 1
        errs.append(word_errors(u.text, hyp.text))
    for u in librivox()[:2]:
        text, _ = engine.decode(u.pcm)
        errs.append(word_errors(u.text, text))
    # tiny.en measures 2-4 % on these clips; Moonshine base is expected alike.
    assert _total(errs).rate < 0.10, [e.rate for e in errs]


def test_fold_is_cached_and_matches_the_shipped_model(engine, cache_dir):
    entries = [p for p in (cache_dir / "models").iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(entries) == 1 and (entries[0] / "manifest.json").is_file()
    clip = moonshine_fold.verification_clips(shipped_model_dir())[0]
    src = shipped_model_dir()
    shipped = MoonshineModel(src / "encoder_model.ort", src / "decoder_model_merged.ort", src / "tokenizer.bin")
    assert engine.model.token_ids(clip) == shipped.token_ids(clip)


def test_a_fold_that_differs_is_refused(tmp_path, monkeypatch):
    calls = []
    real = MoonshineModel.token_ids

    def skewed(self, audio):
        calls.append(1)
        ids = real(self, audio)
        return ids + [5] if len(calls) == 2 else ids  # the folded model's first clip differs

    monkeypatch.setattr(MoonshineModel, "token_ids", skewed)
    with pytest.raises(EngineUnavailableError, match="differs from the shipped one"):
        moonshine_fold.folded_model(shipped_model_dir(), cache_dir=tmp_path)
    assert [p.name for p in (tmp_path / "models").iterdir() if not p.name.startswith(".")] == []


@pytest.mark.parametrize("kind", ["noise", "tone", "silence"])
def test_token_count_is_bounded_on_unnatural_audio(engine, kind):
    rng = np.random.default_rng(1)
    n = 16000 * 3
    if kind == "noise":
        x = rng.normal(0, 3000, n)
    elif kind == "tone":
        x = 8000 * np.sin(2 * np.pi * 440 * np.arange(n) / 16000)
    else:
        x = np.zeros(n)
    ids = engine.model.token_ids(x.astype(np.int16))
    assert len(ids) <= int(3 * TOKENS_PER_SECOND) + EXTRA_TOKENS


def test_no_word_timings_and_no_hot_words(engine):
    with pytest.raises(EngineConfigError, match="no word timings"):
        engine.new_stream(language="en", word_info=True)
    with engine.new_stream(language="en", hot_words=["Dashwood"]) as s:
        (status,) = s.hot_words
        assert status.word == "Dashwood" and not status.applied and "no hot-word biasing" in status.detail
    with pytest.raises(EngineConfigError, match="does not recognise language 'zh'"):
        engine.new_stream(language="zh")


def test_partials_and_segments_keep_the_stream_clock(engine):
    u = asterisk_prompts()[0]
    pcm = resample(u.pcm, 8000, 16000)
    with engine.new_stream(language="en") as s:
        assert s.partial() is None
        s.accept(pcm[: len(pcm) // 2])
        p1 = s.partial()
        assert p1 is not None and not p1.is_final
        assert s.partial() is p1  # no new audio: no new decode
        s.accept(pcm[len(pcm) // 2:])
        f1 = s.finalize()
        s.accept(pcm)
        f2 = s.finalize()
    ms = len(pcm) * 1000 // 16000
    assert (f1.start_ms, f1.end_ms) == (0, ms)
    assert (f2.start_ms, f2.end_ms) == (ms, 2 * ms)
    assert f1.text == f2.text


def test_tokenizer_table_round_trip(tmp_path):
    from sis_stream.engines.moonshine_model import load_tokenizer

    path = tmp_path / "tok.bin"
    path.write_bytes(bytes([0, 2]) + b"ab" + bytes([3]) + "\u2581x".encode()[:3])
    assert load_tokenizer(path) == (b"", b"ab", "\u2581x".encode()[:3])
    path.write_bytes(bytes([5]) + b"ab")
    with pytest.raises(EngineUnavailableError, match="truncated tokenizer table at token 0"):
        load_tokenizer(path)


def test_a_run_said_twice_is_cut_as_a_loop():
    from sis_stream.engines.moonshine_model import _repeats

    ids = [5, 6, 7, 8, 9, 5, 6, 7, 8]
    assert not _repeats(ids)
    ids.append(9)
    assert _repeats(ids) and ids == [5, 6, 7, 8, 9]
    short = [3, 4, 5, 3, 4, 5]  # three tokens twice: real speech does that ("no no no")
    assert not _repeats(short) and len(short) == 6
