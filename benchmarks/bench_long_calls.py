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
overlapping its prompt). Reported: wall time, RTF, the ratio CLI / faster-whisper, the CPU time
(user + system) of each process, the 1-minute load average when the round started, and WER
against the prompts' transcripts, scored prompt by prompt (the CLI with whisper and with pocketsphinx, and the anchor).
The ratio is reported, not asserted (a shared machine's load makes it noisy).

``SIS_BENCH_LONG_ROUNDS=N`` (default 1) runs N rounds per length, the anchor and every engine in
each, alternating the order; with several rounds the medians follow the table.
``SIS_BENCH_LONG_BYTECODE=1`` runs both sides with Python's bytecode cache (in a scratch
directory, filled by one untimed run first), as an installed package has it: in an environment
with ``PYTHONDONTWRITEBYTECODE`` set, a source checkout otherwise compiles its modules on every
run (about 0.2 CPU-s here), which an installed faster-whisper never does.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import statistics
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
ROUNDS = max(1, int(os.environ.get("SIS_BENCH_LONG_ROUNDS", "1")))
BYTECODE = os.environ.get("SIS_BENCH_LONG_BYTECODE", "") not in ("", "0")

_ROWS: list[str] = []
#: (label, engine) -> [(wall s, CPU s, wall / anchor wall)] over the rounds
_RUNS: dict[tuple[str, str], list[tuple[float, float, float]]] = {}

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


def _run(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """Run `cmd`; return the process, its wall time and its CPU time (user + system, s)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return proc, wall, cpu


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    if BYTECODE:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(tmp_path / "pycache")
    return env


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    if _ROWS:
        print(f"\n(bytecode cache: {'on' if BYTECODE else 'as the environment has it'})")
        print("| audio | engine | exit | segments | wall s | RTF | vs faster-whisper | CPU s | load | WER |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for row in _ROWS:
            print(row)
    if ROUNDS > 1 and _RUNS:
        print("\n| audio | engine | rounds | median wall s | median CPU s | median vs faster-whisper | ratios |")
        print("|---|---|---|---|---|---|---|")
        for (label, engine), runs in _RUNS.items():
            ratios = ", ".join(f"{r:.2f}" for _w, _c, r in runs)
            print(f"| {label} | {engine} | {len(runs)} | {statistics.median(w for w, _c, _r in runs):.2f} | "
                  f"{statistics.median(c for _w, c, _r in runs):.2f} | "
                  f"{statistics.median(r for _w, _c, r in runs):.2f} | {ratios} |")


@pytest.mark.parametrize("seconds", SECONDS)
def test_long_call_at_max_speed(tmp_path, seconds):
    pytest.importorskip("faster_whisper")
    call = long_call(seconds)
    wav = tmp_path / "call.wav"
    _write_wav(wav, call)
    label = f"{call.seconds / 60:.1f} min" if call.seconds >= 120 else f"{call.seconds:.0f} s"
    env = _env(tmp_path)
    timeout = max(900, 4 * seconds)
    anchor_cmd = [sys.executable, "-c", _ANCHOR, str(wav)]

    def cli_cmd(engine: str, out: Path, source: Path = wav) -> list[str]:
        cmd = [sys.executable, "-m", "sis_stream", "transcribe", str(source), "--format", "json", "-o", str(out),
               "-q"]
        if engine != "default":  # "default": the property's default engine, as a user runs it
            cmd += ["--engine", f"english_16k_common={engine}"]
        return cmd

    if BYTECODE:  # fill the bytecode cache of both sides, untimed (the CLI on the first 3 s)
        _run(anchor_cmd, env, timeout)
        head = dataclasses.replace(call, pcm=call.pcm[:3 * call.rate_hz])
        _write_wav(tmp_path / "head.wav", head)
        for engine in ENGINES:
            _run(cli_cmd(engine, tmp_path / "warm.json", tmp_path / "head.wav"), env, timeout)
    failures = []
    for round_ in range(ROUNDS):
        load = os.getloadavg()[0]
        anchor, anchor_wall, anchor_cpu = _run(anchor_cmd, env, max(600, 2 * seconds))
        assert anchor.returncode == 0, anchor.stderr[-2000:]
        anchor_segs = json.loads(anchor.stdout.split("\n", 1)[1])
        _ROWS.append(f"| {label} | faster-whisper direct | 0 | - | {anchor_wall:.1f} | "
                     f"{anchor_wall / call.seconds:.3f} | 1.00 | {anchor_cpu:.1f} | {load:.2f} | "
                     f"{_wer(call, anchor_segs):.1%} |")
        _RUNS.setdefault((label, "faster-whisper direct"), []).append((anchor_wall, anchor_cpu, 1.0))
        engines = ENGINES[round_ % len(ENGINES):] + ENGINES[:round_ % len(ENGINES)]  # alternate the order
        for engine in engines:
            out = tmp_path / f"{engine}.json"
            out.unlink(missing_ok=True)
            proc, wall, cpu = _run(cli_cmd(engine, out), env, timeout)
            segs = json.loads(out.read_text())["segments"] if out.exists() and out.stat().st_size else []
            missing = [i for i, (s, e, _t) in enumerate(call.segments)
                       if not any(seg["start_ms"] < e and seg["end_ms"] > s for seg in segs)]
            score = _wer(call, [(g["start_ms"], g["end_ms"], g["text"]) for g in segs])
            _ROWS.append(f"| {label} | sis-stream {engine} | {proc.returncode} | {len(segs)}/{len(call.segments)} | "
                         f"{wall:.1f} | {wall / call.seconds:.3f} | {wall / anchor_wall:.2f} | {cpu:.1f} | "
                         f"{load:.2f} | {score:.1%} |")
            _RUNS.setdefault((label, f"sis-stream {engine}"), []).append((wall, cpu, wall / anchor_wall))
            if proc.returncode != 0 or missing or len(segs) != len(call.segments):
                failures.append(f"{engine}: exit {proc.returncode}, {len(segs)} segments for {len(call.segments)} "
                                f"prompts, missing {missing[:10]}; stderr: {proc.stderr[-1500:]}")
    assert not failures, failures
