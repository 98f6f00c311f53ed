"""Long recordings at ``--speed max``: `sis-stream transcribe` against faster-whisper run directly.

Run explicitly (the lengths and engines are chosen by environment variables)::

    python -m pytest benchmarks/bench_long_calls.py -s
    SIS_BENCH_LONG_SECONDS=90,360,3600 SIS_BENCH_LONG_ENGINES=whisper,default \\
        python -m pytest benchmarks/bench_long_calls.py -s

Inputs are real 8 kHz telephone prompts with pauses (``tests/realspeech.long_call``), written to
a WAV file. Per length and engine, the CLI runs in its own process exactly as a user runs it
(``sis-stream transcribe call.wav --format json``, default ``--speed max``, embedded server,
model load included); the anchor is faster-whisper in its own process on the same WAV with the
same model directory, compute type and decoding settings as the ``whisper`` engine (greedy,
the engine's temperature fallback, no conditioning on previous text), model load included,
its threads left at faster-whisper's default. Both run back to back in the same test, so they
see the same machine load.

Checked: exit code 0 and every prompt present (one transcript segment per prompt, each
overlapping its prompt). Reported: wall time, RTF, the ratio CLI / faster-whisper, and WER
against the prompts' transcripts, scored prompt by prompt (the CLI with whisper and with pocketsphinx, and the anchor).
The ratio is reported, not asserted (a shared machine's load makes it noisy).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import wave
from pathlib import Path

import pytest

from sis_stream.text import word_errors
from tests.realspeech import long_call

SECONDS = [float(s) for s in os.environ.get("SIS_BENCH_LONG_SECONDS", "90,360").split(",") if s.strip()]
ENGINES = [e.strip() for e in os.environ.get("SIS_BENCH_LONG_ENGINES", "whisper,pocketsphinx").split(",")
           if e.strip()]

_ROWS: list[str] = []

_ANCHOR = textwrap.dedent("""
    import json, sys, time, wave
    import numpy as np
    t0 = time.perf_counter()
    from faster_whisper import WhisperModel
    from sis_stream.audio.resample import StreamResampler
    from sis_stream.engines.whisper import DEFAULT_TEMPERATURES, default_model_dir
    with wave.open(sys.argv[1], "rb") as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    if rate != 16000:
        rs = StreamResampler(rate, 16000, dtype=np.int16)
        pcm = np.concatenate([rs.process(pcm), rs.flush()])
    model = WhisperModel(str(default_model_dir()), device="cpu", compute_type="int8", local_files_only=True)
    segs, _ = model.transcribe(pcm.astype(np.float32) / 32768.0, language="en", beam_size=1,
                               temperature=list(DEFAULT_TEMPERATURES), condition_on_previous_text=False,
                               vad_filter=False)
    rows = [(int(s.start * 1000), int(s.end * 1000), s.text.strip()) for s in segs]
    print(repr(time.perf_counter() - t0))
    print(json.dumps(rows))
""")


def _wer(call, hyp_segments) -> float:
    """WER of timed hypothesis segments against the call's prompts, scored prompt by prompt
    (each hypothesis segment goes to the prompt it overlaps most; an hour is too long to align
    as one piece)."""
    per = [[] for _ in call.segments]
    stray = []
    for start, end, text in hyp_segments:
        overlaps = [min(end, e) - max(start, s) for s, e, _t in call.segments]
        best = max(range(len(overlaps)), key=overlaps.__getitem__)
        (per[best] if overlaps[best] > 0 else stray).append(text)
    errors = ref_words = 0
    for (_s, _e, ref), hyps in zip(call.segments, per):
        c = word_errors(ref, " ".join(hyps))
        errors += c.errors
        ref_words += c.reference_length
    errors += sum(len(t.split()) for t in stray)  # text outside every prompt: insertions
    return errors / max(1, ref_words)


def _write_wav(path: Path, call) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(call.rate_hz)
        w.writeframes(call.pcm.astype("<i2").tobytes())


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    if _ROWS:
        print("\n| audio | engine | exit | segments | wall s | RTF | vs faster-whisper | WER |")
        print("|---|---|---|---|---|---|---|---|")
        for row in _ROWS:
            print(row)


@pytest.mark.parametrize("seconds", SECONDS)
def test_long_call_at_max_speed(tmp_path, seconds):
    pytest.importorskip("faster_whisper")
    call = long_call(seconds)
    wav = tmp_path / "call.wav"
    _write_wav(wav, call)
    label = f"{call.seconds / 60:.1f} min" if call.seconds >= 120 else f"{call.seconds:.0f} s"
    t0 = time.perf_counter()
    anchor = subprocess.run([sys.executable, "-c", _ANCHOR, str(wav)], capture_output=True, text=True,
                            timeout=max(600, 2 * seconds), check=False)
    anchor_wall = time.perf_counter() - t0
    assert anchor.returncode == 0, anchor.stderr[-2000:]
    anchor_segs = json.loads(anchor.stdout.split("\n", 1)[1])
    _ROWS.append(f"| {label} | faster-whisper direct | 0 | - | {anchor_wall:.1f} | "
                 f"{anchor_wall / call.seconds:.3f} | 1.00 | {_wer(call, anchor_segs):.1%} |")
    failures = []
    for engine in ENGINES:
        out = tmp_path / f"{engine}.json"
        cmd = [sys.executable, "-m", "sis_stream", "transcribe", str(wav), "--format", "json", "-o", str(out), "-q"]
        if engine != "default":  # "default": the property's default engine, as a user runs it
            cmd += ["--engine", f"english_16k_common={engine}"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(900, 4 * seconds), check=False)
        wall = time.perf_counter() - t0
        segs = json.loads(out.read_text())["segments"] if out.exists() and out.stat().st_size else []
        missing = [i for i, (s, e, _t) in enumerate(call.segments)
                   if not any(seg["start_ms"] < e and seg["end_ms"] > s for seg in segs)]
        score = _wer(call, [(g["start_ms"], g["end_ms"], g["text"]) for g in segs])
        _ROWS.append(f"| {label} | sis-stream {engine} | {proc.returncode} | {len(segs)}/{len(call.segments)} | "
                     f"{wall:.1f} | {wall / call.seconds:.3f} | {wall / anchor_wall:.2f} | {score:.1%} |")
        if proc.returncode != 0 or missing or len(segs) != len(call.segments):
            failures.append(f"{engine}: exit {proc.returncode}, {len(segs)} segments for {len(call.segments)} "
                            f"prompts, missing {missing[:10]}; stderr: {proc.stderr[-1500:]}")
    assert not failures, failures
