"""Bridge capacity: N concurrent fake AudioSocket calls at 20 ms real time through the bridge into a
minimal SIS sink.

Three processes on loopback:

- the **bridge** (``sis_stream.bridges.Bridge``, one asyncio loop, pinned to one CPU): per call it
  reads 50 slin frames/s (320 B) from the fake Asterisk, writes 50 silence frames/s back on the
  20 ms drift-free clock, and sends 10 frames/s of 100 ms (1600 B pcm8k16bit, property
  ``chinese_8k_common``: no transcoding) to SIS;
- the **sink**: a minimal SIS websocket server (answers START and END, swallows audio), pinned to
  the other CPU;
- the **peers**: N fake Asterisk connections in one asyncio process (UUID, then one 320-byte frame
  per call every 20 ms, calls' phases spread over the 20 ms; reads, into one shared buffer, and
  counts what comes back), pinned to the other CPU as well.

The calls start over ``BENCH_BRIDGE_RAMP_S`` (default 5 s), then run together for
``BENCH_BRIDGE_SECONDS`` (default 15 s: the measured window), then all hang up. Measured in the
bridge over the window: the silence clock's lateness (``now - deadline`` of every tick; the
histogram's p50/p99/max, bucket upper bounds 0.5/1/2/3/5/7.5/10/15/20/30/50 ms), the ticks skipped
because the loop stalled for a whole period, the bridge's CPU share of one core
(``process_time / wall``; ``sys %`` the kernel's part; ``us/frame`` the CPU per call per 20 ms:
one frame in, one silence frame out, a fifth of a frame to SIS), the time it was runnable but waited for its CPU (``/proc`` schedstat:
other users' processes on the same core), and over the whole run the lost milliseconds (bounded
queue drops). The anchor: an idle asyncio loop with a 20 ms absolute-deadline timer, in its own
process pinned to the bridge's CPU during the same window; its lateness is what that core gives
any event loop at that moment.
The bridge collects garbage and calls ``gc.freeze()`` once the calls are up (docs/client.md
recommends it for hundreds of streams). The peers report the silence frames they received per
call-second (50 expected). ``reads/s/call``: the bridge's polled socket reads per call-second
(about 10 with 100 ms frames to SIS: one per SIS frame), ``empty %`` the reads that found nothing.

Targets (issue 19): >= 1000 concurrent calls on one core with p99 lateness < 10 ms and 0 lost ms.

Run: ``python -m pytest benchmarks/bench_bridge.py -s`` (``BENCH_BRIDGE_N=100,500,1000``;
``BENCH_BRIDGE_PIN=0``: no CPU pinning; ``BENCH_BRIDGE_LOOP=uvloop``;
``BENCH_BRIDGE_READ_MAX_MS=20``: the listener reads each call's socket for every 20 ms frame
instead of once per SIS frame (the other read schedule, for A/B runs);
``BENCH_BRIDGE_READ_PHASE=1``: print, per read, the audio left over beyond the last whole SIS
frame (0 ms: the read came before the call's next frame, so the SIS frame went out as early as
a read per 20 ms frame would have sent it); ``BENCH_BRIDGE_PROFILE=1``: cProfile of the bridge
over the window; ``BENCH_BRIDGE_RT=10``
(root): every process of the benchmark at real-time priority ``SCHED_FIFO`` 10, to measure what
the bridge needs on a box whose cores other users keep busy -- the anchor then shares the
bridge's priority, so it waits for the bridge's loop and is no longer an idle-core reference).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from _procs import run_sis_sink

HERE = Path(__file__).resolve()
N_LIST = [int(x) for x in os.environ.get("BENCH_BRIDGE_N", "100,500,1000").split(",") if x]
RAMP_S = float(os.environ.get("BENCH_BRIDGE_RAMP_S", "5"))
SECONDS = float(os.environ.get("BENCH_BRIDGE_SECONDS", "15"))


def _pin(which: int) -> str:
    if os.environ.get("BENCH_BRIDGE_RT"):  # root: real-time priority, for a box others keep busy
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(int(os.environ["BENCH_BRIDGE_RT"])))
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or os.environ.get("BENCH_BRIDGE_PIN") == "0":
        return "not pinned"
    os.sched_setaffinity(0, {cpus[which]})
    return f"CPU #{cpus[which]}"


# --- the sink -------------------------------------------------------------------------------------


def _sink_main() -> None:
    _pin(1)
    run_sis_sink()


# --- the bridge -----------------------------------------------------------------------------------


def _runqueue_wait_s() -> float:
    """Seconds this process's threads spent runnable but waiting for a CPU (/proc schedstat)."""
    try:
        total = 0
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/schedstat") as fh:
                total += int(fh.read().split()[1])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        return float("nan")


