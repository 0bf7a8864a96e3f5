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

Memory stays bounded over a long life: the window of a job is bounded in
bytes as well as events, and the history of released subscriptions (what the
control service's ListSubscriptions shows) keeps the newest few per job, or
none at all. A finished job is kept as a JobBrief (what ListJobs shows); its
whole state is read from the database when a call asks for that job, and the
few most recently asked for are kept.

When a job ends, its units end with it in the same transaction: a unit still
running fails with a failed job (or is cancelled with a cancelled one), and a
unit never started is cancelled. If the disk cannot take a job's end, the end
may still be kept in memory (keep_if_unsaved) and is written with the next
write that succeeds.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence

from .checkpoints import (
    AFTER_HISTORY_READ,
    AFTER_SUBSCRIBE,
    BEFORE_SUBSCRIBE,
    CAUGHT_UP,
    NO_CHECKPOINTS,
    Checkpoints,
)
from .jobs import (
    CANCELLED,
    FAILED,
    PENDING,
    RUNNING,
    STATUSES,
    Event,
    EventFeed,
    Job,
    JobBrief,
    JobNotFound,
    StorageError,
    UnitState,
    Unsubscribe,
    Wake,
    is_terminal,
)
from .sqlite_log import SqliteLog

__all__ = ["INTERRUPTED_ERROR", "JobExists", "JobStore", "JobTerminal", "JobUnwanted"]

log = logging.getLogger(__name__)

# The error of a job that was pending or running when the daemon died.
INTERRUPTED_ERROR = "daemon stopped while the job was running"

# Events of one job kept in memory for live readers: the most recent, at
# least this many events or bytes (whichever is less), at most twice as many.
DEFAULT_EVENT_WINDOW = 16384
DEFAULT_WINDOW_BYTES = 8 * 1024 * 1024
# Released subscriptions remembered per job for ListSubscriptions; open ones
# are always listed.
DEFAULT_SUBSCRIPTION_HISTORY = 1024
# Finished jobs whose whole state is kept after a call asked for them, besides
# those that cannot be let go (open watches, a subscription history, an end
# not yet written).
DEFAULT_FINISHED_CACHE = 64
_UNENDED = frozenset((PENDING, RUNNING))
# What an event costs in memory besides its strings.
_EVENT_OVERHEAD = 200


def _event_size(event: Event) -> int:
    return len(event.payload_json) + len(event.event_type) + len(event.unit_id) + _EVENT_OVERHEAD


def _specs_size(specs: Sequence[tuple[str, str, str]]) -> int:
    """What the events of these specs (event_type, unit_id, payload_json)
    cost in memory, as _event_size counts it; raises TypeError for a spec
    that is not 3 strings. One pass, as it runs for every event recorded."""
    size = 0
    try:
        for a, b, c in specs:
            if not (isinstance(a, str) and isinstance(b, str) and isinstance(c, str)):
                break
            size += len(a) + len(b) + len(c)
        else:
            return size + _EVENT_OVERHEAD * len(specs)
    except (TypeError, ValueError):
        pass  # not three of something: say which below
    for spec in specs:
        if len(spec) != 3 or not all(isinstance(part, str) for part in spec):
            raise TypeError(f"event spec must be 3 strings, got {spec!r}")
    raise TypeError("event specs must be 3 strings each")


def _settled(unit: UnitState, job_status: str) -> UnitState:
    """A unit's state once its job has ended with job_status."""
    if unit.status == RUNNING:
        return dataclasses.replace(unit, status=FAILED if job_status == FAILED else CANCELLED)
    if unit.status == PENDING:
        return dataclasses.replace(unit, status=CANCELLED)
    return unit


class JobExists(Exception):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job already exists: {job_id}")
        self.job_id = job_id


class JobUnwanted(Exception):
    """create_job's caller gave up (still_wanted() said so) before the job
    was committed and published; no job was created."""


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
        "history",
        "history_size",
        "job",
        "job_id",
        "last_seq",
        "lock",
        "open_feeds",
        "terminal",
        "units",
        "waiters",
        "window",
        "window_base",
        "window_bytes",
    )

    def __init__(self, job: Job, units: Sequence[UnitState] = (), last_seq: int = 0,
                 history: int = DEFAULT_SUBSCRIPTION_HISTORY) -> None:
        self.job_id = job.job_id
        units_by_id = {u.unit_id: u for u in units}
        self.job = dataclasses.replace(job, units=tuple(units_by_id.values()))
        # An ended job's units no longer change: they are kept once, in job.
        self.units: dict[str, UnitState] = {} if is_terminal(job.status) else units_by_id
        self.lock = threading.Lock()
        self.last_seq = last_seq
        # window[i] is the event with sequence window_base + i; the events
        # below window_base are only in SQLite.
        self.window: list[Event] = []
        self.window_base = last_seq + 1
        self.window_bytes = 0  # _event_size of the window's events
        self.terminal = is_terminal(job.status)
        # Released subscriptions, newest last: (serial, from_sequence); made
        # at the first release, as most jobs of a long history have none.
        self.history: collections.deque[tuple[int, int]] | None = None
        self.history_size = history
        self.open_feeds: dict[_Feed, None] = {}  # open subscriptions, oldest first
        # Feeds to wake at the next change: every feed that has read (or
        # subscribed) since it was last woken. A feed that has not read
        # since its last wake already has a wake pending, so skipping it
        # misses nothing, and a stalled feed is woken at most once.
        self.waiters: set[_Feed] = set()

    def drop_window(self) -> None:
        self.window = []
        self.window_base = self.last_seq + 1
        self.window_bytes = 0


