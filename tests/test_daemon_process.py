"""The reference daemon as a real process: `choo-ref daemon` on a Unix socket,
driven through grpc channels and through the choo-ref commands.

Nothing here sleeps to wait: every wait is on a condition with a deadline.
Socket paths live in short directories under /tmp (Unix socket paths are
limited to ~107 bytes). Every daemon started is stopped in teardown, and every
command that hangs writes its pid so a daemon killed under it cannot leave it
behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from pipe_lines import PipeLines

from choo.v1 import daemon_pb2, daemon_pb2_grpc
from choo_conformance import wait as waiting
from choo_conformance.process import DaemonProcess, remove_folder
from choo_reference import __version__
from choo_reference.client import open_channel
from choo_reference.job_store import JobStore

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "choo_reference.cli"]
STARTUP_S = 20.0
DEADLINE_S = 20.0
def wait_until(condition, timeout: float = DEADLINE_S, what: str = "condition") -> None:
    """The project's one wait, failing the test when the deadline passes."""
    if not waiting.wait_until(condition, timeout):
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# -- fixture tasks folders ---------------------------------------------------------

_pidfiles: list[Path] = []


def hang_command(workdir: Path) -> str:
    """Writes its process group id, then hangs. `; true` keeps the shell (whose
    command line names the pid file) alive, so cleanup can recognise it."""
    pidfile = workdir / f"hang-{len(_pidfiles)}.pid"
    _pidfiles.append(pidfile)
    return f"echo $$ > {pidfile}; sleep 1000; true"


_gates: list[Path] = []


def gate_command(workdir: Path, name: str) -> str:
    """Says it started, then holds until the test creates the release file."""
    _gates.append(workdir / f"{name}.release")
    return (f"touch {workdir / (name + '.started')}; "
            f"while [ ! -e {workdir / (name + '.release')} ]; do sleep 0.02; done")


def release(workdir: Path, name: str) -> None:
    (workdir / f"{name}.release").touch()


def write_tasks(root: Path, units: dict[str, tuple[list[str], list[str]]]) -> Path:
    """units: unit id -> (depends_on, backpressure commands); each task depends
    on the one before it."""
    root.mkdir(parents=True)
    for unit, (depends_on, commands) in units.items():
        folder = root / unit
        folder.mkdir()
        (folder / "IMPLEMENTATION_PLAN.md").write_text(
            f"---\nunit: {unit}\ndepends_on: {json.dumps(depends_on)}\n---\n\n# {unit}\n")
        for number, command in enumerate(commands, start=1):
            depends = [number - 1] if number > 1 else []
            # A JSON string is a valid YAML double-quoted scalar.
            (folder / f"{number:02d}-step{number}.md").write_text(
                f"---\ntask: {number}\nbackpressure: {json.dumps(command)}\n"
                f"depends_on: {json.dumps(depends)}\n---\n\n# Step {number} of {unit}\n")
    return root


def _kill_leftover_commands() -> None:
    """Release every gate and kill every hanging command still running, so a
    failed test or a killed daemon leaves no process behind."""
    for gate in _gates:
        try:
            gate.touch()
        except OSError:
            pass  # its directory is gone, and the command with it
    for pidfile in list(_pidfiles):
        try:
            pid = int(pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if str(pidfile).encode() in cmdline:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass


def group_alive(pidfile: Path) -> bool:
    """Whether a live (not zombie) process is left in the command's group. A
    killed command's orphans are zombies until init gets round to them."""
    pgid = int(pidfile.read_text().strip())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state not in ("Z", "X"):
            return True
    return False


# -- the daemon process ------------------------------------------------------------


class Daemon:
    """`choo-ref daemon` for these tests: started and stopped by the
    project's one daemon-process class, with a channel to it."""

    def __init__(self, socket_path: Path, db_path: Path, log_path: Path) -> None:
        self.socket_path = socket_path
        self.db_path = db_path
        self.log_path = log_path
        self.process = DaemonProcess(CLI + ["daemon", "--socket", "{socket}", "--db", "{db}"],
                                     socket=str(socket_path), db=str(db_path),
                                     folder=str(log_path.parent), cwd=str(ROOT))
        self.process.log_path = str(log_path)
        self.proc = self.process.launch()
        self.channel = open_channel(str(socket_path))
        self.stub = daemon_pb2_grpc.DaemonServiceStub(self.channel)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self) -> Daemon:
        if not self.process.wait_healthy(STARTUP_S):
            raise AssertionError(f"daemon not serving after {STARTUP_S} s (exit code "
                                 f"{self.proc.poll()}):\n{self.log()}")
        return self

    def wait_exit(self, timeout: float = DEADLINE_S) -> int:
        code = self.process.wait_exit(timeout)
        if code is None:
            raise AssertionError(f"daemon still running after {timeout} s:\n{self.log()}")
        return code

    def kill(self) -> None:
        """SIGKILL to the daemon alone, as a crash: what it started lives on."""
        self.process.kill(whole_group=False)

    def close(self) -> None:
        self.process.stop()
        self.channel.close()


