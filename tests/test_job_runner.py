"""JobRun: real backpressure commands, ordering, limits, stops and timeouts.

Synchronisation with running commands goes through FIFOs (a command writes a
line to "ready" when it has started, and blocks reading "gate" until the test
writes a line), so nothing here sleeps to wait for something to happen.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import select
import shlex
import shutil
import threading
import time

import pytest

from choo_reference.job_runner import KILLED_BY_STOP, OUTPUT_TAIL_BYTES, JobRun
from choo_reference.jobs import UnitState
from choo_reference.task_plan import Plan, load_plan

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "hello-tasks"
FINAL_EVENTS = {"orch.completed", "orch.failed", "orch.cancelled"}
DEADLINE_S = 10.0


# -- helpers ----------------------------------------------------------------------


class Recorder:
    """Collects events and unit updates; checks the runner never calls it
    from two threads at once and that every payload is JSON."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.events: list[tuple[str, str, dict]] = []
        self.updates: list[UnitState] = []
        self._inside = 0
        self.overlapped = False

    def _enter(self) -> None:
        with self._cond:
            self._inside += 1
            self.overlapped |= self._inside > 1

    def record(self, event_type: str, unit_id: str, payload: dict) -> None:
        self._enter()
        try:
            json.dumps(payload)
            with self._cond:
                self.events.append((event_type, unit_id, dict(payload)))
                self._cond.notify_all()
        finally:
            with self._cond:
                self._inside -= 1

    def update_unit(self, unit: UnitState) -> None:
        self._enter()
        try:
            with self._cond:
                self.updates.append(unit)
                self._cond.notify_all()
        finally:
            with self._cond:
                self._inside -= 1

    def wait_for(self, predicate, timeout: float = DEADLINE_S) -> None:
        with self._cond:
            ok = self._cond.wait_for(lambda: predicate(self.events), timeout)
        assert ok, f"condition not met within {timeout} s; events: {self.types()}"

    def types(self, unit_id: str | None = None) -> list[str]:
        with self._cond:
            return [t for t, u, _ in self.events if unit_id is None or u == unit_id]

    def payloads(self, event_type: str, unit_id: str | None = None) -> list[dict]:
        with self._cond:
            return [
                p
                for t, u, p in self.events
                if t == event_type and (unit_id is None or u == unit_id)
            ]

    def last_state(self, unit_id: str) -> UnitState:
        return [u for u in self.updates if u.unit_id == unit_id][-1]


