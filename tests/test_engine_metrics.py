"""Engine metrics: fixed-bucket histograms, the batcher observer, time-to-final, Prometheus text."""

from __future__ import annotations

import math
import re
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from sis_stream.server.engine_metrics import (
    BATCH_SIZE_BUCKETS,
    TTF_BUCKETS_S,
    UNTAGGED,
    EngineMetrics,
)
from sis_stream.server.metrics import OTHER_LABEL, Histogram, Metrics, render_labels

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$')


def check_exposition(text: str) -> dict[str, str]:
    """Strict checks of Prometheus text format 0.0.4 (the parts we emit); returns name -> type.

    Every sample belongs to the family declared just before it with HELP and TYPE; no family is
    declared twice; histogram buckets are cumulative, end with ``le="+Inf"`` and equal ``_count``.
    """
    types: dict[str, str] = {}
    current: str | None = None
    buckets: dict[tuple[str, str], list[tuple[float, float]]] = {}
    counts: dict[tuple[str, str], float] = {}
    assert text.endswith("\n")
    lines = text.rstrip("\n").split("\n")
    for i, line in enumerate(lines):
        if line.startswith("# HELP "):
            name = line.split(" ")[2]
            assert name not in types, f"family {name} declared twice"
            assert lines[i + 1].startswith(f"# TYPE {name} "), line
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped")
            types[name] = kind
            current = name
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
        assert current is not None
        kind = types[current]
        if kind == "histogram":
            assert name in (current + "_bucket", current + "_sum", current + "_count"), (current, line)
            key = (current, re.sub(r',?le="[^"]*"', "", labels).replace("{,", "{").replace("{}", ""))
            if name.endswith("_bucket"):
                le = re.search(r'le="([^"]*)"', labels).group(1)
                buckets.setdefault(key, []).append((math.inf if le == "+Inf" else float(le), value))
            elif name.endswith("_count"):
                counts[key] = value
        else:
            assert name == current, (current, line)
            if kind == "counter":
                assert value >= 0
    for key, rows in buckets.items():
        les = [le for le, _ in rows]
        vals = [v for _, v in rows]
        assert les == sorted(les) and les[-1] == math.inf, key
        assert vals == sorted(vals), f"buckets not cumulative: {key}"
        assert counts[key] == vals[-1], f"+Inf bucket != _count: {key}"
    return types


def _sample(text: str, name: str, **labels: str) -> float | None:
    m = re.search("^" + re.escape(name + render_labels(labels)) + r" (\S+)$", text, re.MULTILINE)
    return float(m.group(1)) if m else None


def _job(tag: str | None, final: bool, wait_s: float, samples: int) -> SimpleNamespace:
    return SimpleNamespace(tag=tag, final=final, wait_s=wait_s, audio=np.zeros(samples, np.int16))


class _Recorder:
    def __init__(self) -> None:
        self.decodes: list[float] = []
        self.ttfs: list[float] = []

    def observe_decode(self, decode_s: float) -> None:
        self.decodes.append(decode_s)

    def observe_ttf(self, seconds: float) -> None:
        self.ttfs.append(seconds)


# -- Histogram ------------------------------------------------------------------------------------

def test_histogram_bucket_counts_sum_and_lines() -> None:
    h = Histogram((0.5, 1.0, 2.0))
    for v in (0.1, 0.5, 0.7, 1.0, 1.5, 3.0, 99.0):
        h.observe(v)
    # a value equal to a bound falls in that bound's bucket (le = less or equal)
    assert h.counts == [2, 2, 1, 2]
    assert h.cumulative() == [(0.5, 2), (1.0, 4), (2.0, 5), (math.inf, 7)]
    assert h.count == 7 and h.sum == pytest.approx(0.1 + 0.5 + 0.7 + 1.0 + 1.5 + 3.0 + 99.0)
    lines = h.lines("x_seconds", {"property": "p"})
    assert lines == [
        'x_seconds_bucket{property="p",le="0.5"} 2',
        'x_seconds_bucket{property="p",le="1.0"} 4',
        'x_seconds_bucket{property="p",le="2.0"} 5',
        'x_seconds_bucket{property="p",le="+Inf"} 7',
        f'x_seconds_sum{{property="p"}} {h.sum!r}',
        'x_seconds_count{property="p"} 7',
    ]


