"""W17 against a real crash: a child process records events and is killed
with SIGKILL; everything it was told is recorded must be there after reopening."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from reference_server.job_store import INTERRUPTED_ERROR, JobStore

CHILD = Path(__file__).with_name("crash_child.py")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEADLINE_S = 20.0
BATCH = 7  # crash_child.BATCH


class LineReader:
    """Collects a pipe's lines on a thread, so the test can wait for a count
    with a deadline instead of blocking in readline()."""

    def __init__(self, pipe) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, args=(pipe,), daemon=True)
        self._thread.start()

    def _run(self, pipe) -> None:
        for line in pipe:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_for_lines(self, n: int) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.lines) >= n, DEADLINE_S)

    def join(self) -> None:
        # The pipe reaches EOF once the child is dead; whatever it wrote
        # before dying is still read.
        self._thread.join(DEADLINE_S)
        assert not self._thread.is_alive()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["single", "batch"])
def test_events_survive_sigkill(tmp_path, mode):
    db_path = tmp_path / "daemon.db"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p
    ))
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(db_path), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=PROJECT_ROOT,
    )
    try:
        reader = LineReader(child.stdout)
        ok = reader.wait_for_lines(400)
        if not ok:
            child.kill()
            pytest.fail(f"child printed too little: {reader.lines[-3:]} {child.stderr.read()}")
        # Killed while it is recording: no chance to close or checkpoint.
        child.send_signal(signal.SIGKILL)
        assert child.wait(DEADLINE_S) == -signal.SIGKILL
        reader.join()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        child.stderr.close()

    assert reader.lines[0] == "ready"
    printed = {}
    for line in reader.lines[1:]:
        seq, ts = line.split()
        printed[int(seq)] = int(ts)
    assert len(printed) >= 399

    with JobStore(db_path) as store:
        events = store.events("crash-job")
        sequences = [e.sequence for e in events]
        assert sequences == list(range(1, len(events) + 1)), "sequences are not contiguous from 1"
        # Every event the child was told is recorded is there, unchanged.
        assert max(printed) <= len(events)
        for e in events:
            if e.sequence in printed:
                assert e.timestamp_ns == printed[e.sequence]
            assert e.payload_json == f'{{"i": {e.sequence - 1}}}'
        if mode == "batch":
            assert len(events) % BATCH == 0, "a batch was recorded in part"
        for job_id in ("crash-job", "idle"):
            job = store.get_job(job_id)
            assert job.status == "failed"
            assert job.error == INTERRUPTED_ERROR
            assert job.completed_at_ns > 0
        assert store.find_active("/repo", "feat") is None
        # Reopening adds no event for the interruption.
        assert store.events("crash-job") == events
