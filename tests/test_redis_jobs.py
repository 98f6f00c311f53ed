"""Transcriber jobs on Redis Streams (``serve --redis``, ``worker --redis``) against a real
redis-server started by the test: fencing, and kill -9 of a worker in the middle of 20 jobs."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest
from test_scaleout_procs import (  # noqa: F401 - fixtures
    Procs,
    Sink,
    free_port,
    http_json,
    procs_fixture,
    sink_factory_fixture,
    start_redis,
    start_serve,
    start_worker,
    submit,
    wait_until,
    wav_bytes,
)

from sis_stream.errors import RequestRejected
from sis_stream.server.callbacks import idempotency_key
from sis_stream.server.redis_jobs import (
    JOB_GROUP,
    Checkpoint,
    RedisJobManager,
    RedisKeys,
    connect_redis,
)
from sis_stream.server.transcriber import cut_points


async def _never(job: Any, should_stop: Any, **kw: Any) -> tuple[list[dict[str, Any]], int]:
    raise AssertionError("no worker slot runs in this test")


async def test_fence_refuses_a_stale_attempt(procs: Procs) -> None:
    """Only the newest attempt can renew the lease or end the job, and only once."""
    url = start_redis(procs)
    keys = RedisKeys("t1:")
    m = RedisJobManager(connect_redis(url), _never, workers=0, lease_s=5, keys=keys, consumer="a")
    await m.start()
    try:
        job_id = await m.submit("p1", {"x": 1}, "http://127.0.0.1:9/cb")
        entry = (await m.redis.xreadgroup(JOB_GROUP, "a", {keys.jobs: ">"}, count=1))[0][1][0][0]
        claim = lambda consumer: m._claim(keys=[keys.job(job_id)], args=[consumer, "1", "2"])
        assert await claim("a") == 1
        assert await claim("b") == 2  # b took the job over: attempt 1 is stale now
        beat = lambda a: m._heartbeat(keys=[keys.job(job_id), keys.jobs], args=[a, JOB_GROUP, "a", entry, "9"])
        assert await beat(1) == 0
        assert not await m._finish(job_id, entry, 1, segments=[{"stale": True}], duration=1)
        assert await m._finish(job_id, entry, 2, segments=[], duration=5)
        assert not await m._finish(job_id, entry, 2, error=RequestRejected("SIS.0307", "late"))
        rec = await m.get("p1", job_id)
        assert (rec.state, rec.segments, rec.audio_duration, rec.attempts) == ("FINISHED", [], 5, 2)
        assert rec.callback_state == "PENDING"
        assert await m.redis.xlen(keys.callbacks) == 1  # one outbox entry, written with the result
        assert (await m.redis.xpending(keys.jobs, JOB_GROUP))["pending"] == 0
        assert await m.redis.scard(keys.open) == 0
        assert await claim("c") == -1  # an ended job is never started again
        with pytest.raises(RequestRejected) as exc:
            await m.get("other-project", job_id)
        assert exc.value.error_code == "SIS.0533"
    finally:
        await m.stop()


async def test_submission_bound(procs: Procs) -> None:
    url = start_redis(procs)
    m = RedisJobManager(connect_redis(url), _never, workers=0, max_waiting=2, keys=RedisKeys("t2:"))
    await m.start()
    try:
        await m.submit("p", {}, None)
        await m.submit("p", {}, None)
        with pytest.raises(RequestRejected) as exc:
            await m.submit("p", {}, None)
        assert exc.value.error_code == "SIS.0536"
    finally:
        await m.stop()


async def test_checkpoint_resume_after_a_crash(procs: Procs) -> None:
    """A job taken over after its owner vanished resumes after the last saved piece; the stale
    owner's later saves are refused by the fence; the result has every piece once, in order."""
    url = start_redis(procs)
    keys = RedisKeys("t3:")
    ran: dict[str, list[int]] = {"a": [], "b": []}
    gate = asyncio.Event()

    def make(name: str) -> Any:
        async def processor(job: Any, should_stop: Any, checkpoint: Any = None) -> tuple[list[dict[str, Any]], int]:
            done_ms, rows = await checkpoint.load()
            for i in range(5):
                if (i + 1) * 1000 <= done_ms:
                    continue
                if name == "a" and i == 2:
                    gate.set()
                    await asyncio.sleep(3600)  # "a" hangs here (as if killed) after 2 pieces
                ran[name].append(i)
                row = {"start_time": i * 1000, "end_time": i * 1000 + 900, "result": {"text": f"p{i}"}}
                assert await checkpoint.save((i + 1) * 1000, [row])
                rows.append(row)
            return rows, 5000
        return processor

    a = RedisJobManager(connect_redis(url), make("a"), workers=1, lease_s=600, keys=keys, consumer="a")
    b = RedisJobManager(connect_redis(url), make("b"), workers=1, lease_s=1.0, keys=keys, consumer="b")
    await a.start()
    try:
        job_id = await a.submit("p1", {}, None)
        await asyncio.wait_for(gate.wait(), 10)
        await a.stop()  # a's slot is gone, its entry stays pending with no heartbeat
        stale = Checkpoint(a, job_id, 1)
        await b.start()
        rec = None
        for _ in range(100):
            rec = await b.record(job_id)
            if rec is not None and rec.state == "FINISHED":
                break
            await asyncio.sleep(0.1)
        assert rec is not None and rec.state == "FINISHED", rec
        assert ran == {"a": [0, 1], "b": [2, 3, 4]}
        assert [s["result"]["text"] for s in rec.segments] == ["p0", "p1", "p2", "p3", "p4"]
        assert rec.attempts == 2
        assert await b.redis.hget(keys.job(job_id), "resumed_from_ms") == "2000"
        assert not await b.redis.exists(keys.segments(job_id))  # the checkpoint ends with the job
        stale.manager = b  # same Redis; a's own client is closed
        assert not await stale.save(9000, [{"start_time": 0, "end_time": 1, "result": {"text": "stale"}}])
    finally:
        await b.stop()


