"""SQLite persistence behind JobStore: jobs, their units, and one append-only
event log per job, in a single database file in WAL mode.

Writes go through one connection under a lock (SQLite admits one writer at a
time anyway). History reads use a small pool of separate connections, so a
watcher paging through old events never waits behind a commit.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from .jobs import Event, Job, UnitState

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    ord             INTEGER PRIMARY KEY,   -- creation order ("newest first")
    job_id          TEXT NOT NULL UNIQUE,
    status          TEXT NOT NULL,
    tasks_dir       TEXT NOT NULL,
    target_branch   TEXT NOT NULL,
    feature_branch  TEXT NOT NULL,
    parallelism     INTEGER NOT NULL,
    repo_path       TEXT NOT NULL,
    error           TEXT NOT NULL,
    created_at_ns   INTEGER NOT NULL,
    started_at_ns   INTEGER NOT NULL,
    completed_at_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS units (
    job             INTEGER NOT NULL REFERENCES jobs(ord),
    unit_id         TEXT NOT NULL,
    position        INTEGER NOT NULL,      -- order of first insertion
    status          TEXT NOT NULL,
    tasks_complete  INTEGER NOT NULL,
    tasks_total     INTEGER NOT NULL,
    pr_number       INTEGER NOT NULL,
    PRIMARY KEY (job, unit_id)
) WITHOUT ROWID;
-- The primary key makes a duplicate or renumbered sequence impossible (W9).
CREATE TABLE IF NOT EXISTS events (
    job             INTEGER NOT NULL REFERENCES jobs(ord),
    sequence        INTEGER NOT NULL,
    event_type      TEXT NOT NULL,
    unit_id         TEXT NOT NULL,
    payload_json    TEXT NOT NULL,
    timestamp_ns    INTEGER NOT NULL,
    PRIMARY KEY (job, sequence)
) WITHOUT ROWID;
"""

# Idle reader connections kept for reuse; a burst beyond this opens extra
# connections that are closed again when returned.
_MAX_IDLE_READERS = 8


@dataclass
class StoredJob:
    """A job as loaded from disk, with the last sequence of its event log."""

    job: Job
    units: list[UnitState] = field(default_factory=list)
    last_sequence: int = 0