@contextlib.contextmanager
def short_dir() -> Iterator[Path]:
    """A folder whose socket paths fit (~107 bytes), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="choo-", dir="/tmp"))
    try:
        yield path
    finally:
        remove_folder(str(path))


@pytest.fixture
def sockdir():
    with short_dir() as path:
        yield path


@pytest.fixture
def start_daemon():
    """start_daemon(directory) -> a serving Daemon on directory/run/daemon.sock."""
    started: list[Daemon] = []

    def start(directory: Path, *, ready: bool = True) -> Daemon:
        daemon = Daemon(directory / "run" / "daemon.sock", directory / "daemon.db",
                        directory / f"daemon-{len(started)}.log")
        started.append(daemon)
        return daemon.wait_ready() if ready else daemon

    yield start
    _kill_leftover_commands()
    for daemon in started:
        daemon.close()
    _kill_leftover_commands()


@pytest.fixture(scope="module")
def daemon():
    """One daemon shared by the tests that do not stop it."""
    with short_dir() as directory:
        shared = Daemon(directory / "run" / "daemon.sock", directory / "daemon.db",
                        directory / "daemon.log")
        try:
            yield shared.wait_ready()
        finally:
            shared.close()
            _kill_leftover_commands()


@pytest.fixture(autouse=True)
def _no_leftover_commands():
    yield
    _kill_leftover_commands()


def cli(*args: str, socket_path: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    argv = CLI + list(args)
    if socket_path is not None:
        argv += ["--socket", str(socket_path)]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


class Lines(PipeLines):
    def wait_for(self, predicate, timeout: float = DEADLINE_S) -> None:
        super().wait_for(predicate, timeout)

    def join(self, timeout: float = DEADLINE_S) -> None:
        super().join(timeout)


# -- helpers over the API ----------------------------------------------------------


def start_job(stub, tasks_dir: Path, repo: Path, **fields) -> str:
    response = stub.StartJob(daemon_pb2.StartJobRequest(
        tasks_dir=str(tasks_dir), target_branch="main", repo_path=str(repo), **fields))
    assert response.status == "running"
    return response.job_id


def all_events(stub, job_id: str, timeout: float = DEADLINE_S) -> list:
    """Every event of the job; returns once the job has ended (the stream ends OK)."""
    return list(stub.WatchJob(daemon_pb2.WatchJobRequest(job_id=job_id, from_sequence=1),
                              timeout=timeout))


def events_until(stub, job_id: str, predicate, timeout: float = DEADLINE_S) -> list:
    """The job's events up to the first one predicate() accepts."""
    call = stub.WatchJob(daemon_pb2.WatchJobRequest(job_id=job_id, from_sequence=1),
                         timeout=timeout)
    seen = []
    try:
        for event in call:
            seen.append(event)
            if predicate(event):
                return seen
    finally:
        call.cancel()
    raise AssertionError(f"the stream ended without the event: {[e.event_type for e in seen]}")


def is_task_event(event_type: str, unit: str, task: int):
    return lambda e: (e.event_type == event_type and e.unit_id == unit
                      and json.loads(e.payload_json).get("task") == task)


def status_of(stub, job_id: str):
    return stub.GetJobStatus(daemon_pb2.GetJobStatusRequest(job_id=job_id))


