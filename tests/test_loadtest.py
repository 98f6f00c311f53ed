"""``sis_stream.loadtest`` and ``sis-stream loadtest``: corpus, plan, safety, scoring, the run
against the embedded server (``none`` engine), the knee search, the report and Ctrl-C."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sis_stream.audio.formats import AudioFormat, wav_bytes
from sis_stream.cli.loadtest import loadtest_async, resolve_load_target
from sis_stream.cli.main import build_parser
from sis_stream.loadtest import (
    CallSpec,
    CapacityOptions,
    CapacitySearch,
    LoadTarget,
    LoadTest,
    LoadTestOptions,
    TargetRefused,
    check_target,
    is_loopback_url,
    load_corpus,
    parse_ramp,
    run_call,
    summarize,
    synthetic_corpus,
)
from sis_stream.loadtest.corpus import CorpusItem, read_refs_tsv, speech_spans
from sis_stream.loadtest.metrics import Samples
from sis_stream.protocol import Ended, FinalResult, PartialResult, ServerError
from sis_stream.protocol.messages import Segment, SegmentResult
from sis_stream.server.embedded import embedded_server
from sis_stream.text import cer, wer, word_errors

NONE16 = ("english_16k_common=none",)
PCM16 = AudioFormat.from_sis("pcm16k16bit")
DOCUMENTED_KEYS = ("streams", "duration_s", "calls", "errors", "ttfs_ms", "final_latency_ms", "connect_ms",
                   "wer", "harness_pacing_ms", "harness_cpu_pct")


def _tone_wav(path: Path, seconds: float = 1.0) -> None:
    corpus = synthetic_corpus(PCM16, files=1, seed=3)
    path.write_bytes(wav_bytes(PCM16, corpus.items[0].audio[: int(32000 * seconds)]))


# --- corpus, plan, target ------------------------------------------------------------------------


def test_corpus_refs_beside_and_in_tsv(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        _tone_wav(tmp_path / f"{name}.wav")
    (tmp_path / "a.txt").write_text("hello there\n", encoding="utf-8")
    (tmp_path / "refs.tsv").write_text("# name\ttext\nb.wav\tgood morning\n", encoding="utf-8")
    c = load_corpus(tmp_path, prop="english_8k_common")
    assert [i.name for i in c.items] == ["a.wav", "b.wav", "c.wav"]
    assert [i.reference for i in c.items] == ["hello there", "good morning", None]
    assert c.scored == 2
    # Converted once to the property's rate: 8 kHz PCM on the wire.
    assert c.audio_format.sis_name == "pcm8k16bit"
    assert all(i.audio_format == c.audio_format for i in c.items)


def test_corpus_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="holds no audio files"):
        load_corpus(tmp_path, prop="english_16k_common")
    with pytest.raises(FileNotFoundError):
        load_corpus(tmp_path / "nope", prop="english_16k_common")
    _tone_wav(tmp_path / "a.wav")
    (tmp_path / "refs.tsv").write_text("zz\tunknown file\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not in the corpus: zz"):
        load_corpus(tmp_path, prop="english_16k_common")
    (tmp_path / "refs.tsv").write_text("a\tone\n", encoding="utf-8")
    (tmp_path / "a.txt").write_text("two", encoding="utf-8")
    with pytest.raises(ValueError, match="both in a.txt and in refs.tsv"):
        load_corpus(tmp_path, prop="english_16k_common")
    (tmp_path / "refs.tsv").write_text("no tab here\n", encoding="utf-8")
    with pytest.raises(ValueError, match="refs.tsv:1: expected NAME<TAB>"):
        read_refs_tsv(tmp_path / "refs.tsv")


def test_synthetic_corpus_has_speech_where_it_was_put() -> None:
    c = synthetic_corpus("ulaw8k8bit", files=3)
    for item in c.items:
        assert item.reference is None and 2 <= len(item.speech) <= 3
        assert all(0 < s < e <= item.duration_ms for s, e in item.speech)
    # Silence has no speech span; the same audio in another format gives about the same spans.
    assert speech_spans(bytes(16000), PCM16) == ()


def test_ramp_plans() -> None:
    p = parse_ramp("2", 5, 60)
    assert [p.target(t) for t in (0, 0.4, 0.5, 1.0, 10)] == [1, 1, 2, 3, 5]
    s = parse_ramp("10,20,40", 40, 30)
    assert s.step_s == 10 and [s.target(t) for t in (0, 9.9, 10, 29, 99)] == [10, 10, 20, 40, 40]
    assert parse_ramp(None, 100, 10).rate == 50
    for bad in ("0", "-1", "a,b", "10,0", "fast"):
        with pytest.raises(ValueError):
            parse_ramp(bad, 10, 10)


def test_target_safety() -> None:
    assert is_loopback_url("ws://127.0.0.1:8080") and is_loopback_url("ws://[::1]:80")
    assert is_loopback_url("ws://localhost:1") and not is_loopback_url("wss://sis-ext.cn-north-4.myhuaweicloud.com")
    assert not is_loopback_url("ws://10.0.0.1:80")
    with pytest.raises(TargetRefused, match="not a loopback address"):
        check_target(LoadTarget("wss://sis.example.com"))
    assert check_target(LoadTarget("ws://127.0.0.1:9")).auth is not None
    with pytest.raises(ValueError, match="needs server_factory"):
        check_target(LoadTarget())
    p = build_parser()
    for argv in (["--endpoint", "wss://sis.example.com"], ["--region", "cn-north-4"]):
        args = p.parse_args(["loadtest", *argv])
        with pytest.raises(Exception, match="refusing to load") as ei:
            resolve_load_target(args, {})
        assert ei.value.exit_code == 4
    t = resolve_load_target(p.parse_args(["loadtest", "--endpoint", "wss://sis.example.com", "--project-id",
                                          "p"]), {"SIS_TOKEN": "tok-123456"})
    assert t.endpoint == "wss://sis.example.com" and t.auth is not None
    t = resolve_load_target(p.parse_args(["loadtest", "--endpoint", "ws://127.0.0.1:9"]), {})
    assert t.auth is None and t.project_id == "local"



def test_target_options_and_rules_are_shared_with_transcribe() -> None:
    # One declaration (cli.target.add_target_arguments) for transcribe, bridge and loadtest.
    p = build_parser()
    target_opts = {"--endpoint", "--region", "--project-id", "--ak", "--sk", "--token", "--local", "--insecure"}
    for argv in (["transcribe", "x.wav"], ["bridge"], ["loadtest"]):
        sub = p._subparsers._group_actions[0].choices[argv[0]]  # type: ignore[union-attr]
        declared = {o for a in sub._actions for o in a.option_strings}
        assert target_opts <= declared, argv[0]
    # The environment counts as for transcribe; AK without SK is named; --engine with a remote
    # endpoint is a usage error (2) before any about credentials (4).
    t = resolve_load_target(p.parse_args(["loadtest"]), {"SIS_ENDPOINT": "ws://127.0.0.1:5", "SIS_TOKEN": "tk-1"})
    assert (t.endpoint, t.project_id, type(t.auth).__name__) == ("ws://127.0.0.1:5", "local", "Token")
    for argv, env, code, msg in [
        (["--endpoint", "ws://127.0.0.1:9", "--ak", "a"], {}, 4, "--sk is required"),
        (["--region", "cn-north-4"], {"SIS_AK": "a"}, 4, "SIS_SK is not set"),
        (["--engine", "english_16k_common=none"], {"SIS_ENDPOINT": "wss://h.example.com"}, 2, "--engine routes"),
        (["--local", "--endpoint", "ws://127.0.0.1:9"], {}, 2, "--local cannot"),
    ]:
        with pytest.raises(Exception, match=msg) as ei:
            resolve_load_target(p.parse_args(["loadtest", *argv]), env)
        assert ei.value.exit_code == code, argv

def test_samples_are_bounded() -> None:
    s = Samples(cap=100)
    for i in range(10_000):
        s.add(i / 100, float(i))
    assert len(s.v) == 100 and s.count == 10_000 and s.max == 9999.0
    summ = s.summary()
    assert summ["count"] == 10_000 and summ["max"] == 9999.0


# --- scoring on known pairs (a scripted stream) ---------------------------------------------------


class _ScriptedStream:
    """Plays back a scripted list of events; records what was sent."""

    def __init__(self, events, stats_ms: float) -> None:
        self._events = list(events)
        self.sent = 0
        self.ended = False
        from sis_stream.client.events import StreamStats

        self.stats = StreamStats(audio_ms_sent=stats_ms)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return None

    async def send(self, chunk):
        self.sent += len(chunk)

    async def end(self, cancel=False):
        self.ended = True

    def __aiter__(self):
        return self

    async def __anext__(self):
        await asyncio.sleep(0)
        if not self._events:
            raise StopAsyncIteration
        return self._events.pop(0)


class _ScriptedClient:
    def __init__(self, events, stats_ms: float) -> None:
        self.stream_obj = _ScriptedStream(events, stats_ms)

    def stream(self, mode, **kw):
        return self.stream_obj


def _final(text: str, start: int, end: int) -> FinalResult:
    return FinalResult(Segment(start, end, True, SegmentResult(text, 0.9, None)), "t")


@pytest.mark.parametrize("ref, finals, prop, expect_primary, expect_cer", [
    ("Turn on the light, please.", ["turn on the", "lights please"], "english_16k_common", 0.2, None),
    ("Call me at 9", ["call me at nine"], "english_16k_common", 0.0, None),
    ("欢迎使用", ["欢迎使"], "chinese_16k_common", 0.25, 0.25),
])
async def test_call_scores_known_pairs(ref, finals, prop, expect_primary, expect_cer) -> None:
    # The primary figure is the WER, or the CER for Chinese (scored by characters).
    audio = synthetic_corpus(PCM16, files=1).items[0]
    item = CorpusItem("x.wav", audio.audio, PCM16, ref, audio.speech)
    ends = [e for _, e in item.speech]
    events = [PartialResult(Segment(0, 10, False, SegmentResult("tu", 0.0, None)), "t")]
    for i, text in enumerate(finals):
        events.append(_final(text, 0, ends[min(i, len(ends) - 1)]))
    events.append(Ended("NORMAL", "t"))
    client = _ScriptedClient(events, item.duration_ms)
    spec = CallSpec("continue", {"audio_format": "pcm16k16bit", "property": prop},
                    by_chars=prop.startswith("chinese"))
    loop = asyncio.get_running_loop()
    res = await run_call(client, item, spec, index=0, slot=0, origin=loop.time())
    assert res.outcome == "ok" and res.errors == [] and res.finals == len(finals) and res.partials == 1
    assert res.words is not None and res.words.rate == pytest.approx(wer(ref, " ".join(finals)))
    primary = res.chars if spec.by_chars else res.words
    assert primary.rate == pytest.approx(expect_primary)
    assert res.chars.rate == pytest.approx(cer(ref, " ".join(finals)))
    if expect_cer is not None:
        assert res.chars.rate == pytest.approx(expect_cer)
    # One latency per reference end the finals covered; the rest are counted as missed.
    assert len(res.final_latency_ms) + res.missed_ends == len(ends)
    assert res.audio_s == pytest.approx(item.duration_ms / 1000)


async def test_call_counts_server_errors_and_does_not_score() -> None:
    audio = synthetic_corpus(PCM16, files=1).items[0]
    item = CorpusItem("x.wav", audio.audio, PCM16, "hello", audio.speech)
    client = _ScriptedClient([ServerError("SIS.0312", "too many sessions", "t")], 0.0)
    spec = CallSpec("continue", {"audio_format": "pcm16k16bit", "property": "english_16k_common"})
    res = await run_call(client, item, spec, index=0, slot=0, origin=0.0)
    assert res.outcome == "error" and res.errors == ["SIS.0312"] and res.words is None


async def test_connect_failure_is_a_measurement() -> None:
    class Refusing:
        def stream(self, mode, **kw):
            from sis_stream.errors import SisConnectionError

            class CM:
                async def __aenter__(self):
                    raise SisConnectionError("connection refused")

            return CM()

    item = synthetic_corpus(PCM16, files=1).items[0]
    spec = CallSpec("continue", {"audio_format": "pcm16k16bit", "property": "english_16k_common"})
    res = await run_call(Refusing(), item, spec, index=0, slot=0, origin=0.0)
    assert res.outcome == "error" and res.errors == ["connect:SisConnectionError"] and res.connect_ms is None


# --- against the embedded server (none engine) ----------------------------------------------------


def _spec(**kw) -> CallSpec:
    cfg = {"audio_format": "pcm16k16bit", "property": "english_16k_common", "interim_results": "yes",
           "vad_tail": 300}
    return CallSpec("continue", cfg, **kw)


async def test_run_against_none_engine_fields_consistent() -> None:
    corpus = synthetic_corpus(PCM16, files=2, vad_tail=300)
    opts = LoadTestOptions(_spec(), duration_s=2.0, plan=parse_ramp("20", 4, 2.0), drain_s=30)
    test = LoadTest(LoadTarget(engine_overrides=NONE16, server_settings={"interim_interval_s": 0.2},
                               server_factory=embedded_server),
                    corpus, opts)
    await test.run()
    r = summarize(test)
    for key in DOCUMENTED_KEYS:
        assert key in r, key
    calls = r["calls"]
    assert calls["started"] == 4 == calls["ok"] and calls["error"] == calls["cut"] == calls["lost"] == 0
    assert r["errors"] == {} and r["streams"] == 4 and r["streams_peak"] == 4
    recs = r["call_records"]
    assert len(recs) == 4 and sum(c["finals"] for c in recs) == r["finals"]
    # The none engine closes every segment the corpus' own endpointer found (same VAD).
    assert r["missed_ends"] == 0
    n_ends = sum(len(corpus.items[[i.name for i in corpus.items].index(c["file"])].speech) for c in recs)
    assert r["final_latency_ms"]["count"] == n_ends
    # A final can only come once vad_tail of silence after the end of speech has been sent.
    lat = r["final_latency_ms"]
    assert lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert min(v for c in recs for v in c["final_latency_ms"]) >= 300 - 2 * 100
    assert r["connect_ms"]["count"] == 4 and r["ttfs_ms"]["count"] == 4
    assert r["interim_per_s"]["count"] == 4 and r["interim_per_s"]["p50"] > 0
    assert r["harness_pacing_ms"]["frames"] > 0 and r["harness_cpu_pct"] > 0
    assert r["harness_wait_pct"] is None or 0 <= r["harness_wait_pct"] <= 100
    assert all("loop_lag_ms" in row and "wait_pct" in row for row in r["timeline"])
    assert abs(r["audio_s"] - sum(c["audio_s"] for c in recs)) < 0.01
    assert r["wer"] is None and r["accuracy"]["scored_calls"] == 0
    json.dumps(r)  # JSON-ready


async def test_knee_search_stops_at_slo_and_at_max() -> None:
    corpus = synthetic_corpus(PCM16, files=2, vad_tail=300)
    target = LoadTarget(engine_overrides=NONE16, server_factory=embedded_server)
    # SLO below vad_tail: the first level already fails; knee 0.
    search = CapacitySearch(CapacityOptions(slo_ms=50, max_streams=8, step_s=1.0, min_samples=1, refine=2))
    test = LoadTest(target, corpus, LoadTestOptions(_spec(), duration_s=600, plan=parse_ramp(None, 8, 600),
                                                    drain_s=0))
    await test.run(controller=search)
    cap = search.result()
    assert cap["knee_streams"] == 0 and cap["stopped_by"] == "slo"
    assert [lv["streams"] for lv in cap["levels"]] == [1]
    # A generous SLO: the search climbs 1, 2 and stops at max_streams=2.
    search = CapacitySearch(CapacityOptions(slo_ms=60_000, max_streams=2, step_s=1.0, min_samples=1))
    test = LoadTest(target, corpus, LoadTestOptions(_spec(), duration_s=600, plan=parse_ramp(None, 2, 600),
                                                    drain_s=0))
    await test.run(controller=search)
    cap = search.result()
    assert cap["knee_streams"] == 2 and cap["stopped_by"] == "max_streams"
    assert [lv["verdict"] for lv in cap["levels"]] == ["pass", "pass"]
    assert summarize(test, capacity=cap)["capacity"]["knee_streams"] == 2


async def test_cli_json_and_report(tmp_path: Path) -> None:
    import matplotlib  # noqa: F401  (installed by the test extra)
    for i, name in enumerate(("one", "two")):
        item = synthetic_corpus(PCM16, files=2, seed=i).items[i]
        (tmp_path / f"{name}.wav").write_bytes(wav_bytes(PCM16, item.audio[: 3 * 32000]))
        (tmp_path / f"{name}.txt").write_text("", encoding="utf-8")
    out = tmp_path / "r.json"
    args = build_parser().parse_args([
        "loadtest", str(tmp_path), "--engine", "chinese_8k_common=none", "--property", "chinese_8k_common",
        "--session-format", "ulaw8k8bit", "--streams", "2", "--duration", "1", "--ramp", "10",
        "--json", str(out), "--report", str(tmp_path / "rep"), "-q"])
    assert await loadtest_async(args) == 0
    r = json.loads(out.read_text())
    assert r["audio_format"] == "ulaw8k8bit" and r["property"] == "chinese_8k_common"
    # Empty references against the none engine's empty text: CER (Chinese) 0 on every scored call.
    assert r["wer"] == 0.0 and r["accuracy"]["unit"] == "char" and r["accuracy"]["scored_calls"] == r["calls"]["ok"] >= 2
    html = (tmp_path / "rep" / "index.html").read_text()
    assert "data:image/png;base64," in html and "final_latency_ms" in html
    assert (tmp_path / "rep" / "latency_histograms.png").stat().st_size > 1000


def test_cli_ctrl_c_writes_the_report(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIS_") or k.startswith("SIS_STREAM_")}
    env["PYTHONUNBUFFERED"] = "1"
    out = tmp_path / "r.json"
    has_plot = importlib.util.find_spec("matplotlib") is not None
    proc = subprocess.Popen([sys.executable, "-m", "sis_stream", "loadtest", "--engine", "english_16k_common=none",
                             "--streams", "3", "--duration", "300", "--synthetic-seconds", "5", "--json", str(out),
                             *(["--report", str(tmp_path / "rep")] if has_plot else [])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        seen = b""
        while b"active 3/3" not in seen:
            ready, _, _ = select.select([proc.stderr], [], [], 30)
            assert ready, f"no progress within 30 s: {seen!r}"
            line = proc.stderr.readline()
            assert line, f"exited early: {seen!r}"
            seen += line
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err.decode()
    r = json.loads(out.read_text())
    assert r["interrupted"] is True and r["calls"]["cut"] >= 3 and r["calls"]["lost"] == 0
    assert "interrupted" in err.decode()
    if has_plot:
        assert json.loads((tmp_path / "rep" / "result.json").read_text())["interrupted"] is True
        assert "data:image/png;base64," in (tmp_path / "rep" / "index.html").read_text()


# --- against whisper (short) ----------------------------------------------------------------------


@pytest.mark.engine
@pytest.mark.slow
async def test_whisper_run_scores_real_speech(tmp_path: Path) -> None:
    from realspeech import asterisk_prompts

    prompts = asterisk_prompts()[:3]
    fmt8 = AudioFormat.from_sis("pcm8k16bit")
    for u in prompts:
        (tmp_path / f"{u.name}.wav").write_bytes(wav_bytes(fmt8, u.pcm.astype("<i2").tobytes()))
        (tmp_path / f"{u.name}.txt").write_text(u.text, encoding="utf-8")
    import faster_whisper  # noqa: F401  (installed by the test extra)

    from sis_stream.engines.registry import EngineRegistry

    registry = EngineRegistry(engine_options={"whisper": {"num_workers": 2}})
    try:
        corpus = load_corpus(tmp_path, prop="english_16k_common")
        assert corpus.audio_format.sis_name == "pcm16k16bit" and corpus.scored == 3
        spec = CallSpec("continue", {"audio_format": "pcm16k16bit", "property": "english_16k_common"}, pace="x2")
        test = LoadTest(LoadTarget(server_settings={"registry": registry}, server_factory=embedded_server),
                        corpus, LoadTestOptions(spec, duration_s=0.5, plan=parse_ramp("10", 3, 0.5), drain_s=60))
        await test.run()
    finally:
        registry.close()
    r = summarize(test)
    assert r["calls"]["ok"] == 3 and r["errors"] == {}
    refs = {f"{u.name}.wav": u.text for u in prompts}
    total = None
    for rec in r["call_records"]:
        counts = word_errors(refs[rec["file"]], rec["hypothesis"])
        assert rec["wer"] == pytest.approx(round(counts.rate, 4))
        total = counts if total is None else total + counts
    assert r["wer"] == pytest.approx(round(total.rate, 4)) and r["accuracy"]["unit"] == "word"
    assert r["wer"] < 0.5  # tiny.en on clear prompts: most words right
    assert r["final_latency_ms"]["count"] >= 3 and r["harness_pacing_ms"]["frames"] > 0
