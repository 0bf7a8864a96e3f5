"""The live view of `choo-ref run` and `choo-ref watch`: its state and frame
from events (fast, no daemon), and the commands in a real pseudo-terminal
(pexpect) whose screen a terminal emulator (pyte) keeps, against a reference
daemon, with jobs whose commands wait on files the test creates."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pexpect
import pyte
import pytest
from rich.console import Console
from test_daemon_process import gate_command, release, wait_until, write_tasks

from choo.v1 import daemon_pb2, daemon_pb2_grpc
from choo_conformance.process import DaemonProcess
from choo_reference.client import open_channel
from choo_reference.live_view import JobProgress, render, wants_live_view

ROOT = Path(__file__).resolve().parent.parent
DEADLINE_S = 45.0  # a loaded 2-core machine can take long to start a job
ROWS, COLS = 30, 120

# -- the state and its frame -------------------------------------------------------------

_SECOND = 1_000_000_000
T0 = 1_700_000_000 * _SECOND


def event(sequence: int, event_type: str, unit_id: str = "", at_s: float = 0, **payload):
    return daemon_pb2.JobEvent(
        sequence=sequence, event_type=event_type, unit_id=unit_id,
        payload_json=json.dumps(payload),
        timestamp={"seconds": (T0 + int(at_s * _SECOND)) // _SECOND,
                   "nanos": (T0 + int(at_s * _SECOND)) % _SECOND})


def frame(progress: JobProgress, now_s: float, width: int = 100) -> list[str]:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None, force_terminal=False).print(
        render(progress, T0 + int(now_s * _SECOND)))
    return [line.rstrip() for line in out.getvalue().splitlines()]


def line_of(lines: list[str], unit: str) -> str:
    found = [line for line in lines if line.startswith(unit + " ")]
    assert len(found) == 1, f"no single line for {unit!r} in:\n" + "\n".join(lines)
    return found[0]


def status_of(job_id: str, status: str, units: list[tuple[str, str, int, int]]):
    return daemon_pb2.GetJobStatusResponse(
        job_id=job_id, status=status, started_at={"seconds": T0 // _SECOND},
        units=[daemon_pb2.UnitStatus(unit_id=u, status=s, tasks_complete=done, tasks_total=total)
               for u, s, done, total in units])


RUNNING_JOB = [
    event(1, "orch.started", at_s=0, units=3, tasks_total=4, parallelism=2),
    event(2, "unit.started", "setup", at_s=0, tasks_total=2, depends_on=[]),
    event(3, "task.started", "setup", at_s=0, task=1, title="Check", command="test -d ."),
    event(4, "task.completed", "setup", at_s=1, task=1, title="Check", duration_ms=1000),
    event(5, "task.started", "setup", at_s=1, task=2, title="Hello", command="echo hello"),
    event(6, "unit.started", "lint", at_s=0, tasks_total=1, depends_on=[]),
    event(7, "task.started", "lint", at_s=0, task=1, title="Lint", command="ruff check"),
    event(8, "task.validation.fail", "lint", at_s=2, task=1, exit_code=1,
          output_tail="".join(f"line {i}\n" for i in range(1, 13)), error="exited with code 1"),
    event(9, "task.failed", "lint", at_s=2, task=1, title="Lint", error="exited with code 1"),
    event(10, "unit.failed", "lint", at_s=2, task=1, error="task 1 (Lint) failed"),
]


def test_a_running_job_shows_each_unit_its_command_failures_and_totals():
    progress = JobProgress("job1")
    progress.seed(status_of("job1", "running", [("setup", "running", 1, 2), ("lint", "failed", 0, 1),
                                                 ("build", "pending", 0, 1)]), with_progress=False)
    for e in RUNNING_JOB:
        progress.apply(e)
    lines = frame(progress, now_s=3.5)
    setup = line_of(lines, "setup")
    assert "1/2 running" in setup and "echo hello" in setup and setup.endswith("3.5 s")
    assert "0/1 failed" in line_of(lines, "lint")
    assert "0/1 pending" in line_of(lines, "build")
    failure = lines.index("FAILED [lint] task 1 Lint: exited with code 1")
    # The last lines of the output, and only those.
    assert lines[failure + 1:failure + 9] == [f"    | line {i}" for i in range(5, 13)]
    assert lines[-1] == "job job1 running: 0/3 units completed, 1/4 tasks, 1 failed, 3.5 s"


def test_the_end_settles_units_from_the_final_status():
    progress = JobProgress("job1")
    for e in RUNNING_JOB:
        progress.apply(e)
    progress.apply(event(11, "task.completed", "setup", at_s=4, task=2, title="Hello", duration_ms=1))
    progress.apply(event(12, "unit.completed", "setup", at_s=4, tasks_complete=2, duration_ms=4000))
    progress.apply(event(13, "unit.blocked", "build", at_s=4, blocked_by="lint", error="x"))
    progress.apply(event(14, "orch.failed", at_s=4, error="unit 'lint' failed"))
    progress.settle(status_of("job1", "failed", [("setup", "completed", 2, 2),
                                                 ("lint", "failed", 0, 1), ("build", "blocked", 0, 1)]))
    lines = frame(progress, now_s=60)
    assert "2/2 completed" in line_of(lines, "setup") and line_of(lines, "setup").endswith("4.0 s")
    assert "0/1 blocked" in line_of(lines, "build") and "after lint" in line_of(lines, "build")
    assert "FAILED [lint] task 1 Lint: exited with code 1" in lines
    assert lines[-1] == "job job1 failed: 1/3 units completed, 2/4 tasks, 1 failed, 4.0 s"


def test_a_watch_from_later_starts_from_the_status_counts():
    status = status_of("job1", "running", [("setup", "running", 1, 2)])
    fresh, later = JobProgress("job1"), JobProgress("job1")
    fresh.seed(status, with_progress=False)
    later.seed(status, with_progress=True)
    assert "0/2 pending" in line_of(frame(fresh, 1), "setup")
    assert "1/2 running" in line_of(frame(later, 1), "setup")


def test_only_a_terminal_gets_the_live_view(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("TERM", "xterm")
    assert wants_live_view(Tty(), plain=False)
    assert not wants_live_view(Tty(), plain=True)
    assert not wants_live_view(io.StringIO(), plain=False)
    monkeypatch.setenv("TERM", "dumb")
    assert not wants_live_view(Tty(), plain=False)


# -- in a pseudo-terminal -----------------------------------------------------------------


class Terminal:
    """A command in a pseudo-terminal, and the screen a VT100 shows of it."""

    def __init__(self, *args: str) -> None:
        self.screen = pyte.Screen(COLS, ROWS)
        self._stream = pyte.ByteStream(self.screen)
        self.raw = bytearray()
        env = {**os.environ, "TERM": "xterm-256color"}
        for name in ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR"):
            env.pop(name, None)
        self.child = pexpect.spawn(sys.executable, ["-m", "choo_reference.cli", *args],
                                   cwd=str(ROOT), env=env, dimensions=(ROWS, COLS))
        self.ended = False

    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen.display]

    def _read(self) -> None:
        """Feed the screen what the command wrote, waiting up to 0.1 s for it."""
        try:
            data = self.child.read_nonblocking(65536, timeout=0.1)
        except pexpect.TIMEOUT:
            return
        except pexpect.EOF:
            self.ended = True
            return
        self.raw += data
        self._stream.feed(data)

    def wait_for(self, predicate, what: str, timeout: float = DEADLINE_S) -> list[str]:
        def holds() -> bool:
            self._read()
            try:
                return bool(predicate(self.lines()))
            except AssertionError:
                return False
        try:
            wait_until(holds, timeout, what)
        except AssertionError as error:
            raise AssertionError(f"{error}; the screen:\n" + "\n".join(self.lines())) from None
        return self.lines()

    def exit_code(self, timeout: float = DEADLINE_S) -> int:
        def gone() -> bool:
            if not self.ended:
                self._read()
            return self.ended and not self.child.isalive()
        wait_until(gone, timeout, "the command to exit")
        return self.child.exitstatus

    def close(self) -> None:
        self.child.close(force=True)


@pytest.fixture(scope="module")
def daemon():
    process = DaemonProcess(f"{sys.executable} -m choo_reference.cli daemon "
                            "--socket {socket} --db {db}")
    process.start()
    try:
        yield process
    finally:
        process.close()


@pytest.fixture
def terminal():
    opened: list[Terminal] = []

    def open_terminal(*args: str) -> Terminal:
        opened.append(Terminal(*args))
        return opened[-1]

    yield open_terminal
    for term in opened:
        term.close()


def has(unit: str, *parts: str):
    """A screen predicate: the unit's line holds every part."""
    return lambda lines: all(part in line_of(lines, unit) for part in parts)


