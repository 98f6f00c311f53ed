"""Interims at 1 Hz on long segments: the ``agreement`` interim policy against ``full``, one run.

A segment of N telephone prompts separated by 400 ms pauses (shorter than the default vad_tail,
so the endpointer keeps them in one segment), 16 kHz. An interim is computed every second of
audio, as a 1 Hz ``interim_results`` session would, with the decode the ``moonshine-whisper``
engine chooses (Moonshine up to 8 s of audio, Whisper tiny.en beyond), and with Moonshine alone.
Per policy and segment length it prints the audio decoded by the interims, their CPU seconds
(process time of the decode calls), the longest single interim decode, the words taken back
(per interim: the words of the previous interim after the prefix the two share, summed), and the
word error rate of the last interim against the final decode of the whole segment (what the
final result shows). For ``agreement`` it also prints the word error rate of its interims against
the ``full`` interims of the same moments (all interims pooled).

Run: ``python -m pytest benchmarks/bench_interim.py -s`` (about 2 minutes on a quiet box).
Needs the ``engines`` extra and the Debian package ``asterisk-core-sounds-en-wav``.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from realspeech import long_call

from sis_stream.audio.resample import StreamResampler
from sis_stream.engines.interim import InterimPolicy, InterimSettings
from sis_stream.text import normalize_text, word_errors

pytestmark = pytest.mark.engine

RATE = 16000
SEGMENTS_S = tuple(int(s) for s in os.environ.get("BENCH_INTERIM_SECONDS", "12,24").split(","))
CROSSOVER = 8 * RATE


@pytest.fixture(scope="module")
def engines():
    from sis_stream.engines.moonshine import MoonshineEngine
    from sis_stream.engines.whisper import WhisperEngine

    return MoonshineEngine(), WhisperEngine(num_workers=1)


def _segment(seconds: float) -> tuple[np.ndarray, str]:
    call = long_call(seconds, pause_ms=400, seed=1)
    r = StreamResampler(8000, RATE)
    pcm = np.concatenate([r.process(call.pcm), r.flush()])
    return pcm[RATE // 10:], call.text  # 300 ms of lead-in, as an endpointer's pre-roll


def _decoder(engines, routed: bool):
    moonshine, whisper = engines

    def decode(audio: np.ndarray, final: bool) -> str:
        if routed and len(audio) > CROSSOVER:
            return whisper.decode(audio, language="en", word_timestamps=False, hotwords=None,
                                  final=final)[0]
        return moonshine.decode(audio)[0]

    return decode


def _retracted(before: str, after: str) -> int:
    a, b = normalize_text(before).split(), normalize_text(after).split()
    same = 0
    while same < min(len(a), len(b)) and a[same] == b[same]:
        same += 1
    return len(a) - same


def _run(decode, audio: np.ndarray, policy_name: str) -> tuple[float, float, float, list[str]]:
    policy = InterimPolicy(InterimSettings(policy=policy_name))
    cpu = longest = 0.0
    shown: list[str] = []
    for n in [*range(RATE, len(audio), RATE), len(audio)]:
        start, end, _prompt, commit = policy.plan(audio[:n])
        text = ""
        if end > start:
            t0 = time.process_time()
            text = decode(audio[start:end], False)
            dt = time.process_time() - t0
            cpu += dt
            longest = max(longest, dt)
        shown.append(policy.complete(start, end, text, commit))
    return policy.decoded_samples / RATE, cpu, longest, shown


@pytest.mark.parametrize("routed", [True, False], ids=["moonshine-whisper", "moonshine"])
def bench_interim_policies(engines, routed):
    decode = _decoder(engines, routed)
    one, five, _ = os.getloadavg()
    print(f"\n{'moonshine-whisper' if routed else 'moonshine alone'}; load average {one:.2f} / {five:.2f} "
          f"on {os.cpu_count()} core(s)")
    print("  segment | policy    | decoded s | interim CPU-s | longest decode s | words taken back "
          "| WER last interim vs final")
    for seconds in SEGMENTS_S:
        audio, _ = _segment(seconds)
        final = decode(audio, True)
        rows = {name: _run(decode, audio, name) for name in ("full", "agreement")}
        for name, (decoded, cpu, longest, shown) in rows.items():
            wer = word_errors(final, shown[-1]).rate
            back = sum(_retracted(x, y) for x, y in itertools.pairwise(shown))
            print(f"  {len(audio) / RATE:5.1f} s | {name:9s} | {decoded:9.1f} | {cpu:13.2f} | {longest:16.3f} "
                  f"| {back:16d} | {wer:.3f}")
        f, a = rows["full"], rows["agreement"]
        errs = [word_errors(x, y) for x, y in zip(f[3], a[3]) if x.strip()]
        pooled = sum(errs[1:], errs[0]).rate
        print(f"  {len(audio) / RATE:5.1f} s | agreement/full: decoded {a[0] / f[0]:.2f}, CPU {a[1] / f[1]:.2f}, "
              f"longest decode {a[2] / f[2]:.2f}; WER of agreement interims vs full interims {pooled:.3f}")