@pytest.mark.parametrize("bad", [(), (1.0, 1.0), (2.0, 1.0), (1.0, math.inf), (math.nan,)])
def test_histogram_rejects_bad_buckets(bad: tuple) -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        Histogram(bad)


def test_histogram_rejects_nan() -> None:
    h = Histogram((1.0,))
    with pytest.raises(ValueError, match="NaN"):
        h.observe(math.nan)
    assert h.count == 0


# -- EngineMetrics --------------------------------------------------------------------------------

def test_on_batch_fills_histograms_counters_and_listeners() -> None:
    rec = _Recorder()
    em = EngineMetrics([rec])
    em.on_batch("moonshine", [_job("english_16k_common", True, 0.004, 32000),
                              _job("chinese_8k_common", False, 0.3, 16000),
                              _job(None, True, None, 8000)], 0.12)
    em.on_batch("moonshine", [_job("english_16k_common", True, 0.02, 16000)], 0.04)
    em.on_batch("whisper", [_job("english_16k_common", True, 0.0, 160000)], 0.9)
    text = "\n".join(em.render()) + "\n"
    assert check_exposition(text)["sis_decode_batch_size"] == "histogram"
    # batch size: one batch of 3, one of 1 (moonshine)
    assert _sample(text, "sis_decode_batch_size_count", decoder="moonshine") == 2
    assert _sample(text, "sis_decode_batch_size_sum", decoder="moonshine") == 4
    assert _sample(text, "sis_decode_batch_size_bucket", decoder="moonshine", le="1.0") == 1
    assert _sample(text, "sis_decode_batch_size_bucket", decoder="moonshine", le="2.0") == 1
    assert _sample(text, "sis_decode_batch_size_bucket", decoder="moonshine", le="4.0") == 2
    # decode time per decoder
    assert _sample(text, "sis_decode_batch_seconds_sum", decoder="moonshine") == pytest.approx(0.16)
    assert _sample(text, "sis_decode_batch_seconds_bucket", decoder="whisper", le="0.5") == 0
    assert _sample(text, "sis_decode_batch_seconds_bucket", decoder="whisper", le="1.0") == 1
    # queue wait per property and kind; an untagged job and a missing wait (None -> 0)
    assert _sample(text, "sis_decode_queue_wait_seconds_count", property="english_16k_common", kind="final") == 3
    assert _sample(text, "sis_decode_queue_wait_seconds_bucket", property="chinese_8k_common", kind="partial",
                   le="0.25") == 0
    assert _sample(text, "sis_decode_queue_wait_seconds_bucket", property="chinese_8k_common", kind="partial",
                   le="0.5") == 1
    assert _sample(text, "sis_decode_queue_wait_seconds_bucket", property=UNTAGGED, kind="final", le="0.001") == 1
    # counters: audio seconds = samples / 16000, decode seconds, jobs by kind
    assert _sample(text, "sis_decoded_audio_seconds_total", decoder="moonshine") == pytest.approx(4.5)
    assert _sample(text, "sis_decoded_audio_seconds_total", decoder="whisper") == pytest.approx(10.0)
    assert _sample(text, "sis_decode_seconds_total", decoder="moonshine") == pytest.approx(0.16)
    assert _sample(text, "sis_decode_jobs_total", decoder="moonshine", kind="final") == 3
    assert _sample(text, "sis_decode_jobs_total", decoder="moonshine", kind="partial") == 1
    assert em.decode_seconds() == pytest.approx(1.06)
    assert rec.decodes == [0.12, 0.04, 0.9] and rec.ttfs == []


