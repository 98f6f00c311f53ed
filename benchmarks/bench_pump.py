"""Pump load: N concurrent real-time 8 kHz u-law streams from one process into a loopback sink.

Ours: the asyncio pump (one event loop, Framer + absolute-deadline Pacer per stream, no threads;
the shared pacing timer drives the sends, see docs/client.md "Fast path"). Anchor: the official
SDK's pattern, one thread per stream with ``websocket-client`` and ``time.sleep(frame)`` after
every send (drift accumulates). Both send to the same sink, which runs in a separate process on
127.0.0.1 (so the measured CPU is the client's only).

Pinned cores: on a machine with >= 2 CPUs the client process of every case is pinned to one CPU
and the sink to another (``os.sched_setaffinity``), so "one core" means one core and the sink
never competes with the client. ``BENCH_PUMP_PIN=0`` turns pinning off; the output says which.

Reported per run: client CPU in % of ONE core, over the whole run (``CPU total %``: setup of the
streams excluded, the END handshakes and closes included) and over the steady window (``steady
%core``: from one frame after the last stream started until one frame before the first one ends,
so only paced sends), the steady CPU per frame (``us/frame``, and its kernel part), RSS growth per stream, pacing error
p50/p99/max (actual - scheduled send time; the anchor's schedule is the ideal ``t0 + k * frame``)
over all frames and over the frames of the steady window (``steady p50/p99/max``: bucket centres
of the pacing histogram, so about 6 % resolution; the whole-run figures also contain the start
of N streams that all begin within one frame, and their ends),
full (gen-2) GC collections during the streaming phase and the longest one, and how shared
the box was (``load1``: 1-minute load average at the end of the window; ``preempt/s``: the
client's involuntary context switches per second in the window; pinning keeps the sink off the
client's core, not other users' processes). The client collects
its garbage once (``gc.collect()``) after the streams are set up, so the setup's garbage does not
trigger a full collection inside the measured window; full collections that the streaming itself
triggers are counted. Load is bounded: ``BENCH_PUMP_N`` (default ``100,500,1000``) streams of
up to ``BENCH_PUMP_SECONDS`` (default 8) of audio each, their lengths spread over the last
``BENCH_PUMP_END_SPREAD`` of it (default 0.25: 6-8 s, so that the streams hang up over 2 s as
live calls do; 0: all N streams end within one frame, the synchronized worst case);
``BENCH_PUMP_KINDS`` (default
``asyncio,threads``; add ``uvloop`` for the optional uvloop run); ``BENCH_PUMP_FRAMES`` (default
``100,20``) frame sizes in ms; ``BENCH_PUMP_COALESCE_S`` the pacing timer's coalescing window
(default 0.001 s, the library default).

Schedules: the asyncio client's pacing errors are measured against its own Pacer (``t0 + k *
frame``, re-anchored when a frame is more than ``max_catchup_s`` late); the threads' send times
are measured against the ideal ``t0 + k * frame`` (drift counts in full) *and*, for the
ratios, against the same Pacer rule, so both sides are compared on the same schedule. The
output states which is which.

Run: ``python -m pytest benchmarks/bench_pump.py -q -s``
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("pytest_benchmark")

from _procs import run_sis_sink
from sis_stream.client.rasr import RasrClient
from sis_stream.client.pacing import DEFAULT_MAX_CATCHUP_S, Pacer, PacingStats
from sis_stream.protocol import Ended, Token
from sis_stream.client.transport import TransportOptions, ws_url

PROJECT = "benchproject"
N_LIST = [int(x) for x in os.environ.get("BENCH_PUMP_N", "100,500,1000").split(",")]
SECONDS = float(os.environ.get("BENCH_PUMP_SECONDS", "8"))
#: Stream lengths are spread over the last END_SPREAD of SECONDS (live calls hang up at
#: different times); 0 makes every stream SECONDS long, so that all N end within one frame.
END_SPREAD = float(os.environ.get("BENCH_PUMP_END_SPREAD", "0.25"))


def _length_s(i: int) -> float:
    """Audio seconds of stream i: SECONDS * (1 - END_SPREAD * u_i), u_i a golden-ratio sequence
    in [0, 1) (deterministic, and independent of the start phase i / n)."""
    return SECONDS * (1.0 - END_SPREAD * ((i * 0.6180339887498949) % 1.0))
FRAMES_MS = [int(x) for x in os.environ.get("BENCH_PUMP_FRAMES", "100,20").split(",")]
#: ``TransportOptions.pacing_coalesce_s`` of the asyncio client (default: the library default).
COALESCE_S = float(os.environ.get("BENCH_PUMP_COALESCE_S", TransportOptions().pacing_coalesce_s))
KINDS = os.environ.get("BENCH_PUMP_KINDS", "asyncio,threads").split(",")
#: CPUs of the client and the sink (None: not pinned).
PIN = (0, 1) if os.environ.get("BENCH_PUMP_PIN", "1") != "0" and len(os.sched_getaffinity(0)) >= 2 else None
CFG = {"audio_format": "ulaw8k8bit", "property": "chinese_8k_common"}
RESULTS: dict[tuple[str, int, int], dict[str, float]] = {}
SINK_PID = [0]
#: A case stops sending after WALL_CAP x the audio duration (bounds the load of a collapsed run).
WALL_CAP = 2.0


def _sink_cpu() -> float:
    """CPU seconds used so far by the sink process (to show whether the sink kept up)."""
    if not SINK_PID[0]:
        return 0.0
    with open(f"/proc/{SINK_PID[0]}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the sink (separate process) ------------------------------------------------------------------


def _pin(cpu_index: int) -> None:
    """Pin this process to the ``cpu_index``-th CPU it may run on (no-op when not pinning)."""
    if PIN is not None:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[PIN[cpu_index]]})


def _sink_main() -> None:
    _pin(1)
    run_sis_sink()


@pytest.fixture(scope="module")
def sink():
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--sink"], stdout=subprocess.PIPE,
                            text=True)
    try:
        port = int(proc.stdout.readline())  # type: ignore[union-attr]
        SINK_PID[0] = proc.pid
        yield f"ws://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    if not RESULTS:
        return
    pinned = (f"client pinned to CPU #{PIN[0]}, sink to CPU #{PIN[1]}" if PIN is not None
              else "NOT pinned (client and sink share the CPUs)")
    lines = ["", (f"pump load (8 kHz u-law, real time, loopback sink in another process; {pinned}; "
                  f"{SECONDS * (1 - END_SPREAD):g}-{SECONDS:g} s of audio per stream; "
                  f"pacing_coalesce_s={COALESCE_S:g})"),
             (f"{'client':<8} {'frame':>5} {'N':>5} {'CPU total %':>11} {'steady %core':>12} {'us/frame':>8} {'(kernel)':>8} "
              f"{'RSS/stream KiB':>14} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'late>10ms %':>11} "
              f"{'steady p50':>10} {'steady p99':>10} {'steady max':>10} "
              f"{'gen2 GCs':>8} {'GC max ms':>9} {'sink CPU %':>10} {'wall/audio':>10} {'load1':>5} {'preempt/s':>9}")]
    for (kind, fms, n), r in sorted(RESULTS.items()):
        lines.append(f"{kind:<8} {fms:>4}ms {n:>5} {r['cpu_total_pct']:>11.1f} {r.get('steady_cpu_pct', float('nan')):>12.1f} "
                     f"{r.get('steady_us_per_frame', float('nan')):>8.1f} "
                     f"{r.get('steady_sys_us_per_frame', float('nan')):>8.1f} "
                     f"{r['rss_per_stream_kib']:>14.1f} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} "
                     f"{r['max_ms']:>8.3f} {r['late_pct']:>11.2f} {r.get('steady_p50_ms', float('nan')):>10.3f} "
                     f"{r.get('steady_p99_ms', float('nan')):>10.3f} {r.get('steady_max_ms', float('nan')):>10.3f} "
                     f"{r.get('gen2_collections', float('nan')):>8.0f} "
                     f"{r.get('gc_max_ms', float('nan')):>9.1f} {r['sink_cpu_pct']:>10.1f} "
                     f"{r['wall_over_audio']:>10.2f} {r.get('loadavg_1m', float('nan')):>5.1f} "
                     f"{r.get('steady_ivcsw_per_s', float('nan')):>9.0f}")
    lines.append("pacing schedules: asyncio/uvloop errors are measured against the client's Pacer "
                 "(t0 + k * frame, re-anchored when a frame is > max_catchup_s = "
                 f"{DEFAULT_MAX_CATCHUP_S:g} s late); threads errors (p50/p99/max columns) against "
                 "the ideal t0 + k * frame (the sleep loop's drift counts in full); 'same schedule' "
                 "below re-measures the threads' send times with the Pacer's rule:")
    for (kind, fms, n), r in sorted(RESULTS.items()):
        if kind == "threads" and "same_p99_ms" in r:
            lines.append(f"  threads {fms}ms N={n}: same schedule p50 {r['same_p50_ms']:.3f} ms, "
                         f"p99 {r['same_p99_ms']:.3f} ms, max {r['same_max_ms']:.3f} ms")
    lines.append("ratios (threads / asyncio) at equal N and frame (p99 on the same schedule; "
                 "on the ideal one in brackets):")
    for (kind, fms, n), r in sorted(RESULTS.items()):
        t = RESULTS.get(("threads", fms, n))
        if kind in ("asyncio", "uvloop") and t is not None:
            same = t.get("same_p99_ms", float("nan"))
            lines.append(f"  {kind} {fms}ms N={n}: CPU x{t['cpu_per_stream_pct'] / max(r['cpu_per_stream_pct'], 1e-9):.2f}, "
                         f"p99 x{same / max(r['p99_ms'], 1e-6):.1f} [x{t['p99_ms'] / max(r['p99_ms'], 1e-6):.1f}], RSS x"
                         f"{t['rss_per_stream_kib'] / max(r['rss_per_stream_kib'], 1e-3):.2f}")
    text = "\n".join(lines)
    print(text)
    out = os.environ.get("BENCH_PUMP_JSON")
    if out:
        Path(out).write_text(json.dumps({f"{k[0]}/{k[1]}ms/{k[2]}": v for k, v in RESULTS.items()}, indent=1))


def _rss_kib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class _GcWatch:
    """Full (generation 2) collections and their pause times while installed."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self.at: list[float] = []  # start of each, seconds after the watch was installed
        self._t = 0.0
        self._t0 = time.perf_counter()

    def __enter__(self) -> _GcWatch:  # noqa: PYI034 - typing.Self needs Python 3.11
        gc.callbacks.append(self._cb)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._cb)

    def _cb(self, phase: str, info: dict) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._t = time.perf_counter()
            self.at.append(self._t - self._t0)
        else:
            self.pauses.append(time.perf_counter() - self._t)

    def update(self, res: dict[str, float]) -> None:
        res["gen2_collections"] = float(len(self.pauses))
        res["gc_max_ms"] = 1e3 * max(self.pauses, default=0.0)
        res["gc_at_s"] = [round(t, 2) for t in self.at]  # type: ignore[assignment]