class Done:
    """The on_done callback: remembers each call, its thread, and how many
    events had been recorded by then."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.calls: list[tuple[str, str]] = []
        self.threads: list[str] = []
        self.events_seen: list[int] = []

    def __call__(self, status: str, error: str) -> None:
        self.calls.append((status, error))
        self.threads.append(threading.current_thread().name)
        self.events_seen.append(len(self.recorder.events))


class Fifo:
    """A named pipe the test holds open read-write, so neither side's open()
    blocks and a command can read a line the test wrote before it got there."""

    def __init__(self, path: pathlib.Path) -> None:
        os.mkfifo(path)
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        self._buf = b""

    def read_line(self, timeout: float = DEADLINE_S) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no line on {self.path.name} within {timeout} s"
            readable, _, _ = select.select([self.fd], [], [], remaining)
            if readable:
                self._buf += os.read(self.fd, 4096)
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def write_line(self, text: str = "go") -> None:
        os.write(self.fd, text.encode() + b"\n")

    def close(self) -> None:
        os.close(self.fd)


def process_gone(pid: int, timeout: float = 5.0) -> bool:
    """True once pid has exited (waits on a pidfd; no polling)."""
    if not hasattr(os, "pidfd_open"):
        pytest.skip("needs pidfd_open (Linux) to wait for a process to exit")
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout)
        return bool(readable)
    finally:
        os.close(fd)


def write_plan(root: pathlib.Path, spec: dict) -> Plan:
    """spec: {unit_id: (unit deps, [(task number, command[, task deps]), ...])}."""
    for unit_id, (deps, tasks) in spec.items():
        folder = root / unit_id
        folder.mkdir(parents=True)
        (folder / "IMPLEMENTATION_PLAN.md").write_text(
            f"---\nunit: {unit_id}\ndepends_on: {json.dumps(deps)}\n---\n"
        )
        for number, command, *rest in tasks:
            task_deps = rest[0] if rest else []
            (folder / f"{number:02d}-task.md").write_text(
                f"---\ntask: {number}\nbackpressure: {json.dumps(command)}\n"
                f"depends_on: {json.dumps(task_deps)}\n---\n\n# {unit_id} task {number}\n"
            )
    return load_plan(root)


@pytest.fixture
def runs():
    """Start runs through this; any run a failing test left behind is
    force-stopped. Checks no runner thread outlives the test."""
    started: list[JobRun] = []

    def start(plan: Plan, repo: pathlib.Path | str, parallelism: int = 1, **kwargs):
        recorder = Recorder()
        done = Done(recorder)
        run = JobRun(
            plan,
            repo_path=str(repo),
            parallelism=parallelism,
            recorder=recorder,
            on_done=done,
            **kwargs,
        )
        run.start()
        started.append(run)
        return run, recorder, done

    yield start
    for run in started:
        run.stop(force=True)
        assert run.wait(DEADLINE_S)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("choo-")]


def finish(run: JobRun, recorder: Recorder, done: Done) -> None:
    """Wait for the run and check what holds for every run."""
    assert run.wait(DEADLINE_S), "run did not finish"
    assert done.calls == [(run.status, run.error)], "on_done must be called exactly once"
    assert done.threads == ["choo-job-run"]
    assert done.events_seen == [len(recorder.events)], "on_done must follow the last event"
    types = recorder.types()
    assert types[0] == "orch.started"
    assert types[-1] in FINAL_EVENTS
    assert sum(t in FINAL_EVENTS for t in types) == 1
    assert not recorder.overlapped
    assert not [t.name for t in threading.enumerate() if t.name.startswith("choo-")]
    for _, _, payload in recorder.events:
        if "duration_ms" in payload:
            assert isinstance(payload["duration_ms"], int) and payload["duration_ms"] >= 0


def strip_durations(payload: dict) -> dict:
    return {k: v for k, v in payload.items() if k != "duration_ms"}


# -- completing runs ----------------------------------------------------------------


def test_passing_plan_records_choo_events_with_payloads(tmp_path, runs):
    plan = write_plan(
        tmp_path / "tasks",
        {
            "a": ([], [(1, "echo one"), (2, "echo two >&2", [1])]),
            "b": (["a"], [(1, "test -d .")]),
        },
    )
    run, rec, done = runs(plan, tmp_path, parallelism=1)
    finish(run, rec, done)

    assert run.status == "completed" and run.error == ""
    assert done.calls == [("completed", "")]
    got = [(t, u, strip_durations(p)) for t, u, p in rec.events]
    assert got == [
        ("orch.started", "", {"units": 2, "tasks_total": 3, "parallelism": 1}),
        ("unit.started", "a", {"tasks_total": 2, "depends_on": []}),
        ("task.started", "a", {"task": 1, "title": "a task 1", "command": "echo one"}),
        ("task.backpressure", "a", {"task": 1, "command": "echo one"}),
        ("task.validation.ok", "a", {"task": 1, "exit_code": 0, "output_tail": "one\n"}),
        ("task.completed", "a", {"task": 1, "title": "a task 1"}),
        ("task.started", "a", {"task": 2, "title": "a task 2", "command": "echo two >&2"}),
        ("task.backpressure", "a", {"task": 2, "command": "echo two >&2"}),
        # stderr is captured with stdout
        ("task.validation.ok", "a", {"task": 2, "exit_code": 0, "output_tail": "two\n"}),
        ("task.completed", "a", {"task": 2, "title": "a task 2"}),
        ("unit.completed", "a", {"tasks_complete": 2}),
        ("unit.started", "b", {"tasks_total": 1, "depends_on": ["a"]}),
        ("task.started", "b", {"task": 1, "title": "b task 1", "command": "test -d ."}),
        ("task.backpressure", "b", {"task": 1, "command": "test -d ."}),
        ("task.validation.ok", "b", {"task": 1, "exit_code": 0, "output_tail": ""}),
        ("task.completed", "b", {"task": 1, "title": "b task 1"}),
        ("unit.completed", "b", {"tasks_complete": 1}),
        ("orch.completed", "", {"units": 2}),
    ]
    for event_type in ("task.validation.ok", "task.completed", "unit.completed", "orch.completed"):
        assert all("duration_ms" in p for p in rec.payloads(event_type))

    # Every unit is published at the start with its task count, then each change.
    assert rec.updates[:2] == [UnitState("a", "pending", 0, 2), UnitState("b", "pending", 0, 1)]
    assert [u for u in rec.updates if u.unit_id == "a"] == [
        UnitState("a", "pending", 0, 2),
        UnitState("a", "running", 0, 2),
        UnitState("a", "running", 1, 2),
        UnitState("a", "running", 2, 2),
        UnitState("a", "completed", 2, 2),
    ]
    assert run.units == (UnitState("a", "completed", 2, 2), UnitState("b", "completed", 1, 1))


def test_commands_run_in_repo_path_under_sh(tmp_path, runs):
    repo = tmp_path / "repo"
    repo.mkdir()
    plan = write_plan(tmp_path / "tasks", {"a": ([], [(1, "pwd; echo $0")])})
    run, rec, done = runs(plan, repo)
    finish(run, rec, done)
    assert rec.payloads("task.validation.ok")[0]["output_tail"] == f"{repo}\n/bin/sh\n"


def test_example_hello_tasks_completes(tmp_path, runs):
    plan = load_plan(EXAMPLE)
    run, rec, done = runs(plan, tmp_path, parallelism=0)
    finish(run, rec, done)
    assert run.status == "completed", rec.events
    assert run.parallelism == (os.cpu_count() or 1)
    assert all(u.status == "completed" and u.tasks_complete == u.tasks_total for u in run.units)
    assert len(rec.payloads("task.completed")) == plan.task_count


# -- ordering and the parallelism limit -----------------------------------------------


def test_units_and_tasks_run_in_dependency_order(tmp_path, runs):
    log = tmp_path / "order.log"
    mark = lambda text: f"echo {text} >> {shlex.quote(str(log))}"  # noqa: E731
    plan = write_plan(
        tmp_path / "tasks",
        {
            "c": (["b"], [(1, mark("c"))]),
            "b": (["a"], [(1, mark("b"))]),
            "a": ([], [(1, mark("a1")), (2, mark("a2"), [3]), (3, mark("a3"), [1])]),
            "solo": ([], [(1, mark("solo"))]),
        },
    )
    run, rec, done = runs(plan, tmp_path, parallelism=4)
    finish(run, rec, done)
    assert run.status == "completed"

    lines = log.read_text().split()
    assert sorted(lines) == ["a1", "a2", "a3", "b", "c", "solo"]
    a_lines = [x for x in lines if x.startswith("a")]
    assert a_lines == ["a1", "a3", "a2"]
    assert lines.index("a2") < lines.index("b") < lines.index("c")
    assert [p["task"] for p in rec.payloads("task.started", "a")] == [1, 3, 2]

    def position(event_type: str, unit_id: str) -> int:
        return next(i for i, (t, u, _) in enumerate(rec.events) if (t, u) == (event_type, unit_id))

    assert position("unit.completed", "a") < position("unit.started", "b")
    assert position("unit.completed", "b") < position("unit.started", "c")


def max_running(events: list[tuple[str, str, dict]]) -> int:
    running = peak = 0
    for event_type, _, _ in events:
        if event_type == "unit.started":
            running += 1
            peak = max(peak, running)
        elif event_type in ("unit.completed", "unit.failed"):
            running -= 1
    return peak


def test_parallelism_limit_is_reached_and_never_exceeded(tmp_path, runs):
    ready = Fifo(tmp_path / "ready")
    gate = Fifo(tmp_path / "gate")
    try:
        command = lambda name: (  # noqa: E731
            f"echo {name} > {shlex.quote(str(ready.path))}; "
            f"read x < {shlex.quote(str(gate.path))}"
        )
        plan = write_plan(
            tmp_path / "tasks", {name: ([], [(1, command(name))]) for name in "abcd"}
        )
        run, rec, done = runs(plan, tmp_path, parallelism=2)

        # Two commands are running at once and both are held at the gate.
        first = {ready.read_line(), ready.read_line()}
        assert first == {"a", "b"}
        assert rec.types().count("unit.started") == 2
        # Each release lets exactly one more unit in.
        gate.write_line()
        rec.wait_for(lambda events: [t for t, _, _ in events].count("unit.completed") == 1)
        third = ready.read_line()
        gate.write_line()
        rec.wait_for(lambda events: [t for t, _, _ in events].count("unit.completed") == 2)
        fourth = ready.read_line()
        assert {third, fourth} == {"c", "d"}
        gate.write_line()
        gate.write_line()
        finish(run, rec, done)
    finally:
        ready.close()
        gate.close()
    assert run.status == "completed"
    assert max_running(rec.events) == 2


def test_parallelism_one_runs_units_one_at_a_time(tmp_path, runs):
    plan = write_plan(
        tmp_path / "tasks", {name: ([], [(1, "true"), (2, "true")]) for name in "abc"}
    )
    run, rec, done = runs(plan, tmp_path, parallelism=1)
    finish(run, rec, done)
    assert max_running(rec.events) == 1
    units_in_order = [u for t, u, _ in rec.events if t == "unit.started"]
    assert units_in_order == ["a", "b", "c"]


# -- failures -------------------------------------------------------------------------


def test_failing_task_fails_its_unit_and_blocks_dependents(tmp_path, runs):
    marker = tmp_path / "never"
    plan = write_plan(
        tmp_path / "tasks",
        {
            "a": (
                [],
                [(1, "echo bad news; exit 3"), (2, f"touch {shlex.quote(str(marker))}", [1])],
            ),
            "b": (["a"], [(1, "true")]),
            "c": (["b"], [(1, "true")]),
            "d": ([], [(1, "true")]),
        },
    )
    run, rec, done = runs(plan, tmp_path, parallelism=2)
    finish(run, rec, done)

    assert not marker.exists()
    assert [p["task"] for p in rec.payloads("task.started", "a")] == [1]
    assert strip_durations(rec.payloads("task.validation.fail", "a")[0]) == {
        "task": 1,
        "exit_code": 3,
        "output_tail": "bad news\n",
        "error": "backpressure command exited with code 3",
    }
    assert strip_durations(rec.payloads("task.failed", "a")[0]) == {
        "task": 1,
        "title": "a task 1",
        "error": "backpressure command exited with code 3",
        "exit_code": 3,
    }
    assert rec.payloads("unit.failed", "a") == [
        {"error": "task 1 (a task 1) failed: backpressure command exited with code 3", "task": 1}
    ]
    blocked_by_a = [{"blocked_by": "a", "error": "dependency 'a' failed"}]
    assert rec.payloads("unit.blocked", "b") == blocked_by_a
    # Transitively blocked: named after the unit that failed.
    assert rec.payloads("unit.blocked", "c") == blocked_by_a
    assert rec.types("b") == ["unit.blocked"] and rec.types("c") == ["unit.blocked"]
    assert rec.types("d")[-1] == "unit.completed"
    assert rec.types().index("unit.failed") < rec.types().index("unit.blocked")

    expected_error = (
        "unit 'a' failed: task 1 (a task 1) failed: backpressure command exited with code 3; "
        "2 units blocked: b, c"
    )
    assert run.status == "failed" and run.error == expected_error
    assert done.calls == [("failed", expected_error)]
    final = rec.payloads("orch.failed")[0]
    assert strip_durations(final) == {
        "error": expected_error,
        "failed_units": ["a"],
        "blocked_units": ["b", "c"],
    }
    states = {u.unit_id: (u.status, u.tasks_complete, u.tasks_total) for u in run.units}
    assert states == {
        "a": ("failed", 0, 2),
        "b": ("blocked", 0, 1),
        "c": ("blocked", 0, 1),
        "d": ("completed", 1, 1),
    }
    assert rec.last_state("b") == UnitState("b", "blocked", 0, 1)


def test_command_killed_by_a_signal(tmp_path, runs):
    plan = write_plan(tmp_path / "tasks", {"a": ([], [(1, "kill -TERM $$")])})
    run, rec, done = runs(plan, tmp_path)
    finish(run, rec, done)
    failed = rec.payloads("task.failed")[0]
    assert failed["exit_code"] == -15
    assert failed["error"] == "backpressure command killed by SIGTERM"
    assert run.status == "failed"


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_command_that_cannot_start_fails_its_task_clearly(tmp_path, runs, kind):
    repo = tmp_path / "repo"
    if kind == "file":
        repo.write_text("not a directory")
        reason = f"repo_path {str(repo)!r} is not a directory"
    else:
        reason = f"repo_path {str(repo)!r} does not exist"
    plan = write_plan(
        tmp_path / "tasks",
        {"a": ([], [(1, "true"), (2, "true", [1])]), "b": (["a"], [(1, "true")])},
    )
    run, rec, done = runs(plan, repo)
    finish(run, rec, done)

    error = f"cannot run backpressure command: {reason}"
    # It never ran, so there is no validation event.
    assert rec.types("a") == [
        "unit.started",
        "task.started",
        "task.backpressure",
        "task.failed",
        "unit.failed",
    ]
    assert strip_durations(rec.payloads("task.failed")[0]) == {
        "task": 1,
        "title": "a task 1",
        "error": error,
    }
    assert rec.payloads("unit.blocked", "b") == [
        {"blocked_by": "a", "error": "dependency 'a' failed"}
    ]
    assert run.status == "failed"
    assert error in run.error


class ShortOfFiles:
    """CommandProcesses whose first `failures` spawns fail as when the daemon
    has run out of open files (EMFILE); -1: every one fails."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.tried = threading.Event()

    def spawn(self, start):
        self.tried.set()
        if self.failures:
            self.failures -= 1
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        return start(dict(os.environ))

    def ended(self, proc) -> None:
        pass

    def kill_strays(self) -> int:
        return 0


