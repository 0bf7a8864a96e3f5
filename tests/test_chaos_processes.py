"""Chaos: commands that leave their process group, and a daemon killed under
its jobs. Nothing a job started survives StopJob(force), Shutdown, the
daemon's exit, or a crash and the next start (docs/OPERATIONS.md); the
units of a job the crash interrupted end as the job did."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import grpc
import pytest
from chaos_support import (
    DEADLINE_S,
    alive,
    escaping_command,
    job_status,
    kill_sleepers,
    log_of,
    pid_command,
    read_pid,
    restart,
    start_daemon,
    start_job,
    stubs,
)
from test_daemon_process import wait_until, write_tasks

from choo.v1 import daemon_pb2
from choo_reference.job_store import JobStore

pytestmark = pytest.mark.slow


@pytest.fixture
def pidfiles(tmp_path):
    """Pid files of the tests' sleeps; whatever they name is killed at the end."""
    files: list[Path] = []

    def pidfile(name: str) -> Path:
        files.append(tmp_path / f"{name}.pid")
        return files[-1]

    yield pidfile
    kill_sleepers(files)


def wait_for_pids(*pidfiles: Path) -> list[int]:
    wait_until(lambda: all(read_pid(f) for f in pidfiles), what="the commands to start")
    return [read_pid(f) for f in pidfiles]


def gone(pid: int) -> bool:
    """Dead and reaped: a zombie left to the daemon as subreaper is waited for."""
    return not Path(f"/proc/{pid}").exists()


def test_forced_stop_and_shutdown_leave_no_command_running(tmp_path, pidfiles):
    escaped = {job: pidfiles(f"escaped-{job}") for job in ("a", "b", "c", "d")}
    commands = {job: escaping_command(escaped[job]) for job in ("a", "b")}
    # c leaves its session and clears its environment: no tag says it is c's.
    commands["c"] = (f"setsid env -i sh -c '{pid_command(escaped['c'])}' & wait")
    # d leaves a process behind and completes.
    commands["d"] = (f"setsid sh -c '{pid_command(escaped['d'])}' & "
                     f"while [ ! -s {escaped['d']} ]; do sleep 0.01; done")
    tasks = {job: write_tasks(tmp_path / job, {job: ([], [command])})
             for job, command in commands.items()}
    daemon = start_daemon()
    try:
        with grpc.insecure_channel(daemon.address) as channel:
            stub = stubs(channel)[0]
            ids = {job: start_job(stub, tasks[job], tmp_path) for job in tasks}
            pids = dict(zip(escaped, wait_for_pids(*escaped.values()), strict=True))

            # What a job left is killed when it ends.
            list(stub.WatchJob(daemon_pb2.WatchJobRequest(job_id=ids["d"]), timeout=DEADLINE_S))
            assert job_status(stub, ids["d"]).status == "completed"
            wait_until(lambda: gone(pids["d"]), what="job d's leftover to be killed and reaped")

            stub.StopJob(daemon_pb2.StopJobRequest(job_id=ids["a"], force=True),
                         timeout=DEADLINE_S)
            wait_until(lambda: gone(pids["a"]), what="job a's escaped process to be killed "
                       "and reaped")
            assert alive(pids["b"]) and alive(pids["c"]), "only job a's processes are killed"

            stub.Shutdown(daemon_pb2.ShutdownRequest(wait_for_jobs=False), timeout=DEADLINE_S)
        assert daemon.proc.wait(DEADLINE_S) == 0
        assert not alive(pids["b"]) and not alive(pids["c"])
    finally:
        daemon.close()


def test_a_restart_after_a_crash_kills_what_the_crashed_daemon_left(tmp_path, pidfiles):
    escaped, own = pidfiles("escaped"), pidfiles("own")
    tasks = write_tasks(tmp_path / "tasks", {
        "a": ([], [f"{escaping_command(escaped)} & {pid_command(own)}"]),
        "b": (["a"], ["true"]),
    })
    daemon = start_daemon()
    try:
        with grpc.insecure_channel(daemon.address) as channel:
            job_id = start_job(stubs(channel)[0], tasks, tmp_path, parallelism=1)
            pids = wait_for_pids(escaped, own)
        os.kill(daemon.proc.pid, signal.SIGKILL)
        daemon.proc.wait(DEADLINE_S)
        assert all(alive(pid) for pid in pids), "a crash does not take the commands along"

        restart(daemon)
        wait_until(lambda: not any(alive(pid) for pid in pids),
                   what="the next start to kill the crashed daemon's commands")
        assert "killed" in log_of(daemon)
        with grpc.insecure_channel(daemon.address) as channel:
            status = job_status(stubs(channel)[0], job_id)
        assert status.status == "failed"
        # A unit that was running failed with the job; one never started was cancelled.
        assert {u.unit_id: u.status for u in status.units} == {"a": "failed", "b": "cancelled"}
    finally:
        daemon.close()


def test_a_recorded_process_that_is_no_longer_ours_is_left_alone(tmp_path):
    """Only what is provably the crashed daemon's is killed: a recorded pid
    now held by another process (its start time differs) is not."""
    from choo_reference import processes

    stranger = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    try:
        with JobStore(tmp_path / "d.db") as store:
            tracker = processes.ProcessTracker(store)
            store.record_process(tracker.token, "job", stranger.pid,
                                 processes.start_ticks(stranger.pid) + 1, processes.boot_id())
        with JobStore(tmp_path / "d.db") as store:
            killed = processes.ProcessTracker(store).kill_leftovers()
        assert killed == 0
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_commands_inherit_the_daemon_environment_and_know_their_job(tmp_path):
    out = tmp_path / "env.txt"
    tasks = write_tasks(tmp_path / "tasks", {"e": ([], [f"env > {out}"])})
    os.environ["CHOO_CHAOS_PROBE"] = "inherited"
    try:
        daemon = start_daemon()
    finally:
        del os.environ["CHOO_CHAOS_PROBE"]
    try:
        with grpc.insecure_channel(daemon.address) as channel:
            stub = stubs(channel)[0]
            job_id = start_job(stub, tasks, tmp_path)
            list(stub.WatchJob(daemon_pb2.WatchJobRequest(job_id=job_id), timeout=DEADLINE_S))
        env = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
        assert env["CHOO_CHAOS_PROBE"] == "inherited"
        # The tag that proves a process is this daemon's names the job.
        assert env["CHOO_REF_PROCESS_TAG"].endswith(job_id)
    finally:
        daemon.close()