def as_tuples(events) -> list[tuple]:
    return [(e.sequence, e.event_type, e.unit_id, e.payload_json,
             e.timestamp.seconds, e.timestamp.nanos) for e in events]


def stored_jobs(db_path: Path) -> dict:
    """The jobs as the database holds them (the daemon must have exited)."""
    with JobStore(db_path) as store:
        return {job.job_id: job for job in store.list_jobs()}


def rpc_error(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)
    return caught.value


# -- the shared daemon ---------------------------------------------------------------


def test_socket_is_private_and_its_directory_too(daemon):
    mode = os.stat(daemon.socket_path).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(os.stat(daemon.socket_path.parent).st_mode) == 0o700
    assert f"serving on unix://{daemon.socket_path} (db {daemon.db_path})" in daemon.log()


def test_standard_health_service_answers_serving(daemon):
    health = health_pb2_grpc.HealthStub(daemon.channel)
    for service in ("", "choo.v1.DaemonService"):
        response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert response.status == health_pb2.HealthCheckResponse.SERVING, service
    own = daemon.stub.Health(daemon_pb2.HealthRequest(), timeout=5)
    assert own.healthy and own.version == __version__


def test_reflection_lists_and_describes_the_services(daemon):
    stub = reflection_pb2_grpc.ServerReflectionStub(daemon.channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="choo.v1.DaemonService"),
    ]
    listed, described = list(stub.ServerReflectionInfo(iter(requests), timeout=5))
    names = {s.name for s in listed.list_services_response.service}
    assert {"choo.v1.DaemonService", "grpc.health.v1.Health"} <= names
    assert described.file_descriptor_response.file_descriptor_proto


def test_a_job_whose_commands_pass_completes(daemon, tmp_path):
    tasks = write_tasks(tmp_path / "tasks", {
        "first": ([], ["echo one", "test -d ."]),
        "second": (["first"], ["true"]),
    })
    job_id = start_job(daemon.stub, tasks, tmp_path)
    events = all_events(daemon.stub, job_id)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert events[0].event_type == "orch.started"
    assert events[-1].event_type == "orch.completed"
    status = status_of(daemon.stub, job_id)
    assert status.status == "completed" and not status.error
    assert status.HasField("completed_at")
    assert [(u.unit_id, u.status, u.tasks_complete, u.tasks_total) for u in status.units] == [
        ("first", "completed", 2, 2), ("second", "completed", 1, 1)]


def test_a_job_with_a_failing_command_fails_and_blocks_its_dependents(daemon, tmp_path):
    tasks = write_tasks(tmp_path / "tasks", {
        "bad": ([], ["true", "echo some output; echo boom >&2; exit 3"]),
        "after": (["bad"], ["true"]),
    })
    job_id = start_job(daemon.stub, tasks, tmp_path)
    events = all_events(daemon.stub, job_id)
    status = status_of(daemon.stub, job_id)
    assert status.status == "failed"
    assert "bad" in status.error
    assert {u.unit_id: u.status for u in status.units} == {"bad": "failed", "after": "blocked"}
    fail = next(e for e in events if e.event_type == "task.validation.fail")
    payload = json.loads(fail.payload_json)
    assert payload["exit_code"] == 3 and "boom" in payload["output_tail"]
    assert events[-1].event_type == "orch.failed"