def test_a_command_that_cannot_start_for_want_of_open_files_starts_once_it_can(tmp_path, runs):
    plan = write_plan(tmp_path / "tasks", {"a": ([], [(1, "echo ran")])})
    run, rec, done = runs(plan, tmp_path, processes=ShortOfFiles(3))
    finish(run, rec, done)
    assert run.status == "completed", run.error
    assert rec.payloads("task.validation.ok")[0]["output_tail"] == "ran\n"


def test_a_shortage_of_open_files_that_lasts_fails_the_task_clearly(tmp_path, runs):
    plan = write_plan(tmp_path / "tasks", {"a": ([], [(1, "true")])})
    run, rec, done = runs(plan, tmp_path, processes=ShortOfFiles(-1), resource_wait_s=0.2)
    finish(run, rec, done)
    assert run.status == "failed"
    error = rec.payloads("task.failed")[0]["error"]
    assert "short of resources (Too many open files)" in error, error


def test_a_forced_stop_ends_the_wait_for_open_files(tmp_path, runs):
    plan = write_plan(tmp_path / "tasks", {"a": ([], [(1, "true")])})
    short = ShortOfFiles(-1)
    run, rec, done = runs(plan, tmp_path, processes=short, resource_wait_s=3600)
    assert short.tried.wait(DEADLINE_S)
    run.stop(force=True)
    finish(run, rec, done)
    assert run.status == "cancelled"


