"""Durable transcriber jobs: SQLite store, bounded worker pool, callbacks with retries.

Theory of operation
-------------------
Every job is one row of ``jobs.sqlite3`` (under the data directory). Its ``state`` moves

    WAITING -> RUNNING -> FINISHED | ERROR

and every transition is one committed transaction (WAL, ``synchronous=FULL``), so a process
kill loses nothing that was answered:

* ``submit`` commits the WAITING row before the client gets its ``job_id``;
* a worker commits RUNNING (``attempts + 1``) before it starts, and the result together with
  FINISHED/ERROR in one statement guarded by ``state = 'RUNNING'`` and the worker's ``attempts``
  value (a stale worker can never complete a job twice);
* at start-up every WAITING or RUNNING row is queued again (a RUNNING row means the previous
  process died mid-job); a job whose processing was started ``max_attempts`` times without
  finishing is failed with ``SIS.0307`` instead (a poison job cannot crash-loop the server).

``WAITING`` and ``RUNNING`` both read as ``"WAITING"`` on the wire (the docs list WAITING,
FINISHED, ERROR only).

Workers: ``workers`` asyncio tasks (2 by default) take job ids from a bounded :class:`FairQueue`
(``max_waiting``; a submit beyond it is ``SIS.0536``) that serves projects round-robin, so one
project's backlog does not make another project's jobs wait behind all of it; the blocking
recognition runs on the shared engine executor. A download that stalls is abandoned by the
fetcher's minimum transfer rate (:mod:`.fetch`), so a slow source cannot hold a worker.

Callbacks: when a job with a ``callback_url`` ends, its ``callback_state`` becomes PENDING in the
same transaction. A delivery task POSTs the job's GET body (plus ``job_id``) with header
``X-Sis-Callback-Id: <job_id>``; a 2xx answer commits DELIVERED; anything else is retried
``callback_attempts`` times with exponential backoff (``callback_backoff_s * 2**n``), each attempt
appended to ``callback_log`` (time, HTTP status or error), then FAILED. PENDING callbacks resume
after a restart. Delivery is exactly-once unless the process dies between the receiver's 2xx and
the DELIVERED commit (then the receiver sees it twice, same ``X-Sis-Callback-Id``: deduplicate on
it).

Retention: finished jobs are deleted ``retention_s`` (72 h) after they finished (WAITING ones
after ``retention_s`` from creation if never run); a GET afterwards is ``"task id is not found"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

from ..errors import RequestRejected
from ..protocol.errors import reject
from .store import Database

__all__ = ["MAX_ATTEMPTS", "FairQueue", "JobManager", "JobRecord", "JobStore", "rfc3339"]

logger = logging.getLogger(__name__)

#: Processing starts allowed per job before it is failed as a poison job.
MAX_ATTEMPTS: Final = 3
_SWEEP_INTERVAL_S: Final = 600.0

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS jobs (
        job_id TEXT PRIMARY KEY,
        project_id TEXT NOT NULL,
        state TEXT NOT NULL,
        request TEXT NOT NULL,
        create_time REAL NOT NULL,
        start_time REAL,
        finish_time REAL,
        attempts INTEGER NOT NULL DEFAULT 0,
        audio_duration INTEGER,
        segments TEXT,
        error_code TEXT,
        error_msg TEXT,
        callback_url TEXT,
        callback_state TEXT NOT NULL DEFAULT 'NONE',
        callback_attempts INTEGER NOT NULL DEFAULT 0,
        callback_log TEXT NOT NULL DEFAULT '[]')""",
    "CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, create_time)",
)