def test_forced_stop_kills_a_hanging_command(daemon, tmp_path):
    tasks = write_tasks(tmp_path / "tasks", {"hang": ([], [hang_command(tmp_path)])})
    pidfile = _pidfiles[-1]
    job_id = start_job(daemon.stub, tasks, tmp_path)
    wait_until(pidfile.exists, what="the hanging command to start")
    wait_until(lambda: pidfile.read_text().strip(), what="the pid file")
    response = daemon.stub.StopJob(daemon_pb2.StopJobRequest(job_id=job_id, force=True))
    assert (response.success, response.message) == (True, "job force killed")
    assert status_of(daemon.stub, job_id).status == "cancelled"
    assert not group_alive(pidfile)
    assert all_events(daemon.stub, job_id)[-1].event_type == "orch.cancelled"
    error = rpc_error(daemon.stub.StopJob, daemon_pb2.StopJobRequest(job_id=job_id))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_graceful_stop_lets_the_running_step_finish_and_starts_nothing(daemon, tmp_path):
    tasks = write_tasks(tmp_path / "tasks", {
        "g": ([], [gate_command(tmp_path, "g"), f"touch {tmp_path / 'second-ran'}"]),
    })
    job_id = start_job(daemon.stub, tasks, tmp_path)
    wait_until((tmp_path / "g.started").exists, what="the first step to start")
    response = daemon.stub.StopJob(daemon_pb2.StopJobRequest(job_id=job_id, force=False))
    assert (response.success, response.message) == (True, "job stopped gracefully")
    assert status_of(daemon.stub, job_id).status == "running"  # the step is still running
    release(tmp_path, "g")
    events = all_events(daemon.stub, job_id)
    assert status_of(daemon.stub, job_id).status == "cancelled"
    assert any(is_task_event("task.completed", "g", 1)(e) for e in events)
    assert not any(is_task_event("task.started", "g", 2)(e) for e in events)
    assert not (tmp_path / "second-ran").exists()


