"""Batched decoding through the recognizer: the deferred BufferedStream API, the SessionRecognizer
with a DecodeBatcher (order, batching across sessions, flow control, skipped partials, close,
overload, time to final), and the server wiring."""

from __future__ import annotations

import asyncio
import gc
import threading

import numpy as np
import pytest
from server_helpers import SENTENCES, config_for, silence, speech_pcm

from sis_stream.engines.base import Engine, Hypothesis
from sis_stream.engines.batcher import DecodeBatcher, DecodeJob
from sis_stream.engines.buffered import FIXED_WINDOW_MAX_BATCH, BufferedStream, EngineBatchDecoder
from sis_stream.engines.interim import InterimSettings
from sis_stream.engines.pool import EngineExecutor
from sis_stream.engines.routing import RoutingEngine, RoutingStream
from sis_stream.protocol import Mode, ResultResponse
from sis_stream.server.recognizer import RecognitionFailed, SessionRecognizer

WAIT_S = 20.0


class FakeEngine(Engine):
    """decode() and decode_batch() give the same text ("n<samples>"); decode_batch may be held."""

    name = "fake"
    punctuates = True
    languages = ("en",)

    def __init__(self, *, batch: bool = True) -> None:
        self.single: list[int] = []
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self._lock = threading.Lock()
        if not batch:
            self.decode_batch = None  # type: ignore[assignment]

    def new_stream(self, *, language="en", hot_words=(), word_info=False):
        return FakeStream(self, language=language, word_info=word_info)

    def decode(self, audio):
        self.single.append(len(audio))
        return f"n{len(audio)}", 0.9

    def decode_batch(self, audios):
        with self._lock:
            self.batches.append([len(a) for a in audios])
        self.entered.set()
        assert self.gate.wait(WAIT_S)
        return [(f"n{len(a)}", 0.9) for a in audios]


class FakeStream(BufferedStream):
    def decode_segment(self, audio, start_ms, end_ms, final):
        text, score = self.engine.decode(audio)
        return Hypothesis(text, score, (), start_ms, end_ms, final)


# -- the deferred BufferedStream API ----------------------------------------------------------------

def test_plan_final_takes_the_segment_and_keeps_the_clock():
    eng = FakeEngine()
    s = eng.new_stream()
    assert s.batchable
    s.accept(np.ones(16000, np.int16))
    job = s.plan_final()
    assert isinstance(job, DecodeJob) and job.final and len(job.audio) == 16000
    assert s.segment_samples == 0 and s.position_ms == 1000  # the segment ended, the clock runs on
    hyp = job.complete("hello", 0.8)
    assert (hyp.text, hyp.score, hyp.start_ms, hyp.end_ms, hyp.is_final) == ("hello", 0.8, 0, 1000, True)
    s.accept(np.ones(8000, np.int16))
    job2 = s.plan_final()
    assert (job2.complete("", 0.7).score, job2.complete("x", 0.7).start_ms) == (0.0, 1000)
    empty = s.plan_final()  # nothing buffered: the empty final, nothing to decode
    assert isinstance(empty, Hypothesis) and empty.text == "" and empty.is_final


def test_plan_partial_caches_and_ignores_a_late_completion():
    eng = FakeEngine()
    s = eng.new_stream()
    assert s.plan_partial() is None
    s.accept(np.ones(8000, np.int16))
    job = s.plan_partial()
    assert isinstance(job, DecodeJob) and not job.final
    hyp = job.complete("partial one", 0.5)
    assert s.plan_partial() is hyp  # no new audio: the cached partial, no decode
    s.accept(np.ones(8000, np.int16))
    late = s.plan_partial()
    assert isinstance(late, DecodeJob)
    final = s.plan_final()  # the segment ends before the partial's decode completes
    late.complete("stale", 0.5)  # on a batcher thread, after the final was planned
    s.accept(np.ones(8000, np.int16))
    fresh = s.plan_partial()
    assert isinstance(fresh, DecodeJob)  # the stale result was not cached for the new segment
    assert final.complete("f", 0.9).end_ms == 1000