def test_output_tail_is_bounded(tmp_path, runs):
    command = "dd if=/dev/zero bs=1024 count=256 2>/dev/null | tr '\\0' x; echo; echo END"
    plan = write_plan(tmp_path / "tasks", {"a": ([], [(1, command)])})
    run, rec, done = runs(plan, tmp_path)
    finish(run, rec, done)
    tail = rec.payloads("task.validation.ok")[0]["output_tail"]
    assert len(tail.encode()) <= OUTPUT_TAIL_BYTES
    assert tail.endswith("x\nEND\n")


def test_timeout_kills_the_process_group(tmp_path, runs):
    pidfile = tmp_path / "child.pid"
    command = f"sleep 1000 & echo $! > {shlex.quote(str(pidfile))}; echo partial; wait"
    plan = write_plan(tmp_path / "tasks", {"a": ([], [(1, command), (2, "true", [1])])})
    run, rec, done = runs(plan, tmp_path, command_timeout_s=0.5)
    finish(run, rec, done)

    assert process_gone(int(pidfile.read_text()))
    fail = rec.payloads("task.validation.fail")[0]
    assert strip_durations(fail) == {
        "task": 1,
        "exit_code": None,
        "output_tail": "partial\n",
        "error": "timed out after 0.5 s",
    }
    assert fail["duration_ms"] >= 500
    assert strip_durations(rec.payloads("task.failed")[0]) == {
        "task": 1,
        "title": "a task 1",
        "error": "timed out after 0.5 s",
    }
    assert [p["task"] for p in rec.payloads("task.started")] == [1]
    assert run.status == "failed"
    assert run.error == "unit 'a' failed: task 1 (a task 1) failed: timed out after 0.5 s"