@pytest.mark.slow
def test_run_on_a_terminal_redraws_each_unit_in_place(daemon, terminal, tmp_path):
    tasks = write_tasks(tmp_path / "tasks", {
        "alpha": ([], [gate_command(tmp_path, "a1"), "true"]),
        "beta": (["alpha"], [gate_command(tmp_path, "b1")]),
        "gamma": ([], ["echo some output; echo boom >&2; exit 3"]),
    })
    try:
        term = terminal("run", str(tasks), "--repo", str(tmp_path), "--socket", daemon.socket)
        lines = term.wait_for(lambda lines: has("alpha", "0/2", "running", "touch")(lines)
                              and has("gamma", "0/1", "failed")(lines), "alpha running, gamma failed")
        assert "0/1 pending" in line_of(lines, "beta")
        term.wait_for(lambda lines: "    | boom" in lines and "    | some output" in lines,
                      "gamma's output tail")
        assert any(line.startswith("FAILED [gamma] task 1 Step 1 of gamma: backpressure command "
                                   "exited with code 3") for line in lines)
        term.wait_for(lambda lines: any("running: 0/3 units completed, 0/4 tasks, 1 failed" in line
                                        for line in lines), "the job's totals")

        release(tmp_path, "a1")
        term.wait_for(lambda lines: has("alpha", "2/2 completed")(lines)
                      and has("beta", "0/1", "running", "touch")(lines), "alpha done, beta running")

        release(tmp_path, "b1")
        assert term.exit_code() == 1, "\n".join(term.lines())
        lines = term.lines()
        assert "2/2 completed" in line_of(lines, "alpha")
        assert "1/1 completed" in line_of(lines, "beta")
        assert "0/1 failed" in line_of(lines, "gamma")
        assert "    | boom" in lines
        assert any("failed: 2/3 units completed, 3/4 tasks, 1 failed" in line for line in lines)
        # Redrawn in place: each unit's line is on the screen once.
        assert sum(line.startswith("alpha ") for line in lines) == 1
        assert any(line.startswith("job ") and " failed in " in line for line in lines)
    finally:
        release(tmp_path, "a1")
        release(tmp_path, "b1")


