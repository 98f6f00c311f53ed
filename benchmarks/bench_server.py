"""Local server load: concurrent RASR sessions at real-time pace, pocketsphinx streams, TTFS.

Run: ``python -m pytest benchmarks/bench_server.py -q -s``. Loopback only; every
load loop is bounded in count and time. The server and the load generator share this process and
its cores (the numbers are therefore pessimistic for the server). Sizes can be changed with
``SIS_BENCH_SESSIONS`` (default 250 per core available) and ``SIS_BENCH_SECONDS`` (default 6).

Measured:

* ``none`` engine, N sessions at real-time pace (100 ms frames every 100 ms, continue-stream,
  speech bursts every ~1.5 s): result latency = time from the frame that completed a segment's
  trailing silence (sent) to its final RESULT (received); errors; sessions per core.
* TTFS (time to final after end of speech) over >= 100 utterances with ``none``: from sending the
  last speech frame to receiving its final; target p95 <= vad_tail + 150 ms.
* pocketsphinx: K streams at real-time pace; real-time factor of the engine pool and whether it
  keeps up (finals arrive); reported as streams per core.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")

from _procs import ServeProcess
from aiohttp import ClientSession as HttpClient
from aiohttp import WSMsgType

from sis_stream.engines.base import available_cores

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from server_helpers import SENTENCES, silence, speech_pcm

CORES = available_cores()
FRAME_MS = 100
RATE = 16000
FRAME_BYTES = FRAME_MS * RATE // 1000 * 2
VAD_TAIL = 500
RESULTS: dict[str, object] = {}


def _pattern(total_ms: int) -> tuple[bytes, list[int]]:
    """Speech bursts (~1.1 s) separated by 900 ms pauses; returns audio and the ms where each burst's
    trailing silence reaches vad_tail (a segment must close there)."""
    burst = np.array(speech_pcm(SENTENCES[1]))[: RATE * 11 // 10]
    parts, closes, t = [silence(300)], [], 300
    while t < total_ms - 2200:
        parts.append(burst)
        t += len(burst) * 1000 // RATE
        closes.append(t + VAD_TAIL)
        parts.append(silence(900))
        t += 900
    parts.append(silence(max(0, total_ms - t)))
    pcm = np.concatenate(parts)[: total_ms * RATE // 1000]
    return pcm.astype("<i2").tobytes(), closes


async def _session(http, url: str, audio: bytes, closes: list[int], start: list[float], lat: list[float],
                   ttfs: list[float], errors: list[str], barrier: asyncio.Event, connected: list[int],
                   n: int, stagger_s: float, prop: str = "english_16k_common") -> int:
    finals = 0
    async with http.ws_connect(url) as ws:
        connected[0] += 1
        if connected[0] == n:
            start[0] = time.perf_counter() + 0.2
            barrier.set()
        await barrier.wait()  # every session connected: the real-time clock starts together
        start_t = start[0] + stagger_s
        await ws.send_str(json.dumps({"command": "START", "config": {
            "audio_format": "pcm16k16bit", "property": prop, "vad_tail": VAD_TAIL}}))
        sent_at: dict[int, float] = {}

        async def reader() -> None:
            nonlocal finals
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    return
                m = json.loads(msg.data)
                if m["resp_type"] in ("ERROR", "FATAL_ERROR"):
                    errors.append(m["error_code"])
                elif m["resp_type"] == "RESULT":
                    now = time.perf_counter()
                    for s in m["segments"]:
                        if s["is_final"]:
                            finals += 1
                            # the frame that completed vad_tail after this segment's end
                            idx = next((c for c in sorted(sent_at) if c >= s["end_time"] + VAD_TAIL), None)
                            if idx is not None:
                                lat.append((now - sent_at[idx]) * 1000)
                            speech_end_frame = next((c for c in sorted(sent_at) if c >= s["end_time"]), None)
                            if speech_end_frame is not None:
                                ttfs.append((now - sent_at[speech_end_frame]) * 1000)
                elif m["resp_type"] == "END":
                    return

        rt = asyncio.create_task(reader())
        n = len(audio) // FRAME_BYTES
        for i in range(n):
            target = start_t + i * FRAME_MS / 1000
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await ws.send_bytes(audio[i * FRAME_BYTES:(i + 1) * FRAME_BYTES])
            sent_at[(i + 1) * FRAME_MS] = time.perf_counter()
        await ws.send_str('{"command": "END", "cancel": "false"}')
        await asyncio.wait_for(rt, 30)
    return finals


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


async def _load(n: int, seconds: int, overrides: tuple[str, ...]) -> dict:
    audio, closes = _pattern(seconds * 1000)
    lat: list[float] = []
    ttfs: list[float] = []
    errors: list[str] = []
    # The server in its own process: the load generator here does not steal its interpreter.
    srv = ServeProcess("--max-sessions", str(n + 8), *(a for o in overrides for a in ("--engine", o)))
    cpu0 = srv.cpu_s()
    ccpu0 = time.process_time()
    try:
        import aiohttp

        conn = aiohttp.TCPConnector(limit=0)
        async with HttpClient(connector=conn) as http:
            url = srv.base + "/v1/bench/rasr/continue-stream"
            barrier, connected, start = asyncio.Event(), [0], [0.0]
            # Random phases over one speech+pause period (2 s) and within a frame: independent
            # talkers, not 500 sentences ending in the same 100 ms.
            rng = np.random.default_rng(0)
            offsets = rng.uniform(0.0, 2.0, n)
            tasks = [_session(http, url, audio, closes, start, lat, ttfs, errors, barrier, connected, n,
                              float(offsets[i])) for i in range(n)]
            wall0 = time.perf_counter()
            res = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), seconds * 4 + 60)
            wall = time.perf_counter() - wall0
        server_cpu = srv.cpu_s() - cpu0
        client_cpu = time.process_time() - ccpu0
    finally:
        srv.stop()
    exc = [r for r in res if isinstance(r, BaseException)]
    finals = sum(r for r in res if isinstance(r, int))
    return {"sessions": n, "seconds": seconds, "wall_s": round(wall, 2), "finals": finals,
            "expected_finals": n * len(closes), "errors": len(errors) + len(exc),
            "error_codes": sorted(set(errors))[:5],
            "exceptions": [repr(e)[:120] for e in exc[:3]],
            "latency_p50_ms": round(_pct(lat, 50), 1), "latency_p99_ms": round(_pct(lat, 99), 1),
            "ttfs_p50_ms": round(_pct(ttfs, 50), 1), "ttfs_p95_ms": round(_pct(ttfs, 95), 1),
            "ttfs_p99_ms": round(_pct(ttfs, 99), 1), "ttfs_n": len(ttfs),
            "server_cpu_s": round(server_cpu, 2),
            "server_cores_used": round(server_cpu / wall, 2),
            "client_cores_used": round(client_cpu / wall, 2),
            "rtf_server_per_stream": round(server_cpu / (n * seconds), 4)}


def _report(name: str, r: dict) -> None:
    RESULTS[name] = r
    print(f"\n[{name}] " + ", ".join(f"{k}={v}" for k, v in r.items()))


@pytest.mark.parametrize("per_core", [int(os.environ.get("SIS_BENCH_SESSIONS", "250"))])
def test_none_engine_realtime_sessions(benchmark, per_core: int) -> None:
    """N = per_core * cores concurrent continue-stream sessions with the none engine, real-time pace."""
    benchmark.group = "server none engine"
    n = per_core * CORES
    seconds = int(os.environ.get("SIS_BENCH_SECONDS", "6"))
    r = benchmark.pedantic(lambda: asyncio.run(_load(n, seconds, ("english_16k_common=none",))),
                           rounds=1, iterations=1)
    _report(f"none x{n}", r)
    assert r["errors"] == 0


def test_ttfs_none_engine(benchmark) -> None:
    """TTFS over >= 100 utterances (40 sessions x 3 utterances each) with the none engine."""
    benchmark.group = "server ttfs"
    r = benchmark.pedantic(lambda: asyncio.run(_load(40, 8, ("english_16k_common=none",))), rounds=1, iterations=1)
    _report("ttfs none", r)
    print(f"TTFS p95 target: vad_tail + 150 = {VAD_TAIL + 150} ms; measured p95 {r['ttfs_p95_ms']} ms "
          f"over {r['ttfs_n']} utterances")
    assert r["ttfs_n"] >= 100


@pytest.mark.parametrize("streams", [2 * CORES, 4 * CORES])
def test_pocketsphinx_realtime_streams(benchmark, streams: int) -> None:
    """K pocketsphinx streams at real-time pace: do finals keep up? RTF = engine busy time / audio."""
    pytest.importorskip("pocketsphinx")
    benchmark.group = "server pocketsphinx"
    r = benchmark.pedantic(lambda: asyncio.run(_load(streams, 6, ("english_16k_common=pocketsphinx",))),
                           rounds=1, iterations=1)
    r["streams_per_core_at_rtf"] = round(1.0 / r["rtf_server_per_stream"], 1) if r["rtf_server_per_stream"] else None
    _report(f"pocketsphinx x{streams}", r)