def test_observe_ttf_per_property() -> None:
    rec = _Recorder()
    em = EngineMetrics([rec])
    for s in (0.55, 0.9, 1.2, 1.21, 4.0):
        em.observe_ttf("english_16k_common", s)
    em.observe_ttf("chinese_16k_common", 0.3)
    text = "\n".join(em.render()) + "\n"
    check_exposition(text)
    p = "english_16k_common"
    assert _sample(text, "sis_time_to_final_seconds_bucket", property=p, le="0.5") == 0
    assert _sample(text, "sis_time_to_final_seconds_bucket", property=p, le="0.6") == 1
    assert _sample(text, "sis_time_to_final_seconds_bucket", property=p, le="1.2") == 3  # 1.2 <= 1.2
    assert _sample(text, "sis_time_to_final_seconds_bucket", property=p, le="1.5") == 4
    assert _sample(text, "sis_time_to_final_seconds_bucket", property=p, le="+Inf") == 5
    assert _sample(text, "sis_time_to_final_seconds_count", property=p) == 5
    assert _sample(text, "sis_time_to_final_seconds_sum", property=p) == pytest.approx(7.86)
    assert _sample(text, "sis_time_to_final_seconds_count", property="chinese_16k_common") == 1
    assert len([ln for ln in text.splitlines() if ln.startswith("sis_time_to_final_seconds_bucket")]) \
        == 2 * (len(TTF_BUCKETS_S) + 1)
    assert em.ttf_count() == 6 and em.ttf_count(p) == 5 and em.ttf_count("nope") == 0
    assert rec.ttfs == [0.55, 0.9, 1.2, 1.21, 4.0, 0.3]


@pytest.mark.parametrize("bad, exc", [(-0.1, ValueError), (math.nan, ValueError), (math.inf, ValueError),
                                      ("1", TypeError), (True, TypeError)])
def test_validation(bad: object, exc: type) -> None:
    em = EngineMetrics()
    with pytest.raises(exc, match="seconds"):
        em.observe_ttf("p", bad)  # type: ignore[arg-type]
    with pytest.raises(exc, match="decode_s"):
        em.on_batch("m", [_job("p", True, 0.0, 10)], bad)  # type: ignore[arg-type]
    with pytest.raises(exc, match="wait_s"):
        em.on_batch("m", [_job("p", True, bad, 10)], 0.1)  # type: ignore[arg-type]
    assert em.ttf_count() == 0 and em.decode_seconds() == 0.0
    with pytest.raises(ValueError, match="max_label_values"):
        EngineMetrics(max_label_values=0)


def test_label_values_are_bounded() -> None:
    em = EngineMetrics(max_label_values=2)
    for i in range(5):
        em.observe_ttf(f"prop{i}", 1.0)
        em.on_batch(f"dec{i}", [_job(f"prop{i}", True, 0.0, 16000)], 0.01)
    text = "\n".join(em.render()) + "\n"
    check_exposition(text)
    assert _sample(text, "sis_time_to_final_seconds_count", property=OTHER_LABEL) == 3
    assert _sample(text, "sis_decode_batch_seconds_count", decoder=OTHER_LABEL) == 3
    assert _sample(text, "sis_decoded_audio_seconds_total", decoder=OTHER_LABEL) == pytest.approx(3.0)


def test_concurrent_observers_lose_nothing() -> None:
    rec = _Recorder()
    em = EngineMetrics([rec])
    n_threads, n_batches = 8, 250

    def work(k: int) -> None:
        for i in range(n_batches):
            em.on_batch(f"dec{k % 2}", [_job("p", i % 2 == 0, 0.001, 1600), _job("q", True, 0.002, 1600)], 0.01)
            em.observe_ttf("p", 0.5)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    text = "\n".join(em.render()) + "\n"
    total = n_threads * n_batches
    assert sum(_sample(text, "sis_decode_batch_size_count", decoder=d) for d in ("dec0", "dec1")) == total
    assert _sample(text, "sis_decode_queue_wait_seconds_count", property="q", kind="final") == total
    assert _sample(text, "sis_time_to_final_seconds_count", property="p") == total
    assert em.decode_seconds() == pytest.approx(0.01 * total)
    assert len(rec.decodes) == total and len(rec.ttfs) == total