def _steady_window(frame_ms: int) -> tuple[float, float]:
    """Offsets (s after the start barrier) of the steady window: every stream is sending."""
    margin = max(frame_ms / 1000, 0.25)
    return frame_ms / 1000 + margin, SECONDS * (1.0 - END_SPREAD) - margin


async def _merged(stats: list[PacingStats]) -> PacingStats:
    """Merge the streams' histograms, yielding to the loop every 100 streams (a snapshot
    must not itself delay the paced sends it measures)."""
    out = PacingStats()
    for i, st in enumerate(stats):
        out.merge(st)
        if i % 100 == 99:
            await asyncio.sleep(0)
    return out


def _window_pacing(res: dict[str, float], before: PacingStats, after: PacingStats) -> None:
    """Pacing quantiles of the frames sent in the steady window (histogram difference)."""
    w = PacingStats()
    for i, (a, b) in enumerate(zip(after._counts, before._counts)):
        w._counts[i] = a - b
    w._count = after.count - before.count
    w._min, w._max = -math.inf, math.inf  # quantiles are bucket centres
    top = max((i for i, c in enumerate(w._counts) if c), default=None)
    res["steady_p50_ms"] = 1e3 * w.p50 if w.count else math.nan
    res["steady_p99_ms"] = 1e3 * w.p99 if w.count else math.nan
    res["steady_max_ms"] = 1e3 * w._centre(top) if top is not None else math.nan


