"""Unit tests of JobStore: jobs, units, the event log and its feeds (W9-W17)."""

from __future__ import annotations

import dataclasses
import itertools
import random
import sqlite3
import threading

import pytest

from choo_reference.job_store import (
    INTERRUPTED_ERROR,
    JobExists,
    JobStore,
    JobTerminal,
)
from choo_reference.jobs import Event, JobNotFound, UnitState

T0 = 1_700_000_000_000_000_000
DEADLINE_S = 10.0


class FakeClock:
    """Strictly increasing nanoseconds, so every timestamp is distinct."""

    def __init__(self, start: int = T0, step: int = 1_000) -> None:
        self._counter = itertools.count(start, step)
        self.last = start

    def __call__(self) -> int:
        self.last = next(self._counter)
        return self.last


class Waker:
    """A wake callback that counts calls and lets a test wait for one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.count = 0

    def __call__(self) -> None:
        with self._cond:
            self.count += 1
            self._cond.notify_all()

    def wait_beyond(self, seen: int, timeout: float = DEADLINE_S) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.count > seen, timeout)


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "daemon.db"


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def store(db_path, clock):
    s = JobStore(db_path, clock_ns=clock)
    yield s
    s.close()


def seqs(events):
    return [e.sequence for e in events]


def drain(feed, limit=100, waker: Waker | None = None):
    """Read a feed until it ends. Without a waker the job must already be
    terminal, so an empty read is an error; with one, an empty read waits for
    a wake and fails if none comes before the deadline."""
    out: list[Event] = []
    for _ in range(1_000_000):  # a bound, so a broken feed fails instead of hanging
        seen = waker.count if waker else 0
        batch = feed.read(limit)
        if batch is None:
            return out
        if not batch:
            assert waker is not None, "feed of a terminal job returned [] before None"
            assert waker.wait_beyond(seen), "no wake came while the feed had caught up"
        out.extend(batch)
    raise AssertionError("feed never ended")


def record_n(store, job_id, n):
    return [store.record(job_id, "task.started", f"u{i % 3}", f'{{"i": {i}}}') for i in range(n)]


# -- jobs ------------------------------------------------------------------


def test_create_job_generates_unique_ids(store):
    ids = {store.create_job().job_id for _ in range(50)}
    ids.add(store.create_job("").job_id)
    assert len(ids) == 51
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_create_job_fields_and_timestamps(store, clock):
    job = store.create_job(
        "j1",
        tasks_dir="/t",
        target_branch="main",
        feature_branch="feat",
        parallelism=3,
        repo_path="/r",
    )
    assert (job.job_id, job.status, job.tasks_dir, job.target_branch) == ("j1", "running", "/t", "main")
    assert (job.feature_branch, job.parallelism, job.repo_path, job.error) == ("feat", 3, "/r", "")
    assert job.created_at_ns == job.started_at_ns == clock.last
    assert job.completed_at_ns == 0 and job.units == ()
    assert store.get_job("j1") == job

    pending = store.create_job("p", "pending")
    assert pending.created_at_ns > 0 and pending.started_at_ns == 0 and pending.completed_at_ns == 0

    done = store.create_job("d", "completed")
    assert done.created_at_ns == done.started_at_ns == done.completed_at_ns == clock.last


def test_create_job_rejects_existing_id_and_unknown_status(store):
    store.create_job("j1")
    with pytest.raises(JobExists) as info:
        store.create_job("j1", "pending")
    assert info.value.job_id == "j1"
    with pytest.raises(ValueError, match="valid: pending, running"):
        store.create_job("j2", "paused")
    with pytest.raises(JobNotFound):
        store.get_job("j2")


def test_get_job_unknown(store):
    with pytest.raises(JobNotFound) as info:
        store.get_job("nope")
    assert info.value.job_id == "nope"


def test_set_status_transitions(store, clock):
    store.create_job("j", "pending")
    running = store.set_status("j", "running")
    assert running.status == "running" and running.started_at_ns == clock.last
    started = running.started_at_ns
    failed = store.set_status("j", "failed", "unit a failed")
    assert failed.status == "failed" and failed.error == "unit a failed"
    assert failed.started_at_ns == started and failed.completed_at_ns == clock.last
    assert store.get_job("j") == failed


def test_set_status_on_terminal_job_raises(store):
    store.create_job("j")
    store.set_status("j", "cancelled")
    for status in ("running", "completed", "cancelled"):
        with pytest.raises(JobTerminal) as info:
            store.set_status("j", status)
        assert (info.value.job_id, info.value.status) == ("j", "cancelled")
    assert store.get_job("j").status == "cancelled"


def test_set_status_unknown_status_or_job(store):
    store.create_job("j")
    with pytest.raises(ValueError):
        store.set_status("j", "done")
    with pytest.raises(JobNotFound):
        store.set_status("x", "completed")
    assert store.get_job("j").status == "running"


def test_update_unit_keeps_first_insertion_order(store):
    store.create_job("j")
    store.update_unit("j", UnitState("b", "pending", 0, 2))
    store.update_unit("j", UnitState("a", "pending", 0, 1))
    store.update_unit("j", UnitState("b", "running", 1, 2, 7))
    units = store.get_job("j").units
    assert units == (UnitState("b", "running", 1, 2, 7), UnitState("a", "pending", 0, 1))
    with pytest.raises(JobNotFound):
        store.update_unit("x", UnitState("a"))
    store.set_status("j", "cancelled")
    # The job's end ends its units too, in their places.
    ended = (UnitState("b", "cancelled", 1, 2, 7), UnitState("a", "cancelled", 0, 1))
    assert store.get_job("j").units == ended
    with pytest.raises(JobTerminal):
        store.update_unit("j", UnitState("a", "completed", 1, 1))
    assert store.get_job("j").units == ended


def test_list_jobs_newest_first_with_filter(store):
    store.create_job("a")
    store.create_job("b", "pending")
    store.create_job("c")
    store.set_status("c", "completed")
    store.create_job("d", "failed")
    assert [j.job_id for j in store.list_jobs()] == ["d", "c", "b", "a"]
    assert [j.job_id for j in store.list_jobs(["running"])] == ["a"]
    assert [j.job_id for j in store.list_jobs(("completed", "pending"))] == ["c", "b"]
    assert [j.job_id for j in store.list_jobs({"cancelled"})] == []
    with pytest.raises(ValueError, match="valid"):
        store.list_jobs(["running", "bogus"])


def test_find_active(store):
    store.create_job("old", repo_path="/r", feature_branch="f")
    store.set_status("old", "completed")
    assert store.find_active("/r", "f") is None
    store.create_job("other", repo_path="/r", feature_branch="g")
    store.create_job("new", "pending", repo_path="/r", feature_branch="f")
    assert store.find_active("/r", "f").job_id == "new"
    assert store.find_active("/other", "f") is None
    store.set_status("new", "running")
    assert store.find_active("/r", "f").job_id == "new"
    store.set_status("new", "cancelled")
    assert store.find_active("/r", "f") is None


# -- recording -------------------------------------------------------------


def test_record_assigns_contiguous_sequences_and_clock_timestamps(store, clock):
    store.create_job("j")
    store.create_job("k")
    e1 = store.record("j", "orch.started")
    assert e1 == Event(1, "orch.started", "", "{}", clock.last)
    e2 = store.record("j", "unit.started", "u1", '{"x": 1}')
    assert e2 == Event(2, "unit.started", "u1", '{"x": 1}', clock.last)
    # Sequences are per job.
    assert store.record("k", "orch.started").sequence == 1
    batch = store.record_many("j", [("task.started", "u1", "{}"), ("task.completed", "u1", '{"n":1}')])
    assert seqs(batch) == [3, 4]
    assert batch[0].timestamp_ns < batch[1].timestamp_ns == clock.last
    assert store.events("j") == [e1, e2, *batch]
    assert store.record_many("j", []) == []
    assert seqs(store.events("j")) == [1, 2, 3, 4]


def test_record_is_committed_when_it_returns(store, db_path):
    store.create_job("j")
    other = sqlite3.connect(db_path)
    try:
        for n in range(1, 6):
            store.record("j", "tick")
            assert other.execute("SELECT COUNT(*) FROM events").fetchone()[0] == n
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        other.close()


def test_record_many_is_all_or_nothing(store):
    store.create_job("j")
    record_n(store, "j", 3)
    with pytest.raises(TypeError):
        store.record_many("j", [("a", "", "{}"), ("b", "", 5)])
    # A lone surrogate cannot be stored: the failure comes from SQLite in
    # the middle of the batch, and the first two rows must go with it.
    with pytest.raises(UnicodeEncodeError):
        store.record_many("j", [("a", "", "{}"), ("b", "", "{}"), ("c", "", "\ud800")])
    assert seqs(store.events("j")) == [1, 2, 3]
    assert store.record("j", "after").sequence == 4  # no sequence was used up


@pytest.mark.parametrize("count", [1, 127, 128, 129, 300, 1000])
def test_a_batch_of_any_size_is_stored_whole_and_in_order(db_path, count):
    store = JobStore(db_path, clock_ns=FakeClock())
    store.create_job("j")
    recorded = store.record_many(
        "j", [(f"type{i}", f"u{i % 7}", f'{{"i": {i}}}') for i in range(count)])
    store.close()
    reopened = JobStore(db_path)  # every event now comes from the file
    try:
        assert reopened.events("j") == recorded
    finally:
        reopened.close()


def test_a_large_batch_is_written_in_a_few_statements(store):
    # Each statement SQLite runs lets go of the GIL, and on the daemon the
    # event loop takes it and hands it back: a statement per row made every
    # recorded event cost such a hand-off (docs/PERFORMANCE.md).
    store.create_job("j")
    statements: list[str] = []
    store._log._writer.set_trace_callback(statements.append)
    try:
        store.record_many("j", [("t", "", "{}")] * 1000)
    finally:
        store._log._writer.set_trace_callback(None)
    assert len(statements) <= 12, f"{len(statements)} statements for 1000 events"


def test_a_failure_late_in_a_large_batch_takes_the_whole_batch_back(store):
    store.create_job("j")
    specs = [("t", "", "{}")] * 290 + [("t", "", "\ud800")]  # SQLite refuses the last
    with pytest.raises(UnicodeEncodeError):
        store.record_many("j", specs)
    assert store.events("j") == []
    assert store.record("j", "after").sequence == 1


def test_record_on_terminal_or_unknown_job(store):
    store.create_job("j")
    store.record("j", "a")
    store.set_status("j", "completed")
    with pytest.raises(JobTerminal) as info:
        store.record("j", "b")
    assert info.value.status == "completed"
    with pytest.raises(JobTerminal):
        store.record_many("j", [("b", "", "{}")])
    with pytest.raises(JobNotFound):
        store.record("nope", "a")
    assert seqs(store.events("j")) == [1]


def test_concurrent_recorders_get_contiguous_sequences(store):
    store.create_job("shared")
    for k in range(3):
        store.create_job(f"own{k}")
    results: dict[int, list[int]] = {}

    def work(k: int) -> None:
        got = []
        for i in range(300):
            if i % 5 == 0:
                got += seqs(store.record_many("shared", [("b", str(k), "{}")] * 3))
            else:
                got.append(store.record("shared", "s", str(k)).sequence)
            store.record(f"own{k % 3}", "o")
        results[k] = got

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE_S)
        assert not t.is_alive()
    events = store.events("shared")
    per_thread = 60 * 3 + 240  # every fifth step is a batch of three
    assert seqs(events) == list(range(1, 4 * per_thread + 1))
    for k, got in results.items():
        assert got == sorted(got)
        assert got == [e.sequence for e in events if e.unit_id == str(k)]
    own = [seqs(store.events(f"own{k}")) for k in range(3)]
    assert [len(o) for o in own] == [600, 300, 300]
    assert all(o == list(range(1, len(o) + 1)) for o in own)


def test_events_from_sequence(store):
    store.create_job("j")
    all_events = record_n(store, "j", 5)
    assert store.events("j", 0) == all_events
    assert store.events("j", 1) == all_events
    assert store.events("j", 3) == all_events[2:]
    assert store.events("j", 5) == all_events[4:]
    assert store.events("j", 6) == []
    with pytest.raises(ValueError):
        store.events("j", -1)
    with pytest.raises(JobNotFound):
        store.events("nope")


# -- feeds -----------------------------------------------------------------


@pytest.mark.parametrize(
    "from_sequence, expected",
    [(0, [1, 2, 3, 4, 5]), (1, [1, 2, 3, 4, 5]), (3, [3, 4, 5]), (5, [5]), (6, []), (99, [])],
)
@pytest.mark.parametrize("window", [2, 1000])
def test_terminal_job_replays_from_sequence_then_ends(db_path, clock, from_sequence, expected, window):
    with JobStore(db_path, clock_ns=clock, event_window=window) as store:
        store.create_job("j")
        recorded = record_n(store, "j", 5)
        store.set_status("j", "completed")
        feed, _ = store.subscribe("j", from_sequence, Waker())
        got = drain(feed, limit=2)
        assert got == [e for e in recorded if e.sequence in expected]
        assert feed.read(10) is None  # and it stays ended


def test_empty_terminal_job_ends_at_once(store):
    store.create_job("j", "cancelled")
    feed, _ = store.subscribe("j", 0, Waker())
    assert feed.read(1) is None


def test_read_respects_limit(store):
    store.create_job("j")
    record_n(store, "j", 10)
    feed, _ = store.subscribe("j", 2, Waker())
    assert seqs(feed.read(3)) == [2, 3, 4]
    assert seqs(feed.read(1)) == [5]
    assert seqs(feed.read(100)) == [6, 7, 8, 9, 10]
    assert feed.read(100) == []
    with pytest.raises(ValueError):
        feed.read(0)


def test_live_feed_catches_up_then_is_woken_for_new_events(store):
    store.create_job("j")
    history = record_n(store, "j", 3)
    waker = Waker()
    feed, _ = store.subscribe("j", 2, waker)
    assert feed.read(100) == history[1:]
    assert feed.read(100) == []

    seen = waker.count
    e4 = store.record("j", "unit.completed", "u1")
    assert waker.count > seen
    assert feed.read(100) == [e4]
    assert feed.read(100) == []

    seen = waker.count
    batch = store.record_many("j", [("a", "", "{}"), ("b", "", "{}")])
    assert waker.count > seen
    assert feed.read(1) == batch[:1]
    assert feed.read(1) == batch[1:]

    # The end of the job wakes the feed too, and read then says it is over.
    assert feed.read(1) == []
    seen = waker.count
    store.set_status("j", "completed")
    assert waker.count > seen
    assert feed.read(100) is None


def test_feed_past_the_end_of_running_job_waits_for_that_sequence(store):
    store.create_job("j")
    record_n(store, "j", 2)
    waker = Waker()
    feed, _ = store.subscribe("j", 5, waker)
    assert feed.read(10) == []
    record_n(store, "j", 2)  # 3, 4: before the start
    assert feed.read(10) == []
    e5 = store.record("j", "x")
    assert feed.read(10) == [e5]
    store.set_status("j", "failed", "boom")
    assert feed.read(10) is None


def test_terminal_wake_reaches_feeds_that_have_not_read(store):
    store.create_job("j")
    record_n(store, "j", 3)
    wakers = [Waker() for _ in range(3)]
    feeds = [store.subscribe("j", 1, w)[0] for w in wakers]
    feeds[0].read(1)  # behind
    feeds[1].read(10)  # caught up
    counts = [w.count for w in wakers]
    store.set_status("j", "completed")
    assert all(w.count > c for w, c in zip(wakers, counts))
    assert [seqs(drain(f)) for f in feeds] == [[2, 3], [], [1, 2, 3]]


def test_wake_is_called_outside_the_stores_locks(store):
    """A wake that reads its feed and queries the store must not deadlock."""
    store.create_job("j")
    got: list = []
    holder: dict = {}

    def wake() -> None:
        feed = holder.get("feed")
        if feed is not None:
            got.append(feed.read(10))
            got.append(store.get_job("j").status)
            got.append(store.subscriptions("j"))

    holder["feed"], _ = store.subscribe("j", 1, wake)
    t = threading.Thread(target=lambda: (store.record("j", "a"), store.set_status("j", "completed")))
    t.start()
    t.join(DEADLINE_S)
    assert not t.is_alive(), "record() or set_status() deadlocked in the wake callback"
    assert seqs(got[0]) == [1] and got[1] == "running"
    assert got[3] is None and got[4] == "completed"


def test_failing_wake_does_not_break_recording_or_other_feeds(store):
    store.create_job("j")

    def bad_wake() -> None:
        raise RuntimeError("watcher is broken")

    store.subscribe("j", 1, bad_wake)
    good = Waker()
    feed, _ = store.subscribe("j", 1, good)
    assert store.record("j", "a").sequence == 1
    assert good.count == 1
    assert seqs(feed.read(10)) == [1]


def test_subscribe_unknown_job_or_bad_arguments(store):
    with pytest.raises(JobNotFound):
        store.subscribe("nope", 0, Waker())
    store.create_job("j")
    with pytest.raises(ValueError):
        store.subscribe("j", -1, Waker())
    with pytest.raises(TypeError):
        store.subscribe("j", 0, None)
    assert store.subscriptions("j") == []
    assert store.open_subscription_count() == 0


def test_unsubscribe_is_idempotent_and_stops_the_feed(store):
    store.create_job("j")
    store.create_job("k")
    record_n(store, "j", 3)
    w1, w2 = Waker(), Waker()
    f1, unsub1 = store.subscribe("j", 0, w1)
    f2, unsub2 = store.subscribe("j", 2, w2)
    _, unsub3 = store.subscribe("k", 7, Waker())
    assert store.subscriptions("j") == [(0, True), (2, True)]
    assert store.subscriptions("k") == [(7, True)]
    assert store.open_subscription_count() == 3

    assert seqs(f1.read(1)) == [1]
    unsub1()
    unsub1()
    assert store.subscriptions("j") == [(0, False), (2, True)]
    assert store.open_subscription_count() == 2
    assert f1.read(10) == []  # reads nothing, even with events unread

    seen = w1.count
    store.record("j", "a")
    store.set_status("j", "completed")
    assert w1.count == seen  # a released feed is no longer woken
    assert f1.read(10) == []
    assert seqs(drain(f2)) == [2, 3, 4]

    unsub2()
    unsub3()
    unsub3()
    assert store.subscriptions("j") == [(0, False), (2, False)]
    assert store.open_subscription_count() == 0
    # A released feed stays listed; a new one is appended after it.
    store.subscribe("j", 4, Waker())
    assert store.subscriptions("j") == [(0, False), (2, False), (4, True)]
    assert store.open_subscription_count() == 1


def test_subscriptions_of_unknown_job(store):
    with pytest.raises(JobNotFound):
        store.subscriptions("nope")


def test_many_feeds_see_the_identical_sequence(store):
    """W16 with live readers: each thread reads its own feed as events come."""
    store.create_job("j")
    record_n(store, "j", 50)
    n_feeds = 20
    results: list = [None] * n_feeds
    errors: list = []
    ready = threading.Barrier(n_feeds + 1)

    def reader(k: int) -> None:
        try:
            waker = Waker()
            feed, unsub = store.subscribe("j", 0, waker)
            ready.wait(DEADLINE_S)
            results[k] = drain(feed, limit=1 + k * 7, waker=waker)
            unsub()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(n_feeds)]
    for t in threads:
        t.start()
    ready.wait(DEADLINE_S)
    for i in range(300):
        if i % 3:
            store.record("j", "t", "", str(i))
        else:
            store.record_many("j", [("b", "", str(i))] * 4)
    store.set_status("j", "completed")
    for t in threads:
        t.join(DEADLINE_S)
        assert not t.is_alive()
    assert errors == []
    expected = store.events("j")
    assert len(expected) == 50 + 200 + 400
    assert all(r == expected for r in results)
    assert store.open_subscription_count() == 0


def test_handover_race_gives_each_feed_its_contiguous_run(store):
    """W13: subscribing, reading and recording race; every feed still gets
    exactly the run from its start to the last event."""
    store.create_job("j")
    rng = random.Random(20240613)
    n_events = 4000
    progress = threading.Condition()
    last = [0]

    def recorder() -> None:
        rng = random.Random(7)
        i = 0
        while i < n_events:
            k = min(rng.choice((1, 1, 1, 5)), n_events - i)
            seq = store.record_many("j", [("t", "", str(i + m)) for m in range(k)])[-1].sequence
            with progress:
                last[0] = seq
                progress.notify_all()
            i += k

    feeds = []
    t = threading.Thread(target=recorder)
    t.start()
    target = 0
    while target < n_events:
        # Subscribe every few events (at a random point of a record in
        # flight), not in a tight loop that would starve the recorder.
        target = min(target + rng.randint(1, 40), n_events)
        with progress:
            assert progress.wait_for(lambda: last[0] >= target, DEADLINE_S)
            now = last[0]
        start = rng.choice((0, 1, now, now + 1, now + 2, rng.randint(0, now + 3)))
        feed, _ = store.subscribe("j", start, Waker())
        got = list(feed.read(rng.randint(1, 40)) or ())
        feeds.append((start, feed, got))
        # Interleave partial reads of older feeds with the recording.
        for _, f, g in rng.sample(feeds, min(len(feeds), 5)):
            g.extend(f.read(rng.randint(1, 40)) or ())
    t.join(DEADLINE_S)
    assert not t.is_alive()
    store.set_status("j", "completed")
    expected = store.events("j")
    assert seqs(expected) == list(range(1, n_events + 1))
    mid_run = [s for s, _, _ in feeds if 1 < s < n_events]
    assert len(mid_run) > 20, "too few subscriptions landed in the middle of the recording"
    for start, feed, got in feeds:
        got.extend(drain(feed, limit=rng.randint(1, 500)))
        assert got == expected[max(start, 1) - 1 :], f"feed from {start}"


@pytest.mark.parametrize("window", [100, 65536])
def test_stalled_feed_blocks_nothing_and_later_reads_everything(db_path, clock, window):
    """W15: a feed that never reads does not slow recording or other feeds,
    is woken at most once, and later reads the whole log from its cursor."""
    with JobStore(db_path, clock_ns=clock, event_window=window) as store:
        store.create_job("j")
        stalled_wake = Waker()
        stalled, _ = store.subscribe("j", 1, stalled_wake)
        live_wake = Waker()
        live, _ = store.subscribe("j", 1, live_wake)
        live_got: list = []
        live_errors: list = []

        def live_reader() -> None:
            try:
                live_got.extend(drain(live, limit=256, waker=live_wake))
            except BaseException as exc:
                live_errors.append(exc)

        t = threading.Thread(target=live_reader)
        t.start()
        n = 10_000
        for i in range(0, n, 2):
            store.record("j", "a", "", str(i))
            store.record_many("j", [("b", "", str(i + 1))])
        # What the stalled feed costs does not grow with its backlog.
        assert stalled.cursor == 1
        assert stalled_wake.count <= 1
        assert not hasattr(stalled, "__dict__")
        assert len(store._jobs["j"].window) < 2 * window
        store.set_status("j", "completed")
        t.join(DEADLINE_S)
        assert not t.is_alive() and live_errors == []
        expected = store.events("j")
        assert len(expected) == n
        assert live_got == expected
        assert drain(stalled, limit=999) == expected


# -- persistence -------------------------------------------------------------


def test_reopen_returns_identical_events_and_fails_unfinished_jobs(db_path):
    clock = FakeClock()
    store = JobStore(db_path, clock_ns=clock, event_window=3)
    store.create_job("run", repo_path="/r", feature_branch="f", tasks_dir="/t", parallelism=2)
    store.update_unit("run", UnitState("u2", "running", 1, 3))
    store.update_unit("run", UnitState("u1", "completed", 2, 2, 12))
    store.create_job("pend", "pending")
    store.create_job("done")
    store.create_job("bad")
    run_events = record_n(store, "run", 10) + store.record_many(
        "run", [("x", "u1", '{"a": "\u00e9\\n"}'), ("y", "", "")]
    )
    done_events = record_n(store, "done", 4)
    store.set_status("done", "completed")
    store.set_status("bad", "failed", "unit u9 failed")
    before = {j.job_id: j for j in store.list_jobs()}
    order = [j.job_id for j in store.list_jobs()]
    store.close()
    store.close()  # idempotent

    later = FakeClock(start=T0 + 10**12)
    with JobStore(db_path, clock_ns=later) as again:
        failed_at = later.last
        assert [j.job_id for j in again.list_jobs()] == order
        assert again.events("run") == run_events
        assert again.events("done") == done_events
        assert again.events("pend") == []
        for job_id in ("run", "pend"):
            job = again.get_job(job_id)
            assert job.status == "failed" and job.error == INTERRUPTED_ERROR
            assert job.completed_at_ns == failed_at
            assert job.started_at_ns == before[job_id].started_at_ns
            assert job == dataclasses.replace(
                before[job_id], status="failed", error=INTERRUPTED_ERROR,
                completed_at_ns=failed_at, units=job.units,
            )
        assert again.get_job("done") == before["done"]
        assert again.get_job("bad") == before["bad"]
        # The unit that was running failed with its job; a finished one stays as it was.
        assert again.get_job("run").units == (
            UnitState("u2", "failed", 1, 3),
            UnitState("u1", "completed", 2, 2, 12),
        )
        assert again.find_active("/r", "f") is None
        assert again.list_jobs(["running", "pending"]) == []
        # Replay after the restart: the same events, then the end.
        feed, _ = again.subscribe("run", 0, Waker())
        assert drain(feed, limit=4) == run_events
        with pytest.raises(JobTerminal):
            again.record("run", "late")
        # New jobs continue after the old ones and are newest.
        again.create_job("new")
        assert again.list_jobs()[0].job_id == "new"
        assert again.record("new", "a").sequence == 1
        with pytest.raises(JobExists):
            again.create_job("run")

    with JobStore(db_path) as third:
        # A job failed by the previous open stays as it was.
        assert third.get_job("run").completed_at_ns == failed_at
        assert third.events("new")[0].sequence == 1
        assert third.get_job("new").error == INTERRUPTED_ERROR


def test_closed_store_refuses_changes_and_releases_feeds(db_path):
    store = JobStore(db_path)
    store.create_job("j")
    store.record("j", "a")
    feed, unsub = store.subscribe("j", 0, Waker())
    store.close()
    assert store.open_subscription_count() == 0
    assert feed.read(10) == []
    unsub()
    with pytest.raises(RuntimeError):
        store.record("j", "b")
    with pytest.raises(RuntimeError):
        store.create_job("k")
    with pytest.raises(RuntimeError):
        store.subscribe("j", 0, Waker())
    assert store.get_job("j").status == "running"


def test_window_trimming_keeps_recent_events_readable(db_path):
    with JobStore(db_path, event_window=4) as store:
        store.create_job("j")
        early, _ = store.subscribe("j", 0, Waker())
        recorded = record_n(store, "j", 37)
        # Reads cross from the SQLite pages into the memory window.
        got = []
        while batch := early.read(3):
            got.extend(batch)
        assert got == recorded
        assert store.events("j", 20) == recorded[19:]
        late, _ = store.subscribe("j", 30, Waker())
        got = []
        while batch := late.read(100):
            got.extend(batch)
        assert got == recorded[29:]


def test_feeds_that_do_not_read_are_woken_once(store):
    """Feeds that read are woken at the next record; feeds that stopped
    reading are not woken again, so idle watchers cost record() one pass, not
    one per event."""
    store.create_job("j")
    wakers = [Waker() for _ in range(500)]
    feeds = [store.subscribe("j", 1, w)[0] for w in wakers]
    record_n(store, "j", 200)
    assert all(w.count == 1 for w in wakers)
    feeds[0].read(10)
    store.record("j", "again")
    assert wakers[0].count == 2 and all(w.count == 1 for w in wakers[1:])


# -- finished jobs: a summary in memory, the rest read when asked for ----------


def test_finished_jobs_let_go_are_read_back_whole(db_path, clock):
    with JobStore(db_path, clock_ns=clock, finished_cache=1) as store:
        store.create_job("a", repo_path="/r", feature_branch="fa", tasks_dir="/t", parallelism=2)
        store.update_unit("a", UnitState("u1", "completed", 2, 2, 7))
        store.update_unit("a", UnitState("u2", "running", 1, 3))
        a_events = record_n(store, "a", 5)
        a_end = store.set_status("a", "failed", "unit u2 failed")
        store.create_job("b", "completed")  # created ended: b is kept, a let go
        assert store.get_job("a") == a_end  # read back from the database
        assert store.events("a") == a_events
        assert drain(store.subscribe("a", 3, Waker())[0]) == a_events[2:]
        with pytest.raises(JobTerminal):
            store.record("a", "late")
        with pytest.raises(JobTerminal):
            store.update_unit("a", UnitState("u1"))
        with pytest.raises(JobTerminal):
            store.set_status("a", "completed")
        (brief_b, brief_a) = store.iter_summaries()
        assert (brief_a.job_id, brief_a.status, brief_a.feature_branch) == ("a", "failed", "fa")
        assert (brief_a.started_at_ns, brief_a.units_complete, brief_a.units_total) == (
            a_end.started_at_ns, 1, 2)
        assert brief_b.job_id == "b"
        assert [j.job_id for j in store.list_jobs(["failed"])] == ["a"]
        assert store.list_jobs(["failed"])[0] == a_end


def test_a_finished_job_watched_or_unwritten_is_kept_whole(db_path, clock):
    with JobStore(db_path, clock_ns=clock, finished_cache=1) as store:
        store.create_job("watched")
        record_n(store, "watched", 3)
        feed, release = store.subscribe("watched", 0, Waker())
        store.set_status("watched", "completed")
        for i in range(5):  # asked for after it: each would let it go
            store.create_job(f"other{i}", "cancelled")
            store.get_job(f"other{i}")
        # Its open feed and its subscription history are in the one state.
        assert store.subscriptions("watched") == [(0, True)]
        assert len(drain(feed)) == 3
        release()
        store.create_job("later", "cancelled")
        assert store.subscriptions("watched") == [(0, False)]  # the history keeps it


def test_a_finished_job_with_its_end_unwritten_is_not_read_back(db_path, clock, monkeypatch):
    from choo_reference.jobs import StorageError

    with JobStore(db_path, clock_ns=clock, finished_cache=1,
                  subscription_history=0) as store:
        store.create_job("j")

        def full(*args, **kwargs):
            raise StorageError("the disk is full", full=True)

        monkeypatch.setattr(store._log, "end_job", full)
        store.set_status("j", "failed", "boom", keep_if_unsaved=True)
        for i in range(3):
            store.create_job(f"other{i}", "cancelled")
        # The database still says running: the end kept in memory is what counts.
        assert store.get_job("j").status == "failed"
        monkeypatch.undo()
        store.create_job("next", "cancelled")  # the end is written now
        for i in range(3):
            store.get_job(f"other{i}")
        assert store.get_job("j").status == "failed"
        assert store.get_job("j").error == "boom"
