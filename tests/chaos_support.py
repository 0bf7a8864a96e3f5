"""What the chaos tests (tests/test_chaos_*.py) share: the reference daemon
as a real process, raw calls over its socket, and the processes a test's
commands start, found and killed again whatever happened to the daemon."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import grpc

from choo.conformance.v1 import control_pb2_grpc
from choo.v1 import daemon_pb2, daemon_pb2_grpc
from choo_conformance.process import DaemonProcess, stat_fields

HERE = Path(__file__).resolve().parent
DEADLINE_S = 20.0

REFERENCE_DAEMON = f"{sys.executable} -m choo_reference.cli daemon --socket {{socket}} --db {{db}}"
# The same daemon through serve()'s keyword arguments (tests/chaos_daemon.py).
CHAOS_DAEMON = f"{sys.executable} {HERE / 'chaos_daemon.py'} --socket {{socket}} --db {{db}}"


def start_daemon(*options: str, command: str = REFERENCE_DAEMON) -> DaemonProcess:
    """A serving daemon in a fresh /tmp folder (socket paths are short)."""
    process = DaemonProcess(" ".join([command, *options]))
    process.start()
    return process


def restart(process: DaemonProcess) -> DaemonProcess:
    """Start the same command again on the same socket and database."""
    process.start()
    return process


def log_of(process: DaemonProcess) -> str:
    with open(process.log_path, encoding="utf-8", errors="replace") as log:
        return log.read()


def stubs(channel: grpc.Channel):
    return (daemon_pb2_grpc.DaemonServiceStub(channel),
            control_pb2_grpc.ConformanceControlStub(channel))


def code_of(call, *args, **kwargs) -> tuple[grpc.StatusCode, str]:
    """(code, details) of a call, OK included."""
    kwargs.setdefault("timeout", DEADLINE_S)
    try:
        call(*args, **kwargs)
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


def start_job(stub, tasks_dir: Path, repo: Path, **fields) -> str:
    request = daemon_pb2.StartJobRequest(tasks_dir=str(tasks_dir), target_branch="main",
                                         repo_path=str(repo), **fields)
    return stub.StartJob(request, timeout=DEADLINE_S).job_id


def job_status(stub, job_id: str) -> daemon_pb2.GetJobStatusResponse:
    return stub.GetJobStatus(daemon_pb2.GetJobStatusRequest(job_id=job_id), timeout=DEADLINE_S)


# -- the processes a test's commands start ------------------------------------------


def pid_command(pidfile: Path) -> str:
    """Shell code that writes its pid to pidfile and becomes `sleep 1000`."""
    return f"echo $$ > {pidfile}; exec sleep 1000"


def escaping_command(pidfile: Path) -> str:
    """A command that starts a process in a session of its own (out of the
    command's process group), writes that process's pid, and hangs."""
    return f"setsid sh -c '{pid_command(pidfile)}' & wait"


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie has ended; it only waits to be reaped)."""
    try:
        return stat_fields(pid)[0] not in ("Z", "X")
    except OSError:
        return False


def kill_sleepers(pidfiles) -> None:
    """Kill what the pid files name, if it is still one of the tests' sleeps."""
    for pidfile in pidfiles:
        pid = read_pid(Path(pidfile))
        if pid is None:
            continue
        try:
            if b"sleep" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