def _sys_cpu() -> float:
    """Kernel CPU seconds of this process so far (the socket sends live here)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def _ivcsw() -> int:
    """Involuntary context switches of this process so far (preempted: someone else ran)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw


def _steady(res: dict[str, float], cpu_s: float, wall_s: float, frames: int, ivcsw: int = 0,
            sys_s: float = math.nan) -> None:
    # Box load during the case: pinning keeps our sink off the client's core, not other
    # people's processes; the 1-min load average and the client's involuntary context switches
    # per second in the window show how much the core was shared.
    res["loadavg_1m"] = os.getloadavg()[0]
    res["steady_ivcsw_per_s"] = ivcsw / wall_s if wall_s > 0 else float("nan")
    res["steady_cpu_pct"] = 100 * cpu_s / wall_s if wall_s > 0 else float("nan")
    res["steady_us_per_frame"] = 1e6 * cpu_s / frames if frames else float("nan")
    res["steady_sys_us_per_frame"] = 1e6 * sys_s / frames if frames else float("nan")
    res["steady_frames_per_s"] = frames / wall_s if wall_s > 0 else float("nan")


def _summary(kind: str, n: int, frame_ms: int, cpu_s: float, wall_s: float, rss0: float, rss1: float,
             stats: PacingStats, late: int, total: int, sink_s: float) -> dict[str, float]:
    r = {
        # CPU is normalised by the audio duration: the share of one core a stream needs to run
        # in real time (on a loaded box the wall time can exceed the audio time).
        "sink_cpu_pct": 100 * sink_s / SECONDS,
        "cpu_per_stream_pct": 100 * cpu_s / SECONDS / n,
        "cpu_total_pct": 100 * cpu_s / SECONDS,
        "us_per_frame": 1e6 * cpu_s / max(total, 1),
        "wall_over_audio": wall_s / SECONDS,
        "rss_per_stream_kib": (rss1 - rss0) / n,
        "p50_ms": 1e3 * stats.p50,
        "p99_ms": 1e3 * stats.p99,
        "max_ms": 1e3 * stats.max,
        "late_pct": 100 * late / max(total, 1),
        "frames": float(total),
    }
    RESULTS[(kind, frame_ms, n)] = r
    return r


