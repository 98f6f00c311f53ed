"""Transcriber retry limit pinned at every attempt boundary.

Definition (sis_stream.server.jobs): a job's processing may be *started* ``max_attempts``
times. A job that was started ``k`` times and never finished (its process was interrupted
``k`` times) is run again while ``k < max_attempts`` (that is attempt ``k + 1``); with
``k >= max_attempts`` it is failed with ``SIS.0307`` naming the ``k`` interruptions and is not
processed again.
"""

from __future__ import annotations

import asyncio

import pytest

from sis_stream.server.jobs import MAX_ATTEMPTS, JobManager, JobStore

WAIT_S = 30.0  # generous bound on any wait below (shared, loaded machines)


async def _run_once(db, jid, max_attempts, processed):
    """Start a manager on ``db``, let it take the queued job, return the job's record."""

    async def proc(job, stop):
        processed.append(job.attempts)
        return [{"start_time": 0, "end_time": 10, "result": {"text": "ok", "score": 1.0}}], 10

    mgr = JobManager(JobStore(db), proc, max_attempts=max_attempts)
    await mgr.start()
    try:
        assert await mgr.wait_idle(WAIT_S), "the job did not end"
        return mgr.store.get(jid)
    finally:
        await mgr.stop()


@pytest.mark.parametrize(
    ("max_attempts", "interrupted"),
    [(m, k) for m in (1, 2, MAX_ATTEMPTS, 5) for k in range(m + 2)],  # 0 .. one past the limit
)
async def test_every_attempt_boundary(tmp_path, max_attempts, interrupted):
    db = tmp_path / "jobs.sqlite3"
    st = JobStore(db)
    jid = st.insert("p", {}, None)
    for k in range(interrupted):  # started k times, never completed (process killed mid-job)
        assert st.claim(jid) == k + 1
    st.close()
    processed: list[int] = []
    job = await _run_once(db, jid, max_attempts, processed)
    if interrupted < max_attempts:
        assert processed == [interrupted + 1], "the allowed attempt was not run"
        assert job.state == "FINISHED" and job.attempts == interrupted + 1
    else:
        assert processed == [], "a poison job was processed again"
        assert job.state == "ERROR" and job.error_code == "SIS.0307"
        assert f"interrupted {interrupted} times" in job.error_msg


async def test_default_allows_a_third_attempt_after_two_real_interruptions(tmp_path):
    # The same boundary through real interruptions: the manager is stopped while the job is
    # running (it stays RUNNING and resumes at the next start), twice; the third start runs it.
    db = tmp_path / "jobs.sqlite3"
    st = JobStore(db)
    jid = st.insert("p", {}, None)
    st.close()
    for attempt in (1, 2):
        started = asyncio.Event()

        async def hang(job, stop, started=started):
            started.set()
            await asyncio.Event().wait()  # never finishes: cancelled by stop()

        mgr = JobManager(JobStore(db), hang)
        await mgr.start()
        try:
            await asyncio.wait_for(started.wait(), WAIT_S)
            job = mgr.store.get(jid)
            assert job.state == "RUNNING" and job.attempts == attempt
        finally:
            await mgr.stop()
    processed: list[int] = []
    job = await _run_once(db, jid, MAX_ATTEMPTS, processed)
    assert MAX_ATTEMPTS == 3
    assert processed == [3] and job.state == "FINISHED"
    # A fourth start of a job interrupted three times fails it without processing.
    st = JobStore(db)
    jid2 = st.insert("p", {}, None)
    for _ in range(3):
        st.claim(jid2)
    st.close()
    processed = []
    job = await _run_once(db, jid2, MAX_ATTEMPTS, processed)
    assert processed == [] and job.state == "ERROR" and job.error_code == "SIS.0307"