def test_background_leftovers_neither_hang_the_task_nor_survive(tmp_path, runs):
    # The shell exits at once, but its background child still holds the
    # output pipe: the task must complete anyway and the child must die.
    pidfile = tmp_path / "child.pid"
    command = f"sleep 1000 & echo $! > {shlex.quote(str(pidfile))}; echo done"
    plan = write_plan(tmp_path / "tasks", {"a": ([], [(1, command)])})
    run, rec, done = runs(plan, tmp_path)
    finish(run, rec, done)
    assert run.status == "completed"
    assert rec.payloads("task.validation.ok")[0]["output_tail"] == "done\n"
    assert process_gone(int(pidfile.read_text()))


# -- stopping -----------------------------------------------------------------------


def test_graceful_stop_lets_the_running_command_finish_and_starts_nothing(tmp_path, runs):
    log = tmp_path / "log"
    ready = Fifo(tmp_path / "ready")
    gate = Fifo(tmp_path / "gate")
    q = lambda p: shlex.quote(str(p))  # noqa: E731
    try:
        plan = write_plan(
            tmp_path / "tasks",
            {
                "a": (
                    [],
                    [
                        (
                            1,
                            f"echo started > {q(ready.path)}; read x < {q(gate.path)}; "
                            f"echo a1 >> {q(log)}",
                        ),
                        (2, f"echo a2 >> {q(log)}", [1]),
                    ],
                ),
                "b": ([], [(1, f"echo b >> {q(log)}")]),
                "c": (["a"], [(1, f"echo c >> {q(log)}")]),
            },
        )
        run, rec, done = runs(plan, tmp_path, parallelism=1)
        assert ready.read_line() == "started"
        assert run.stop(force=False) is True
        # The command is still held at the gate, so the run cannot be over.
        assert not run.wait(0)
        assert run.status == "running"
        gate.write_line()
        finish(run, rec, done)
    finally:
        ready.close()
        gate.close()

    assert log.read_text() == "a1\n"
    assert rec.types("a") == [
        "unit.started",
        "task.started",
        "task.backpressure",
        "task.validation.ok",
        "task.completed",
    ]
    assert rec.types("b") == [] and rec.types("c") == []
    assert strip_durations(rec.payloads("orch.cancelled")[0]) == {"forced": False}
    assert run.status == "cancelled" and run.error == ""
    assert done.calls == [("cancelled", "")]
    assert run.units == (
        UnitState("a", "cancelled", 1, 2),
        UnitState("b", "cancelled", 0, 1),
        UnitState("c", "cancelled", 0, 1),
    )
    assert run.stop(force=True) is False