# --- ours: the asyncio pump -------------------------------------------------------------------


async def _run_async(url: str, n: int, frame_ms: int, kind: str = "asyncio") -> dict[str, float]:
    audio = bytes([0xFF]) * int(8000 * SECONDS)  # stream i sends the first _length_s(i) of it
    rss0 = _rss_kib()
    ready = asyncio.Event()  # every stream started
    go = asyncio.Event()  # start sending
    started = 0
    opts = TransportOptions(start_timeout_s=60, end_timeout_s=60, connect_timeout_s=60, pacing_coalesce_s=COALESCE_S)
    async with RasrClient(url, PROJECT, Token("bench"), options=opts) as client:
        streams = []

        async def one(i: int) -> None:
            nonlocal started
            async with client.stream("continue", CFG, frame_ms=frame_ms, pacing="realtime",
                                     max_buffer_ms=int(SECONDS * 1000), keepalive_s=None) as s:
                streams.append(s)
                started += 1
                if started == n:
                    ready.set()
                await go.wait()
                # streams start at phases spread over one frame (live calls are not aligned)
                await asyncio.sleep(i / n * frame_ms / 1000)
                await s.send(audio[: int(8000 * _length_s(i))])
                await s.end()
                async for ev in s:
                    if isinstance(ev, Ended):
                        break

        tasks = [asyncio.create_task(one(i)) for i in range(n)]
        await ready.wait()
        gc.collect()  # the setup's garbage must not trigger a full collection in the window
        go.set()
        gcw = _GcWatch().__enter__()
        cpu0, t0, rss1, sink0 = _cpu(), time.perf_counter(), _rss_kib(), _sink_cpu()
        w0, w1 = _steady_window(frame_ms)
        await asyncio.sleep(max(0.0, t0 + w0 - time.perf_counter()))
        c0, f0, a0, v0, k0 = _cpu(), sum(s.stats.frames_sent for s in streams), time.perf_counter(), _ivcsw(), _sys_cpu()
        p0 = await _merged([s.stats.pacing for s in streams])
        await asyncio.sleep(max(0.0, t0 + w1 - time.perf_counter()))
        c1, f1, a1, v1, k1 = _cpu(), sum(s.stats.frames_sent for s in streams), time.perf_counter(), _ivcsw(), _sys_cpu()
        p1 = await _merged([s.stats.pacing for s in streams])
        await asyncio.gather(*tasks)
        cpu_s, wall, sink_s = _cpu() - cpu0, time.perf_counter() - t0, _sink_cpu() - sink0
        gcw.__exit__()
    stats = PacingStats()
    late = total = 0
    for s in streams:
        p = s.stats.pacing
        stats.merge(p)
        total += p.count
    # late fraction from the merged histogram (count of errors above 10 ms)
    late = sum(1 for q in _quantile_grid(stats) if q > 0.010)
    res = _summary(kind, n, frame_ms, cpu_s, wall, rss0, rss1, stats, int(late * total / 1000), total, sink_s)
    _steady(res, c1 - c0, a1 - a0, f1 - f0, v1 - v0, k1 - k0)
    _window_pacing(res, p0, p1)
    gcw.update(res)
    try:  # the shared pacing timer (absent in older versions of the client): frames woken per timer
        from sis_stream.client.scheduler import PacingScheduler

        sched = PacingScheduler.for_loop(asyncio.get_running_loop(), opts.pacing_coalesce_s)
        res["wakeups_per_fire"] = sched.wakeups / max(sched.fires, 1)
    except ImportError:
        pass
    return res