class _NoSis:
    def stream(self, *a: object, **kw: object) -> object:
        class _S:
            async def __aenter__(self) -> None:
                await asyncio.Event().wait()

            async def __aexit__(self, *exc: object) -> None:
                pass

        return _S()


def _diag_options() -> dict[str, object]:
    # diagnostics: BENCH_BRIDGE_NO_TIMERS=1 runs the SIS legs without keepalive and rollover
    # timers (the client's idle wait then needs no asyncio.wait_for task per frame)
    # BENCH_BRIDGE_FRAME_MS: frame length to SIS (default 100)
    out: dict[str, object] = {"frame_ms": int(os.environ.get("BENCH_BRIDGE_FRAME_MS", "100"))}
    if os.environ.get("BENCH_BRIDGE_NO_TIMERS"):
        out.update(keepalive_s=None, rollover_after_s=None)
    return out


def _bridge_main(sink_port: int) -> None:
    from sis_stream.bridges import Bridge, LegOptions, SessionSettings
    from sis_stream.client.rasr import RasrClient
    from sis_stream.protocol import Token

    pinned = _pin(0)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        mark = asyncio.Event()
        done = asyncio.Event()
        loop.add_signal_handler(signal.SIGUSR1, mark.set)
        loop.add_signal_handler(signal.SIGUSR2, done.set)
        async with RasrClient(f"ws://127.0.0.1:{sink_port}", "bench", Token("bench")) as client:
            if os.environ.get("BENCH_BRIDGE_NO_SIS"):  # diagnostics: the telephony side alone
                client = _NoSis()
            bridge = Bridge(client, audiosocket=":0", settings=SessionSettings(property="chinese_8k_common"),
                            options=LegOptions(max_buffer_ms=5000, **_diag_options()))
            if os.environ.get("BENCH_BRIDGE_READ_MAX_MS"):  # 20: read every 20 ms frame as it comes
                bridge.listeners["audiosocket"].clock.read_max_ms = int(os.environ["BENCH_BRIDGE_READ_MAX_MS"])
            pending: dict[int, int] = {}
            if os.environ.get("BENCH_BRIDGE_READ_PHASE"):  # diagnostics: audio left over after each read
                from sis_stream.bridges.session import ChannelLeg

                def ms_to_frame(leg: ChannelLeg, _orig=ChannelLeg.ms_to_frame) -> float:
                    v = _orig(leg)
                    k = round(leg.call.ctx.options.frame_ms - v)
                    pending[k] = pending.get(k, 0) + 1
                    return v

                ChannelLeg.ms_to_frame = ms_to_frame  # type: ignore[method-assign]
            addr = await bridge.start()
            print(json.dumps({"port": addr["audiosocket"][1], "pinned": pinned}), flush=True)
            await mark.wait()  # all calls are up
            pending.clear()
            gc.collect()
            gc.freeze()
            lm = bridge.metrics.listener("audiosocket")
            lat0 = list(lm.silence_lateness.counts)
            skipped0, frames0 = lm.silence_skipped, lm.silence_frames
            prof = None
            if os.environ.get("BENCH_BRIDGE_PROFILE"):
                import cProfile

                prof = cProfile.Profile(time.process_time)
                prof.enable()
            clock = bridge.listeners["audiosocket"].clock
            reads0, empty0 = getattr(clock, "reads", 0), getattr(clock, "empty_reads", 0)
            ivcsw0 = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw
            wait0 = _runqueue_wait_s()
            cpu0, t0, times0 = time.process_time(), time.perf_counter(), os.times()
            await done.wait()
            cpu, wall, times1 = time.process_time() - cpu0, time.perf_counter() - t0, os.times()
            ivcsw = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw - ivcsw0
            rq_wait = _runqueue_wait_s() - wait0
            if prof is not None:
                import pstats

                prof.disable()
                pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(35)
            counts = [a - b for a, b in zip(lm.silence_lateness.counts, lat0)]
            clock = bridge.listeners["audiosocket"].clock
            reads = getattr(clock, "reads", 0) - reads0  # polled reads (none before they existed)
            empty = getattr(clock, "empty_reads", 0) - empty0
            res = {"loop": type(loop).__module__.split(".")[0], "cpu_pct": 100 * cpu / wall, "wall_s": wall,
                   "sys_pct": 100 * (times1.system - times0.system) / wall, "preempt_per_s": ivcsw / wall,
                   "runqueue_pct": 100 * rq_wait / wall, "calls_active": lm.calls_active,
                   "sessions_active": lm.sessions_active, "ticks": sum(counts),
                   "silence_frames": lm.silence_frames - frames0, "skipped": lm.silence_skipped - skipped0,
                   "bounds": list(lm.silence_lateness.bounds), "counts": counts,
                   "lateness_max_ms": lm.silence_lateness.max,
                   "empty_reads_pct": 100 * empty / reads if reads else float("nan"),
                   "reads_per_call_s": reads / wall / max(1, lm.calls_active),
                   "pending_after_read_ms": dict(sorted(pending.items()))}
            gc.unfreeze()
            await bridge.drain(30)
            res.update(lost_ms=lm.lost_ms, audio_s=lm.audio_ms / 1000, errors=lm.errors,
                       calls_total=lm.calls_total)
            print(json.dumps(res), flush=True)

    if os.environ.get("BENCH_BRIDGE_LOOP") == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


