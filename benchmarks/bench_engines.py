"""Recognition engines on espeak-ng speech: real-time factor, WER, model load time and memory.

Cases (all on this machine, CPU only):

- ``decode 5 s``: one 5.0 s utterance (espeak-ng ``en-us+m3`` at 150 wpm, resampled to 16 kHz, seeded
  noise floor at about -64 dBFS) fed in 100 ms chunks and finalised, per engine. Side by side with the
  *anchor*: the same library called directly on the same loaded model with the same settings
  (faster-whisper ``transcribe``; a pocketsphinx ``Decoder`` with ``process_raw`` per chunk), so the
  ratio (anchor / ours, ~1.0 expected) shows what our engine layer costs.
- ``stream 5 s``: the same utterance as a live session would drive it: 100 ms chunks, a partial every
  1 s (whisper) or after every chunk (pocketsphinx, none), then the final.
- ``corpus``: WER over six sentences per engine (normalised as ``sis_stream.text`` documents).
- ``load``: model load time and resident memory, each engine in a fresh subprocess.

RTF = processing time / audio duration (median round). The tables print at the end of the module.

Run: ``.venv/bin/python -m pytest benchmarks/bench_engines.py -q``
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")
pytest.importorskip("scipy")

from _ratios import Comparison, ratio_fixture

from sis_stream.engines import espeak
from sis_stream.engines.base import SAMPLE_RATE_HZ
from sis_stream.text import word_errors

pytestmark = pytest.mark.engine

UTTERANCE_S = 5.0
CHUNK = 1600  # 100 ms
UTTERANCE = "please call me back tomorrow morning and open the door for the guests"
CORPUS = (
    "please call me back tomorrow morning",
    "open the door and turn on the light",
    "i would like to book a table for two people",
    "we need more time to finish the project",
    "the meeting starts at nine in the morning",
    "speech recognition works well on this machine",
)
ENGINES = ("whisper", "pocketsphinx", "none")
ROUNDS = {"whisper": 3, "pocketsphinx": 3, "none": 20}

ratios = ratio_fixture("engine layer vs direct library call", [
    Comparison("decode 5 s: whisper", ours="WhisperStream", anchor="faster-whisper direct"),
    Comparison("decode 5 s: pocketsphinx", ours="SphinxStream", anchor="pocketsphinx Decoder direct"),
])

_rows: dict[str, dict[str, object]] = {e: {} for e in ENGINES}


def speech(text: str, *, seed: int = 0, total_s: float | None = None) -> np.ndarray:
    """espeak-ng speech at 16 kHz with 200 ms pads (or padded to `total_s`) and a noise floor."""
    from scipy.signal import resample_poly

    if not espeak.available():
        pytest.skip("espeak-ng (espeakng-loader) is not installed")
    syn = espeak.synthesize(text, voice="en-us+m3", rate_wpm=150)
    x = resample_poly(syn.samples.astype(np.float64), 320, 441)
    pad = np.zeros(SAMPLE_RATE_HZ // 5)
    x = np.concatenate([pad, x, pad])
    if total_s is not None:
        n = int(total_s * SAMPLE_RATE_HZ)
        if len(x) > n:
            raise ValueError(f"utterance is {len(x) / SAMPLE_RATE_HZ:.2f} s, longer than {total_s} s")
        x = np.concatenate([x, np.zeros(n - len(x))])
    x = x + np.random.default_rng(seed).normal(0.0, 20.0, len(x))
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


@pytest.fixture(scope="module")
def utterance() -> np.ndarray:
    return speech(UTTERANCE, total_s=UTTERANCE_S)


@pytest.fixture(scope="module")
def engines() -> dict[str, object]:
    pytest.importorskip("faster_whisper")
    pytest.importorskip("pocketsphinx")
    from sis_stream.engines.null import NullEngine
    from sis_stream.engines.sphinx import SphinxEngine
    from sis_stream.engines.whisper import WhisperEngine

    return {"whisper": WhisperEngine(num_workers=1), "pocketsphinx": SphinxEngine(max_decoders=2),
            "none": NullEngine()}


@pytest.fixture(scope="module", autouse=True)
def engine_table(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    header = ("engine", "RTF decode 5 s", "RTF stream 5 s", "WER corpus", "load s (incl. import)",
              "RSS MB (loaded + 1 decode)", "notes")
    lines = [header]
    for name in ENGINES:
        r = _rows[name]
        lines.append((name, _fmt(r.get("rtf_decode")), _fmt(r.get("rtf_stream")), _fmt(r.get("wer")),
                      _fmt(r.get("load_s")), _fmt(r.get("rss_mb"), ".0f"), str(r.get("notes", ""))))
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    text = ["engines on espeak-ng en-us+m3 speech, 16 kHz, CPU (RTF: median processing time / audio time)"]
    text += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in lines]
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    capman = request.config.pluginmanager.getplugin("capturemanager")
    if reporter is not None and capman is not None:
        with capman.global_and_fixture_disabled():
            reporter.write_line("")
            for line in text:
                reporter.write_line(line)
    out_dir = os.environ.get("SIS_STREAM_RATIOS_DIR")
    if out_dir:
        with open(os.path.join(out_dir, "engines.json"), "w", encoding="utf-8") as f:
            json.dump(_rows, f, indent=1)


def _fmt(v: object, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def _median(benchmark) -> float | None:
    stats = getattr(benchmark, "stats", None)
    return None if stats is None else stats.stats.median


def _decode(engine, x: np.ndarray):
    with engine.new_stream(language="en") as stream:
        for i in range(0, len(x), CHUNK):
            stream.accept(x[i:i + CHUNK])
        return stream.finalize()


def _stream(engine, x: np.ndarray, partial_every: int):
    with engine.new_stream(language="en") as stream:
        for k, i in enumerate(range(0, len(x), CHUNK), 1):
            stream.accept(x[i:i + CHUNK])
            if k % partial_every == 0:
                stream.partial()
        return stream.finalize()


@pytest.mark.parametrize("name", ENGINES)
def test_decode_5s(benchmark, engines, utterance, ratios, name):
    engine = engines[name]
    benchmark.group = f"decode 5 s: {name}"
    hyp = benchmark.pedantic(_decode, args=(engine, utterance), rounds=ROUNDS[name], iterations=1,
                             warmup_rounds=1)
    label = {"whisper": "WhisperStream", "pocketsphinx": "SphinxStream", "none": "NullStream"}[name]
    ratios.record(benchmark, label)
    med = _median(benchmark)
    if med is not None:
        _rows[name]["rtf_decode"] = med / UTTERANCE_S
    benchmark.extra_info["text"] = hyp.text
    assert hyp.end_ms == int(UTTERANCE_S * 1000)


def test_decode_5s_whisper_direct(benchmark, engines, utterance, ratios):
    # The anchor: faster-whisper's own transcribe on the same model and settings as a final.
    eng = engines["whisper"]
    x = utterance.astype(np.float32) / 32768.0

    def run():
        segs, _ = eng._model.transcribe(x, language="en", beam_size=eng.beam_size,
                                        temperature=eng.temperatures[0], without_timestamps=True,
                                        no_repeat_ngram_size=eng.no_repeat_ngram_size,
                                        max_new_tokens=eng.max_new_tokens(x.size, 0),
                                        condition_on_previous_text=False, vad_filter=False)
        return "".join(s.text for s in segs)

    benchmark.group = "decode 5 s: whisper"
    benchmark.pedantic(run, rounds=ROUNDS["whisper"], iterations=1, warmup_rounds=1)
    ratios.record(benchmark, "faster-whisper direct")


def test_decode_5s_pocketsphinx_direct(benchmark, engines, utterance, ratios):
    # The anchor: a bare pocketsphinx Decoder, same config, process_raw per 100 ms chunk.
    import pocketsphinx

    decoder = pocketsphinx.Decoder(pocketsphinx.Config(**engines["pocketsphinx"]._settings))
    chunks = [utterance[i:i + CHUNK].tobytes() for i in range(0, len(utterance), CHUNK)]

    def run():
        decoder.start_utt()
        for c in chunks:
            decoder.process_raw(c, False, False)
        decoder.end_utt()
        hyp = decoder.hyp()
        return hyp.hypstr if hyp else ""

    benchmark.group = "decode 5 s: pocketsphinx"
    benchmark.pedantic(run, rounds=ROUNDS["pocketsphinx"], iterations=1, warmup_rounds=1)
    ratios.record(benchmark, "pocketsphinx Decoder direct")


@pytest.mark.parametrize("name", ENGINES)
def test_stream_5s_with_partials(benchmark, engines, utterance, name):
    engine = engines[name]
    every = 10 if name == "whisper" else 1  # whisper: a partial per second of audio
    benchmark.group = f"stream 5 s with partials: {name}"
    benchmark.pedantic(_stream, args=(engine, utterance, every), rounds=ROUNDS[name], iterations=1)
    med = _median(benchmark)
    if med is not None:
        _rows[name]["rtf_stream"] = med / UTTERANCE_S


@pytest.mark.parametrize("name", ("whisper", "pocketsphinx"))
def test_corpus_wer(benchmark, engines, name):
    engine = engines[name]
    audio = [speech(t, seed=i) for i, t in enumerate(CORPUS)]

    def run():
        return [_decode(engine, x).text for x in audio]

    benchmark.group = f"corpus ({len(CORPUS)} sentences): {name}"
    texts = benchmark.pedantic(run, rounds=1, iterations=1)
    counts = [word_errors(ref, hyp) for ref, hyp in zip(CORPUS, texts)]
    total = sum(counts[1:], counts[0])
    _rows[name]["wer"] = total.rate
    benchmark.extra_info["wer"] = total.rate
    benchmark.extra_info["hypotheses"] = texts


_LOAD_SCRIPT = r"""
import json, sys, time
import numpy as np
def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
name = sys.argv[1]
r0 = rss_mb()
t0 = time.perf_counter()
if name == "whisper":
    from sis_stream.engines.whisper import WhisperEngine as E; kw = {"num_workers": 1}
