"""Moonshine base (folded, ONNX Runtime) against Whisper tiny.en on real recorded speech, one run.

Same clips, same process, one thread each (the engines as the server loads them):

- ``wer``: word error rate on the Asterisk telephone prompts (8 kHz, upsampled to 16 kHz by our
  resampler) and the five LibriVox utterances of pocketsphinx-testdata (16 kHz);
- ``cpu``: CPU seconds of one decode of 1 / 3 / 8 / 15 s of speech (prompts joined with 0.2 s
  gaps), median of three, per engine, and the ratio whisper / moonshine;
- ``rss``: resident memory after loading, and its growth over 1,000 Moonshine decodes (after 50
  warm-up decodes).

Run: ``python -m pytest benchmarks/bench_moonshine.py -q -s`` (about 3 minutes on a quiet box).
``BENCH_MOONSHINE_DECODES`` changes the 1,000. Needs the ``engines`` extra and the Debian packages
``asterisk-core-sounds-en-wav`` and ``pocketsphinx-testdata``.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from realspeech import asterisk_prompts, librivox  # noqa: E402

from sis_stream.audio.resample import resample  # noqa: E402
from sis_stream.text import word_errors  # noqa: E402

pytestmark = pytest.mark.engine

DECODES = int(os.environ.get("BENCH_MOONSHINE_DECODES", "1000"))
BUCKETS_S = (1, 3, 8, 15)


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    from sis_stream.engines.moonshine import MoonshineEngine
    from sis_stream.engines.whisper import WhisperEngine

    rss0 = _rss_mb()
    whisper = WhisperEngine(num_workers=1)
    rss1 = _rss_mb()
    moonshine = MoonshineEngine(cache_dir=os.environ.get("SIS_STREAM_CACHE_DIR") or tmp_path_factory.mktemp("c"))
    rss2 = _rss_mb()
    print(f"\nRSS: start {rss0:.0f} MB, +tiny.en {rss1 - rss0:.0f} MB, +Moonshine folded {rss2 - rss1:.0f} MB "
          f"(load {moonshine.load_seconds:.1f} s, fold included on a cold cache)")
    return {"moonshine": moonshine, "whisper": whisper}


def _decode(engines, name, pcm):
    if name == "moonshine":
        return engines[name].decode(pcm)[0]
    return engines[name].decode(pcm, language="en", word_timestamps=False, hotwords=None, final=True)[0]


def _clips():
    clips = [("8 kHz prompts", u.text, resample(u.pcm, 8000, 16000)) for u in asterisk_prompts()[:60]]
    clips += [("LibriVox", u.text, u.pcm) for u in librivox()]
    return clips


def bench_wer(engines):
    clips = _clips()
    rows = []
    for name in ("moonshine", "whisper"):
        by_set: dict[str, list] = {}
        for label, ref, pcm in clips:
            by_set.setdefault(label, []).append(word_errors(ref, _decode(engines, name, pcm)))
        total = [e for errs in by_set.values() for e in errs]
        agg = sum(total[1:], total[0])
        parts = " / ".join(f"{sum(v[1:], v[0]).rate:.1%}" for v in by_set.values())
        rows.append((name, agg.rate))
        print(f"WER {name:9s}: all {agg.rate:.1%} of {agg.reference_length} words "
              f"({' / '.join(by_set)}: {parts})")
    gap = rows[0][1] - rows[1][1]
    print(f"WER moonshine - whisper: {gap * 100:+.1f} points (target: within 0.5)")


def _speech_of(seconds: float) -> np.ndarray:
    parts, n = [], 0
    gap = np.zeros(3200, np.int16)
    for u in asterisk_prompts():
        pcm = resample(u.pcm, 8000, 16000)
        parts += [pcm, gap]
        n += len(pcm) + len(gap)
        if n >= seconds * 16000:
            break
    return np.concatenate(parts)[: int(seconds * 16000)]


def bench_cpu_per_utterance(engines):
    print("CPU-s per decode (median of 3, one thread; process CPU time, so CTranslate2 worker threads count):")
    for s in BUCKETS_S:
        pcm = _speech_of(s)
        cost = {}
        for name in ("moonshine", "whisper"):
            times = []
            for _ in range(3):
                t0 = time.process_time()
                _decode(engines, name, pcm)
                times.append(time.process_time() - t0)
            cost[name] = statistics.median(times)
        print(f"  {s:>2} s: moonshine {cost['moonshine']:.3f}  whisper {cost['whisper']:.3f}  "
              f"whisper/moonshine {cost['whisper'] / cost['moonshine']:.1f}x")


def bench_rss_over_decodes(engines):
    clips = [resample(u.pcm, 8000, 16000) for u in asterisk_prompts()[:20]]
    m = engines["moonshine"]
    for i in range(50):
        m.decode(clips[i % len(clips)])
    before = _rss_mb()
    t0 = time.process_time()
    for i in range(DECODES):
        m.decode(clips[i % len(clips)])
    cpu = time.process_time() - t0
    after = _rss_mb()
    audio = sum(len(clips[i % len(clips)]) for i in range(DECODES)) / 16000
    print(f"RSS over {DECODES} Moonshine decodes: {before:.0f} -> {after:.0f} MB ({after - before:+.1f} MB); "
          f"RTF {cpu / audio:.3f} ({cpu:.1f} CPU-s for {audio:.0f} s of audio)")
    assert after - before < 50, "Moonshine decodes leak memory"