# --- the anchor: an idle asyncio timer on the bridge's CPU ---------------------------------------------


def _probe_main() -> None:
    """A 20 ms absolute-deadline ``asyncio.sleep`` loop on the bridge's CPU, doing nothing else:
    its lateness is what the core (shared with other users' processes) gives any event loop."""
    _pin(0)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        loop.add_signal_handler(signal.SIGUSR2, done.set)
        print("ready", flush=True)
        late: list[float] = []
        t0 = loop.time()
        k = 1
        while not done.is_set():
            when = t0 + k * 0.02
            await asyncio.sleep(max(0.0, when - loop.time()))
            late.append(max(0.0, loop.time() - when) * 1000)
            k += 1
            if loop.time() - when > 0.02:
                k += int((loop.time() - when) / 0.02)
        late.sort()
        print(json.dumps({"probe_p50": late[len(late) // 2], "probe_p99": late[int(len(late) * 0.99)],
                          "probe_max": late[-1]}), flush=True)

    asyncio.run(main())


# --- the peers (fake Asterisk x N) -------------------------------------------------------------


_RX = memoryview(bytearray(64 * 1024))  # the peers' shared read buffer (no 256 KiB recv per read)


class _Peer(asyncio.BufferedProtocol):
    def __init__(self) -> None:
        self.rx = 0
        self.t: asyncio.Transport | None = None
        self.lost = asyncio.get_event_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport  # type: ignore[assignment]
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.write(b"\x01\x00\x10" + uuid.uuid4().bytes)  # type: ignore[attr-defined]

    def get_buffer(self, sizehint: int) -> memoryview:
        return _RX

    def buffer_updated(self, nbytes: int) -> None:
        self.rx += nbytes

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


def _peers_main(port: int, n: int) -> None:
    _pin(1)
    frame = b"\x10\x01\x40" + bytes(320)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        slots: list[list[_Peer]] = [[] for _ in range(20)]
        peers: list[_Peer] = []
        t0 = loop.time()
        stop_at = [float("inf")]

        async def ticker() -> None:  # one write per call per 20 ms, the calls spread over 20 slots
            k = 0
            while True:
                when = t0 + k * 0.001
                delay = when - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if when >= stop_at[0]:
                    return
                for p in slots[k % 20]:
                    p.t.write(frame)  # type: ignore[union-attr]
                k += 1

        tick = loop.create_task(ticker())
        for i in range(n):  # ramp: spread the connects over RAMP_S
            await asyncio.sleep(max(0.0, t0 + RAMP_S * i / n - loop.time()))
            _, p = await loop.create_connection(_Peer, "127.0.0.1", port)
            peers.append(p)
            slots[i % 20].append(p)
        await asyncio.sleep(max(0.0, t0 + RAMP_S + 0.5 - loop.time()))
        print("up", flush=True)
        rx0 = sum(p.rx for p in peers)
        w0 = loop.time()
        await asyncio.sleep(SECONDS)
        rx = sum(p.rx for p in peers) - rx0
        w = loop.time() - w0
        print(json.dumps({"silence_per_call_s": rx / 323 / n / w}), flush=True)
        stop_at[0] = loop.time()
        await tick
        for p in peers:
            p.t.write(b"\x00\x00\x00")  # type: ignore[union-attr]
        await asyncio.wait([p.lost for p in peers], timeout=30)

    asyncio.run(main())


# --- the benchmark --------------------------------------------------------------------------------


def _pct(bounds: list[float], counts: list[int], q: float) -> float:
    total = sum(counts)
    acc = 0
    for b, c in zip(bounds + [float("inf")], counts):
        acc += c
        if total and acc >= q * total:
            return b
    return float("nan")


def _line(p: subprocess.Popen, timeout_s: float = 180.0) -> str:
    import select

    ready, _, _ = select.select([p.stdout], [], [], timeout_s)
    if not ready:
        raise TimeoutError(f"no answer from {p.args[2:4]} within {timeout_s:g} s (is the box overloaded?)")
    line = p.stdout.readline()  # type: ignore[union-attr]
    if not line:
        raise RuntimeError(f"process exited: {p.stderr.read()}")  # type: ignore[union-attr]
    return line


RESULTS: list[dict] = []


@pytest.fixture(scope="module")
def report():
    yield
    print("\n\nbridge capacity (AudioSocket, 20 ms frames in, silence out every 20 ms, 100 ms frames to a "
          "loopback SIS sink; bridge pinned to one CPU, sink + peers on the other)")
    print("silence clock lateness p50/p99: histogram bucket upper bounds; anchor = an idle asyncio 20 ms timer "
          "in its own process on the bridge's CPU during the same window (what the shared core gives any loop)")
    print(f"{'calls':>6} {'CPU %core':>9} {'us/frame':>8} {'sys %':>5} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'<=10ms %':>8} "
          f"{'skipped':>7} {'lost ms':>8} {'silence/s/call':>14} {'errors':>6} {'preempt/s':>9} "
          f"{'runq wait %':>11} {'anchor p50/p99/max ms':>22} {'load1':>5} {'reads/s/call':>12} {'empty %':>7}")
    print("bridge CPU: " + ", ".join(sorted({str(r["pinned"]) for r in RESULTS}))
          + "; event loop: " + ", ".join(sorted({str(r["loop"]) for r in RESULTS})))
    for r in RESULTS:
        anchor = f"{r['probe_p50']:.1f}/{r['probe_p99']:.1f}/{r['probe_max']:.1f}"
        print(f"{r['n']:>6} {r['cpu_pct']:>9.1f} {r['us_per_frame']:>8.1f} {r['sys_pct']:>5.1f} {r['p50']:>7g} {r['p99']:>7g} {r['lateness_max_ms']:>7.1f} "
              f"{r['within10']:>8.2f} {r['skipped']:>7} {r['lost_ms']:>8.0f} {r['silence_per_call_s']:>14.1f} "
              f"{r['errors']:>6} {r['preempt_per_s']:>9.0f} {r['runqueue_pct']:>11.1f} {anchor:>22} "
              f"{r['load1']:>5.1f} {r['reads_per_call_s']:>12.1f} {r['empty_reads_pct']:>7.1f}")


@pytest.mark.parametrize("n", N_LIST)
def bench_bridge_audiosocket_calls(report, n: int) -> None:
    py = sys.executable
    sink = subprocess.Popen([py, str(HERE), "--sink"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs = [sink]
    try:
        sink_port = int(_line(sink))
        bridge = subprocess.Popen([py, str(HERE), "--bridge", str(sink_port)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        procs.append(bridge)
        info = json.loads(_line(bridge))
        peers = subprocess.Popen([py, str(HERE), "--peers", str(info["port"]), str(n)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        procs.append(peers)
        assert _line(peers).strip() == "up"
        probe = subprocess.Popen([py, str(HERE), "--probe"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
        procs.append(probe)
        assert _line(probe).strip() == "ready"
        bridge.send_signal(signal.SIGUSR1)
        peer_res = json.loads(_line(peers))
        bridge.send_signal(signal.SIGUSR2)
        probe.send_signal(signal.SIGUSR2)
        res = json.loads(_line(bridge))
        res.update(json.loads(_line(probe)))
        if os.environ.get("BENCH_BRIDGE_PROFILE"):
            print(bridge.stderr.read() if bridge.wait(60) is not None else "")  # type: ignore[union-attr]
        peers.wait(60)
        bridge.wait(60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    res.update(peer_res, n=n, load1=os.getloadavg()[0], pinned=info["pinned"], p50=_pct(res["bounds"], res["counts"], 0.50),
               p99=_pct(res["bounds"], res["counts"], 0.99))
    # CPU per call per 20 ms: one frame in, one silence frame out, a fifth of a 100 ms frame to SIS
    res["us_per_frame"] = res["cpu_pct"] / 100 * 1e6 / (n * 50)
    res["within10"] = 100 * sum(c for b, c in zip(res["bounds"], res["counts"]) if b <= 10) / max(1, res["ticks"])
    RESULTS.append(res)
    if res.get("pending_after_read_ms"):  # BENCH_BRIDGE_READ_PHASE=1
        print(f"\nN={n}: audio left over after each read beyond the last whole SIS frame (ms: reads):",
              res["pending_after_read_ms"])
    assert res["calls_active"] == n and res["calls_total"] == n


if __name__ == "__main__":
    if sys.argv[1] == "--sink":
        _sink_main()
    elif sys.argv[1] == "--bridge":
        _bridge_main(int(sys.argv[2]))
    elif sys.argv[1] == "--probe":
        _probe_main()
    elif sys.argv[1] == "--peers":
        _peers_main(int(sys.argv[2]), int(sys.argv[3]))