def test_metrics_page_includes_engine_families_and_parses() -> None:
    em = EngineMetrics()
    m = Metrics(gauges=lambda: [("sis_engine_queue_depth", "q", {}, 1)])
    m.add_collector(em.render)
    m.observe("rasr.continue-stream", 200, 12.0, "p1", audio_ms=1000)
    em.on_batch("moonshine", [_job("english_16k_common", True, 0.01, 16000)], 0.05)
    em.observe_ttf("english_16k_common", 0.8)
    text = m.render()
    types = check_exposition(text)
    assert types["sis_time_to_final_seconds"] == "histogram"
    assert types["sis_decode_seconds_total"] == "counter"
    assert types["successful_calls_of_service"] == "counter"
    prom = pytest.importorskip("prometheus_client.parser")
    families = {f.name: f for f in prom.text_string_to_metric_families(text)}
    ttf = families["sis_time_to_final_seconds"]
    assert ttf.type == "histogram"
    buckets = {s.labels["le"]: s.value for s in ttf.samples if s.name.endswith("_bucket")}
    assert buckets["0.7"] == 0 and buckets["0.8"] == 1 and buckets["+Inf"] == 1
    assert families["sis_decode_batch_size"].type == "histogram"
    assert len(BATCH_SIZE_BUCKETS) + 1 == len([s for s in families["sis_decode_batch_size"].samples
                                               if s.name.endswith("_bucket")])
    with pytest.raises(TypeError, match="callable"):
        m.add_collector("nope")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [
    "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1.0\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
    "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1.0\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n",
    "# HELP c x\n# TYPE c counter\nd 1\n",
    "c 1\n",
])
def test_exposition_checker_catches_errors(bad: str) -> None:
    with pytest.raises(AssertionError):
        check_exposition(bad)


def test_as_the_decode_batchers_observer() -> None:
    batcher_mod = pytest.importorskip("sis_stream.engines.batcher")

    class Decoder:
        name = "fake"

        def decode_batch(self, audios, *, language, final, prompts):
            return [(f"{len(a)}", 0.0) for a in audios]

    rec = _Recorder()
    em = EngineMetrics([rec])
    batcher = batcher_mod.DecodeBatcher(1, observer=em.on_batch, partial_max_wait_s=60.0)  # never skip here
    try:
        dec = Decoder()
        futures = [batcher.submit(batcher_mod.DecodeJob(np.zeros(16000 * (i + 1), np.int16), i % 2 == 0, dec,
                                                        tag="english_16k_common")) for i in range(4)]
        assert [f.result(timeout=30) for f in futures] == [("16000", 0.0), ("32000", 0.0), ("48000", 0.0),
                                                            ("64000", 0.0)]
    finally:
        batcher.shutdown(timeout_s=10)
    text = "\n".join(em.render()) + "\n"
    check_exposition(text)
    assert _sample(text, "sis_decode_batch_size_sum", decoder="fake") == 4
    assert _sample(text, "sis_decode_jobs_total", decoder="fake", kind="final") == 2
    assert _sample(text, "sis_decode_jobs_total", decoder="fake", kind="partial") == 2
    assert _sample(text, "sis_decoded_audio_seconds_total", decoder="fake") == pytest.approx(10.0)
    assert _sample(text, "sis_decode_queue_wait_seconds_count", property="english_16k_common", kind="final") == 2
    assert len(rec.decodes) == _sample(text, "sis_decode_batch_size_count", decoder="fake")
