"""Engine capacity: how many real-time 8 kHz phone calls one ``serve`` process carries within
the time-to-final bound, finals only and with interim results at 1 Hz.

Run explicitly (about 20 minutes per engine with the defaults: 8 load runs of a minute plus the
single-call reference run)::

    python -m pytest benchmarks/bench_capacity.py -s
    # quick look: two levels, 30 s calls, finals only (no single-call reference run: no WER comparison)
    SIS_BENCH_CAP_LEVELS=8,16 SIS_BENCH_CAP_SECONDS=30 python -m pytest benchmarks/bench_capacity.py -s -k finals
    # Whisper instead of the default English engine
    SIS_BENCH_CAP_ENGINES=whisper python -m pytest benchmarks/bench_capacity.py -s

Environment: ``SIS_BENCH_CAP_ENGINES`` (default ``moonshine-whisper``, the default English
engine; comma-separated, e.g. ``moonshine-whisper,whisper``), ``SIS_BENCH_CAP_LEVELS``
(concurrent calls, default ``8,16,32,64``), ``SIS_BENCH_CAP_SECONDS`` (length of each call,
default 60), ``SIS_BENCH_CAP_REF_PACE`` (pace of the single-call reference run, default ``x8``;
``off`` skips it), ``SIS_BENCH_CAP_SERVE_ARGS`` (extra ``serve`` arguments, shell-quoted, e.g.
``--ttf-bound-ms 60000`` to see the latency of levels the admission control would refuse).
``-k finals`` / ``-k interim`` run one results mode; the table and the verdict print at the end.

The load. Each of the N calls is a different real recording: ``tests/realspeech.long_call``
(Asterisk's English telephone prompts, one female voice, in a seeded random order per call,
with 1.2 s pauses of -70 dBFS noise between them), G.711 u-law encoded, as a phone bridge
receives it. Each call is one continue-stream session through the library's own client
(:class:`sis_stream.client.rasr.RasrClient`, as ``sis-stream transcribe`` uses it): the audio
is handed to the stream in 500 ms chunks with ``input_format="ulaw8k8bit"``; the client
transcodes it to the session format (u-law decode, resampled to 16 kHz) and its pump paces it.
On the wire: START ``{"audio_format": "pcm16k16bit", "property": "english_16k_common",
"vad_tail": 500, "interim_results": "no"|"yes"}`` (English real time takes 16 kHz PCM only),
then 100 ms binary frames of 16-bit 16 kHz PCM (3200 bytes) at real-time pace, then END. All N
calls start together. The server is ``python -m sis_stream serve`` in its own process (its own
interpreter; the load generator shares the machine's cores, so the figures are pessimistic),
fresh for every level, with ``--workers`` = the cores, ``--interim-interval 1.0`` and the
property routed to the engine under test; one short warm-up call runs before the measurement.
Every run is bounded: each call by its audio length plus 60 s, each server start by 180 s.

What is reported per level (the markdown table and the verdict are printed at the end):

- time to final (TTF) of a final result: its arrival minus the moment the audio instant at
  the result's ``end_time`` was due in real time (the first frame's send time + ``end_time``,
  the caller's clock); it includes the server's VAD tail (500 ms: a sentence is only known to
  be over after that much silence). p50 / p95 / p99 over every final of every call. The pump
  sends a 100 ms frame when its first sample is due, so the frame holding an instant leaves up
  to 100 ms before it: with an instant engine (``none``) TTF is about 0.46 s;
- interim latency (with interim results): arrival of an interim result minus the moment the
  last instant it covers (its ``end_time``) was due, on the same clock; p50 / p95 (about
  -0.09 s with ``none``, for the same reason);
- server CPU: the ``serve`` process's CPU seconds over the run, per second of call audio and
  per wall second (cores in use); the load generator's own CPU and its pump's lateness are
  printed per level (a late pump makes every latency figure pessimistic);
- errors (SIS error codes, refused sessions, transport failures, reconnects of the client,
  calls over their bound) and
  finals received / prompts in the calls (a prompt counts as finalised when a final overlaps
  it: every prompt must be);
- WER of the finals against the prompts' transcripts, beside the WER the same calls get when
  each is the only call on the server (the reference run: the calls one after another, paced
  at ``SIS_BENCH_CAP_REF_PACE``, finals only, once per engine), and how many calls got the
  identical transcript both ways.

Capacity (per engine and results mode): the largest N such that N and every smaller level
tried had 0 errors, every prompt finalised and p95 TTF <= vad_tail + 700 ms = 1.2 s. Targets on
a 2-core box: >= 48 calls finals only, >= 24 calls with interim results at 1 Hz. The verdict
says whether they are met and whether the WER at capacity is unchanged from a single call.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import select
import shlex
import subprocess
import sys
import time
from functools import cache

import pytest
from _capacity import CallRecord, LevelResult, markdown_table, verdict
from _procs import ServeProcess

from sis_stream.audio.codec import ulaw_encode
from sis_stream.client.events import Reconnected
from sis_stream.client.pacing import PacingStats
from sis_stream.client.rasr import RasrClient
from sis_stream.engines.base import available_cores
from sis_stream.loadtest.call import error_kind
from sis_stream.protocol import (
    ConnectionClosed,
    Ended,
    FinalResult,
    PartialResult,
    ServerError,
    Token,
)
from tests.realspeech import asterisk_prompts, long_call

CORES = available_cores()
ENGINES = [e for e in os.environ.get("SIS_BENCH_CAP_ENGINES", "moonshine-whisper").split(",") if e]
LEVELS = sorted(int(x) for x in os.environ.get("SIS_BENCH_CAP_LEVELS", "8,16,32,64").split(",") if x)
SECONDS = float(os.environ.get("SIS_BENCH_CAP_SECONDS", "60"))
REF_PACE = os.environ.get("SIS_BENCH_CAP_REF_PACE", "x8")
SERVE_ARGS = shlex.split(os.environ.get("SIS_BENCH_CAP_SERVE_ARGS", ""))
PROPERTY = "english_16k_common"
VAD_TAIL_MS = 500
BOUND_S = (VAD_TAIL_MS + 700) / 1000
TARGETS = {False: 48, True: 24}  # calls, finals only / interim at 1 Hz
CHUNK_BYTES = 4000  # 500 ms of u-law 8 kHz per send()
CALL_GRACE_S = 60.0  # a call is cut (error "timeout") at its audio length + this
START_TIMEOUT_S = 180.0

_LEVELS: list[LevelResult] = []
_ALONE: dict[str, dict[int, str]] = {}  # engine -> seed -> transcript when alone on the server
_NOTES: list[str] = []


class _Serve(ServeProcess):
    """:class:`ServeProcess` with a bounded start (killed when not listening within `timeout_s`)."""

    def __init__(self, *args: str, timeout_s: float = START_TIMEOUT_S) -> None:
        cmd = [sys.executable, "-m", "sis_stream", "serve", "--port", "0", "--no-auth", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        line = self.proc.stdout.readline().strip() if ready else ""  # type: ignore[union-attr]
        if not line.startswith("listening on "):
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"serve {' '.join(args)} did not start within {timeout_s:g} s: {line!r}")
        self.base = line.split("listening on ", 1)[1].replace("http://", "ws://")
        self.pid = self.proc.pid


def _serve(engine: str, n: int) -> _Serve:
    return _Serve("--max-sessions", str(n + 4), "--workers", str(CORES), "--interim-interval", "1.0",
                  "--engine", f"{PROPERTY}={engine}", *SERVE_ARGS)


@cache
def _call(seed: int) -> tuple[bytes, str, tuple[tuple[int, int], ...], float]:
    """Call `seed`: (u-law bytes, transcript, prompt spans in ms, seconds)."""
    c = long_call(SECONDS, seed=seed)
    return ulaw_encode(c.pcm.astype("<i2").tobytes()), c.text, tuple((s, e) for s, e, _ in c.segments), c.seconds


def _config(interim: bool) -> dict[str, object]:
    return {"audio_format": "pcm16k16bit", "property": PROPERTY, "vad_tail": VAD_TAIL_MS,
            "interim_results": "yes" if interim else "no"}


async def _stream(client: RasrClient, audio: bytes, rec: CallRecord, *, interim: bool, pace: str | None,
                  pacing: PacingStats | None = None) -> None:
    """Stream `audio` (u-law 8 kHz) as one call and fill `rec` (never raises for failures)."""
    loop = asyncio.get_running_loop()
    t0: list[float] = []
    try:
        async with client.stream("continue", config=_config(interim), input_format="ulaw8k8bit",
                                 frame_ms=100, pacing=pace) as s:
            async def feed() -> None:
                for i in range(0, len(audio), CHUNK_BYTES):
                    if not t0:
                        t0.append(loop.time())
                    await s.send(audio[i:i + CHUNK_BYTES])
                await s.end()

            feeder = loop.create_task(feed())
            try:
                async for ev in s:
                    now = loop.time()
                    if isinstance(ev, (FinalResult, PartialResult)) and t0:
                        late = now - (t0[0] + ev.segment.end_time / 1000)
                        if isinstance(ev, FinalResult):
                            rec.finals.append((ev.segment.start_time, ev.segment.end_time, late, ev.text))
                        else:
                            rec.interim_latency_s.append(late)
                    elif isinstance(ev, ServerError):
                        rec.errors.append(ev.error_code or "ERROR")
                    elif isinstance(ev, ConnectionClosed) and ev.during_session:
                        rec.errors.append("closed" + (f":{ev.error_code}" if ev.error_code else ""))
                    elif isinstance(ev, Reconnected):  # the transport was lost mid-call
                        rec.errors.append("reconnected")
                    elif isinstance(ev, Ended) and ev.reason.value != "NORMAL":
                        rec.errors.append(f"END:{ev.reason.value}")
            finally:
                if not feeder.done():
                    feeder.cancel()
                if pacing is not None:
                    pacing.merge(s.stats.pacing)
                with contextlib.suppress(asyncio.CancelledError):
                    await feeder
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - failures are measurements
        rec.errors.append(error_kind(exc))


async def _bounded(coro, rec: CallRecord, timeout_s: float) -> None:
    try:
        await asyncio.wait_for(coro, timeout_s)
    except asyncio.TimeoutError:
        rec.errors.append("timeout")


def _record(seed: int) -> tuple[bytes, CallRecord]:
    audio, text, prompts, seconds = _call(seed)
    return audio, CallRecord(seed, text, prompts, seconds)


async def _warm_up(client: RasrClient) -> None:
    u = asterisk_prompts()[0]
    rec = CallRecord(-1, u.text, ((0, int(u.seconds * 1000)),), u.seconds)
    await _bounded(_stream(client, ulaw_encode(u.pcm.astype("<i2").tobytes()), rec, interim=False, pace=None),
                   rec, 120)
    if rec.errors or not rec.finals:
        raise RuntimeError(f"warm-up call failed: errors {rec.errors}, finals {rec.finals}")


async def _level(engine: str, n: int, interim: bool) -> LevelResult:
    calls = [_record(seed) for seed in range(n)]
    srv = _serve(engine, n)
    try:
        async with RasrClient(srv.base, "local", Token("no-auth")) as client:
            await _warm_up(client)
            pacing = PacingStats()
            load0 = os.getloadavg()[0]
            cpu0, ccpu0, w0 = srv.cpu_s(), time.process_time(), time.perf_counter()
            await asyncio.gather(*(_bounded(_stream(client, audio, rec, interim=interim, pace="realtime",
                                                    pacing=pacing), rec, rec.audio_s + CALL_GRACE_S)
                                   for audio, rec in calls))
            wall, ccpu = time.perf_counter() - w0, time.process_time() - ccpu0
            cpu = srv.cpu_s() - cpu0
    finally:
        srv.stop()
    return LevelResult(engine, interim, n, [rec for _, rec in calls], server_cpu_s=cpu, wall_s=wall,
                       client_cpu_s=ccpu, pump_late_p95_s=pacing.quantile(0.95) if pacing.count else math.nan,
                       pump_late_max_s=pacing.max, load_avg=(load0, os.getloadavg()[0]))


async def _alone(engine: str, seeds: list[int]) -> dict[int, str]:
    """Each call of `seeds` alone on a fresh server, one after another (finals only)."""
    out: dict[int, str] = {}
    speed = float(REF_PACE[1:]) if REF_PACE.startswith("x") else 1.0
    srv = _serve(engine, 1)
    try:
        async with RasrClient(srv.base, "local", Token("no-auth")) as client:
            await _warm_up(client)
            for seed in seeds:
                audio, rec = _record(seed)
                await _bounded(_stream(client, audio, rec, interim=False, pace=REF_PACE), rec,
                               rec.audio_s / speed + CALL_GRACE_S)
                if rec.errors:
                    _NOTES.append(f"reference run, {engine}, call {seed}: errors {rec.errors} "
                                  "(its single-call transcript is left out)")
                    continue
                out[seed] = rec.hypothesis
    finally:
        srv.stop()
    return out


def _describe(r: LevelResult) -> str:
    kinds = sorted(set(r.errors))
    failed = sum(1 for c in r.calls if c.errors)
    return (f"{r.engine} {'interim' if r.interim else 'finals'} N={r.n}: {len(r.errors)} errors "
            f"{[(k, r.errors.count(k)) for k in kinds]} in {failed} calls, prompts finalised {r.covered}/{r.expected}, "
            f"finals {r.finals}, server {r.server_cpu_s:.1f} CPU-s over {r.wall_s:.1f} s, load generator "
            f"{r.client_cpu_s:.1f} CPU-s, pump late p95 {r.pump_late_p95_s * 1000:.0f} ms max "
            f"{r.pump_late_max_s * 1000:.0f} ms, load average {r.load_avg[0]:.2f} -> {r.load_avg[1]:.2f}")


def _skip_unless_engine(engine: str) -> None:
    if engine in ("whisper", "moonshine-whisper", "whisper-base"):
        pytest.importorskip("faster_whisper")
    if engine in ("moonshine", "moonshine-whisper"):
        pytest.importorskip("onnxruntime")
    if engine == "pocketsphinx":
        pytest.importorskip("pocketsphinx")


@pytest.mark.parametrize("interim", [False, True], ids=["finals", "interim"])
@pytest.mark.parametrize("engine", ENGINES)
def test_capacity(engine: str, interim: bool) -> None:
    _skip_unless_engine(engine)
    asterisk_prompts()  # skips with the install command when the recordings are missing
    rows = []
    for n in LEVELS:
        r = asyncio.run(_level(engine, n, interim))
        rows.append(r)
        _LEVELS.append(r)
        print("\n" + _describe(r), flush=True)
        print(markdown_table([r], {}, BOUND_S).splitlines()[-1], flush=True)
    # The harness itself must work: the lightest level finalises speech.
    assert rows[0].finals > 0, _describe(rows[0])


@pytest.mark.parametrize("engine", ENGINES)
def test_single_call_reference(engine: str) -> None:
    """The transcripts each call gets alone on the server (for the WER comparison)."""
    if REF_PACE == "off":
        pytest.skip("SIS_BENCH_CAP_REF_PACE=off")
    _skip_unless_engine(engine)
    seeds = sorted({c.seed for r in _LEVELS if r.engine == engine for c in r.calls} or range(max(LEVELS)))
    t0 = time.perf_counter()
    _ALONE[engine] = asyncio.run(_alone(engine, seeds))
    print(f"\nreference run {engine}: {len(_ALONE[engine])}/{len(seeds)} calls alone at {REF_PACE} "
          f"in {time.perf_counter() - t0:.0f} s", flush=True)
    assert _ALONE[engine], "no call got through alone"


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    if not _LEVELS:
        return
    print(f"\n\nengine capacity: real 8 kHz u-law calls of {SECONDS:g} s, {CORES} cores, "
          f"bound p95 TTF <= {BOUND_S:g} s (vad_tail {VAD_TAIL_MS} ms + 700 ms)")
    for r in _LEVELS:
        print(_describe(r))
    for note in _NOTES:
        print(note)
    print()
    print(markdown_table(_LEVELS, _ALONE, BOUND_S))
    print()
    for line in verdict(_LEVELS, _ALONE, BOUND_S, TARGETS, cores=CORES):
        print(line)
