"""SQLite persistence behind JobStore: jobs, their units, and one append-only
event log per job, in a single database file in WAL mode.

Writes go through one connection under a lock (SQLite admits one writer at a
time anyway). History reads use a small pool of separate connections, so a
watcher paging through old events never waits behind a commit.

The file and its -wal/-shm are 0600 (SQLite gives the last two the mode of
the first) and never opened through a symbolic link. A write that fails
raises jobs.StorageError; so does every write once the file at the path is
no longer the one opened (deleted or replaced), since a commit into it
could never be read again.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sqlite3
import stat
import sys
import threading
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from .jobs import (
    CANCELLED,
    FAILED,
    PENDING,
    RUNNING,
    Event,
    Job,
    JobBrief,
    StorageError,
    UnitState,
)

log = logging.getLogger("choo-ref")

# 2 added the daemon_runs and processes tables; a version 1 file gains them.
SCHEMA_VERSION = 2
_READABLE_VERSIONS = (0, 1, 2)

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
-- Each daemon that opened this file and has not exited cleanly, and the
-- commands it runs: what a crashed daemon left is found here at the next start.
CREATE TABLE IF NOT EXISTS daemon_runs (
    token           TEXT PRIMARY KEY
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS processes (
    token           TEXT NOT NULL,         -- the daemon run's token
    job_id          TEXT NOT NULL,
    pid             INTEGER NOT NULL,      -- also the process group (a session leader)
    start_ticks     INTEGER NOT NULL,      -- /proc/PID/stat starttime
    boot_id         TEXT NOT NULL,
    PRIMARY KEY (token, pid)
) WITHOUT ROWID;
"""

SQLITE_FULL = 13


def _storage_error(exc: sqlite3.Error, path: str) -> StorageError:
    if getattr(exc, "sqlite_errorcode", None) == SQLITE_FULL:
        return StorageError(f"the disk is full (the daemon's database {path} cannot grow)",
                            full=True)
    return StorageError(f"cannot write the daemon's database {path}: {exc}")


def _refuse_links(path: str) -> None:
    for name in (path, path + "-wal", path + "-shm"):
        try:
            mode = os.lstat(name).st_mode
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(mode):
            raise StorageError(f"{name} is a symbolic link; the daemon never opens its "
                               "files through one (remove it)")


_SQLITE_HEADER = b"SQLite format 3\x00"