def test_cut_points_fall_in_quiet_frames() -> None:
    import numpy as np

    rng = np.random.default_rng(1)
    pcm = (rng.standard_normal(16000 * 10) * 3000).astype(np.int16)
    pcm[16000 * 3 + 8000: 16000 * 3 + 8320] = 0  # a quiet 20 ms at 3.5 s
    cuts = cut_points(pcm, 3000, search_ms=1000)
    assert cuts[0] == 0 and cuts[-1] == len(pcm) and cuts == sorted(cuts)
    assert 16000 * 3 + 8000 <= cuts[1] < 16000 * 3 + 8320
    assert len(cuts) >= 3


def _running_on(redis_url: str, pid: int) -> set[str]:
    """Ids of the jobs RUNNING with process `pid` as owner (consumer ``host-pid-random``)."""
    import redis

    r = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        out = set()
        for key in r.scan_iter("sis:job:*", count=100):
            if key.endswith(":cblog"):
                continue
            h = r.hgetall(key)
            if h.get("state") == "RUNNING" and h.get("owner", "").split("-")[-2:-1] == [str(pid)]:
                out.add(key.split(":")[-1])
        return out
    finally:
        r.close()


@pytest.mark.parametrize("victim_kind", ["worker", "serve"])
def test_kill9_mid_job_every_job_once(procs: Procs, sink_factory: Callable[..., Sink], victim_kind: str) -> None:
    """kill -9 of a worker (or of a serve process running jobs) in the middle of 20 jobs: every job
    ends FINISHED exactly once, the killed process's jobs are taken over after their lease, and
    every callback URL receives exactly one distinct result (retries after a 503 carry the same
    idempotency key)."""
    n_jobs = 20
    redis_url = start_redis(procs)
    fail_first = {f"j{i}" for i in range(0, n_jobs, 4)}
    sink = sink_factory(wav_bytes(6.0), rate_bps=160_000, fail_first=fail_first)  # ~1.2 s per download
    _serve, base = start_serve(procs, redis_url, "--no-job-workers", "--job-lease", "2")
    opts = ("--job-lease", "2", "--job-checkpoint", "2")  # 3 checkpointed pieces per job
    if victim_kind == "worker":
        victim, _ = start_worker(procs, redis_url, *opts, name="worker-a")
    else:
        victim, _ = start_serve(procs, redis_url, *opts, name="serve-victim")
    start_worker(procs, redis_url, *opts, name="worker-b")
    jobs = {f"j{i}": submit(base, f"{sink.url}/audio.wav", f"{sink.url}/cb/j{i}") for i in range(n_jobs)}
    wait_until(lambda: _running_on(redis_url, victim.pid), 30, "the victim to run a job", step_s=0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(5)
    killed_jobs = _running_on(redis_url, victim.pid)  # nobody else can own them before the lease ends
    assert killed_jobs
    t_kill = time.monotonic()
    start_worker(procs, redis_url, *opts, name="worker-c")

    def all_delivered() -> bool:
        with sink.lock:
            ok = {p["name"] for p in sink.posts if p["answered"] == 200}
        return len(ok) == n_jobs
    wait_until(all_delivered, 60, "every callback to be delivered")
    recovered_s = time.monotonic() - t_kill

    bodies: dict[str, list[dict[str, Any]]] = {name: [] for name in jobs}
    with sink.lock:
        posts = list(sink.posts)
    for p in posts:
        bodies[p["name"]].append(p)
    for name, job_id in jobs.items():
        got = bodies[name]
        assert got, f"no callback for {name}"
        keys = {p["headers"]["Idempotency-Key"] for p in got}
        results = {repr(sorted(p["body"].items())) for p in got}
        assert len(keys) == 1 and len(results) == 1, (name, keys)
        body = got[0]["body"]
        assert body["job_id"] == job_id and body["status"] == "FINISHED" and body["audio_duration"] == 6000
        attempt = got[0]["headers"]["X-Sis-Job-Attempt"]
        assert keys == {idempotency_key(job_id, attempt)}
        assert [p["headers"]["X-Sis-Delivery-Attempt"] for p in got] == [str(i + 1) for i in range(len(got))]
        if name in fail_first:
            assert [p["answered"] for p in got] == [503, 200]
        st, rec = http_json("GET", f"{base}/v1/p1/asr/transcriber/jobs/{job_id}")
        assert st == 200 and rec == body
        assert int(attempt) == (2 if job_id in killed_jobs else 1), (job_id, killed_jobs)
    # Same audio for every job: resumed or not, every job has the same segments.
    segs = {repr(bodies[name][0]["body"]["segments"]) for name in jobs}
    assert len(segs) == 1, segs  # (engine none: empty text, so no segment survives)
    import redis

    r = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert r.xpending("sis:jobs", JOB_GROUP)["pending"] == 0
        assert r.scard("sis:jobs:open") == 0
        assert wait_until(lambda: r.xpending("sis:callbacks", "dispatch")["pending"] == 0 and
                          r.zcard("sis:callbacks:retry") == 0, 10, "the outbox to drain")
        states = defaultdict(int)
        for job_id in jobs.values():
            states[r.hget(f"sis:job:{job_id}", "callback_state")] += 1
        assert states == {"DELIVERED": n_jobs}
    finally:
        r.close()
    print(f"\nkill -9 of a {victim_kind} process: all {n_jobs} jobs delivered {recovered_s:.1f} s after the kill "
          f"(lease 2 s; {len(killed_jobs)} job(s) taken over)")


def test_redis_restart_mid_run_loses_no_job(procs: Procs, sink_factory: Callable[..., Sink]) -> None:
    """Redis restarted (AOF, appendfsync everysec; SIGTERM then the same port and directory)
    while 12 jobs run: every job still ends FINISHED once and its callback is delivered."""
    import redis

    n_jobs = 12
    port = free_port()
    data = procs.tmp / "redis-aof"
    data.mkdir()
    redis_url = start_redis(procs, port=port, data_dir=data)
    # Each download takes ~2.4 s (still above the fetcher's minimum rate), so the 12 jobs outlast
    # the wait for the first two callbacks by seconds even on a loaded box.
    sink = sink_factory(wav_bytes(6.0), rate_bps=80_000)
    _serve, base = start_serve(procs, redis_url, "--no-job-workers", "--job-lease", "2")
    start_worker(procs, redis_url, "--job-lease", "2", name="worker-a")
    start_worker(procs, redis_url, "--job-lease", "2", name="worker-b")
    jobs = {f"j{i}": submit(base, f"{sink.url}/audio.wav", f"{sink.url}/cb/j{i}") for i in range(n_jobs)}
    wait_until(lambda: len({p["name"] for p in sink.posts}) >= 2, 30, "the first jobs to end")
    r0 = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        open_before = r0.scard("sis:jobs:open")
    finally:
        r0.close()
    assert open_before > 0, "jobs must still be open when Redis restarts"
    old = procs.procs[0]
    old.send_signal(signal.SIGTERM)  # the redis-server started first
    assert old.wait(10) == 0
    time.sleep(1.0)  # the processes see Redis gone and retry
    start_redis(procs, port=port, data_dir=data)

    def all_delivered() -> bool:
        with sink.lock:
            return len({p["name"] for p in sink.posts if p["answered"] == 200}) == n_jobs
    t_restart = time.monotonic()
    wait_until(all_delivered, 60, "every callback after the Redis restart")
    print(f"\nRedis restart with {open_before} of {n_jobs} jobs open: all delivered "
          f"{time.monotonic() - t_restart:.1f} s after the restart")
    with sink.lock:
        posts = list(sink.posts)
    for name, job_id in jobs.items():
        got = [p for p in posts if p["name"] == name]
        assert len({p["headers"]["Idempotency-Key"] for p in got}) == 1
        assert got[0]["body"]["job_id"] == job_id and got[0]["body"]["status"] == "FINISHED"
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert r.scard("sis:jobs:open") == 0 and r.xpending("sis:jobs", JOB_GROUP)["pending"] == 0
    finally:
        r.close()