class _Feed:
    """A cursor over one job's events (implements jobs.EventFeed).

    Meant to be read by one thread at a time; recording, other feeds and
    wakes may run concurrently with it.
    """

    __slots__ = ("_cursor", "_open", "_st", "_store", "_wake", "from_sequence", "serial")

    def __init__(self, store: JobStore, st: _JobState, from_sequence: int, wake: Wake,
                 serial: int) -> None:
        self._store = store
        self._st = st
        self.from_sequence = from_sequence  # as requested, for subscriptions()
        self.serial = serial  # subscription order
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
        events = self._take(limit)
        if events == [] and self._open:
            # Caught up: every event recorded so far has been read, and the
            # feed is among the job's waiters; the watch waits for a wake next.
            self._store.checkpoints.reached(CAUGHT_UP)
        return events

    def _take(self, limit: int) -> Sequence[Event] | None:
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
        # Events recorded from here to the lock may move the window on: the
        # cursor moves by the page read, whatever the window did.
        self._store.checkpoints.reached(AFTER_HISTORY_READ)
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
        window_bytes: int = DEFAULT_WINDOW_BYTES,
        subscription_history: int = DEFAULT_SUBSCRIPTION_HISTORY,
        max_bytes: int | None = None,
        finished_cache: int = DEFAULT_FINISHED_CACHE,
        checkpoints: Checkpoints = NO_CHECKPOINTS,
    ) -> None:
        """max_bytes caps the database's size: writes past it fail as on a
        full disk. subscription_history: released subscriptions remembered per
        job (0: none). finished_cache: finished jobs kept whole once read.
        checkpoints: the points of a watch's hand-over where a test may act
        (checkpoints.py)."""
        if event_window < 1:
            raise ValueError("event_window must be at least 1")
        if window_bytes < 1:
            raise ValueError("window_bytes must be at least 1")
        if subscription_history < 0:
            raise ValueError("subscription_history must not be negative")
        if finished_cache < 1:
            raise ValueError("finished_cache must be at least 1")
        self._finished_cache = finished_cache
        self.checkpoints = checkpoints
        self._clock_ns = clock_ns
        self._event_window = event_window
        self._window_bytes = window_bytes
        self._history = subscription_history
        self._serials = itertools.count()
        self._write_lock = threading.Lock()
        self._jobs_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._open_count = 0
        self._closed = False
        self._unsaved: dict[str, Job] = {}  # ends kept in memory, not yet written
        self._log = SqliteLog(db_path, max_bytes=max_bytes)
        try:
            # No event is added for the interruption, so a replay after the
            # restart is exactly what watchers saw before it (W17).
            self._log.fail_unfinished(INTERRUPTED_ERROR, clock_ns())
            briefs = self._log.load()
        except BaseException:
            self._log.close()
            raise
        # Every job in creation order: a job not yet ended by its state, a
        # finished one by its summary. Every stored job has ended by now
        # (fail_unfinished).
        self._jobs: dict[str, _JobState | JobBrief] = {b.job_id: b for b in briefs}
        del briefs
        # The jobs not yet ended, in creation order: what Health counts and a
        # feature branch is looked up in, whatever the length of the history.
        self._active: dict[str, _JobState] = {}
        # Whole states of finished jobs, least recently asked for first.
        # _cache_lock guards it and the hand-over of a job that ends; it is
        # taken before a job's lock or _jobs_lock, never while one is held.
        self._cache_lock = threading.Lock()
        self._finished: collections.OrderedDict[str, _JobState] = collections.OrderedDict()

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
            self._write_unsaved()
            for job_id in self._unsaved:
                log.warning("job %s: its end (%s) could not be written before the database "
                            "was closed", job_id, self._unsaved[job_id].status)
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
        entry = self._jobs.get(job_id)
        if entry is None:
            raise JobNotFound(job_id)
        if type(entry) is _JobState:
            return entry
        return self._finished_state(job_id)

    def _finished_state(self, job_id: str) -> _JobState:
        """A finished job's whole state: kept, or read from the database."""
        with self._cache_lock:
            st = self._finished.get(job_id)
            if st is not None:
                self._finished.move_to_end(job_id)
                return st
        # Not under the lock: the read may wait on the disk. A job that ended
        # in this run and whose end is not written yet is always kept.
        stored = self._log.load_job(job_id)
        if stored is None:
            raise StorageError(f"job {job_id} is missing from the daemon's database")
        st = _JobState(stored.job, stored.units, stored.last_sequence, self._history)
        with self._cache_lock:
            kept = self._finished.setdefault(job_id, st)  # another call's read stands
            self._finished.move_to_end(job_id)
            self._evict()
        return kept

    def _evict(self) -> None:
        """Let go of the least recently asked-for finished jobs beyond the
        cache's size that nothing holds. Called with _cache_lock held."""
        excess = len(self._finished) - self._finished_cache
        if excess <= 0:
            return
        let_go = []
        for job_id, st in self._finished.items():
            if not (st.open_feeds or st.history or job_id in self._unsaved):
                let_go.append(job_id)
                if len(let_go) == excess:
                    break
        for job_id in let_go:
            del self._finished[job_id]
            self._log.forget(job_id)

    def _is_kept(self, st: _JobState) -> bool:
        """Whether st is the job's state that calls find. Called with
        _cache_lock held."""
        return self._jobs.get(st.job_id) is st or self._finished.get(st.job_id) is st

    def _states(self) -> list[_JobState]:
        """The jobs not yet ended and the finished ones kept whole."""
        with self._cache_lock:
            finished = list(self._finished.values())
        with self._jobs_lock:
            return list(self._active.values()) + finished

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
        units: Sequence[UnitState] = (),
        still_wanted: Callable[[], bool] | None = None,
    ) -> Job:
        """units are written with the job, in the same transaction.
        still_wanted is asked before the commit and again after it (a commit
        can take as long as the disk stalls): when it says no, the job is
        taken back before anyone could see it and JobUnwanted is raised."""
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
            self._write_unsaved()
            if still_wanted is not None and not still_wanted():
                raise JobUnwanted(job_id)
            self._log.insert_job(job, units)
            if still_wanted is not None and not still_wanted():
                try:
                    self._log.delete_job(job_id)
                except StorageError as error:
                    # Never published: a restart shows it as interrupted.
                    log.warning("job %s: its caller gave up, and it cannot be taken back "
                                "from the database: %s", job_id, error)
                raise JobUnwanted(job_id)
            state = _JobState(job, units, history=self._history)
            if state.terminal:  # created ended (the control service)
                with self._cache_lock, self._jobs_lock:
                    self._finished[job_id] = state
                    self._jobs[job_id] = JobBrief.of(state.job)
                    self._evict()
            else:
                with self._jobs_lock:
                    self._jobs[job_id] = state
                    self._active[job_id] = state
        return state.job

    def set_status(self, job_id: str, status: str, error: str = "", *,
                   keep_if_unsaved: bool = False) -> Job:
        """Change a job's status; a terminal one ends its units too (see the
        module's docstring). Raises StorageError when the change cannot be
        written, unless keep_if_unsaved: then a job's end is kept in memory
        and written as soon as a write succeeds."""
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
            units = dict(st.units)
            if terminal:
                units = {uid: _settled(u, status) for uid, u in units.items()}
            job = dataclasses.replace(
                old,
                status=status,
                error=error,
                started_at_ns=old.started_at_ns or (now if status == RUNNING else 0),
                completed_at_ns=now if terminal else 0,
                units=tuple(units.values()),
            )
            self._write_unsaved()
            try:
                if terminal:
                    self._log.end_job(job, job.units)
                else:
                    self._log.update_job(job)
            except StorageError as problem:
                if not (keep_if_unsaved and terminal):
                    raise
                self._unsaved[job_id] = job
                log.warning("job %s ended %s, which cannot be written yet: %s",
                            job_id, status, problem)
            with st.lock:
                st.units = units
                st.job = job
                if terminal:
                    st.terminal = True
                    with self._jobs_lock:
                        self._active.pop(job_id, None)
                    # Every open feed must learn that the end is now known,
                    # whether or not it has read since its last wake.
                    wakes = [f._wake for f in st.open_feeds if f._wake is not None]
                    st.waiters.clear()
                    if not st.open_feeds:
                        st.drop_window()
            if terminal:
                # Kept whole until the cache lets it go; its summary stays.
                with self._cache_lock, self._jobs_lock:
                    self._finished[job_id] = st
                    self._jobs[job_id] = JobBrief.of(job)
                    self._evict()
        _call_all(wakes)
        return job

    def update_unit(self, job_id: str, unit: UnitState) -> None:
        st = self._state(job_id)
        with self._write_lock:
            self._check_open()
            if st.terminal:
                raise JobTerminal(job_id, st.job.status)
            # The position only counts on first insertion; a replaced unit keeps its own.
            self._write_unsaved()
            self._log.upsert_unit(job_id, unit, len(st.units))
            with st.lock:
                st.units[unit.unit_id] = unit  # replacing keeps the dict position
                st.job = dataclasses.replace(st.job, units=tuple(st.units.values()))

    def get_job(self, job_id: str) -> Job:
        return self._state(job_id).job

    def list_jobs(self, statuses: Collection[str] = ()) -> list[Job]:
        """Jobs in any of `statuses` (all if empty), newest first, whole:
        each finished job not kept is read from the database."""
        if isinstance(statuses, str):
            statuses = (statuses,)
        return [self._whole(brief.job_id) for brief in self.iter_summaries(statuses)]

    def _whole(self, job_id: str) -> Job:
        """get_job without keeping what it read: a listing of every job
        leaves the cache as it was."""
        entry = self._jobs[job_id]
        if type(entry) is _JobState:
            return entry.job
        with self._cache_lock:
            st = self._finished.get(job_id)
        if st is not None:
            return st.job
        stored = self._log.load_job(job_id)
        if stored is None:
            raise StorageError(f"job {job_id} is missing from the daemon's database")
        return dataclasses.replace(stored.job, units=tuple(stored.units))

    def active_jobs(self) -> list[Job]:
        """The jobs not yet ended, oldest first."""
        with self._jobs_lock:
            return [st.job for st in self._active.values()]

    def active_count(self) -> int:
        return len(self._active)

    def iter_summaries(self, statuses: Collection[str] = ()) -> Iterator[JobBrief]:
        """The summaries of the jobs in any of `statuses` (all if empty),
        newest first, one at a time, for a caller that may stop early."""
        wanted = frozenset(statuses)
        for status in wanted:
            _check_status(status)
        entries: list[_JobState | JobBrief]
        with self._jobs_lock:
            if wanted and wanted <= _UNENDED:
                entries = list(self._active.values())
            else:
                entries = list(self._jobs.values())
        for entry in reversed(entries):
            brief = JobBrief.of(entry.job) if isinstance(entry, _JobState) else entry
            if not wanted or brief.status in wanted:
                yield brief

    def find_active(self, repo_path: str, feature_branch: str) -> Job | None:
        """The newest non-terminal job for (repo_path, feature_branch), if any."""
        with self._jobs_lock:
            active = list(self._active.values())
        for st in reversed(active):
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
        size = _specs_size(specs)
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
            self._write_unsaved()
            self._log.append(job_id, events)
            with st.lock:
                st.window.extend(events)
                st.window_bytes += size
                st.last_seq = events[-1].sequence
                if (len(st.window) >= 2 * self._event_window
                        or st.window_bytes >= 2 * self._window_bytes):
                    self._trim(st)
                wakes = [f._wake for f in st.waiters if f._wake is not None]
                st.waiters.clear()
        _call_all(wakes)
        return events

    def _trim(self, st: _JobState) -> None:
        """Keep the newest events, up to the window's number and bytes (at
        least one). Called with st.lock held."""
        cut, size = 0, st.window_bytes
        keep = len(st.window)
        while keep > 1 and (keep > self._event_window or size > self._window_bytes):
            size -= _event_size(st.window[cut])
            cut += 1
            keep -= 1
        del st.window[:cut]
        st.window_base += cut
        st.window_bytes = size

    def window_size(self, job_id: str) -> tuple[int, int]:
        """(events, bytes) of the job's events held in memory."""
        st = self._state(job_id)
        with st.lock:
            return len(st.window), st.window_bytes

    def _write_unsaved(self) -> None:
        """Write the job ends kept in memory, while the write lock is held."""
        for job_id, job in list(self._unsaved.items()):
            try:
                self._log.end_job(job, job.units)
            except StorageError:
                return  # still not possible; the caller's write will say why
            del self._unsaved[job_id]
            log.info("job %s: its end (%s) is written now", job_id, job.status)

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
        self.checkpoints.reached(BEFORE_SUBSCRIBE)
        while True:
            st = self._state(job_id)
            with self._cache_lock:
                # A finished job let go of meanwhile is read again: every
                # open feed of a job is in the one state ListSubscriptions reads.
                if not self._is_kept(st):
                    continue
                feed = _Feed(self, st, from_sequence, wake, next(self._serials))
                with st.lock:
                    if self._closed:
                        raise RuntimeError("job store is closed")
                    st.open_feeds[feed] = None
                    st.waiters.add(feed)
                    with self._count_lock:
                        self._open_count += 1
            self.checkpoints.reached(AFTER_SUBSCRIBE)
            return feed, functools.partial(self._release, feed)

    def _release(self, feed: _Feed) -> None:
        st = feed._st
        with st.lock:
            if not feed._open:
                return
            feed._open = False
            feed._wake = None  # drop whatever the watcher's callback holds
            st.open_feeds.pop(feed, None)
            st.waiters.discard(feed)
            if st.history_size:
                if st.history is None:
                    st.history = collections.deque(maxlen=st.history_size)
                st.history.append((feed.serial, feed.from_sequence))
            if st.terminal and not st.open_feeds:
                st.drop_window()  # nobody reads it live any more
            with self._count_lock:
                self._open_count -= 1

    def subscriptions(self, job_id: str) -> list[tuple[int, bool]]:
        """(from_sequence as requested, open) of the job's subscriptions,
        oldest first: every open one, and the newest released ones the
        history keeps."""
        st = self._state(job_id)
        with st.lock:
            entries = [(serial, from_sequence, False)
                       for serial, from_sequence in st.history or ()]
            entries += [(f.serial, f.from_sequence, True) for f in st.open_feeds]
        entries.sort()
        return [(from_sequence, is_open) for _, from_sequence, is_open in entries]

    # -- the daemon's runs and their commands' processes -------------------------

    def begin_run(self, token: str) -> None:
        """Record that a daemon run with this token uses the database."""
        self._log.begin_run(token)

    def forget_runs(self, tokens: Collection[str]) -> None:
        """Drop the records of these daemon runs and their processes."""
        self._log.forget_runs(tokens)

    def record_process(self, token: str, job_id: str, pid: int, start_ticks: int,
                       boot_id: str) -> None:
        """Record a command's process (the leader of its group) before it runs."""
        self._log.add_process(token, job_id, pid, start_ticks, boot_id)

    def forget_process(self, token: str, pid: int) -> None:
        self._log.remove_process(token, pid)

    def recorded_runs(self) -> tuple[list[str], list[tuple[str, str, int, int, str]]]:
        """The tokens of recorded daemon runs, and their recorded processes
        (token, job_id, pid, start_ticks, boot_id)."""
        return self._log.runs()

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
