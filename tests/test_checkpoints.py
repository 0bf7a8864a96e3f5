"""The reference's checkpoints: what the suite runs at a point of a watch's
hand-over runs once, in the watch's thread, and the daemon itself has none
(docs/ARCHITECTURE.md)."""

from __future__ import annotations

import threading

import pytest

from choo_reference import in_process
from choo_reference.checkpoints import (
    AFTER_HISTORY_READ,
    AFTER_SUBSCRIBE,
    BEFORE_SUBSCRIBE,
    CAUGHT_UP,
    NO_CHECKPOINTS,
    Checkpoints,
)
from choo_reference.job_store import JobStore


def test_an_action_runs_once_at_its_point_only():
    checkpoints = Checkpoints()
    ran: list[str] = []
    checkpoints.at(CAUGHT_UP, lambda: ran.append(threading.current_thread().name))
    checkpoints.reached(BEFORE_SUBSCRIBE)
    assert ran == []
    watch = threading.Thread(target=checkpoints.reached, args=(CAUGHT_UP,), name="watch")
    watch.start()
    watch.join()
    checkpoints.reached(CAUGHT_UP)
    assert ran == ["watch"]


def test_an_unknown_point_is_refused():
    with pytest.raises(ValueError, match="no checkpoint 'after-everything'"):
        Checkpoints().at("after-everything", lambda: None)


def test_the_daemon_runs_without_checkpoints(tmp_path):
    with JobStore(tmp_path / "d.db") as store:
        assert store.checkpoints is NO_CHECKPOINTS
    assert not NO_CHECKPOINTS.points  # the suite's examples are then not applicable
    with pytest.raises(RuntimeError):
        NO_CHECKPOINTS.at(CAUGHT_UP, lambda: None)


def test_a_watch_in_process_passes_every_point_in_order(tmp_path):
    instance = in_process.daemon(tmp_path)
    try:
        store = instance.store
        job = store.create_job(tasks_dir="t", target_branch="main", repo_path="/r").job_id
        for n in range(in_process.EVENT_WINDOW * 3):  # a history read from the database
            store.record(job, "e", "", f'{{"n": {n}}}')
        passed: list[str] = []
        for point in (BEFORE_SUBSCRIBE, AFTER_SUBSCRIBE, AFTER_HISTORY_READ, CAUGHT_UP):
            instance.checkpoints.at(point, lambda point=point: passed.append(point))
        feed, release = store.subscribe(job, 0, lambda: None)
        while feed.read(1000):
            pass
        release()
        assert passed == [BEFORE_SUBSCRIBE, AFTER_SUBSCRIBE, AFTER_HISTORY_READ, CAUGHT_UP]
    finally:
        instance.close()
