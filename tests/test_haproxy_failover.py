"""kill -9 of one of three ``sis-stream serve`` processes while 30 real-time continue-stream
calls run through HAProxy (``deploy/haproxy.cfg``) with the sis_stream client: every call on the
dead process reconnects elsewhere and finishes with 0 ms lost (the replay ring covered the gap)."""

from __future__ import annotations

import asyncio
import signal
import time

import numpy as np
from test_haproxy_routing import haproxy_cfg, server_status, wait_for
from test_scaleout_procs import SIS, Procs, free_port, need_binary, procs_fixture  # noqa: F401 - fixture

from sis_stream import RasrClient, ReconnectPolicy
from sis_stream.protocol import AkSk, Ended

N_CALLS = 30
CALL_S = 6.0
KILL_AT_S = 2.5


def _audio(seconds: float, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    env = (np.sin(2 * np.pi * 0.5 * np.arange(n) / 16000) > 0).astype(np.float64)
    return (rng.standard_normal(n) * 2000 * env).astype(np.int16).tobytes()


async def _call(endpoint: str, seed: int) -> dict[str, float]:
    cfg = {"audio_format": "pcm16k16bit", "property": "english_16k_common"}
    data = _audio(CALL_S, seed)
    policy = ReconnectPolicy(max_attempts=8, base_delay_s=0.2, max_delay_s=1.0)
    ended = False
    async with RasrClient(endpoint, "p1", auth=AkSk("local", "local")) as client, \
            client.stream("continue", config=cfg, pacing="realtime", reconnect=policy) as stream:
        async def produce() -> None:
            for i in range(0, len(data), 6400):
                await stream.send(data[i:i + 6400])
            await stream.end()
        producer = asyncio.create_task(produce())
        async for event in stream:
            if isinstance(event, Ended):
                ended = True
        await producer
        st = stream.stats
    return {"ended": float(ended), "lost_ms": st.lost_ms, "reconnects": st.reconnects,
            "audio_ms": st.audio_ms_sent}


async def test_kill9_one_of_three_under_30_calls(procs: Procs) -> None:
    haproxy = need_binary("haproxy")
    ports = [free_port() for _ in range(3)]
    servers = [procs.start([*SIS, "serve", "--no-auth", "--port", str(p), "--engine", "english_16k_common=none"],
                           ready="listening on", name=f"s{i + 1}")[0] for i, p in enumerate(ports)]
    front = free_port()
    sock = procs.tmp / "haproxy.sock"
    (procs.tmp / "haproxy.cfg").write_text(haproxy_cfg(front, ports, sock))
    procs.start([haproxy, "-db", "-f", str(procs.tmp / "haproxy.cfg")], ready=None, name="haproxy")
    await wait_for(lambda: sock.exists() and set(server_status(sock).values()) == {"UP"}, 15,
                   "HAProxy to see 3 servers UP", step_s=0.2)
    calls = [asyncio.create_task(_call(f"ws://127.0.0.1:{front}", i)) for i in range(N_CALLS)]
    await asyncio.sleep(KILL_AT_S)
    servers[2].send_signal(signal.SIGKILL)
    t0 = time.monotonic()
    await wait_for(lambda: server_status(sock)["s3"] == "DOWN", 10, "HAProxy to mark s3 DOWN")
    down_s = time.monotonic() - t0
    results = await asyncio.wait_for(asyncio.gather(*calls), 60)
    assert all(r["ended"] for r in results), results
    assert [r["lost_ms"] for r in results] == [0.0] * N_CALLS
    assert all(abs(r["audio_ms"] - CALL_S * 1000) < 1 for r in results)
    moved = sum(1 for r in results if r["reconnects"] >= 1)
    assert 1 <= moved < N_CALLS, results  # the dead process's calls, and only those, reconnected
    print(f"\n{N_CALLS} calls through HAProxy, kill -9 of 1 of 3 serve at {KILL_AT_S} s: {moved} calls "
          f"reconnected, all ended, lost_ms 0 for every call; s3 marked DOWN {down_s:.2f} s after the kill")
