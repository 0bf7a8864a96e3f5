"""The reference daemon's job manager: jobs, their units, and a durable
append-only event log per job that watchers read through cursors.

Every change is committed to SQLite (see sqlite_log) before it is visible or
returned, so what a watcher saw live is what a replay returns after a crash
and restart (W9, W17). The recent events of each job are also kept in memory,
shared by all its watchers, so live reads never touch the database; a watcher
that falls behind that window pages through SQLite instead.

A feed is only a cursor (the next sequence to read) over that log: history
and live events come through the same read(), so the hand-over cannot lose or
repeat an event (W13), and a stalled watcher costs a few dozen bytes however
far behind it is (W15).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import threading
import time
import uuid
from typing import Callable, Collection, Sequence

from .jobs import (
    PENDING,
    RUNNING,
    STATUSES,
    Event,
    EventFeed,
    Job,
    JobNotFound,
    UnitState,
    Unsubscribe,
    Wake,
    is_terminal,
)
from .sqlite_log import SqliteLog

__all__ = ["INTERRUPTED_ERROR", "JobExists", "JobStore", "JobTerminal"]

log = logging.getLogger(__name__)

# The error of a job that was pending or running when the daemon died.
INTERRUPTED_ERROR = "daemon stopped while the job was running"

# Events of one job kept in memory for live readers (at least this many of
# the most recent, at most twice as many).
DEFAULT_EVENT_WINDOW = 16384


class JobExists(Exception):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job already exists: {job_id}")
        self.job_id = job_id


class JobTerminal(Exception):
    """The job is completed, failed or cancelled, and can no longer change."""

    def __init__(self, job_id: str, status: str) -> None:
        super().__init__(f"job {job_id} is already {status}")
        self.job_id = job_id
        self.status = status


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise ValueError(f"unknown job status {status!r}; valid: {', '.join(STATUSES)}")


class _JobState:
    """One job's live state. `lock` guards everything below it and is only
    ever held for a few list operations, never across I/O or a wake."""

    __slots__ = (
        "job_id", "job", "units", "lock", "last_seq", "window", "window_base",
        "terminal", "feeds", "open_feeds", "waiters",
    )

    def __init__(self, job: Job, units: Sequence[UnitState] = (), last_seq: int = 0) -> None:
        self.job_id = job.job_id
        self.units: dict[str, UnitState] = {u.unit_id: u for u in units}
        self.job = dataclasses.replace(job, units=tuple(self.units.values()))
        self.lock = threading.Lock()
        self.last_seq = last_seq
        # window[i] is the event with sequence window_base + i; the events
        # below window_base are only in SQLite.
        self.window: list[Event] = []
        self.window_base = last_seq + 1
        self.terminal = is_terminal(job.status)
        self.feeds: list[_Feed] = []  # every subscription, oldest first
        self.open_feeds: set[_Feed] = set()
        # Feeds to wake at the next change: every feed that has read (or
        # subscribed) since it was last woken. A feed that has not read
        # since its last wake already has a wake pending, so skipping it
        # misses nothing, and a stalled feed is woken at most once.
        self.waiters: set[_Feed] = set()

    def drop_window(self) -> None:
        self.window = []
        self.window_base = self.last_seq + 1


class _Feed:
    """A cursor over one job's events (implements jobs.EventFeed).

    Meant to be read by one thread at a time; recording, other feeds and
    wakes may run concurrently with it.
    """

    __slots__ = ("_store", "_st", "_cursor", "_open", "_wake", "from_sequence")

    def __init__(self, store: JobStore, st: _JobState, from_sequence: int, wake: Wake) -> None:
        self._store = store
        self._st = st
        self.from_sequence = from_sequence  # as requested, for subscriptions()
        self._cursor = max(from_sequence, 1)  # 0 and 1 both mean the first event
        self._open = True
        self._wake: Wake | None = wake

    @property
    def open(self) -> bool:
        return self._open

    @property
    def cursor(self) -> int:
        """The sequence the next read starts at."""
        return self._cursor

    def read(self, limit: int) -> Sequence[Event] | None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        st = self._st
        with st.lock:
            if not self._open:
                return []
            cursor = self._cursor
            if cursor > st.last_seq:
                if st.terminal:
                    return None
                st.waiters.add(self)
                return []
            st.waiters.add(self)
            base = st.window_base
            if cursor >= base:
                i = cursor - base
                batch = st.window[i : i + limit]
                self._cursor = cursor + len(batch)
                return batch
            stop = min(cursor + limit, base)
        # Behind the memory window: these events are committed and never
        # change, so they can be read without the lock.
        try:
            batch = self._store._log.read(st.job_id, cursor, stop)
        except RuntimeError:
            if not self._open:  # the store was closed under this read
                return []
            raise
        with st.lock:
            if not self._open:
                return []
            if self._cursor != cursor:
                # Another thread read this feed meanwhile; its result stands.
                return []
            self._cursor = cursor + len(batch)
        return batch


class JobStore:
    """Jobs and their event logs in one SQLite file; implements jobs.JobManager.

    Thread-safe. Mutations are serialized (SQLite has one writer anyway);
    get_job, list_jobs and feed reads never wait for a commit.
    """

    def __init__(
        self,
        db_path: str | os.PathLike[str],
        *,
        clock_ns: Callable[[], int] = time.time_ns,
        event_window: int = DEFAULT_EVENT_WINDOW,
    ) -> None:
        if event_window < 1:
            raise ValueError("event_window must be at least 1")
        self._clock_ns = clock_ns
        self._event_window = event_window
        self._write_lock = threading.Lock()
        self._jobs_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._open_count = 0
        self._closed = False
        self._log = SqliteLog(db_path)
        try:
            # No event is added for the interruption, so a replay after the
            # restart is exactly what watchers saw before it (W17).
            self._log.fail_unfinished(INTERRUPTED_ERROR, clock_ns())
            stored = self._log.load()
        except BaseException:
            self._log.close()
            raise
        # Insertion order is creation order.
        self._jobs: dict[str, _JobState] = {
            s.job.job_id: _JobState(s.job, s.units, s.last_sequence) for s in stored
        }

    # -- lifecycle -----------------------------------------------------------

    def close(self) -> None:
        """Close the database. Open feeds are released and then read nothing."""
        self._shut()

    def abandon(self) -> None:
        """Stop as a crashed process would. Every write is committed when it
        returns, so this is close() under another name; the two are kept
        apart so that a store that buffered writes would flush in close()
        and lose them here, as a crash does."""
        self._shut()

    def _shut(self) -> None:
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            for st in self._states():
                with st.lock:
                    for feed in st.open_feeds:
                        feed._open = False
                        feed._wake = None
                    st.open_feeds.clear()
                    st.waiters.clear()
                    st.drop_window()
            with self._count_lock:
                self._open_count = 0
            self._log.close()

    def __enter__(self) -> JobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("job store is closed")

    # -- jobs ----------------------------------------------------------------

    def _state(self, job_id: str) -> _JobState:
        st = self._jobs.get(job_id)
        if st is None:
            raise JobNotFound(job_id)
        return st

    def _states(self) -> list[_JobState]:
        with self._jobs_lock:
            return list(self._jobs.values())

    def create_job(
        self,
        job_id: str | None = None,
        status: str = RUNNING,
        *,
        tasks_dir: str = "",
        target_branch: str = "",
        feature_branch: str = "",
        parallelism: int = 0,
        repo_path: str = "",
    ) -> Job:
        _check_status(status)
        with self._write_lock:
            self._check_open()
            if not job_id:
                job_id = uuid.uuid4().hex
            if job_id in self._jobs:
                raise JobExists(job_id)
            now = self._clock_ns()
            job = Job(
                job_id=job_id,
                status=status,
                tasks_dir=tasks_dir,
                target_branch=target_branch,
                feature_branch=feature_branch,
                parallelism=parallelism,
                repo_path=repo_path,
                created_at_ns=now,
                started_at_ns=0 if status == PENDING else now,
                completed_at_ns=now if is_terminal(status) else 0,
            )
            self._log.insert_job(job)
            with self._jobs_lock:
                self._jobs[job_id] = _JobState(job)
        return job

    def set_status(self, job_id: str, status: str, error: str = "") -> Job:
        _check_status(status)
        st = self._state(job_id)
        wakes: list[Wake] = []
        with self._write_lock:
            self._check_open()
            old = st.job
            if st.terminal:
                raise JobTerminal(job_id, old.status)
            now = self._clock_ns()
            terminal = is_terminal(status)
            job = dataclasses.replace(
                old,
                status=status,
                error=error,
                started_at_ns=old.started_at_ns or (now if status == RUNNING else 0),
                completed_at_ns=now if terminal else 0,
            )
            self._log.update_job(job)
            with st.lock:
                st.job = job
                if terminal:
                    st.terminal = True
                    # Every open feed must learn that the end is now known,
                    # whether or not it has read since its last wake.
                    wakes = [f._wake for f in st.open_feeds if f._wake is not None]
                    st.waiters.clear()
                    if not st.open_feeds:
                        st.drop_window()
        _call_all(wakes)
        return job

    def update_unit(self, job_id: str, unit: UnitState) -> None:
        st = self._state(job_id)
        with self._write_lock:
            self._check_open()
            if st.terminal:
                raise JobTerminal(job_id, st.job.status)
            # The position only counts on first insertion; a replaced unit keeps its own.
            self._log.upsert_unit(job_id, unit, len(st.units))
            with st.lock:
                st.units[unit.unit_id] = unit  # replacing keeps the dict position
                st.job = dataclasses.replace(st.job, units=tuple(st.units.values()))

    def get_job(self, job_id: str) -> Job:
        return self._state(job_id).job

    def list_jobs(self, statuses: Collection[str] = ()) -> list[Job]:
        """Jobs in any of `statuses` (all if empty), newest first."""
        if isinstance(statuses, str):
            statuses = (statuses,)
        for status in statuses:
            _check_status(status)
        wanted = frozenset(statuses)
        jobs = [st.job for st in reversed(self._states())]
        return [j for j in jobs if not wanted or j.status in wanted]

    def find_active(self, repo_path: str, feature_branch: str) -> Job | None:
        """The newest non-terminal job for (repo_path, feature_branch), if any."""
        for st in reversed(self._states()):
            job = st.job
            if (
                not is_terminal(job.status)
                and job.repo_path == repo_path
                and job.feature_branch == feature_branch
            ):
                return job
        return None

    # -- events --------------------------------------------------------------

    def record(
        self, job_id: str, event_type: str, unit_id: str = "", payload_json: str = "{}"
    ) -> Event:
        return self.record_many(job_id, [(event_type, unit_id, payload_json)])[0]

    def record_many(self, job_id: str, specs: Sequence[tuple[str, str, str]]) -> list[Event]:
        """Append events (event_type, unit_id, payload_json) in one transaction.
        They are committed, and so durable, when this returns."""
        specs = list(specs)
        for spec in specs:
            if len(spec) != 3 or not all(isinstance(part, str) for part in spec):
                raise TypeError(f"event spec must be 3 strings, got {spec!r}")
        st = self._state(job_id)
        with self._write_lock:
            self._check_open()
            if st.terminal:
                raise JobTerminal(job_id, st.job.status)
            if not specs:
                return []
            first = st.last_seq + 1
            events = [
                Event(first + i, event_type, unit_id, payload_json, self._clock_ns())
                for i, (event_type, unit_id, payload_json) in enumerate(specs)
            ]
            # Published only after the commit: a watcher never sees an event
            # that a crash could take back, and a failed commit assigns no
            # sequence.
            self._log.append(job_id, events)
            with st.lock:
                st.window.extend(events)
                st.last_seq = events[-1].sequence
                if len(st.window) >= 2 * self._event_window:
                    cut = len(st.window) - self._event_window
                    del st.window[:cut]
                    st.window_base += cut
                wakes = [f._wake for f in st.waiters if f._wake is not None]
                st.waiters.clear()
        _call_all(wakes)
        return events

    def events(self, job_id: str, from_sequence: int = 1) -> list[Event]:
        """Every recorded event with sequence >= from_sequence."""
        if from_sequence < 0:
            raise ValueError("from_sequence must not be negative")
        st = self._state(job_id)
        with st.lock:
            base = st.window_base
            tail = st.window[max(from_sequence - base, 0) :]
        first = max(from_sequence, 1)
        head = self._log.read(job_id, first, base) if first < base else []
        return head + tail

    # -- feeds ---------------------------------------------------------------

    def subscribe(
        self, job_id: str, from_sequence: int, wake: Wake
    ) -> tuple[EventFeed, Unsubscribe]:
        if from_sequence < 0:
            raise ValueError("from_sequence must not be negative")
        if not callable(wake):
            raise TypeError("wake must be callable")
        st = self._state(job_id)
        feed = _Feed(self, st, from_sequence, wake)
        with st.lock:
            if self._closed:
                raise RuntimeError("job store is closed")
            st.feeds.append(feed)
            st.open_feeds.add(feed)
            st.waiters.add(feed)
            with self._count_lock:
                self._open_count += 1
        return feed, functools.partial(self._release, feed)

    def _release(self, feed: _Feed) -> None:
        st = feed._st
        with st.lock:
            if not feed._open:
                return
            feed._open = False
            feed._wake = None  # drop whatever the watcher's callback holds
            st.open_feeds.discard(feed)
            st.waiters.discard(feed)
            if st.terminal and not st.open_feeds:
                st.drop_window()  # nobody reads it live any more
            with self._count_lock:
                self._open_count -= 1

    def subscriptions(self, job_id: str) -> list[tuple[int, bool]]:
        """(from_sequence as requested, open) of every subscription the job
        has had, oldest first."""
        st = self._state(job_id)
        with st.lock:
            return [(f.from_sequence, f._open) for f in st.feeds]

    def open_subscription_count(self) -> int:
        with self._count_lock:
            return self._open_count


def _call_all(wakes: list[Wake]) -> None:
    # A failing callback must neither fail the recording nor starve the
    # other watchers of their wake.
    for wake in wakes:
        try:
            wake()
        except Exception:
            log.exception("event feed wake callback failed")
