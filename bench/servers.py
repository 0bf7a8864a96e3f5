"""The two servers a figure runs against, each in its own process on a Unix
socket under /tmp: the reference daemon (recording through its JobStore and
SQLite log) and the plain-grpcio ceiling. Both are driven the same way.

Both are started and stopped by choo_conformance.process.DaemonProcess, the
project's one class for a daemon process: it starts the command, waits until
Health answers, and stops it with Shutdown, then SIGTERM, then SIGKILL to its
process group. The ceiling serves Health too; it has no Shutdown (the call is
UNIMPLEMENTED), so it is stopped by the SIGTERM it handles.
"""

from __future__ import annotations

import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import grpc

from choo.conformance.v1 import control_pb2, control_pb2_grpc
from choo.v1 import daemon_pb2_grpc
from choo_conformance.process import DaemonProcess

from . import processes
from .processes import ROOT, Processes

STARTUP_S = 20.0
# `choo-ref daemon` exactly as installed; the same daemon through
# bench.reference_daemon with the RPC thread pool sized by the benchmark; the
# plain-grpcio ceiling on grpc.server and on grpc.aio.
SHIPPED, POOLED = "choo-ref daemon", "daemon-pooled"
CEILING_SYNC, CEILING_AIO = "ceiling-sync", "ceiling-aio"
CEILINGS = (CEILING_SYNC, CEILING_AIO)


def command(kind: str, max_workers: int) -> list[str]:
    """The server's command line, with DaemonProcess's {socket} and {db}."""
    python = sys.executable
    if kind in CEILINGS:
        extra = ["--aio"] if kind == CEILING_AIO else []
        return [python, "-m", "bench.ceiling_server", "--socket", "{socket}",
                "--max-workers", str(max_workers), *extra]
    if kind == POOLED:
        return [python, "-m", "bench.reference_daemon", "--socket", "{socket}", "--db", "{db}",
                "--max-workers", str(max_workers)]
    return [python, "-m", "choo_reference.cli", "daemon", "--socket", "{socket}", "--db", "{db}",
            "--conformance-control"]


class Server:
    """One server process of `kind` (see above), on the placement's server
    cores; max_workers sizes the thread pool of POOLED and CEILING_SYNC."""

    def __init__(self, procs: Processes, kind: str, max_workers: int, log_dir: Path) -> None:
        self.kind = kind
        self._log = log_dir / f"{kind.replace(' ', '-')}.log"
        # Short: Unix socket paths are limited to about 107 bytes.
        self._dir = tempfile.mkdtemp(prefix="cb-", dir="/tmp")
        self.process = DaemonProcess(command(kind, max_workers), folder=self._dir, cwd=str(ROOT))
        self.socket = self.process.socket
        with procs.placement.server():
            procs.adopt(self.process.launch())
        self._procs = procs
        self.channel = grpc.insecure_channel(f"unix://{self.socket}")
        self.control = control_pb2_grpc.ConformanceControlStub(self.channel)
        self.daemon = daemon_pb2_grpc.DaemonServiceStub(self.channel)
        # Waited for here, not inside the placement: the gRPC threads this
        # process starts with its first channel stay on the client cores.
        if not self.process.wait_healthy(STARTUP_S):
            tail = self.process.log_tail()
            self.stop()
            raise RuntimeError(f"{kind} did not answer Health on {self.socket} within "
                               f"{STARTUP_S:g} s; its output:\n{tail}")

    @property
    def pid(self) -> int:
        return self.process.pid

    # -- driving a job ---------------------------------------------------------------

    def create_job(self) -> str:
        return self.control.CreateJob(control_pb2.CreateJobRequest(status="running"),
                                      timeout=10).job_id

    def append(self, job_id: str, specs, timeout: float = 30) -> list[int]:
        return list(self.control.AppendEvents(
            control_pb2.AppendEventsRequest(job_id=job_id, events=specs),
            timeout=timeout).sequences)

    def finish(self, job_id: str, timeout: float = 30) -> None:
        self.control.FinishJob(control_pb2.FinishJobRequest(job_id=job_id, status="completed"),
                               timeout=timeout)

    def open_watches(self, job_id: str, timeout: float = 10) -> int:
        response = self.control.ListSubscriptions(
            control_pb2.ListSubscriptionsRequest(job_id=job_id), timeout=timeout)
        return sum(1 for s in response.subscriptions if s.open)

    def wait_open_watches(self, job_id: str, count: int, timeout_s: float,
                          clients=()) -> int:
        """Polls until `count` watches are open; returns how many are open at the
        end. Gives up early when a client process has exited (it failed)."""
        deadline = time.monotonic() + timeout_s
        n = 0
        while time.monotonic() < deadline:
            try:
                n = self.open_watches(job_id, timeout=max(deadline - time.monotonic(), 0.1))
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise
                return -1  # the server did not answer at all
            if n >= count or any(c.poll() is not None for c in clients):
                return n
            time.sleep(0.05)
        return n

    # -- measuring the process ---------------------------------------------------------

    def rss_kb(self) -> int:
        return processes.rss_kb(self.pid)

    def cpu_s(self) -> float:
        return processes.cpu_s(self.pid)

    def cpu_times(self) -> tuple[float, float]:
        return processes.cpu_times(self.pid)

    def main_thread_cpu_s(self) -> float:
        return processes.main_thread_cpu_s(self.pid)

    def threads(self) -> int:
        return processes.threads(self.pid)

    def terminate(self, timeout_s: float = 10) -> None:
        """SIGTERM, as a service manager stops a daemon, and wait for the exit."""
        self.process.signal(signal.SIGTERM)
        self.process.wait_exit(timeout_s)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.channel.close()
        self.process.stop()
        try:
            with open(self.process.log_path, "rb") as src, open(self._log, "ab") as out:
                shutil.copyfileobj(src, out)
        except OSError:
            pass
        shutil.rmtree(self._dir, ignore_errors=True)