@pytest.mark.slow
def test_watch_on_a_terminal_follows_the_job_to_its_end(daemon, terminal, tmp_path):
    tasks = write_tasks(tmp_path / "tasks", {"solo": ([], ["true", gate_command(tmp_path, "s")])})
    try:
        with open_channel(daemon.socket) as channel:
            job_id = daemon_pb2_grpc.DaemonServiceStub(channel).StartJob(daemon_pb2.StartJobRequest(
                tasks_dir=str(tasks), target_branch="main", repo_path=str(tmp_path)),
                timeout=10).job_id
        term = terminal("watch", job_id, "--socket", daemon.socket)
        term.wait_for(has("solo", "1/2", "running", "touch"), "solo running its second task")
        term.wait_for(lambda lines: f"job {job_id} running: 0/1 units completed, 1/2 tasks" in
                      " ".join(lines), "the job's totals")
        release(tmp_path, "s")
        assert term.exit_code() == 0, "\n".join(term.lines())
        lines = term.lines()
        assert "2/2 completed" in line_of(lines, "solo")
        assert any(line.startswith(f"job {job_id} completed: 1/1 units completed, 2/2 tasks")
                   for line in lines)
    finally:
        release(tmp_path, "s")


@pytest.mark.slow
def test_plain_on_a_terminal_prints_a_line_per_event(daemon, terminal, tmp_path):
    tasks = write_tasks(tmp_path / "tasks", {"solo": ([], ["echo hi"])})
    term = terminal("run", str(tasks), "--repo", str(tmp_path), "--socket", daemon.socket, "--plain")
    code = term.exit_code()
    text = term.raw.decode()
    assert code == 0, text
    assert "[solo] unit started (1 tasks)\r\n" in text
    assert "[solo] task 1 Step 1 of solo: started: echo hi\r\n" in text
    assert "\x1b[" not in text, "a cursor or style control sequence in the plain output"
