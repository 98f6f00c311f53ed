"""``sis-stream loadtest`` against a separately started ``sis-stream serve`` (loopback).

Two runs, each a ``serve`` process and a ``loadtest`` process (so the harness's CPU is its own):

* ``bench_loadtest_none``: ``BENCH_LT_STREAMS`` (default 500) streams for ``BENCH_LT_DURATION``
  (default 60) seconds of the built-in synthetic audio against ``serve --engine
  english_16k_common=none``. Reports the harness's pacing p50/p99/max and CPU share, the
  server's CPU share, the endpoint's connect / time-to-final figures and errors.
``BENCH_LT_KEEP=DIR`` keeps each run's JSON there (``loadtest_none.json``,
``loadtest_capacity.json``).

* ``bench_capacity_whisper``: ``--find-capacity`` against ``serve`` with the default English
  engine (Whisper tiny.en), on Asterisk prompts (real telephone speech, 8 kHz, sent as
  pcm16k16bit) with their transcripts; 15 s of warm-up (one stream: the model loads), then
  SLO ``BENCH_LT_SLO_MS`` (default 2000 ms), levels up to ``BENCH_LT_WHISPER_MAX`` (default
  16), ``BENCH_LT_STEP_S`` (default 20) per level.

The box's load average is printed with each run: on a shared machine the harness and the server
get only part of a core, which the harness figures show (``harness_limited``).

Run: ``python -m pytest benchmarks/bench_loadtest.py -q -s`` (``-k none`` / ``-k whisper`` for one).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _procs import process_cpu_s

STREAMS = int(os.environ.get("BENCH_LT_STREAMS", "500"))
DURATION = float(os.environ.get("BENCH_LT_DURATION", "60"))
SLO_MS = float(os.environ.get("BENCH_LT_SLO_MS", "2000"))
WHISPER_MAX = int(os.environ.get("BENCH_LT_WHISPER_MAX", "16"))
STEP_S = float(os.environ.get("BENCH_LT_STEP_S", "20"))


def _serve(*engine_args: str) -> tuple[subprocess.Popen[str], int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIS_") or k.startswith("SIS_STREAM_")}
    proc = subprocess.Popen([sys.executable, "-m", "sis_stream", "serve", "--port", "0", "--no-auth",
                             "--max-sessions", str(max(STREAMS, WHISPER_MAX) + 100), *engine_args],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    line = proc.stdout.readline()  # type: ignore[union-attr]
    if "listening on" not in line:
        proc.kill()
        pytest.fail(f"serve did not start: {line!r}")
    return proc, int(line.rsplit(":", 1)[1])


def _loadtest(port: int, *argv: str, timeout: float) -> tuple[dict, float, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIS_") or k.startswith("SIS_STREAM_")}
    out = Path(f"/tmp/bench_loadtest_{os.getpid()}_{port}.json")
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "sis_stream", "loadtest", "--endpoint", f"ws://127.0.0.1:{port}",
                    "--json", str(out), "-q", *argv], check=True, timeout=timeout, env=env)
    wall = time.monotonic() - t0
    result = json.loads(out.read_text())
    keep = os.environ.get("BENCH_LT_KEEP")
    if keep:
        out.replace(Path(keep) / f"loadtest_{'capacity' if '--find-capacity' in argv else 'none'}.json")
    else:
        out.unlink()
    return result, wall, os.getloadavg()[0]


def _print(title: str, r: dict, server_cpu_pct: float, load1: float) -> None:
    lat, con, pac = r["final_latency_ms"], r["connect_ms"], r["harness_pacing_ms"]
    print(f"\n{title}")
    print(f"  calls {r['calls']}  errors {r['errors'] or 'none'}  streams peak {r['streams_peak']}")
    print(f"  harness pacing p50/p99/max {pac['p50']}/{pac['p99']}/{pac['max']} ms over {pac['frames']} frames; "
          f"harness CPU {r['harness_cpu_pct']} % of one core; server CPU {server_cpu_pct:.1f} %; "
          f"harness waited for a CPU {r.get('harness_wait_pct')} % of the time; "
          f"harness_limited {r['harness_limited']}; load1 {load1:.1f}")
    print(f"  endpoint: connect p50/p95 {con['p50']}/{con['p95']} ms; end of speech -> final "
          f"p50/p95/p99 {lat['p50']}/{lat['p95']}/{lat['p99']} ms ({lat['count']} finals); "
          f"ttfs p50 {r['ttfs_ms']['p50']} ms; wer {r['wer']}")
    lag = [row.get("loop_lag_ms") or 0.0 for row in r["timeline"]]
    if lag:
        late = sum(1 for v in lag if v > 10.0)
        print(f"  harness loop lag (max per second): median {sorted(lag)[len(lag) // 2]:.1f} ms, "
              f"worst {max(lag):.0f} ms, {late} of {len(lag)} seconds above 10 ms")


def bench_loadtest_none() -> None:
    proc, port = _serve("--engine", "english_16k_common=none")
    try:
        c0 = process_cpu_s(proc.pid)
        r, wall, load1 = _loadtest(port, "--streams", str(STREAMS), "--duration", str(DURATION),
                                   timeout=DURATION + 300)
        server = 100.0 * (process_cpu_s(proc.pid) - c0) / wall
    finally:
        proc.terminate()
        proc.wait(30)
    _print(f"loadtest: {STREAMS} streams x {DURATION:g} s, serve --engine english_16k_common=none",
           r, server, load1)
    assert r["calls"]["started"] > 0


def bench_capacity_whisper(tmp_path: Path) -> None:
    pytest.importorskip("faster_whisper")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from realspeech import asterisk_prompts

    from sis_stream.audio.formats import AudioFormat, wav_bytes

    fmt = AudioFormat.from_sis("pcm8k16bit")
    for u in asterisk_prompts()[:12]:
        (tmp_path / f"{u.name}.wav").write_bytes(wav_bytes(fmt, u.pcm.astype("<i2").tobytes()))
        (tmp_path / f"{u.name}.txt").write_text(u.text, encoding="utf-8")
    proc, port = _serve()
    try:
        c0 = process_cpu_s(proc.pid)
        r, wall, load1 = _loadtest(port, str(tmp_path), "--find-capacity", "--slo-ms", str(SLO_MS),
                                   "--streams", str(WHISPER_MAX), "--step-s", str(STEP_S), "--duration", "3600",
                                   "--warmup-s", "15",
                                   timeout=40 * STEP_S + 600)
        server = 100.0 * (process_cpu_s(proc.pid) - c0) / wall
    finally:
        proc.terminate()
        proc.wait(60)
    cap = r["capacity"]
    _print(f"capacity: serve (default English engine, moonshine-whisper), Asterisk prompts, SLO p95 {SLO_MS:g} ms", r, server, load1)
    print(f"  knee {cap['knee_streams']} streams (stopped by {cap['stopped_by']})")
    for lv in cap["levels"]:
        print(f"    {lv['streams']:4d} streams: p95 {lv['final_latency_ms']['p95']} ms "
              f"({lv['final_latency_ms']['count']} finals), errors {lv['errors']}, harness pacing p99 "
              f"{lv['harness_pacing_ms']['p99']} ms (harness waited {lv['harness_wait_pct']} %) -> {lv['verdict']}")
    assert cap["levels"]