def test_synchronous_verbs_use_a_batch_of_one():
    eng = FakeEngine()
    s = eng.new_stream()
    s.accept(np.ones(4000, np.int16))
    assert s.partial().text == "n4000" and eng.batches == [[4000]]
    assert s.partial().text == "n4000" and eng.batches == [[4000]]  # cached
    assert s.finalize().text == "n4000" and eng.single == [4000]  # finals: decode_segment


def test_interim_policy_decodes_only_the_planned_span():
    eng = FakeEngine()
    eng.interim_settings = InterimSettings(policy="full")
    s = eng.new_stream()
    s.accept(np.ones(8000, np.int16))
    job = s.plan_partial()
    assert len(job.audio) == 8000 and job.complete("a b", 0.5).text == "a b"


def test_not_batchable_without_decode_batch_or_with_word_info():
    assert not FakeEngine(batch=False).new_stream().batchable
    assert not FakeEngine().new_stream(word_info=True).batchable
    s = FakeEngine(batch=False).new_stream()
    s.accept(np.ones(100, np.int16))
    with pytest.raises(RuntimeError, match="not batchable"):
        s.plan_final()


class _Part:
    def __init__(self, name):
        self.name = name
        self.description = name
        self.max_segment_s = 60.0

    def supports_language(self, lang):
        return True

    def decode_batch(self, audios, **kw):
        return [(f"{self.name}{len(a)}", 0.5) for a in audios]

    def close(self):
        pass


def test_routing_stream_picks_the_batch_decoder_by_length():
    eng = RoutingEngine(_Part("moonshine"), _Part("whisper"), crossover_s=1.0)
    s = eng.new_stream(language="en")
    assert isinstance(s, RoutingStream) and s.batchable
    s.accept(np.ones(16000, np.int16))
    short = s.plan_final()
    s.accept(np.ones(16001, np.int16))
    long = s.plan_final()
    assert short.decoder.name == "moonshine" and long.decoder.name == "whisper"
    assert short.decoder == EngineBatchDecoder(eng.moonshine) and long.decoder != short.decoder
    assert long.decoder.max_batch == FIXED_WINDOW_MAX_BATCH  # no length rule: a fixed window, small batches
    ruled = _Part("m")
    ruled.batch_compatible = lambda a, b: True
    assert EngineBatchDecoder(ruled).max_batch is None and EngineBatchDecoder(ruled, max_batch=3).max_batch == 3
    (text, score), = long.decoder.decode_batch([long.audio], language="en", final=True, prompts=[None])
    assert long.complete(text, score).text == "whisper16001"
    assert eng.decodes == {"whisper": 1}


# -- the recognizer with a batcher ------------------------------------------------------------------

def _call_pcm(n: int = 3) -> np.ndarray:
    parts = [silence(300)]
    for i in range(n):
        parts += [speech_pcm(SENTENCES[i % len(SENTENCES)]), silence(900, seed=i + 1)]
    return np.concatenate(parts)


class Session:
    """One SessionRecognizer on a fake engine, its responses collected."""

    def __init__(self, pool, *, batcher=None, engine=None, interim=False, prop="english_16k_common", **kw):
        self.engine = engine or FakeEngine()
        self.sent: list = []
        self.failed: list[RecognitionFailed] = []
        self.ended = asyncio.Event()
        cfg = config_for(Mode.CONTINUE_STREAM, interim_results=interim, prop=prop)
        self.rec = SessionRecognizer(Mode.CONTINUE_STREAM, cfg, pool, self.sent.append, batcher=batcher,
                                     interim_interval_s=0.05, **kw)
        self.rec.attach(self.engine, self.engine.new_stream())
        self.rec.start_emitting(self.ended.set, self._fail)

    def _fail(self, err):
        self.failed.append(err)
        self.ended.set()

    def feed(self, pcm: np.ndarray, chunk_ms: int = 100) -> None:
        step = 16 * chunk_ms
        for i in range(0, len(pcm), step):
            self.rec.feed(pcm[i:i + step].astype("<i2").tobytes())

    async def finish(self):
        self.rec.finish()
        await asyncio.wait_for(self.ended.wait(), WAIT_S)
        return self.results()

    def results(self):
        out = []
        for r in self.sent:
            if isinstance(r, ResultResponse):
                seg = r.segments[0]
                out.append((seg.is_final, seg.result.text, seg.start_time, seg.end_time))
        return out


