"""kill_group returns only once nothing of the group lives on: the runner
stops the daemons it started with it, and says the run is over only then
(a test once found a daemon still there after the run had returned)."""

from __future__ import annotations

import os
import subprocess

from choo_conformance import process
from choo_conformance.process import group_lives, kill_group


def test_a_killed_group_is_gone_when_kill_group_returns():
    # A leader and a child of its own, as a daemon and a job's command.
    leader = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60"], start_new_session=True)
    try:
        assert group_lives(leader.pid)
        assert kill_group(leader.pid)
        assert not group_lives(leader.pid)
    finally:
        leader.kill()
        leader.wait()


def test_kill_group_waits_for_a_group_slow_to_go(monkeypatch):
    answers = iter([True] * 5 + [False])
    monkeypatch.setattr(process.os, "killpg", lambda pgid, signum: None)
    monkeypatch.setattr(process, "group_lives", lambda pgid: next(answers))
    assert kill_group(12345)
    assert next(answers, "spent") == "spent"  # it asked until the group was gone


def test_kill_group_says_when_a_group_outlives_its_wait(monkeypatch):
    monkeypatch.setattr(process.os, "killpg", lambda pgid, signum: None)
    monkeypatch.setattr(process, "group_lives", lambda pgid: True)
    assert not kill_group(12345, wait_s=0.05)


def test_a_daemon_that_never_serves_leaves_no_folder():
    daemon = process.DaemonProcess("sh -c 'echo cannot start >&2; exit 3'")
    try:
        daemon.start(timeout=5)
    except process.DaemonNeverHealthy as error:
        assert "cannot start" in str(error)
    else:
        raise AssertionError("a daemon that exits at once was taken as serving")
    assert not os.path.exists(daemon.folder)