def _quantile_grid(stats: PacingStats) -> list[float]:
    return [stats.quantile((i + 0.5) / 1000) for i in range(1000)]


@pytest.mark.parametrize("frame_ms", FRAMES_MS)
@pytest.mark.parametrize("n", N_LIST)
def bench_pump_asyncio(benchmark, sink, n, frame_ms):
    if "asyncio" not in KINDS:
        pytest.skip("not in BENCH_PUMP_KINDS")
    benchmark.group = f"pump {frame_ms}ms N={n}"
    res = benchmark.pedantic(_case, args=("asyncio", sink, n, frame_ms), rounds=1, iterations=1)
    benchmark.extra_info.update(res)


def _case(kind: str, sink: str, n: int, frame_ms: int) -> dict[str, float]:
    """Run one case in a fresh interpreter (clean RSS baseline, no leftover threads)."""
    out = subprocess.run(check=False, args=[sys.executable, str(Path(__file__).resolve()), "--case", kind, sink, str(n), str(frame_ms)],
                         capture_output=True, text=True, timeout=SECONDS * 4 + 180,
                         env={**os.environ, "BENCH_PUMP_SINK_PID": str(SINK_PID[0])})
    if out.returncode != 0:
        raise RuntimeError(f"{kind} case failed:\n{out.stderr[-2000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    RESULTS[(kind, frame_ms, n)] = res
    return res


@pytest.mark.parametrize("frame_ms", FRAMES_MS)
@pytest.mark.parametrize("n", N_LIST)
def bench_pump_uvloop(benchmark, sink, n, frame_ms):
    """The same pump on uvloop (optional: the client is loop-agnostic)."""
    if "uvloop" not in KINDS:
        pytest.skip("not in BENCH_PUMP_KINDS")
    pytest.importorskip("uvloop")
    benchmark.group = f"pump {frame_ms}ms N={n}"
    res = benchmark.pedantic(_case, args=("uvloop", sink, n, frame_ms), rounds=1, iterations=1)
    benchmark.extra_info.update(res)


# --- anchor: thread per stream, sleep pacing (the official SDK's pattern) ---------------------


def _thread_stream(url: str, frame_ms: int, barrier: threading.Barrier, rec: dict, out: list[int],
                   phase_s: float, length_s: float) -> None:
    # rec["sends"]: the send time of every frame; rec["t0"]: the ideal schedule's anchor.
    # Errors are computed after the run (outside the measured CPU window), against both schedules.
    import websocket

    try:
        ws = websocket.create_connection(ws_url(url, PROJECT, "continue-stream"), header={"X-Auth-Token": "bench"},
                                         timeout=60)
    except Exception:
        barrier.abort()
        raise
    try:
        ws.send(json.dumps({"command": "START", "config": CFG}))
        ws.recv()
        frame = bytes([0xFF]) * (8 * frame_ms)
        fs = frame_ms / 1000
        n_frames = int(length_s * 1000 / frame_ms)
        barrier.wait()
        time.sleep(phase_s)  # same phase spread as the asyncio run
        t0 = rec["t0"] = time.monotonic()
        sends = rec["sends"]
        give_up = t0 + WALL_CAP * SECONDS
        for _k in range(n_frames):
            now = time.monotonic()
            if now > give_up:  # bounded load: a collapsed run stops here (counted)
                break
            sends.append(now)
            ws.send_binary(frame)
            time.sleep(fs)  # the SDK: send, then sleep the frame duration
        ws.send('{"command": "END", "cancel": "false"}')
        ws.recv()
        out.append(n_frames)
    finally:
        ws.close()


def _run_threads(url: str, n: int, frame_ms: int) -> dict[str, float]:
    import websocket  # noqa: F401 - websocket-client, the test extra
    rss0 = _rss_kib()
    barrier = threading.Barrier(n + 1)
    recs: list[dict] = [{"t0": None, "sends": []} for _ in range(n)]
    errs = [r["sends"] for r in recs]  # one entry per frame sent (for the window counts)
    done: list[int] = []
    threads = [threading.Thread(target=_thread_stream, args=(url, frame_ms, barrier, recs[i], done,
                                                             i / n * frame_ms / 1000, _length_s(i)),
                                daemon=True)
               for i in range(n)]
    for t in threads:
        t.start()
    give_up = time.monotonic() + 120
    while barrier.n_waiting < n and not barrier.broken and time.monotonic() < give_up:
        time.sleep(0.05)
    gc.collect()  # as in the asyncio run: the setup's garbage stays out of the window
    gcw = _GcWatch().__enter__()
    barrier.wait(timeout=120)
    cpu0, t0, rss1, sink0 = _cpu(), time.perf_counter(), _rss_kib(), _sink_cpu()
    w0, w1 = _steady_window(frame_ms)
    time.sleep(max(0.0, t0 + w0 - time.perf_counter()))
    n0 = [len(e) for e in errs]
    c0, f0, a0, v0, k0 = _cpu(), sum(n0), time.perf_counter(), _ivcsw(), _sys_cpu()
    time.sleep(max(0.0, t0 + w1 - time.perf_counter()))
    n1 = [len(e) for e in errs]
    c1, f1, a1, v1, k1 = _cpu(), sum(n1), time.perf_counter(), _ivcsw(), _sys_cpu()
    for t in threads:
        t.join()
    cpu_s, wall, sink_s = _cpu() - cpu0, time.perf_counter() - t0, _sink_cpu() - sink0
    gcw.__exit__()
    # Two schedules for the same send times: the ideal t0 + k * frame (what the SDK's sleep
    # loop aims at; its drift counts in full), and the asyncio client's own rule (a Pacer: the
    # same t0 + k * frame, re-anchored when a frame is more than max_catchup_s late), so that
    # the threads can be compared with the asyncio run on the same schedule.
    fs = frame_ms / 1000
    ideal_errs, same_errs = [], []
    for r in recs:
        pacer = Pacer(fs)
        if r["t0"] is not None:
            pacer.start(r["t0"])
        ideal_errs.append([t - (r["t0"] + k * fs) for k, t in enumerate(r["sends"])])
        same_errs.append([pacer.sent(t) for t in r["sends"]])
    stats, same = PacingStats(), PacingStats()
    late = total = 0
    for e in ideal_errs:
        for x in e:
            stats.record(x)
            late += x > 0.010
            total += 1
    for e in same_errs:
        for x in e:
            same.record(x)
    if len(done) != n:
        raise RuntimeError(f"only {len(done)}/{n} thread streams finished")
    planned = sum(int(_length_s(i) * 1000 / frame_ms) for i in range(n))
    res = _summary("threads", n, frame_ms, cpu_s, wall, rss0, rss1, stats, late, total, sink_s)
    res["sent_pct"] = 100 * total / planned
    res["same_p50_ms"], res["same_p99_ms"], res["same_max_ms"] = 1e3 * same.p50, 1e3 * same.p99, 1e3 * same.max
    _steady(res, c1 - c0, a1 - a0, f1 - f0, v1 - v0, k1 - k0)
    before, after = PacingStats(), PacingStats()
    for e, a, b in zip(ideal_errs, n0, n1):
        for x in e[:b]:
            after.record(x)
        for x in e[:a]:
            before.record(x)
    _window_pacing(res, before, after)
    gcw.update(res)
    return res


@pytest.mark.parametrize("frame_ms", FRAMES_MS)
@pytest.mark.parametrize("n", N_LIST)
def bench_pump_threads(benchmark, sink, n, frame_ms):
    if "threads" not in KINDS:
        pytest.skip("not in BENCH_PUMP_KINDS")
    benchmark.group = f"pump {frame_ms}ms N={n}"
    res = benchmark.pedantic(_case, args=("threads", sink, n, frame_ms), rounds=1, iterations=1)
    benchmark.extra_info.update(res)


if __name__ == "__main__" and "--sink" in sys.argv:
    _sink_main()
elif __name__ == "__main__" and "--case" in sys.argv:
    _kind, _url, _n, _fms = sys.argv[2:6]
    SINK_PID[0] = int(os.environ.get("BENCH_PUMP_SINK_PID", "0"))
    _pin(0)
    if _kind == "asyncio":
        _res = asyncio.run(_run_async(_url, int(_n), int(_fms)))
    elif _kind == "uvloop":
        import uvloop

        _res = uvloop.run(_run_async(_url, int(_n), int(_fms), "uvloop"))
    else:
        _res = _run_threads(_url, int(_n), int(_fms))
    print(json.dumps(_res))