class SqliteLog:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = os.fspath(path)
        if self._path == ":memory:" or self._path.startswith("file:"):
            # Readers use their own connections, so they must reach the same file.
            raise ValueError("SqliteLog needs a database file path")
        self._lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._closed = False
        self._ords: dict[str, int] = {}
        self._writer = self._connect()
        try:
            mode = self._writer.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise RuntimeError(f"cannot put {self._path} in WAL mode (got {mode!r})")
            # In WAL mode NORMAL keeps every commit across a process crash;
            # only a power loss can take back the last commits.
            self._writer.execute("PRAGMA synchronous=NORMAL")
            self._init_schema()
        except BaseException:
            self._writer.close()
            raise

    def _connect(self) -> sqlite3.Connection:
        # Autocommit mode: transactions are explicit, and a reader never
        # holds a stale snapshot between two reads.
        return sqlite3.connect(
            self._path, isolation_level=None, check_same_thread=False, timeout=30.0
        )

    def _init_schema(self) -> None:
        with self._transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise RuntimeError(
                    f"{self._path} has schema version {version}; this build reads {SCHEMA_VERSION}"
                )
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise RuntimeError("the job database is closed")
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
                self._writer.execute("COMMIT")
            except BaseException:
                # A failed COMMIT can leave the transaction open; never let
                # the next writer build on half of this one.
                if self._writer.in_transaction:
                    self._writer.execute("ROLLBACK")
                raise

    # -- loading -------------------------------------------------------------

    def load(self) -> list[StoredJob]:
        """Every job in creation order, with its units and last sequence."""
        with self._transaction() as conn:
            stored: dict[int, StoredJob] = {}
            for row in conn.execute(
                "SELECT ord, job_id, status, tasks_dir, target_branch, feature_branch,"
                " parallelism, repo_path, error, created_at_ns, started_at_ns, completed_at_ns"
                " FROM jobs ORDER BY ord"
            ):
                ord_, *fields = row
                stored[ord_] = StoredJob(Job(*fields))
                self._ords[fields[0]] = ord_
            for ord_, *fields in conn.execute(
                "SELECT job, unit_id, status, tasks_complete, tasks_total, pr_number"
                " FROM units ORDER BY job, position"
            ):
                stored[ord_].units.append(UnitState(*fields))
            for ord_, last in conn.execute("SELECT job, MAX(sequence) FROM events GROUP BY job"):
                stored[ord_].last_sequence = last
        return list(stored.values())

    def fail_unfinished(self, error: str, now_ns: int) -> int:
        """Mark every pending or running job failed; returns how many."""
        with self._transaction() as conn:
            cur = conn.execute(
                "UPDATE jobs SET status='failed', error=?, completed_at_ns=?"
                " WHERE status IN ('pending', 'running')",
                (error, now_ns),
            )
            return cur.rowcount

    # -- writing -------------------------------------------------------------

    def insert_job(self, job: Job) -> None:
        with self._transaction() as conn:
            cur = conn.execute(
                "INSERT INTO jobs (job_id, status, tasks_dir, target_branch, feature_branch,"
                " parallelism, repo_path, error, created_at_ns, started_at_ns, completed_at_ns)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    job.job_id, job.status, job.tasks_dir, job.target_branch,
                    job.feature_branch, job.parallelism, job.repo_path, job.error,
                    job.created_at_ns, job.started_at_ns, job.completed_at_ns,
                ),
            )
            self._ords[job.job_id] = cur.lastrowid

    def update_job(self, job: Job) -> None:
        """Persist the mutable fields of a job (status, error, timestamps)."""
        with self._transaction() as conn:
            conn.execute(
                "UPDATE jobs SET status=?, error=?, started_at_ns=?, completed_at_ns=? WHERE ord=?",
                (job.status, job.error, job.started_at_ns, job.completed_at_ns,
                 self._ords[job.job_id]),
            )

    def upsert_unit(self, job_id: str, unit: UnitState, position: int) -> None:
        # On conflict the position is kept: a unit keeps its first place.
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO units (job, unit_id, position, status, tasks_complete, tasks_total,"
                " pr_number) VALUES (?,?,?,?,?,?,?)"
                " ON CONFLICT (job, unit_id) DO UPDATE SET status=excluded.status,"
                " tasks_complete=excluded.tasks_complete, tasks_total=excluded.tasks_total,"
                " pr_number=excluded.pr_number",
                (self._ords[job_id], unit.unit_id, position, unit.status,
                 unit.tasks_complete, unit.tasks_total, unit.pr_number),
            )

    def append(self, job_id: str, events: Iterable[Event]) -> None:
        """Append events in one transaction; committed when this returns."""
        ord_ = self._ords[job_id]
        with self._transaction() as conn:
            conn.executemany(
                "INSERT INTO events (job, sequence, event_type, unit_id, payload_json, timestamp_ns)"
                " VALUES (?,?,?,?,?,?)",
                [
                    (ord_, e.sequence, e.event_type, e.unit_id, e.payload_json, e.timestamp_ns)
                    for e in events
                ],
            )

    # -- reading -------------------------------------------------------------

    def read(self, job_id: str, first: int, stop: int) -> list[Event]:
        """Events with first <= sequence < stop, in order."""
        ord_ = self._ords[job_id]
        conn = self._take_reader()
        try:
            rows = conn.execute(
                "SELECT sequence, event_type, unit_id, payload_json, timestamp_ns FROM events"
                " WHERE job=? AND sequence>=? AND sequence<? ORDER BY sequence",
                (ord_, first, stop),
            ).fetchall()
        finally:
            self._give_back(conn)
        return [Event(*row) for row in rows]

    def _take_reader(self) -> sqlite3.Connection:
        with self._pool_lock:
            if self._closed:
                raise RuntimeError("the job database is closed")
            if self._idle:
                return self._idle.pop()
        return self._connect()

    def _give_back(self, conn: sqlite3.Connection) -> None:
        with self._pool_lock:
            if not self._closed and len(self._idle) < _MAX_IDLE_READERS:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock, self._pool_lock:
            if self._closed:
                return
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        self._writer.close()