@pytest.fixture
async def pool():
    ex = EngineExecutor(2)
    yield ex
    ex.shutdown()


@pytest.fixture
def batchers():
    made: list[DecodeBatcher] = []

    def make(**kw):
        kw.setdefault("workers", 1)
        b = DecodeBatcher(**kw)
        made.append(b)
        return b

    yield make
    for b in made:
        b.shutdown(timeout_s=WAIT_S)


async def test_batched_results_equal_the_lane_path_in_order(pool, batchers):
    pcm = _call_pcm(3)
    plain = Session(pool)
    plain.engine.decode_batch = None  # not batchable: decodes in its lane
    plain.rec.attach(plain.engine, plain.engine.new_stream())
    plain.feed(pcm)
    expected = await plain.finish()
    batched = Session(pool, batcher=batchers())
    batched.feed(pcm)
    got = await batched.finish()
    assert len(expected) == 3 and all(final for final, *_ in expected)
    assert got == expected
    assert sum(len(b) for b in batched.engine.batches) == 3 and batched.engine.single == []


async def test_finals_of_several_sessions_decode_in_one_batch(pool, batchers):
    seen = []
    batcher = batchers(observer=lambda name, jobs, s: seen.append(sorted(j.tag for j in jobs)))
    engine = FakeEngine()
    engine.gate.clear()
    a = Session(pool, batcher=batcher, engine=engine, prop="english_16k_common")
    b = Session(pool, batcher=batcher, engine=engine, prop="chinese_16k_common")
    one = np.concatenate([silence(300), speech_pcm(SENTENCES[0]), silence(900)])
    a.feed(one)
    assert await asyncio.to_thread(engine.entered.wait, WAIT_S)  # a's final holds the worker
    a.feed(np.concatenate([speech_pcm(SENTENCES[1]), silence(900)]))
    b.feed(one)
    for _ in range(500):  # both finals planned and queued
        if batcher.stats().queued == 2:
            break
        await asyncio.sleep(0.01)
    engine.gate.set()
    ra, rb = await a.finish(), await b.finish()
    assert len(ra) == 2 and len(rb) == 1
    assert engine.batches[1] == sorted(engine.batches[1]) or len(engine.batches[1]) == 2
    assert ["chinese_16k_common", "english_16k_common"] in seen  # one batch, two sessions


async def test_outstanding_decodes_are_flow_control_backlog(pool, batchers):
    engine = FakeEngine()
    engine.gate.clear()
    s = Session(pool, batcher=batchers(), engine=engine, decode_high=2)
    s.feed(_call_pcm(3))
    for _ in range(500):
        if s.rec.saturated():
            break
        await asyncio.sleep(0.01)
    assert s.rec.saturated() and s.rec.backlog >= 2
    waiter = asyncio.create_task(s.rec.wait_room())
    await asyncio.sleep(0.05)
    assert not waiter.done()  # nothing decoded yet: no room
    engine.gate.set()
    await asyncio.wait_for(waiter, WAIT_S)
    assert len(await s.finish()) == 3


async def test_partials_skipped_while_the_batcher_is_loaded(pool, batchers):
    engine = FakeEngine()
    batcher = batchers(partial_high=1)
    engine.gate.clear()
    hold = batcher.submit(DecodeJob(np.zeros(1, np.int16), True, EngineBatchDecoder(engine)))
    assert await asyncio.to_thread(engine.entered.wait, WAIT_S)
    s = Session(pool, batcher=batcher, engine=engine, interim=True)
    blocker = batcher.submit(DecodeJob(np.zeros(2, np.int16), True, EngineBatchDecoder(engine)))  # queue loaded
    s.feed(np.concatenate([silence(300), speech_pcm(SENTENCES[0])]), chunk_ms=100)
    await asyncio.sleep(0.1)
    assert batcher.stats().queued_partials == 0  # refused: no partial queued behind the load
    engine.gate.set()
    hold.result(WAIT_S), blocker.result(WAIT_S)
    s.feed(silence(900))
    res = await s.finish()
    assert [final for final, *_ in res][-1] is True and res[-1][1].startswith("n")


