"""W17 against a real crash: a child process records events and is killed
with SIGKILL; everything it was told is recorded must be there after reopening."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pipe_lines import PipeLines

from choo_reference.job_store import INTERRUPTED_ERROR, JobStore

CHILD = Path(__file__).with_name("crash_child.py")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEADLINE_S = 20.0
BATCH = 7  # crash_child.BATCH


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
        reader = PipeLines(child.stdout)
        try:
            reader.wait_for(lambda lines: len(lines) >= 400, DEADLINE_S)
        except AssertionError:
            child.kill()
            pytest.fail(f"child printed too little: {reader.lines[-3:]} {child.stderr.read()}")
        # Killed while it is recording: no chance to close or checkpoint.
        child.send_signal(signal.SIGKILL)
        assert child.wait(DEADLINE_S) == -signal.SIGKILL
        reader.join(DEADLINE_S)
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