def test_a_second_daemon_on_the_same_socket_is_refused(daemon, sockdir):
    before = os.stat(daemon.socket_path).st_ino
    second = subprocess.run(
        CLI + ["daemon", "--socket", str(daemon.socket_path), "--db", str(sockdir / "other.db")],
        cwd=ROOT, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert second.returncode != 0
    assert f"a daemon is already serving on {daemon.socket_path}" in second.stderr
    assert "Traceback" not in second.stderr
    assert os.stat(daemon.socket_path).st_ino == before
    assert daemon.stub.Health(daemon_pb2.HealthRequest(), timeout=5).healthy


def test_cli_run_of_the_example_exits_0_and_shows_the_units(daemon, tmp_path):
    result = cli("run", "examples/hello-tasks", "--repo", str(tmp_path),
                 socket_path=daemon.socket_path)
    assert result.returncode == 0, result.stdout + result.stderr
    for unit in ("setup", "build", "docs"):
        assert f"[{unit}] unit completed" in result.stdout
    last = result.stdout.strip().splitlines()[-1]
    assert "completed" in last and "3/3 units" in last


def test_cli_run_of_a_failing_job_exits_1_and_shows_the_output(daemon, tmp_path):
    tasks = write_tasks(tmp_path / "tasks", {"bad": ([], ["echo boom-output; exit 4"])})
    result = cli("run", str(tasks), "--repo", str(tmp_path), socket_path=daemon.socket_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "[bad] task 1" in result.stdout and "FAILED" in result.stdout
    assert "| boom-output" in result.stdout
    assert "failed" in result.stdout.strip().splitlines()[-1]


def test_cli_jobs_status_and_errors(daemon, tmp_path):
    tasks = write_tasks(tmp_path / "tasks", {"only": ([], ["true"])})
    job_id = start_job(daemon.stub, tasks, tmp_path, feature_branch="feat/cli")
    all_events(daemon.stub, job_id)

    jobs = cli("jobs", "--status", "completed", socket_path=daemon.socket_path)
    assert jobs.returncode == 0, jobs.stderr
    row = next(line for line in jobs.stdout.splitlines() if line.startswith(job_id))
    assert "completed" in row and "feat/cli" in row and "1/1" in row

    status = cli("status", job_id, socket_path=daemon.socket_path)
    assert status.returncode == 0, status.stderr
    assert "completed" in status.stdout
    assert any(line.split()[:3] == ["only", "completed", "1/1"]
               for line in status.stdout.splitlines())

    missing = cli("status", "no-such-job", socket_path=daemon.socket_path)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: NOT_FOUND: job not found: no-such-job"

    stopped = cli("stop", job_id, socket_path=daemon.socket_path)
    assert stopped.returncode == 1
    assert stopped.stderr.strip() == "error: FAILED_PRECONDITION: job already stopped: completed"

    health = cli("health", socket_path=daemon.socket_path)
    assert health.returncode == 0 and "healthy" in health.stdout


def test_cli_without_a_daemon_says_so_without_a_traceback(sockdir):
    nobody = sockdir / "nobody.sock"
    for args in (["health"], ["jobs"], ["watch", "some-job"]):
        result = cli(*args, socket_path=nobody)
        assert result.returncode == 1, args
        assert result.stderr.strip() == (
            f"error: no daemon is answering on {nobody} "
            f"(start one with: choo-ref daemon --socket {nobody})"), args


# -- daemons of their own ----------------------------------------------------------


def test_shutdown_without_waiting_stops_the_jobs_and_exits(start_daemon, sockdir, tmp_path):
    d = start_daemon(sockdir)
    hang = write_tasks(tmp_path / "hang", {"h": ([], [hang_command(tmp_path)])})
    pidfile = _pidfiles[-1]
    gate = write_tasks(tmp_path / "gate", {"g": ([], [gate_command(tmp_path, "g")])})
    ids = [start_job(d.stub, hang, tmp_path), start_job(d.stub, gate, tmp_path)]
    wait_until(lambda: pidfile.exists() and (tmp_path / "g.started").exists(),
               what="both commands to start")

    result = cli("shutdown", socket_path=d.socket_path)
    assert result.returncode == 0, result.stderr
    assert "2 jobs stopped" in result.stdout
    assert d.wait_exit() == 0
    assert not d.socket_path.exists()
    assert not group_alive(pidfile)
    jobs = stored_jobs(d.db_path)
    assert [jobs[i].status for i in ids] == ["cancelled", "cancelled"]


def test_shutdown_waiting_lets_jobs_finish_then_stops_the_rest(start_daemon, sockdir, tmp_path):
    d = start_daemon(sockdir)
    gate = write_tasks(tmp_path / "gate", {"g": ([], [gate_command(tmp_path, "g")])})
    hang = write_tasks(tmp_path / "hang", {"h": ([], [hang_command(tmp_path)])})
    finishing, hanging = start_job(d.stub, gate, tmp_path), start_job(d.stub, hang, tmp_path)
    wait_until((tmp_path / "g.started").exists, what="the gated command to start")
    watch = d.stub.WatchJob(daemon_pb2.WatchJobRequest(job_id=finishing, from_sequence=1))

    answer = {}
    caller = threading.Thread(target=lambda: answer.update(response=d.stub.Shutdown(
        daemon_pb2.ShutdownRequest(wait_for_jobs=True, timeout_seconds=2), timeout=30)))
    caller.start()
    # Open watches end as soon as the shutdown begins.
    with pytest.raises(grpc.RpcError) as ended:
        for _ in watch:
            pass
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    assert ended.value.details() == "daemon is shutting down"
    release(tmp_path, "g")
    caller.join(DEADLINE_S)

    response = answer["response"]
    assert (response.success, response.jobs_stopped) == (True, 1)
    assert d.wait_exit() == 0
    assert not d.socket_path.exists()
    jobs = stored_jobs(d.db_path)
    assert (jobs[finishing].status, jobs[hanging].status) == ("completed", "cancelled")


def test_sigterm_is_a_shutdown_that_waits_for_jobs(start_daemon, sockdir, tmp_path):
    d = start_daemon(sockdir)
    gate = write_tasks(tmp_path / "gate", {"g": ([], [gate_command(tmp_path, "g")])})
    job_id = start_job(d.stub, gate, tmp_path)
    wait_until((tmp_path / "g.started").exists, what="the gated command to start")
    watch = d.stub.WatchJob(daemon_pb2.WatchJobRequest(job_id=job_id, from_sequence=1))

    d.proc.send_signal(signal.SIGTERM)
    with pytest.raises(grpc.RpcError) as ended:
        for _ in watch:
            pass
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    health = health_pb2_grpc.HealthStub(d.channel).Check(
        health_pb2.HealthCheckRequest(service="choo.v1.DaemonService"), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
    refused = rpc_error(d.stub.StartJob, daemon_pb2.StartJobRequest(
        tasks_dir=str(gate), target_branch="main", repo_path=str(tmp_path)))
    assert refused.code() == grpc.StatusCode.UNAVAILABLE
    assert d.proc.poll() is None  # still waiting for the job

    release(tmp_path, "g")
    assert d.wait_exit() == 0
    assert not d.socket_path.exists()
    assert stored_jobs(d.db_path)[job_id].status == "completed"


def test_restart_on_the_same_database_keeps_events_and_fails_interrupted_jobs(
        start_daemon, sockdir, tmp_path):
    first = start_daemon(sockdir)
    done = start_job(first.stub, write_tasks(tmp_path / "ok", {"a": ([], ["echo a", "true"])}),
                     tmp_path)
    done_events = as_tuples(all_events(first.stub, done))
    hang = write_tasks(tmp_path / "hang", {"h": ([], ["echo before", hang_command(tmp_path)])})
    pidfile = _pidfiles[-1]
    running = start_job(first.stub, hang, tmp_path)
    running_events = as_tuples(events_until(
        first.stub, running, is_task_event("task.backpressure", "h", 2)))
    wait_until(pidfile.exists, what="the hanging command to start")

    # A watcher following the running job through the crash.
    watcher = subprocess.Popen(
        CLI + ["watch", running, "--socket", str(first.socket_path)], cwd=ROOT,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = Lines(watcher.stdout), Lines(watcher.stderr)
        out.wait_for(lambda lines: len(lines) >= len(running_events))

        first.kill()
        _kill_leftover_commands()
        assert first.socket_path.exists()  # left behind: the next daemon replaces it
        second = start_daemon(sockdir)
        assert "removed stale socket" in second.log()

        assert watcher.wait(DEADLINE_S) == 0
        out.join()
        err.join()
    finally:
        if watcher.poll() is None:
            watcher.kill()
    printed = [int(line.split()[0]) for line in out.lines]
    assert printed == [e[0] for e in running_events], "\n".join(out.lines + err.lines)
    assert any("lost the daemon" in line for line in err.lines)

    assert as_tuples(all_events(second.stub, done)) == done_events
    assert as_tuples(all_events(second.stub, running)) == running_events
    status = status_of(second.stub, running)
    assert status.status == "failed"
    assert "daemon stopped" in status.error
    assert status_of(second.stub, done).status == "completed"


def test_a_stale_socket_file_is_replaced(start_daemon, sockdir):
    socket_path = sockdir / "run" / "daemon.sock"
    socket_path.parent.mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(socket_path))
    stale.close()  # the file stays, nobody listens
    d = start_daemon(sockdir)
    assert d.stub.Health(daemon_pb2.HealthRequest(), timeout=5).healthy
    assert stat.S_IMODE(os.stat(socket_path).st_mode) == 0o600
    assert "removed stale socket" in d.log()


def test_cli_watch_resumes_across_a_restart_without_gaps_or_repeats(
        start_daemon, sockdir, tmp_path):
    first = start_daemon(sockdir)
    tasks = write_tasks(tmp_path / "tasks", {
        "w": ([], ["echo one", gate_command(tmp_path, "g"), "echo three", "echo four"]),
    })
    job_id = start_job(first.stub, tasks, tmp_path)
    watcher = subprocess.Popen(
        CLI + ["watch", job_id, "--socket", str(first.socket_path)], cwd=ROOT,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = Lines(watcher.stdout), Lines(watcher.stderr)
        out.wait_for(lambda lines: any("task.backpressure" in line and '"task": 2' in line
                                       for line in lines))
        # SIGTERM waits for the job, which holds at the gate: the watch is
        # cut off while the daemon is still up, and the rest of the job's
        # events are recorded while nobody watches.
        first.proc.send_signal(signal.SIGTERM)
        err.wait_for(lambda lines: any("lost the daemon" in line for line in lines))
        release(tmp_path, "g")
        assert first.wait_exit() == 0

        second = start_daemon(sockdir)
        assert watcher.wait(DEADLINE_S) == 0, "\n".join(err.lines)
        out.join()
        err.join()
    finally:
        if watcher.poll() is None:
            watcher.kill()
    events = all_events(second.stub, job_id)
    assert events[-1].event_type == "orch.completed"
    printed = [int(line.split()[0]) for line in out.lines]
    assert printed == list(range(1, len(events) + 1)), "\n".join(out.lines + err.lines)