def rfc3339(ts: float | None) -> str | None:
    """``2018-12-04T13:10:29.310Z`` (UTC, milliseconds) for a POSIX time."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(ts * 1000) % 1000:03d}Z"


@dataclass(frozen=True)
class JobRecord:
    """One job row (what the GET route needs)."""

    job_id: str
    project_id: str
    state: str
    request: dict[str, Any]
    create_time: float
    start_time: float | None
    finish_time: float | None
    attempts: int
    audio_duration: int | None
    segments: list[dict[str, Any]] | None
    error_code: str | None
    error_msg: str | None
    callback_url: str | None
    callback_state: str
    callback_attempts: int
    callback_log: list[dict[str, Any]]

    @classmethod
    def from_row(cls, row: Any) -> JobRecord:
        return cls(row["job_id"], row["project_id"], row["state"], json.loads(row["request"]),
                   row["create_time"], row["start_time"], row["finish_time"], row["attempts"],
                   row["audio_duration"], json.loads(row["segments"]) if row["segments"] else None,
                   row["error_code"], row["error_msg"], row["callback_url"], row["callback_state"],
                   row["callback_attempts"], json.loads(row["callback_log"] or "[]"))

    def public_body(self) -> dict[str, Any]:
        """The GET ``/jobs/{job_id}`` answer (§11.3)."""
        status = "WAITING" if self.state in ("WAITING", "RUNNING") else self.state
        body: dict[str, Any] = {"job_id": self.job_id, "status": status,
                                "create_time": rfc3339(self.create_time)}
        if status in ("FINISHED", "ERROR"):
            body["start_time"] = rfc3339(self.start_time if self.start_time is not None else self.finish_time)
            body["finish_time"] = rfc3339(self.finish_time)
        if status == "FINISHED":
            body["audio_duration"] = int(self.audio_duration or 0)
            body["segments"] = self.segments or []
        elif status == "ERROR":
            body["error_code"] = self.error_code
            body["error_msg"] = self.error_msg
        return body


class JobStore:
    """The ``jobs`` table: every state transition is one transaction (see the module docstring).

    Parameters
    ----------
    db_path : path
    clock : callable
        POSIX seconds (``time.time``), injectable for retention tests.
    """

    def __init__(self, db_path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.db = Database(db_path, _SCHEMA)
        self.clock = clock

    def close(self) -> None:
        self.db.close()

    def insert(self, project_id: str, request: dict[str, Any], callback_url: str | None) -> str:
        job_id = str(uuid.uuid4())
        self.db.execute("INSERT INTO jobs (job_id, project_id, state, request, create_time, callback_url) "
                        "VALUES (?, ?, 'WAITING', ?, ?, ?)",
                        (job_id, project_id, json.dumps(request, ensure_ascii=False), self.clock(), callback_url))
        return job_id

    def delete(self, job_id: str) -> None:
        self.db.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,))

    def get(self, job_id: str, project_id: str | None = None) -> JobRecord | None:
        if project_id is None:
            row = self.db.query_one("SELECT * FROM jobs WHERE job_id = ?", (job_id,))
        else:
            row = self.db.query_one("SELECT * FROM jobs WHERE job_id = ? AND project_id = ?", (job_id, project_id))
        return JobRecord.from_row(row) if row is not None else None

    def pending(self) -> list[str]:
        """WAITING and RUNNING jobs, oldest first (to queue again at start-up)."""
        return [job_id for job_id, _ in self.pending_by_project()]

    def pending_by_project(self) -> list[tuple[str, str]]:
        """``(job_id, project_id)`` of the WAITING and RUNNING jobs, oldest first."""
        return [(r["job_id"], r["project_id"]) for r in self.db.query(
            "SELECT job_id, project_id FROM jobs WHERE state IN ('WAITING', 'RUNNING') "
            "ORDER BY create_time, job_id")]

    def pending_callbacks(self) -> list[str]:
        return [r["job_id"] for r in self.db.query(
            "SELECT job_id FROM jobs WHERE callback_state = 'PENDING' ORDER BY finish_time, job_id")]

    def count_waiting(self) -> int:
        return int(self.db.query_one("SELECT COUNT(*) AS n FROM jobs WHERE state IN ('WAITING', 'RUNNING')")["n"])

    def claim(self, job_id: str) -> int | None:
        """WAITING/RUNNING -> RUNNING with ``attempts + 1``; returns the new attempts, or None if
        the job is gone or already ended."""
        with self.db.transaction() as cur:
            row = cur.execute("SELECT state, attempts, start_time FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            if row is None or row["state"] not in ("WAITING", "RUNNING"):
                return None
            attempts = int(row["attempts"]) + 1
            cur.execute("UPDATE jobs SET state = 'RUNNING', attempts = ?, start_time = COALESCE(start_time, ?) "
                        "WHERE job_id = ?", (attempts, self.clock(), job_id))
            return attempts

    def complete(self, job_id: str, attempts: int, *, segments: list[dict[str, Any]] | None = None,
                 audio_duration: int | None = None, error: RequestRejected | None = None) -> bool:
        """RUNNING -> FINISHED (``segments``) or ERROR (``error``), atomically with the callback
        becoming PENDING. Returns False (and changes nothing) if this worker's claim is stale."""
        with self.db.transaction() as cur:
            now = self.clock()
            if error is None:
                cur.execute(
                    "UPDATE jobs SET state = 'FINISHED', segments = ?, audio_duration = ?, finish_time = ?, "
                    "callback_state = CASE WHEN callback_url IS NULL THEN 'NONE' ELSE 'PENDING' END "
                    "WHERE job_id = ? AND state = 'RUNNING' AND attempts = ?",
                    (json.dumps(segments or [], ensure_ascii=False), int(audio_duration or 0), now, job_id, attempts))
            else:
                cur.execute(
                    "UPDATE jobs SET state = 'ERROR', error_code = ?, error_msg = ?, finish_time = ?, "
                    "start_time = COALESCE(start_time, ?), "
                    "callback_state = CASE WHEN callback_url IS NULL THEN 'NONE' ELSE 'PENDING' END "
                    "WHERE job_id = ? AND state IN ('RUNNING', 'WAITING') AND attempts = ?",
                    (error.error_code, error.error_msg, now, now, job_id, attempts))
            return cur.rowcount == 1

    def record_callback(self, job_id: str, entry: dict[str, Any], final_state: str | None) -> None:
        """Append one delivery attempt; ``final_state`` DELIVERED/FAILED ends the callback."""
        with self.db.transaction() as cur:
            row = cur.execute("SELECT callback_log, callback_attempts FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            if row is None:
                return
            log = json.loads(row["callback_log"] or "[]")
            log.append(entry)
            cur.execute("UPDATE jobs SET callback_log = ?, callback_attempts = ?, "
                        "callback_state = COALESCE(?, callback_state) WHERE job_id = ?",
                        (json.dumps(log), int(row["callback_attempts"]) + 1, final_state, job_id))

    def expire(self, retention_s: float) -> int:
        """Delete jobs older than the retention; returns how many."""
        limit = self.clock() - retention_s
        return self.db.execute(
            "DELETE FROM jobs WHERE (finish_time IS NOT NULL AND finish_time < ?) "
            "OR (finish_time IS NULL AND create_time < ?)", (limit, limit))


class FairQueue:
    """Job ids per project, served round-robin across projects (FIFO within one project).

    Bounded: at most `maxsize` ids in total; :meth:`put_nowait` beyond raises
    :class:`asyncio.QueueFull` (overflow policy ``error``: the submit is refused, SIS.0536).
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = int(maxsize)
        self._by_project: OrderedDict[str, deque[str]] = OrderedDict()
        self._size = 0
        self._getters: deque[asyncio.Future[None]] = deque()

    def qsize(self) -> int:
        return self._size

    def full(self) -> bool:
        return self._size >= self.maxsize

    def put_nowait(self, project_id: str, item: str) -> None:
        if self.full():
            raise asyncio.QueueFull
        dq = self._by_project.get(project_id)
        if dq is None:
            dq = self._by_project[project_id] = deque()
        dq.append(item)
        self._size += 1
        while self._getters:
            fut = self._getters.popleft()
            if not fut.done():
                fut.set_result(None)
                break

    async def get(self) -> str:
        while self._size == 0:
            fut = asyncio.get_running_loop().create_future()
            self._getters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                with contextlib.suppress(ValueError):
                    self._getters.remove(fut)
                raise
        project_id, dq = next(iter(self._by_project.items()))
        item = dq.popleft()
        del self._by_project[project_id]
        if dq:  # the project goes to the back of the rotation
            self._by_project[project_id] = dq
        self._size -= 1
        return item


#: ``process(job) -> (segments, audio_duration_ms)``; raises RequestRejected for job errors.
Processor = Callable[["JobRecord", Callable[[], bool]], Awaitable[tuple[list[dict[str, Any]], int]]]


class JobManager:
    """Runs the jobs of one :class:`JobStore` (see the module docstring).

    Parameters
    ----------
    store : JobStore
    processor : callable
        ``await processor(job, should_stop)`` returns ``(segments, audio_duration_ms)``.
    workers : int
        Jobs processed at once (jobs are taken round-robin across projects).
    max_waiting : int
        Bound on queued jobs (``SIS.0536`` beyond).
    retention_s : float
    callback_attempts : int
    callback_backoff_s, callback_timeout_s : float
    callback_check : callable, optional
        Re-validates a stored callback URL before each delivery (raises RequestRejected).
    """

    def __init__(self, store: JobStore, processor: Processor, *, workers: int = 2, max_waiting: int = 1000,
                 retention_s: float = 72 * 3600.0, callback_attempts: int = 5, callback_backoff_s: float = 1.0,
                 callback_timeout_s: float = 10.0, callback_check: Callable[[str], None] | None = None,
                 max_attempts: int = MAX_ATTEMPTS) -> None:
        self.store = store
        self.processor = processor
        self.workers = workers
        self.max_waiting = max_waiting
        self.retention_s = retention_s
        self.callback_attempts = callback_attempts
        self.callback_backoff_s = callback_backoff_s
        self.callback_timeout_s = callback_timeout_s
        self.callback_check = callback_check
        self.max_attempts = max_attempts
        self._queue: FairQueue | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._callbacks: dict[str, asyncio.Task[None]] = {}
        self._stopping = False
        self._session: Any = None

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Queue the jobs left WAITING/RUNNING, resume PENDING callbacks, start the workers."""
        import aiohttp

        self._queue = FairQueue(self.max_waiting + self.workers)
        self._session = aiohttp.ClientSession(trust_env=False,
                                              timeout=aiohttp.ClientTimeout(total=self.callback_timeout_s))
        self.store.expire(self.retention_s)
        resumed = self.store.pending_by_project()
        for job_id, project_id in resumed[: self.max_waiting]:
            self._queue.put_nowait(project_id, job_id)
        if resumed:
            logger.info("resuming %d transcriber job(s)", len(resumed))
        for job_id in self.store.pending_callbacks():
            self._schedule_callback(job_id)
        self._tasks = [asyncio.create_task(self._worker(i), name=f"sis-transcriber-{i}")
                       for i in range(self.workers)]
        self._tasks.append(asyncio.create_task(self._sweeper(), name="sis-transcriber-sweeper"))

    async def stop(self) -> None:
        """Stop workers (a running job stays RUNNING and resumes at the next start) and callbacks."""
        self._stopping = True
        tasks = [*self._tasks, *self._callbacks.values()]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        self._callbacks.clear()
        if self._session is not None:
            await self._session.close()
        self.store.close()

    # -- API ------------------------------------------------------------------------------------
    def submit(self, project_id: str, request: dict[str, Any], callback_url: str | None) -> str:
        """Store a new WAITING job and queue it; returns its id.

        Raises
        ------
        RequestRejected
            ``SIS.0536`` when ``max_waiting`` jobs are already waiting.
        """
        assert self._queue is not None, "JobManager.start() was not awaited"
        if self.store.count_waiting() >= self.max_waiting or self._queue.full():
            raise reject("SIS.0536", f"the transcriber submission limit is reached: {self.max_waiting} jobs are "
                                     "waiting")
        job_id = self.store.insert(project_id, request, callback_url)
        self._queue.put_nowait(project_id, job_id)
        return job_id

    def get(self, project_id: str, job_id: str) -> JobRecord:
        """The job, or ``SIS.0533 "task id is not found"`` (unknown, other project, or expired)."""
        job = self.store.get(job_id, project_id)
        if job is not None and job.finish_time is not None and job.finish_time < self.store.clock() - self.retention_s:
            job = None
        if job is None:
            raise reject("SIS.0533", "task id is not found")
        return job

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no job is waiting/running and no callback is pending (tests)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.store.count_waiting() == 0 and not self._callbacks:
                return True
            await asyncio.sleep(0.05)
        return False

    # -- workers --------------------------------------------------------------------------------
    async def _worker(self, index: int) -> None:
        assert self._queue is not None
        while not self._stopping:
            job_id = await self._queue.get()
            try:
                await self._run_job(job_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("transcriber worker %d: job %s failed unexpectedly", index, job_id)

    async def _run_job(self, job_id: str) -> None:
        attempts = self.store.claim(job_id)
        if attempts is None:
            return
        if attempts > self.max_attempts:
            err = reject("SIS.0307", f"task error: processing was interrupted {attempts - 1} times")
            if self.store.complete(job_id, attempts, error=err):
                self._schedule_callback(job_id)
            return
        job = self.store.get(job_id)
        if job is None:
            return
        logger.info("transcriber job %s started (attempt %d)", job_id, attempts)
        try:
            segments, duration = await self.processor(job, lambda: self._stopping)
        except RequestRejected as exc:
            done = self.store.complete(job_id, attempts, error=exc)
        except asyncio.CancelledError:
            raise  # stopping: the job stays RUNNING and resumes at the next start
        except Exception as exc:
            if self._stopping:
                return
            logger.exception("transcriber job %s failed", job_id)
            done = self.store.complete(job_id, attempts, error=reject("SIS.30008", f"transcription failed: "
                                                                                   f"{type(exc).__name__}"))
        else:
            done = self.store.complete(job_id, attempts, segments=segments, audio_duration=duration)
        if done:
            logger.info("transcriber job %s ended", job_id)
            self._schedule_callback(job_id)

    async def _sweeper(self) -> None:
        while not self._stopping:
            await asyncio.sleep(_SWEEP_INTERVAL_S)
            n = self.store.expire(self.retention_s)
            if n:
                logger.info("expired %d transcriber job(s) after %.0f h", n, self.retention_s / 3600)

    # -- callbacks ------------------------------------------------------------------------------
    def _schedule_callback(self, job_id: str) -> None:
        if self._stopping or job_id in self._callbacks:
            return
        job = self.store.get(job_id)
        if job is None or job.callback_state != "PENDING" or not job.callback_url:
            return
        task = asyncio.create_task(self._deliver(job_id), name=f"sis-callback-{job_id}")
        self._callbacks[job_id] = task
        task.add_done_callback(lambda _t, j=job_id: self._callbacks.pop(j, None))

    async def _deliver(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job is None or job.callback_url is None:
            return
        body = json.dumps(job.public_body(), ensure_ascii=False).encode("utf-8")
        url = job.callback_url
        for n in range(job.callback_attempts, self.callback_attempts):
            entry: dict[str, Any] = {"time": rfc3339(self.store.clock()), "attempt": n + 1}
            ok = False
            try:
                if self.callback_check is not None:
                    self.callback_check(url)
                async with self._session.post(url, data=body, allow_redirects=False, headers={
                        "Content-Type": "application/json;charset=utf-8", "X-Sis-Callback-Id": job_id}) as resp:
                    entry["status"] = resp.status
                    ok = 200 <= resp.status < 300
            except RequestRejected as exc:
                entry["error"] = exc.error_msg
                self.store.record_callback(job_id, entry, "FAILED")
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - network errors are retried
                entry["error"] = f"{type(exc).__name__}: {exc}"[:300]
            last = n + 1 >= self.callback_attempts
            self.store.record_callback(job_id, entry, "DELIVERED" if ok else ("FAILED" if last else None))
            if ok:
                return
            if not last:
                await asyncio.sleep(self.callback_backoff_s * (2 ** n))
        logger.warning("callback of job %s failed after %d attempts", job_id, self.callback_attempts)
