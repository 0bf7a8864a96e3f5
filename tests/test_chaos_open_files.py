"""Chaos: the daemon runs out of open files (clients hold hundreds of
connections, or its limit is low). StartJob is then RESOURCE_EXHAUSTED, a
fault of the daemon's, not INVALID_ARGUMENT; a running job's next command
waits for a file descriptor instead of failing, and the job goes on once
they are back (docs/OPERATIONS.md, "Running out of open files")."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from chaos_support import (
    CHAOS_DAEMON,
    code_of,
    job_status,
    log_of,
    start_daemon,
    start_job,
    stubs,
)
from test_daemon_process import gate_command, release, short_dir, wait_until, write_tasks

from choo.v1 import daemon_pb2
from choo_conformance.process import DaemonProcess

pytestmark = pytest.mark.slow

# Low enough to run out of with a few dozen connections.
MAX_OPEN_FILES = 64


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@contextmanager
def every_file_descriptor_taken(daemon: DaemonProcess) -> Iterator[None]:
    """Connections the daemon accepts until it has no file descriptor left."""
    connections = []
    try:
        while (before := open_files(daemon.pid)) < MAX_OPEN_FILES:
            assert len(connections) < MAX_OPEN_FILES, "the connections took no descriptor"
            connection = socket.socket(socket.AF_UNIX)
            connection.connect(daemon.socket)
            connections.append(connection)
            wait_until(lambda: open_files(daemon.pid) > before,
                       what="the daemon to accept a connection")
        yield
    finally:
        for connection in connections:
            connection.close()


def test_start_job_without_a_file_descriptor_left_is_resource_exhausted_not_invalid():
    daemon = start_daemon("--max-open-files", str(MAX_OPEN_FILES), command=CHAOS_DAEMON)
    try:
        with short_dir() as work, grpc.insecure_channel(daemon.address) as channel:
            stub = stubs(channel)[0]
            tasks = write_tasks(work / "tasks", {"u": ([], ["true"])})
            request = daemon_pb2.StartJobRequest(tasks_dir=str(tasks), target_branch="main",
                                                 repo_path=str(work))
            assert code_of(stub.Health, daemon_pb2.HealthRequest())[0] == grpc.StatusCode.OK
            with every_file_descriptor_taken(daemon):
                code, details = code_of(stub.StartJob, request)
                assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (code, details)
                assert "Too many open files" in details and "try again later" in details
            wait_until(lambda: open_files(daemon.pid) < MAX_OPEN_FILES - 8,
                       what="the connections to be closed")
            code, details = code_of(stub.StartJob, request)
            assert code == grpc.StatusCode.OK, (code, details)
        assert "Traceback" not in log_of(daemon)
    finally:
        daemon.close()


def test_a_running_job_waits_for_a_file_descriptor_and_goes_on():
    daemon = start_daemon("--max-open-files", str(MAX_OPEN_FILES), command=CHAOS_DAEMON)
    try:
        with short_dir() as work, grpc.insecure_channel(daemon.address) as channel:
            stub = stubs(channel)[0]
            tasks = write_tasks(work / "tasks",
                                {"u": ([], [gate_command(work, "first"), "echo second"])})
            job = start_job(stub, tasks, work)
            wait_until(lambda: Path(work / "first.started").exists(),
                       what="the first command to start")
            with every_file_descriptor_taken(daemon):
                release(work, "first")  # the second command cannot start now

                def waiting_or_ended() -> bool:
                    return ("cannot start its command yet" in log_of(daemon)
                            or job_status(stub, job).status != "running")

                wait_until(waiting_or_ended, what="the second command to find no descriptor")
                status = job_status(stub, job)
                assert status.status == "running", (status.status, status.error)
            wait_until(lambda: job_status(stub, job).status != "running",
                       what="the job to end")
            status = job_status(stub, job)
            assert status.status == "completed", (status.status, status.error)
        assert "Traceback" not in log_of(daemon)
    finally:
        daemon.close()
