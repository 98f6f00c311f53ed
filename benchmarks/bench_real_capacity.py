"""Capacity of the local server with REAL engines: real-time 8 kHz calls per core.

Run explicitly::

    python -m pytest benchmarks/bench_real_capacity.py -s
    SIS_BENCH_CAP_ENGINES=pocketsphinx SIS_BENCH_CAP_LEVELS=1,2,4 SIS_BENCH_CAP_SECONDS=30 \\
        python -m pytest benchmarks/bench_real_capacity.py -s

Load: N concurrent continue-stream sessions, each a different real 8 kHz call
(``tests/realspeech.long_call``, Asterisk prompts with 1.2 s pauses) sent at real-time pace in
100 ms frames, as the client sends phone audio for English: transcoded to ``pcm16k16bit``. The
server runs ``python -m sis_stream serve`` in its own process (its own interpreter; the load
generator shares the machine's cores, so the figures are pessimistic), with ``--workers`` = the
cores and the property routed to the engine under test. Every run is bounded (the audio length,
then a fixed grace for the last finals).

Time to final (TTF) of a segment: from the moment the client sent the end of the prompt's
speech (session start + the RESULT's ``end_time``) to the final RESULT's arrival; it includes
the server's VAD tail (500 ms by default: a sentence is only known to be over after that much
silence). Capacity at a bound: the largest N (from the levels tried) with no error, every prompt
finalised and p95 TTF <= ``SIS_BENCH_CAP_P95_S`` (default 3 s); reported per core.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import numpy as np
import pytest
from _procs import ServeProcess
from aiohttp import ClientSession as HttpClient
from aiohttp import WSMsgType

from sis_stream.audio.resample import StreamResampler
from sis_stream.engines.base import available_cores
from tests.realspeech import long_call

CORES = available_cores()
ENGINES = [e for e in os.environ.get("SIS_BENCH_CAP_ENGINES", "whisper,pocketsphinx").split(",") if e]
LEVELS = [int(x) for x in os.environ.get("SIS_BENCH_CAP_LEVELS", "1,2,4,6").split(",") if x]
SECONDS = float(os.environ.get("SIS_BENCH_CAP_SECONDS", "30"))
P95_BOUND_S = float(os.environ.get("SIS_BENCH_CAP_P95_S", "3.0"))
GRACE_S = 30.0
FRAME_MS = 100
FRAME_BYTES = FRAME_MS * 16 * 2  # pcm16k16bit
_ROWS: list[str] = []


def _call_audio(seed: int) -> tuple[bytes, int]:
    call = long_call(SECONDS, seed=seed)
    rs = StreamResampler(call.rate_hz, 16000, dtype=np.int16)
    pcm16 = np.concatenate([rs.process(call.pcm), rs.flush()])
    return pcm16.astype("<i2").tobytes(), len(call.segments)


async def _session(http, url: str, audio: bytes, interim: bool, ttf: list[float], out: dict) -> None:
    cfg = {"audio_format": "pcm16k16bit", "property": "english_16k_common",
           "interim_results": "yes" if interim else "no"}
    async with http.ws_connect(url) as ws:
        await ws.send_str(json.dumps({"command": "START", "config": cfg}))
        msg = await ws.receive(timeout=60)
        first = json.loads(msg.data)
        if first.get("resp_type") != "START":
            out["errors"] += 1
            return
        t0 = time.perf_counter()

        async def reader() -> None:
            while True:
                m = await ws.receive()
                if m.type != WSMsgType.TEXT:
                    return
                f = json.loads(m.data)
                if f["resp_type"] == "RESULT":
                    now = time.perf_counter()
                    for seg in f["segments"]:
                        if seg["is_final"]:
                            ttf.append(now - (t0 + seg["end_time"] / 1000))
                            out["finals"] += 1
                        else:
                            out["interims"] += 1
                elif f["resp_type"] in ("ERROR", "FATAL_ERROR"):
                    out["errors"] += 1
                    return
                elif f["resp_type"] == "END":
                    return

        rd = asyncio.create_task(reader())
        for i, off in enumerate(range(0, len(audio), FRAME_BYTES)):
            delay = t0 + i * FRAME_MS / 1000 - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await ws.send_bytes(audio[off:off + FRAME_BYTES])
        await ws.send_str('{"command": "END", "cancel": false}')
        try:
            await asyncio.wait_for(rd, GRACE_S)
        except asyncio.TimeoutError:
            out["errors"] += 1


async def _level(engine: str, n: int, interim: bool) -> dict:
    srv = ServeProcess("--max-sessions", str(n + 4), "--workers", str(CORES),
                       "--engine", f"english_16k_common={engine}")
    try:
        url = f"{srv.base}/v1/p0/rasr/continue-stream"
        calls = [_call_audio(seed) for seed in range(n)]
        expected = sum(k for _, k in calls)
        ttf: list[float] = []
        out = {"errors": 0, "finals": 0, "interims": 0}
        cpu0, w0 = srv.cpu_s(), time.perf_counter()
        async with HttpClient() as http:
            await asyncio.wait_for(asyncio.gather(*(_session(http, url, a, interim, ttf, out) for a, _ in calls)),
                                   SECONDS * 1.2 + GRACE_S + 90)
        cpu, wall = srv.cpu_s() - cpu0, time.perf_counter() - w0
    finally:
        srv.stop()
    xs = sorted(ttf)
    pct = (lambda q: xs[min(len(xs) - 1, int(q * len(xs)))]) if xs else (lambda q: float("nan"))
    return {"n": n, "expected": expected, **out, "p50": pct(0.5), "p95": pct(0.95),
            "cpu_per_call_s": cpu / max(1, n) / SECONDS, "wall": wall}


@pytest.mark.parametrize("interim", [False, True], ids=["finals", "interim"])
@pytest.mark.parametrize("engine", ENGINES)
def test_real_engine_capacity(engine: str, interim: bool) -> None:
    if engine == "whisper":
        pytest.importorskip("faster_whisper")
    else:
        pytest.importorskip("pocketsphinx")
    best = 0
    for n in LEVELS:
        r = asyncio.run(_level(engine, n, interim))
        ok = r["errors"] == 0 and r["finals"] >= r["expected"] and r["p95"] <= P95_BOUND_S
        _ROWS.append(f"| {engine} | {'interim' if interim else 'finals only'} | {n} ({n / CORES:g}/core) | "
                     f"{r['errors']} | {r['finals']}/{r['expected']} | {r['p50']:.2f} / {r['p95']:.2f} s | "
                     f"{r['cpu_per_call_s']:.3f} | {'ok' if ok else 'over'} |")
        print(_ROWS[-1], flush=True)
        if not ok:
            break
        best = n
    _ROWS.append(f"| {engine} | {'interim' if interim else 'finals only'} | capacity: {best} calls "
                 f"= {best / CORES:g} per core at p95 TTF <= {P95_BOUND_S:g} s | | | | | |")
    print(_ROWS[-1], flush=True)


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    if _ROWS:
        print(f"\nreal 8 kHz calls, {SECONDS:g} s each, {CORES} cores")
        print("| engine | results | concurrent calls | errors | finals | TTF p50 / p95 | server CPU s per call-second | |")
        print("|---|---|---|---|---|---|---|---|")
        for row in _ROWS:
            print(row)
