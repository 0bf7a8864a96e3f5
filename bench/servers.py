"""The two servers a figure runs against, each in its own process on a Unix
socket under /tmp: the reference daemon (recording through its JobStore and
SQLite log) and the plain-grpcio ceiling. Both are driven the same way."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import grpc

from choo.conformance.v1 import control_pb2, control_pb2_grpc
from choo.v1 import daemon_pb2, daemon_pb2_grpc

from . import processes
from .processes import Processes

STARTUP_S = 20.0
# `choo-ref daemon` exactly as installed; the same daemon through
# bench.reference_daemon with the RPC thread pool sized by the benchmark; the
# plain-grpcio ceiling on grpc.server and on grpc.aio.
SHIPPED, POOLED = "choo-ref daemon", "daemon-pooled"
CEILING_SYNC, CEILING_AIO = "ceiling-sync", "ceiling-aio"
CEILINGS = (CEILING_SYNC, CEILING_AIO)


class Server:
    """One server process of `kind` (see above); max_workers sizes the thread
    pool of POOLED and CEILING_SYNC."""

    def __init__(self, procs: Processes, kind: str, max_workers: int, log_dir: Path) -> None:
        self.kind = kind
        self._procs = procs
        # Short: Unix socket paths are limited to about 107 bytes.
        self._dir = tempfile.mkdtemp(prefix="cb-", dir="/tmp")
        self.socket = f"{self._dir}/s"
        db = f"{self._dir}/d.db"
        log = log_dir / f"{kind.replace(' ', '-')}.log"
        if kind in CEILINGS:
            extra = ["--aio"] if kind == CEILING_AIO else []
            self.proc = procs.python("bench.ceiling_server", "--socket", self.socket,
                                     "--max-workers", str(max_workers), *extra, log=log)
        elif kind == POOLED:
            self.proc = procs.python("bench.reference_daemon", "--socket", self.socket,
                                     "--db", db, "--max-workers", str(max_workers), log=log)
        else:
            self.proc = procs.python("choo_reference.cli", "daemon", "--socket", self.socket,
                                     "--db", db, "--conformance-control", log=log)
        self.channel = grpc.insecure_channel(f"unix://{self.socket}")
        self.control = control_pb2_grpc.ConformanceControlStub(self.channel)
        self.daemon = daemon_pb2_grpc.DaemonServiceStub(self.channel)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode} at startup")
            try:
                grpc.channel_ready_future(self.channel).result(timeout=0.2)
                return
            except grpc.FutureTimeoutError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.kind} did not listen on {self.socket} "
                                       f"within {STARTUP_S} s") from None

    # -- driving a job ---------------------------------------------------------------

    def create_job(self) -> str:
        return self.control.CreateJob(control_pb2.CreateJobRequest(status="running"),
                                      timeout=10).job_id

    def append(self, job_id: str, specs, timeout: float = 30) -> None:
        self.control.AppendEvents(control_pb2.AppendEventsRequest(job_id=job_id, events=specs),
                                  timeout=timeout)

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

    def threads(self) -> int:
        return processes.threads(self.pid)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.kind not in CEILINGS and self.proc.poll() is None:
            try:
                self.daemon.Shutdown(daemon_pb2.ShutdownRequest(wait_for_jobs=False), timeout=5)
            except grpc.RpcError:
                pass  # a wedged daemon: SIGTERM below ends its watches
        self.channel.close()
        self._procs.stop(self.proc, grace_s=10)
        shutil.rmtree(self._dir, ignore_errors=True)
