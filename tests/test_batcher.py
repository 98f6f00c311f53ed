"""DecodeBatcher: grouping, window, max_batch, FIFO fairness, partial skipping, errors, bounds, shutdown."""

from __future__ import annotations

import threading
from concurrent.futures import CancelledError

import numpy as np
import pytest

from sis_stream.engines.batcher import DecodeBatcher, DecodeJob
from sis_stream.errors import EngineOverloadedError, StreamClosedError

WAIT_S = 10.0  # bound on every wait (never reached when the code works)


class FakeDecoder:
    """Records its batches; text = "<samples>"; may hold a batch until released."""

    def __init__(self, name: str = "fake", *, compat_ratio: float | None = None, fail: bool = False,
                 max_batch: int | None = None) -> None:
        self.name = name
        self.batches: list[list[tuple[int, str, bool, str | None]]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail = fail
        self._lock = threading.Lock()
        if compat_ratio is not None:
            self.batch_compatible = lambda a, b: max(a, b) <= compat_ratio * min(a, b)
        if max_batch is not None:
            self.max_batch = max_batch

    def decode_batch(self, audios, *, language, final, prompts):
        with self._lock:
            self.batches.append([(len(a), language, final, p) for a, p in zip(audios, prompts)])
        self.entered.set()
        assert self.gate.wait(WAIT_S)
        if self.fail:
            raise RuntimeError("model exploded")
        return [(str(len(a)), 0.5) for a in audios]


def job(decoder, n: int = 100, *, final: bool = True, language: str = "en", prompt=None, complete=None,
        tag: str = "t") -> DecodeJob:
    kw = {} if complete is None else {"complete": complete}
    return DecodeJob(np.zeros(n, np.int16), final, decoder, language=language, prompt=prompt, tag=tag, **kw)


def hold(batcher: DecodeBatcher, decoder: FakeDecoder):
    """Occupy the (single) worker with one batch until decoder.gate is set; returns its future."""
    decoder.gate.clear()
    decoder.entered.clear()
    fut = batcher.submit(job(decoder, 1))
    assert decoder.entered.wait(WAIT_S)
    return fut


@pytest.fixture
def make():
    made: list[DecodeBatcher] = []

    def _make(**kw) -> DecodeBatcher:
        kw.setdefault("workers", 1)
        kw.setdefault("window_ms", 0)
        b = DecodeBatcher(**kw)
        made.append(b)
        return b

    yield _make
    for b in made:
        b.shutdown(timeout_s=WAIT_S)


def test_groups_by_decoder_language_and_kind_finals_first(make):
    d1, d2 = FakeDecoder("d1"), FakeDecoder("d2")
    b = make()
    first = hold(b, d1)
    futs = {
        "A": b.submit(job(d1, 10)),
        "B": b.submit(job(d2, 20)),
        "E": b.submit(job(d1, 50, final=False)),
        "C": b.submit(job(d1, 30, language="zh")),
        "D": b.submit(job(d1, 40)),
    }
    d1.gate.set()
    assert first.result(WAIT_S) == ("1", 0.5)
    assert {k: f.result(WAIT_S) for k, f in futs.items()} == {
        "A": ("10", 0.5), "B": ("20", 0.5), "C": ("30", 0.5), "D": ("40", 0.5), "E": ("50", 0.5)}
    # d1's batches after the holder: finals A+D (en) together, then C (zh), then the partial E.
    assert d1.batches[1:] == [[(10, "en", True, None), (40, "en", True, None)], [(30, "zh", True, None)],
                              [(50, "en", False, None)]]
    assert d2.batches == [[(20, "en", True, None)]]


def test_max_batch_and_decoder_limit(make):
    d = FakeDecoder()
    b = make(max_batch=2)
    first = hold(b, d)
    futs = [b.submit(job(d, 10 + i)) for i in range(5)]
    d.gate.set()
    first.result(WAIT_S)
    assert [f.result(WAIT_S)[0] for f in futs] == ["10", "11", "12", "13", "14"]
    assert [len(x) for x in d.batches[1:]] == [2, 2, 1]

    d3 = FakeDecoder("small", max_batch=1)  # the decoder's own limit wins
    b3 = make(max_batch=8)
    first = hold(b3, d3)
    futs = [b3.submit(job(d3, 10 + i)) for i in range(3)]
    d3.gate.set()
    for f in [first, *futs]:
        f.result(WAIT_S)
    assert [len(x) for x in d3.batches] == [1, 1, 1, 1]


def test_window_collects_jobs_until_max_batch(make):
    d = FakeDecoder()
    b = make(window_ms=10_000, max_batch=3)  # the window never ends within the test: only max_batch does
    f1 = b.submit(job(d, 10))
    f2 = b.submit(job(d, 11))
    assert b.stats().queued == 2 and not d.batches
    f3 = b.submit(job(d, 12))
    assert [f.result(WAIT_S)[0] for f in (f1, f2, f3)] == ["10", "11", "12"]
    assert [len(x) for x in d.batches] == [3]


def test_length_compatibility_splits_groups(make):
    d = FakeDecoder(compat_ratio=2.0)
    b = make()
    first = hold(b, d)
    futs = [b.submit(job(d, n)) for n in (100, 150, 400, 120, 210)]
    d.gate.set()
    first.result(WAIT_S)
    for f in futs:
        f.result(WAIT_S)
    # 100,150,120 fit (max/min <= 2); 210 would make 210/100 > 2; 400 and 210 go together.
    assert [sorted(n for n, *_ in x) for x in d.batches[1:]] == [[100, 120, 150], [210, 400]]


def test_fifo_across_streams_and_finals_before_older_partials(make):
    d = FakeDecoder()
    b = make(max_batch=1)
    first = hold(b, d)
    order = ["p1", "s1", "s2", "p2", "s3"]
    futs = [b.submit(job(d, 10 + i, final=not name.startswith("p"), tag=name)) for i, name in enumerate(order)]
    d.gate.set()
    first.result(WAIT_S)
    for f in futs:
        f.result(WAIT_S)
    # finals oldest first (11, 12, 14), then the partials oldest first (10, 13)
    assert [x[0][0] for x in d.batches[1:]] == [11, 12, 14, 10, 13]


def test_partials_skipped_under_load(make):
    d = FakeDecoder()
    b = make(partial_high=2)
    first = hold(b, d)
    p1 = b.try_submit(job(d, 10, final=False))
    f1 = b.submit(job(d, 11))
    assert p1 is not None
    assert not b.accepting_partials()
    assert b.try_submit(job(d, 12, final=False)) is None  # queue loaded: refused, nothing queued
    assert b.stats().queued == 2
    d.gate.set()
    first.result(WAIT_S)
    assert f1.result(WAIT_S) == ("11", 0.5)
    assert p1.result(WAIT_S) == ("10", 0.5)
    assert b.stats().skipped == 1


def test_stale_partial_resolves_none_not_decoded(make):
    d = FakeDecoder()
    b = make(partial_max_wait_s=1e-9)  # any wait is too long
    first = hold(b, d)
    p = b.try_submit(job(d, 10, final=False))
    f = b.submit(job(d, 11))
    d.gate.set()
    first.result(WAIT_S)
    assert p is not None and p.result(WAIT_S) is None
    assert f.result(WAIT_S) == ("11", 0.5)
    assert all(n != 10 for batch in d.batches for n, *_ in batch)
    assert b.stats().skipped == 1


def test_full_queue_evicts_partial_then_rejects_final(make):
    d = FakeDecoder()
    b = make(max_queued=2, partial_high=2)
    first = hold(b, d)
    p = b.try_submit(job(d, 10, final=False))
    f1 = b.submit(job(d, 11))
    f2 = b.submit(job(d, 12))  # full: the partial makes room
    assert p is not None and p.result(WAIT_S) is None
    with pytest.raises(EngineOverloadedError, match="decode queue full .*'reject'"):
        b.submit(job(d, 13))
    st = b.stats()
    assert (st.queued, st.rejected, st.skipped) == (2, 1, 1)
    d.gate.set()
    first.result(WAIT_S)
    assert (f1.result(WAIT_S), f2.result(WAIT_S)) == (("11", 0.5), ("12", 0.5))


def test_block_policy_waits_for_room(make):
    d = FakeDecoder()
    b = make(max_queued=1, overflow="block", block_timeout_s=0.0)
    first = hold(b, d)
    b.submit(job(d, 10))
    with pytest.raises(EngineOverloadedError, match="'block'"):
        b.submit(job(d, 11))  # no room within the (zero) timeout
    d.gate.set()
    first.result(WAIT_S)


def test_decode_failure_fails_the_whole_batch_only(make):
    bad, good = FakeDecoder("bad", fail=True), FakeDecoder("good")
    b = make()
    first = hold(b, bad)
    futs = [b.submit(job(bad, 10 + i)) for i in range(3)]
    ok = b.submit(job(good, 20))
    bad.gate.set()
    for f in [first, *futs]:
        with pytest.raises(RuntimeError, match="model exploded"):
            f.result(WAIT_S)
    assert ok.result(WAIT_S) == ("20", 0.5)


def test_complete_builds_result_and_its_failure_is_per_job(make):
    d = FakeDecoder()
    b = make()
    first = hold(b, d)

    def boom(text, score):
        raise ValueError("bad complete")

    f1 = b.submit(job(d, 10, complete=lambda t, s: f"<{t}:{s}>"))
    f2 = b.submit(job(d, 11, complete=boom))
    d.gate.set()
    first.result(WAIT_S)
    assert f1.result(WAIT_S) == "<10:0.5>"
    with pytest.raises(ValueError, match="bad complete"):
        f2.result(WAIT_S)
    assert len(d.batches[1]) == 2  # decoded together all the same


def test_wrong_result_count_fails_batch(make):
    class Short(FakeDecoder):
        def decode_batch(self, audios, **kw):
            return []

    b = make()
    with pytest.raises(RuntimeError, match="returned 0 results for 1 items"):
        b.submit(job(Short())).result(WAIT_S)


def test_observer_sees_each_batch(make):
    seen = []
    d = FakeDecoder("obs")
    b = make(observer=lambda name, jobs, s: seen.append((name, [j.tag for j in jobs], s, [j.wait_s for j in jobs])))
    first = hold(b, d)
    futs = [b.submit(job(d, 10, tag="a")), b.submit(job(d, 11, tag="b"))]
    d.gate.set()
    for f in [first, *futs]:
        f.result(WAIT_S)
    # the observer runs after the futures resolve: wait for the second batch's report
    for _ in range(1000):
        if len(seen) == 2:
            break
        threading.Event().wait(0.01)
    assert [(n, tags) for n, tags, *_ in seen] == [("obs", ["t"]), ("obs", ["a", "b"])]
    assert all(s >= 0 for _, _, s, _ in seen) and all(w >= 0 for *_, ws in seen for w in ws)
    st = b.stats()
    assert (st.batches, st.decoded) == (2, 3)


def test_cancelled_job_is_not_decoded(make):
    d = FakeDecoder()
    b = make()
    first = hold(b, d)
    gone = b.submit(job(d, 10))
    kept = b.submit(job(d, 11))
    assert gone.cancel()
    d.gate.set()
    first.result(WAIT_S)
    assert kept.result(WAIT_S) == ("11", 0.5)
    assert all(n != 10 for batch in d.batches for n, *_ in batch)


def test_shutdown_cancels_queued_and_joins(make):
    d = FakeDecoder()
    b = make(workers=2, window_ms=10_000)
    queued = [b.submit(job(d, 10)), b.try_submit(job(d, 11, final=False))]
    b.shutdown(timeout_s=WAIT_S)
    for f in queued:
        assert f is not None
        with pytest.raises(CancelledError):
            f.result(WAIT_S)
    assert b.closed and not any(t.is_alive() for t in b._threads)
    with pytest.raises(StreamClosedError):
        b.submit(job(d))
    with pytest.raises(StreamClosedError):
        b.try_submit(job(d, final=False))


def test_shutdown_lets_running_batch_finish(make):
    d = FakeDecoder()
    b = make()
    first = hold(b, d)
    threading.Timer(0.05, d.gate.set).start()
    b.shutdown(timeout_s=WAIT_S)
    assert first.result(WAIT_S) == ("1", 0.5)


def test_partials_keep_a_worker_free_for_finals(make):
    """Two workers, partial_workers 1 (the default): while one partial batch is decoded, a second
    partial waits although a worker is idle, and a final falling due meanwhile is decoded at once."""
    slow, fast = FakeDecoder("slow"), FakeDecoder("fast")
    b = make(workers=2)
    assert b.partial_workers == 1
    slow.gate.clear()
    held = b.try_submit(job(slow, 5, final=False))
    assert held is not None and slow.entered.wait(WAIT_S)
    waiting = b.try_submit(job(fast, 6, final=False))
    assert waiting is not None
    final = b.submit(job(fast, 7))
    assert final.result(WAIT_S) == ("7", 0.5)  # the free worker took the final
    assert not waiting.done()  # the partial's share (one worker) is busy
    assert [x[0][0] for x in fast.batches] == [7]
    slow.gate.set()
    assert held.result(WAIT_S) == ("5", 0.5)
    assert waiting.result(WAIT_S) == ("6", 0.5)  # decoded once the partial batch ended


def test_partial_workers_all_lets_partials_use_every_worker(make):
    slow, fast = FakeDecoder("slow"), FakeDecoder("fast")
    b = make(workers=2, partial_workers=2)
    slow.gate.clear()
    held = b.try_submit(job(slow, 5, final=False))
    assert held is not None and slow.entered.wait(WAIT_S)
    other = b.try_submit(job(fast, 6, final=False))
    assert other is not None and other.result(WAIT_S) == ("6", 0.5)  # the second worker took it
    slow.gate.set()
    assert held.result(WAIT_S) == ("5", 0.5)


def test_waiting_partial_still_expires(make):
    slow, fast = FakeDecoder("slow"), FakeDecoder("fast")
    b = make(workers=2, partial_max_wait_s=0.05)
    slow.gate.clear()
    held = b.try_submit(job(slow, 5, final=False))
    assert held is not None and slow.entered.wait(WAIT_S)
    stale = b.try_submit(job(fast, 6, final=False))
    assert stale is not None and stale.result(WAIT_S) is None  # skipped while it waited
    assert fast.batches == []
    slow.gate.set()
    assert held.result(WAIT_S) == ("5", 0.5)


@pytest.mark.parametrize("kw, match", [
    ({"workers": 2, "partial_workers": 0}, "partial_workers"), ({"workers": 2, "partial_workers": 3}, "partial_workers"),
    ({"workers": 0}, "workers"), ({"max_batch": 0}, "max_batch"), ({"window_ms": -1}, "window_ms"),
    ({"max_queued": 0}, "max_queued"), ({"overflow": "drop"}, "overflow"), ({"partial_high": 0}, "partial_high"),
    ({"partial_max_wait_s": 0}, "partial_max_wait_s"), ({"block_timeout_s": -1}, "block_timeout_s"),
])
def test_bad_parameters(kw, match):
    with pytest.raises(ValueError, match=match):
        DecodeBatcher(**kw)


def test_bad_jobs(make):
    b = make()
    with pytest.raises(TypeError, match="DecodeJob"):
        b.submit("nope")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="decode_batch"):
        b.submit(job(object()))