def _open_private(path: str) -> os.stat_result:
    """Create the database file 0600 if missing, make an existing database
    0600; never through a link. A file that is not empty and not a SQLite
    database is refused untouched. Returns its identity."""
    _refuse_links(path)
    try:
        # Only read here: SQLite does the writing, once the file is known
        # to be a database (or empty).
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StorageError(f"cannot open {path}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StorageError(f"{path} is not a regular file")
        if st.st_size and os.pread(fd, len(_SQLITE_HEADER), 0) != _SQLITE_HEADER:
            # SQLite would take a file shorter than its header as empty and
            # overwrite it; whatever this is, it is someone's.
            raise StorageError(f"{path} is not a SQLite database; the daemon leaves it as it "
                               "is (use another --db)")
        if stat.S_IMODE(st.st_mode) != 0o600:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    # Left by an earlier daemon, perhaps with a looser mode (checked for links above).
    for name in (path + "-wal", path + "-shm"):
        try:
            if stat.S_IMODE(os.stat(name).st_mode) != 0o600:
                os.chmod(name, 0o600)
        except FileNotFoundError:
            pass
    return st


# Idle reader connections kept for reuse; a burst beyond this opens extra
# connections that are closed again when returned.
_MAX_IDLE_READERS = 8

# Events are inserted up to this many rows per statement. SQLite lets go of
# the GIL for each statement it runs, and on the daemon the event loop takes
# it and hands it back: a statement per row made every recorded event cost
# such a hand-off (docs/PERFORMANCE.md). 128 rows of 6 values stay under the
# 999 variables a statement may have before SQLite 3.32.
_ROWS_PER_INSERT = 128
_EVENT_COLUMNS = 6


@functools.lru_cache(maxsize=_ROWS_PER_INSERT)
def _insert_events(rows: int) -> str:
    return ("INSERT INTO events (job, sequence, event_type, unit_id, payload_json, timestamp_ns)"
            " VALUES " + ",".join(["(?,?,?,?,?,?)"] * rows))


@dataclass
class StoredJob:
    """A job as loaded from disk, with the last sequence of its event log."""

    job: Job
    units: list[UnitState] = field(default_factory=list)
    last_sequence: int = 0


class SqliteLog:
    def __init__(self, path: str | os.PathLike[str], *, max_bytes: int | None = None) -> None:
        """max_bytes caps the database's size: a write past it fails as on a
        full disk (SQLite's max_page_count)."""
        self._path = os.fspath(path)
        if self._path == ":memory:" or self._path.startswith("file:"):
            # Readers use their own connections, so they must reach the same file.
            raise ValueError("SqliteLog needs a database file path")
        self._lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._closed = False
        self._lost = ""  # why no write is acknowledged any more, once the file is gone
        self._ords: dict[str, int] = {}
        opened = _open_private(self._path)
        self._identity = (opened.st_dev, opened.st_ino)
        self._uri = f"file:{urllib.parse.quote(os.path.abspath(self._path))}?mode=rw"
        self._writer = self._connect()
        try:
            mode = self._writer.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise RuntimeError(f"cannot put {self._path} in WAL mode (got {mode!r})")
            # In WAL mode NORMAL keeps every commit across a process crash;
            # only a power loss can take back the last commits.
            self._writer.execute("PRAGMA synchronous=NORMAL")
            if max_bytes is not None:
                page = self._writer.execute("PRAGMA page_size").fetchone()[0]
                self._writer.execute(f"PRAGMA max_page_count={max(max_bytes // page, 1)}")
            self._init_schema()
        except sqlite3.Error as exc:
            self._writer.close()
            raise _storage_error(exc, self._path) from None
        except BaseException:
            self._writer.close()
            raise

    def _connect(self) -> sqlite3.Connection:
        # Autocommit mode: transactions are explicit, and a reader never
        # holds a stale snapshot between two reads. mode=rw: a connection
        # opened after the file was deleted must not create an empty one.
        return sqlite3.connect(
            self._uri, uri=True, isolation_level=None, check_same_thread=False, timeout=30.0
        )

    def _init_schema(self) -> None:
        with self._transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in _READABLE_VERSIONS:
                raise RuntimeError(
                    f"{self._path} has schema version {version}; this build reads {SCHEMA_VERSION}"
                )
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; raises StorageError when it cannot be made
        durable in the file at the path."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the job database is closed")
            if self._lost:
                raise StorageError(self._lost)
            try:
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
            except sqlite3.Error as exc:
                raise _storage_error(exc, self._path) from None
            self._check_file()

    def _check_file(self) -> None:
        """After a commit, before it is acknowledged: is the file at the path
        still the one written? A deleted or replaced database keeps taking
        writes that nobody could ever read again."""
        try:
            st = os.stat(self._path)
            same = (st.st_dev, st.st_ino) == self._identity
        except OSError:
            same = False
        if not same:
            self._lost = (f"the daemon's database {self._path} was deleted or replaced while "
                          "the daemon ran; it acknowledges no more writes (restart it)")
            log.error("%s", self._lost)
            raise StorageError(self._lost)

    # -- loading -------------------------------------------------------------

    def load(self) -> list[JobBrief]:
        """Every job's summary, in creation order. The rest of a job is read
        by load_job when it is asked for."""
        # Statuses are kept once for all jobs; a feature branch is most often
        # a job's own, where interning would only cost more.
        intern = sys.intern
        with self._transaction() as conn:
            # The unit counts are looked up by the units' key, job by job.
            return [JobBrief(job_id, intern(status), feature_branch, started_at_ns,
                             complete, total)
                    for job_id, status, feature_branch, started_at_ns, complete, total
                    in conn.execute(
                "SELECT job_id, status, feature_branch, started_at_ns,"
                " (SELECT COUNT(*) FROM units WHERE job=ord AND status='completed'),"
                " (SELECT COUNT(*) FROM units WHERE job=ord)"
                " FROM jobs ORDER BY ord"
            )]

    def load_job(self, job_id: str) -> StoredJob | None:
        """One job with its units and last sequence, read apart from the
        writer (a finished job no longer changes); None if there is none.
        Nothing is interned: most of a job's texts are its own, and the
        interned strings' table would only grow."""
        conn = self._take_reader()
        try:
            row = conn.execute(
                "SELECT ord, status, tasks_dir, target_branch, feature_branch, parallelism,"
                " repo_path, error, created_at_ns, started_at_ns, completed_at_ns"
                " FROM jobs WHERE job_id=?", (job_id,)).fetchone()
            if row is None:
                return None
            stored = StoredJob(Job(job_id, *row[1:]))
            stored.units = [UnitState(*unit) for unit in conn.execute(
                "SELECT unit_id, status, tasks_complete, tasks_total, pr_number"
                " FROM units WHERE job=? ORDER BY position", (row[0],))]
            last = conn.execute("SELECT MAX(sequence) FROM events WHERE job=?",
                                (row[0],)).fetchone()[0]
            stored.last_sequence = last or 0
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read the daemon's database {self._path}: {exc}") from None
        finally:
            self._give_back(conn)
        return stored

    def forget(self, job_id: str) -> None:
        """Drop what is kept in memory of a finished job that is no longer
        written (its key); reads find it by its id."""
        self._ords.pop(job_id, None)

    def fail_unfinished(self, error: str, now_ns: int) -> int:
        """Mark every pending or running job failed, and its units as the job
        ended (running: failed; pending: cancelled); returns how many jobs."""
        with self._transaction() as conn:
            conn.execute(
                "UPDATE units SET status = CASE status WHEN ? THEN ? ELSE ? END"
                " WHERE status IN (?, ?) AND job IN"
                " (SELECT ord FROM jobs WHERE status IN ('pending', 'running'))",
                (RUNNING, FAILED, CANCELLED, RUNNING, PENDING),
            )
            cur = conn.execute(
                "UPDATE jobs SET status='failed', error=?, completed_at_ns=?"
                " WHERE status IN ('pending', 'running')",
                (error, now_ns),
            )
            return cur.rowcount

    # -- writing -------------------------------------------------------------

    def insert_job(self, job: Job, units: Iterable[UnitState] = ()) -> None:
        """Insert a job and its units in one transaction."""
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
            assert cur.lastrowid is not None  # an INSERT into a rowid table
            conn.executemany(
                "INSERT INTO units (job, unit_id, position, status, tasks_complete, tasks_total,"
                " pr_number) VALUES (?,?,?,?,?,?,?)",
                [(cur.lastrowid, u.unit_id, position, u.status, u.tasks_complete,
                  u.tasks_total, u.pr_number) for position, u in enumerate(units)])
            self._ords[job.job_id] = cur.lastrowid

    def delete_job(self, job_id: str) -> None:
        """Take back a job nobody has seen (no events yet): its row and units."""
        ord_ = self._ords[job_id]
        with self._transaction() as conn:
            conn.execute("DELETE FROM units WHERE job=?", (ord_,))
            conn.execute("DELETE FROM events WHERE job=?", (ord_,))
            conn.execute("DELETE FROM jobs WHERE ord=?", (ord_,))
        del self._ords[job_id]

    def update_job(self, job: Job) -> None:
        """Persist the mutable fields of a job (status, error, timestamps)."""
        with self._transaction() as conn:
            conn.execute(
                "UPDATE jobs SET status=?, error=?, started_at_ns=?, completed_at_ns=? WHERE ord=?",
                (job.status, job.error, job.started_at_ns, job.completed_at_ns,
                 self._ords[job.job_id]),
            )

    def end_job(self, job: Job, units: Iterable[UnitState]) -> None:
        """Persist a job's end and its units' final states at once."""
        with self._transaction() as conn:
            conn.execute(
                "UPDATE jobs SET status=?, error=?, started_at_ns=?, completed_at_ns=? WHERE ord=?",
                (job.status, job.error, job.started_at_ns, job.completed_at_ns,
                 self._ords[job.job_id]),
            )
            conn.executemany(
                "UPDATE units SET status=? WHERE job=? AND unit_id=?",
                [(u.status, self._ords[job.job_id], u.unit_id) for u in units],
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
        values = [v for e in events
                  for v in (ord_, e.sequence, e.event_type, e.unit_id, e.payload_json,
                            e.timestamp_ns)]
        step = _ROWS_PER_INSERT * _EVENT_COLUMNS
        with self._transaction() as conn:
            for start in range(0, len(values), step):
                chunk = values[start:start + step]
                conn.execute(_insert_events(len(chunk) // _EVENT_COLUMNS), chunk)

    # -- the daemon's runs and their commands' processes -----------------------

    def begin_run(self, token: str) -> None:
        with self._transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO daemon_runs (token) VALUES (?)", (token,))

    def forget_runs(self, tokens: Iterable[str]) -> None:
        """Drop daemon runs and every process recorded for them."""
        rows = [(token,) for token in tokens]
        with self._transaction() as conn:
            conn.executemany("DELETE FROM processes WHERE token=?", rows)
            conn.executemany("DELETE FROM daemon_runs WHERE token=?", rows)

    def add_process(self, token: str, job_id: str, pid: int, start_ticks: int,
                    boot_id: str) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO processes (token, job_id, pid, start_ticks, boot_id)"
                " VALUES (?,?,?,?,?)", (token, job_id, pid, start_ticks, boot_id))

    def remove_process(self, token: str, pid: int) -> None:
        with self._transaction() as conn:
            conn.execute("DELETE FROM processes WHERE token=? AND pid=?", (token, pid))

    def runs(self) -> tuple[list[str], list[tuple[str, str, int, int, str]]]:
        """Every recorded daemon run's token (those of the processes too), and
        every recorded process (token, job_id, pid, start_ticks, boot_id)."""
        conn = self._take_reader()
        try:
            processes = conn.execute(
                "SELECT token, job_id, pid, start_ticks, boot_id FROM processes").fetchall()
            tokens = [row[0] for row in conn.execute("SELECT token FROM daemon_runs")]
        except sqlite3.Error as exc:
            raise _storage_error(exc, self._path) from None
        finally:
            self._give_back(conn)
        tokens += [p[0] for p in processes if p[0] not in tokens]
        return tokens, processes

    # -- reading -------------------------------------------------------------

    def read(self, job_id: str, first: int, stop: int) -> list[Event]:
        """Events with first <= sequence < stop, in order."""
        ord_ = self._ords.get(job_id)
        # The key of a job ended before the daemon started, or long ago, is
        # not kept (forget): it is looked up by the job's id.
        job = "?" if ord_ is not None else "(SELECT ord FROM jobs WHERE job_id=?)"
        conn = self._take_reader()
        try:
            rows = conn.execute(
                "SELECT sequence, event_type, unit_id, payload_json, timestamp_ns FROM events"
                f" WHERE job={job} AND sequence>=? AND sequence<? ORDER BY sequence",
                (job_id if ord_ is None else ord_, first, stop),
            ).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read the daemon's database {self._path}: {exc}") from None
        finally:
            self._give_back(conn)
        return [Event(*row) for row in rows]

    def _take_reader(self) -> sqlite3.Connection:
        with self._pool_lock:
            if self._closed:
                raise RuntimeError("the job database is closed")
            if self._idle:
                return self._idle.pop()
        try:
            return self._connect()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read the daemon's database {self._path}: {exc}") from None

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