elif name == "pocketsphinx":
    from sis_stream.engines.sphinx import SphinxEngine as E; kw = {"max_decoders": 2}
else:
    from sis_stream.engines.null import NullEngine as E; kw = {}
t1 = time.perf_counter(); r1 = rss_mb()
eng = E(**kw)
t2 = time.perf_counter(); r2 = rss_mb()
with eng.new_stream(language="en") as s:
    s.accept(np.random.default_rng(0).normal(0, 300, 32000).astype(np.int16)); s.finalize()
r3 = rss_mb()
extra = None
if name == "pocketsphinx":
    a = eng.new_stream(language="en"); b = eng.new_stream(language="en")  # forces a 2nd decoder
    extra = rss_mb() - r3; a.close(); b.close()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "rss_import_mb": r1 - r0,
                  "rss_model_mb": r2 - r1, "rss_after_decode_mb": r3 - r1, "rss_extra_decoder_mb": extra}))
"""


@pytest.mark.parametrize("name", ENGINES)
def test_model_load_and_memory(name):
    # A fresh interpreter per engine, so RSS deltas belong to that engine alone.
    out = subprocess.run([sys.executable, "-c", _LOAD_SCRIPT, name], capture_output=True, text=True,
                         timeout=300, check=True)
    m = json.loads(out.stdout.strip().splitlines()[-1])
    _rows[name]["load_s"] = m["load_s"]
    _rows[name]["rss_mb"] = m["rss_after_decode_mb"]
    _rows[name]["rss_model_only_mb"] = m["rss_model_mb"]
    if m["rss_extra_decoder_mb"] is not None:
        _rows[name]["notes"] = f"+{m['rss_extra_decoder_mb']:.0f} MB per extra pooled decoder"
