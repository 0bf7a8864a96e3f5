"""Chaos: memory over a long life. A running job's in-memory window of
events is bounded in bytes as well as events; the messages built once for
all watchers too; the subscription history is bounded, and kept only where
the control service can list it; a finished job costs a summary
(docs/OPERATIONS.md, "Limits")."""

from __future__ import annotations

import tracemalloc

from choo_reference.convert import event_to_proto
from choo_reference.job_store import JobStore
from choo_reference.jobs import Event

BIG = 100 * 1024  # bytes of payload per event
EVENTS = 300  # 30 MB of payloads in all
BOUND = 20 * 1024 * 1024


def _growth(run) -> int:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        keep = run()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del keep
    return after - before


def test_a_running_job_keeps_a_bounded_number_of_bytes_in_memory(tmp_path):
    with JobStore(tmp_path / "d.db") as store:
        job = store.create_job("big").job_id

        def record():
            for i in range(EVENTS):
                store.record(job, "e", "", f'"{i:06d}' + "x" * BIG + '"')

        assert _growth(record) < BOUND
        events, size = store.window_size(job)
        assert events >= 1 and size <= BOUND
        # Everything is still there, read from the database.
        assert [e.sequence for e in store.events(job)] == list(range(1, EVENTS + 1))


def test_the_messages_shared_by_watchers_are_bounded_in_bytes():
    payload = "x" * BIG

    def build():
        for i in range(EVENTS):
            event_to_proto(Event(i + 1, "e", "", f'"{payload}{i}"', i))

    assert _growth(build) < BOUND


def test_the_subscription_history_is_bounded(tmp_path):
    with JobStore(tmp_path / "d.db") as store:
        job = store.create_job("watched").job_id
        for _ in range(3000):
            _, unsubscribe = store.subscribe(job, 1, lambda: None)
            unsubscribe()
        _, still_open = store.subscribe(job, 7, lambda: None)
        history = store.subscriptions(job)
        assert len(history) <= 1025
        assert history[-1] == (7, True)  # the newest is always there
        still_open()


def test_without_the_control_service_no_subscription_history_is_kept(tmp_path):
    with JobStore(tmp_path / "d.db", subscription_history=0) as store:
        job = store.create_job("watched").job_id
        for _ in range(100):
            _, unsubscribe = store.subscribe(job, 1, lambda: None)
            unsubscribe()
        _, still_open = store.subscribe(job, 3, lambda: None)
        assert store.subscriptions(job) == [(3, True)]
        assert store.open_subscription_count() == 1
        still_open()
        assert store.subscriptions(job) == []


def write_history(db, jobs: int, units: int = 2, events: int = 3) -> None:
    """A database holding `jobs` finished jobs, written at once."""
    import sqlite3

    from choo_reference.sqlite_log import _SCHEMA, SCHEMA_VERSION

    conn = sqlite3.connect(db)
    conn.executescript(_SCHEMA)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    with conn:
        conn.executemany(
            "INSERT INTO jobs VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            [(i, f"old-{i:06d}", "completed", "/t", "main", f"f{i}", 1, "/r", "", i, i, i + 1)
             for i in range(1, jobs + 1)])
        conn.executemany(
            "INSERT INTO units VALUES (?,?,?,?,?,?,?)",
            [(i, f"u{u}", u, "completed", 1, 1, 0)
             for i in range(1, jobs + 1) for u in range(units)])
        conn.executemany(
            "INSERT INTO events VALUES (?,?,?,?,?,?)",
            [(i, s, "e", "", "{}", s) for i in range(1, jobs + 1) for s in range(1, events + 1)])
    conn.close()


def test_health_and_a_feature_branch_look_up_never_walk_the_finished_jobs(tmp_path, monkeypatch):
    from choo_reference.orchestrator import Orchestrator

    write_history(tmp_path / "d.db", 300)
    with JobStore(tmp_path / "d.db") as store:
        running = store.create_job(None, "running", repo_path="/r", feature_branch="feat")

        def walked(*args, **kwargs):
            raise AssertionError("walked every job")

        monkeypatch.setattr(JobStore, "_states", walked)
        monkeypatch.setattr(JobStore, "list_jobs", walked)
        assert Orchestrator(store).active_count() == 1
        assert store.find_active("/r", "feat") == store.get_job(running.job_id)
        assert store.find_active("/r", "f7") is None  # finished: not active
        assert store.get_job("old-000007").status == "completed"
        monkeypatch.undo()  # closing the store does walk them


def test_a_finished_job_costs_a_small_summary_in_memory(tmp_path):
    jobs = 3000
    write_history(tmp_path / "d.db", jobs)
    stores = []
    per_job = _growth(lambda: stores.append(JobStore(tmp_path / "d.db"))) / jobs
    store = stores[0]
    try:
        # What ListJobs shows of it: 260 bytes measured (2.5 KB two rounds
        # before, 1.2 KB with every job's whole state kept).
        assert per_job < 320, per_job
        assert store.get_job("old-000007").units[1].unit_id == "u1"
        assert [e.sequence for e in store.events("old-000007")] == [1, 2, 3]

        def ask_for_each():
            for i in range(1, jobs + 1):
                store.get_job(f"old-{i:06d}")

        # Read whole when asked for, and only a few recent ones kept so
        # (34 bytes a job measured: 64 whole jobs over 3000).
        assert _growth(ask_for_each) / jobs < 100
    finally:
        store.close()