def test_forced_stop_kills_the_whole_process_group_now(tmp_path, runs):
    ready = Fifo(tmp_path / "ready")
    try:
        command = f"sleep 1000 & echo $! > {shlex.quote(str(ready.path))}; wait"
        plan = write_plan(
            tmp_path / "tasks",
            {"a": ([], [(1, command), (2, "true", [1])]), "b": ([], [(1, "true")])},
        )
        run, rec, done = runs(plan, tmp_path, parallelism=1)
        child = int(ready.read_line())
        assert not process_gone(child, timeout=0)
        started = time.monotonic()
        assert run.stop(force=True) is True
        finish(run, rec, done)
        assert time.monotonic() - started < 5
    finally:
        ready.close()

    assert process_gone(child)
    assert rec.types("a") == ["unit.started", "task.started", "task.backpressure", "task.failed"]
    assert strip_durations(rec.payloads("task.failed")[0]) == {
        "task": 1,
        "title": "a task 1",
        "error": KILLED_BY_STOP,
    }
    assert rec.types("b") == []
    assert strip_durations(rec.payloads("orch.cancelled")[0]) == {"forced": True}
    assert run.status == "cancelled"
    assert run.units[0] == UnitState("a", "cancelled", 0, 2)


def test_graceful_stop_can_be_escalated_to_force(tmp_path, runs):
    ready = Fifo(tmp_path / "ready")
    try:
        command = f"sleep 1000 & echo $! > {shlex.quote(str(ready.path))}; wait"
        plan = write_plan(tmp_path / "tasks", {"a": ([], [(1, command)])})
        run, rec, done = runs(plan, tmp_path)
        child = int(ready.read_line())
        assert run.stop(force=False) is True
        assert not run.wait(0)
        assert run.stop(force=True) is True
        finish(run, rec, done)
    finally:
        ready.close()
    assert process_gone(child)
    assert strip_durations(rec.payloads("orch.cancelled")[0]) == {"forced": True}