async def test_interim_results_through_the_batcher(pool, batchers):
    s = Session(pool, batcher=batchers(), interim=True)
    speech = np.concatenate([silence(300), speech_pcm(SENTENCES[0])])
    for i in range(0, len(speech), 1600):
        s.rec.feed(speech[i:i + 1600].astype("<i2").tobytes())
        await asyncio.sleep(0.01)
    s.feed(silence(900))
    res = await s.finish()
    partials = [r for r in res if not r[0]]
    assert partials and res[-1][0] and all(p[1].startswith("n") for p in partials)
    assert res.index(res[-1]) == len(res) - 1  # every interim before its final


async def test_close_with_decodes_outstanding_is_quiet(pool, batchers):
    engine = FakeEngine()
    engine.gate.clear()
    batcher = batchers(window_ms=0)
    hold = batcher.submit(DecodeJob(np.zeros(1, np.int16), True, EngineBatchDecoder(engine)))
    assert await asyncio.to_thread(engine.entered.wait, WAIT_S)  # the worker is busy
    s = Session(pool, batcher=batcher, engine=engine)
    s.feed(_call_pcm(3))
    for _ in range(500):
        if batcher.stats().queued == 3:
            break
        await asyncio.sleep(0.01)
    assert batcher.stats().queued == 3
    taken = sum(len(b) for b in engine.batches)
    loop = asyncio.get_running_loop()
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
    s.rec.close()
    engine.gate.set()
    await asyncio.sleep(0.2)
    gc.collect()
    await asyncio.sleep(0)
    assert errors == [] and s.failed == [] and not s.ended.is_set()
    assert s.rec._decoding == 0  # every batcher future came back (cancelled or done)
    assert hold.result(WAIT_S) == ("n1", 0.9)
    assert sum(len(b) for b in engine.batches) == taken == 1  # queued finals were dropped, not decoded


async def test_decode_queue_overflow_fails_the_session_with_sis0312(pool, batchers):
    engine = FakeEngine()
    engine.gate.clear()
    batcher = batchers(max_queued=1)
    s = Session(pool, batcher=batcher, engine=engine)
    s.feed(_call_pcm(3))
    for _ in range(1000):
        if batcher.stats().rejected:
            break
        await asyncio.sleep(0.01)
    engine.gate.set()  # results go out in order: the failure after the finals before it
    await asyncio.wait_for(s.ended.wait(), WAIT_S)
    assert [e.code for e in s.failed] == ["SIS.0312"]
    assert batcher.stats().rejected >= 1 and "overloaded" in s.failed[0].message


async def test_time_to_final_reported_per_property(pool, batchers):
    seen = []
    s = Session(pool, batcher=batchers(), ttf_observer=lambda tag, sec: seen.append((tag, sec)))
    s.feed(_call_pcm(2))
    assert len(await s.finish()) == 2
    assert [t for t, _ in seen] == ["english_16k_common"] * 2
    # the endpointer waited vad_tail (500 ms default) of trailing silence before closing
    assert all(sec >= 0.5 for _, sec in seen)


def test_server_wires_the_batcher(tmp_path):
    from sis_stream.server import ServerSettings
    from sis_stream.server.app import create_app
    from sis_stream.server.state import BATCHER, POOL

    settings = ServerSettings(no_auth=True, batch_window_ms=5, max_batch=4, decode_workers=1,
                              engine_overrides=("english_16k_common=none",), rest_routes=False)
    app = create_app(settings)
    batcher = app[BATCHER]
    assert (batcher.workers, batcher.max_batch, batcher.window_s) == (1, 4, 0.005)
    wiring = SessionRecognizer.wiring(app[POOL])
    assert wiring["batcher"] is batcher and callable(wiring["ttf_observer"])
    batcher.shutdown()
    app[POOL].shutdown()
    with pytest.raises(ValueError, match="batch_window_ms"):
        ServerSettings(batch_window_ms=-1)
    with pytest.raises(ValueError, match="max_batch"):
        ServerSettings(max_batch=0)
    with pytest.raises(ValueError, match="decode_workers"):
        ServerSettings(decode_workers=0)
