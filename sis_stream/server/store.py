"""SQLite helpers for the server's durable state (stdlib ``sqlite3`` only).

One :class:`Database` per file, shared by the event loop and worker threads. ``sqlite3``
connections are not shared across threads here: every call opens its own short transaction on a
per-thread connection, serialised by one lock (SQLite allows one writer anyway), so a statement
never interleaves with another thread's. Calls are short (one row or one page); handlers may call
them on the event loop.

The files live under the server's data directory (``--data-dir``): ``vocabularies.sqlite3`` and
``jobs.sqlite3``. WAL journalling plus ``synchronous=FULL`` make every committed write survive a
process kill (the transcriber's exactly-once guarantee rests on it).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

__all__ = ["SCHEMA_VERSION_TABLE", "Database"]

logger = logging.getLogger(__name__)

#: Table holding one row: the schema version each store applied.
SCHEMA_VERSION_TABLE: Final = "schema_version"


class Database:
    """A SQLite file with a schema, safe to use from several threads.

    Parameters
    ----------
    path : str or os.PathLike
        The database file; its directory is created if needed. ``":memory:"`` is refused (each
        thread would see its own empty database).
    schema : sequence of str
        ``CREATE TABLE IF NOT EXISTS ...`` statements, run once at open.
    busy_timeout_ms : int
        How long SQLite waits for a lock held by another process.

    Raises
    ------
    ValueError
        For ``":memory:"``.
    sqlite3.DatabaseError
        If the file is not a SQLite database.
    """

    def __init__(self, path: str | os.PathLike[str], schema: Sequence[str] = (), *,
                 busy_timeout_ms: int = 5000) -> None:
        if str(path) == ":memory:":
            raise ValueError("Database needs a file path, got ':memory:' (threads would not share it)")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout_ms = int(busy_timeout_ms)
        self._local = threading.local()
        self._lock = threading.RLock()
        self._conns: list[sqlite3.Connection] = []
        self._closed = False
        with self.transaction() as cur:
            for stmt in schema:
                cur.execute(stmt)

    def __repr__(self) -> str:
        return f"Database({str(self.path)!r})"

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise RuntimeError(f"database {self.path} is closed")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout_ms / 1000,
                                   isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """A cursor inside ``BEGIN IMMEDIATE ... COMMIT`` (rolled back on an exception)."""
        with self._lock:
            conn = self._conn()
            cur = conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            else:
                conn.execute("COMMIT")
            finally:
                cur.close()

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> int:
        """Run one writing statement in its own transaction; returns the rows changed."""
        with self.transaction() as cur:
            cur.execute(sql, params)
            return cur.rowcount

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        """Run one reading statement; returns every row."""
        with self._lock:
            return list(self._conn().execute(sql, params))

    def query_one(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> sqlite3.Row | None:
        """The first row of a reading statement, or None."""
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> None:
        """Run one statement over many parameter rows in one transaction."""
        with self.transaction() as cur:
            cur.executemany(sql, seq)

    def close(self) -> None:
        """Close every thread's connection; later calls raise RuntimeError."""
        with self._lock:
            self._closed = True
            for conn in self._conns:
                try:
                    conn.close()
                except sqlite3.Error:  # pragma: no cover - closing a broken handle
                    logger.debug("closing a sqlite connection failed", exc_info=True)
            self._conns.clear()