def test_stop_before_start_runs_nothing(tmp_path):
    plan = write_plan(tmp_path / "tasks", {"a": ([], [(1, "true")])})
    rec = Recorder()
    done = Done(rec)
    run = JobRun(plan, repo_path=str(tmp_path), parallelism=1, recorder=rec, on_done=done)
    assert run.status == "pending"
    assert not run.wait(0)
    assert run.stop(force=False) is True
    run.start()
    finish(run, rec, done)
    assert rec.types() == ["orch.started", "orch.cancelled"]
    assert run.status == "cancelled"
    assert run.units == (UnitState("a", "cancelled", 0, 1),)
    with pytest.raises(RuntimeError):
        run.start()


# -- robustness -----------------------------------------------------------------------


def test_arguments_are_checked(tmp_path):
    plan = write_plan(tmp_path / "tasks", {"a": ([], [(1, "true")])})
    common = dict(repo_path=str(tmp_path), recorder=Recorder(), on_done=lambda s, e: None)
    with pytest.raises(ValueError):
        JobRun(plan, parallelism=-1, **common)
    with pytest.raises(ValueError):
        JobRun(plan, parallelism=1, command_timeout_s=0, **common)


def test_a_failing_recorder_still_ends_the_run_once(tmp_path, runs):
    plan = write_plan(tmp_path / "tasks", {"a": ([], [(1, "true")]), "b": (["a"], [(1, "true")])})

    class Flaky(Recorder):
        def record(self, event_type, unit_id, payload):
            if event_type == "task.completed":
                raise RuntimeError("disk full")
            super().record(event_type, unit_id, payload)

    recorder = Flaky()
    done = Done(recorder)
    run = JobRun(plan, repo_path=str(tmp_path), parallelism=1, recorder=recorder, on_done=done)
    run.start()
    finish(run, recorder, done)
    assert run.status == "failed"
    assert "internal error" in run.error and "disk full" in run.error
    assert recorder.types("a")[-1] == "unit.failed"
    assert recorder.payloads("unit.blocked", "b") == [
        {"blocked_by": "a", "error": "dependency 'a' failed"}
    ]


def test_many_units_finish_without_leaking(tmp_path, runs):
    plan = write_plan(
        tmp_path / "tasks",
        {
            # chains of four: u00 <- u01 <- u02 <- u03, u04 <- u05 ...
            f"u{i:02d}": ([f"u{i - 1:02d}"] if i % 4 else [], [(1, "true"), (2, "echo ok", [1])])
            for i in range(12)
        },
    )
    run, rec, done = runs(plan, tmp_path, parallelism=3)
    finish(run, rec, done)
    assert run.status == "completed"
    assert max_running(rec.events) <= 3


@pytest.mark.skipif(shutil.which("setsid") is None, reason="needs setsid(1)")
def test_a_process_that_escapes_the_group_cannot_hang_the_run(tmp_path, runs):
    # setsid leaves the command's process group but keeps the output pipe
    # open; the runner stops reading shortly after the command exits. The
    # command waits (on a FIFO) until the escape has happened.
    pidfile = tmp_path / "escaped.pid"
    handshake = tmp_path / "handshake"
    os.mkfifo(handshake)
    q = lambda p: shlex.quote(str(p))  # noqa: E731
    command = (
        f"setsid sh -c 'echo $$ > {q(handshake)}; exec sleep 1000' & "
        f"read pid < {q(handshake)}; echo $pid > {q(pidfile)}; echo out"
    )
    plan = write_plan(tmp_path / "tasks", {"a": ([], [(1, command)])})
    run, rec, done = runs(plan, tmp_path)
    try:
        finish(run, rec, done)
    finally:
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text()), 9)
            except ProcessLookupError:
                pass
    assert run.status == "completed"
    assert rec.payloads("task.validation.ok")[0]["output_tail"] == "out\n"
