"""The remote target: a daemon over a real gRPC channel, ours or anyone's.

Jobs and events are set up through the daemon's ConformanceControl service;
what the in-process target sees by wrapping the servicer (a handler's end) is
seen here through ListSubscriptions. Each watch has a channel of its own, so
that dropping a client's connection is a real disconnect.
"""

from __future__ import annotations

import itertools
import os
import shlex
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass

import grpc

from choo.conformance.v1 import control_pb2, control_pb2_grpc
from choo.v1 import daemon_pb2, daemon_pb2_grpc

from .stream import OK, ReceivedStream, Status
from .wait import wait_until

STARTUP_TIMEOUT_S = 20.0
# Watches with a connection of their own (so that one can be dropped); the
# rest share SHARED_CHANNELS connections.
OWN_CHANNEL_WATCHES = 16
SHARED_CHANNELS = 8


def _status_of(error: grpc.RpcError) -> Status:
    return Status(error.code(), error.details() or "")


class RemoteWatch(ReceivedStream):
    """One WatchJob call on its own channel; same interface as WatchCall."""

    def __init__(self, channel: grpc.Channel, request: daemon_pb2.WatchJobRequest,
                 owns_channel: bool) -> None:
        super().__init__()
        self._channel = channel
        self._owns_channel = owns_channel
        self._call = daemon_pb2_grpc.DaemonServiceStub(channel).WatchJob(request)
        self._gate = threading.Event()  # cleared: the client stops reading
        self._gate.set()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        status = OK
        try:
            for event in self._call:
                self._add(event)
                self._gate.wait()
        except grpc.RpcError as error:
            status = _status_of(error)
        self._finish(status)

    def cancel(self) -> None:
        self._call.cancel()
        self._gate.set()

    def drop_connection(self) -> None:
        """The client goes away without a word: its channel closes."""
        assert self._owns_channel, "only a watch with a channel of its own can drop it"
        self._channel.close()
        self._gate.set()

    def stall(self) -> None:
        self._gate.clear()

    def unstall(self) -> None:
        self._gate.set()

    def join(self, timeout: float) -> None:
        self._reader.join(timeout)
        if self._owns_channel:
            self._channel.close()


class RemoteUnaryCall:
    def __init__(self, future) -> None:
        self._future = future

    def result(self, timeout: float):
        try:
            return self._future.result(timeout=timeout), OK
        except grpc.FutureTimeoutError:
            return None, None
        except grpc.RpcError as error:
            return None, _status_of(error)


@dataclass
class RemoteJob:
    job_id: str
    status: str
    error: str


class RemoteDaemon:
    """A DaemonService (with ConformanceControl) at an address."""

    def __init__(self, address: str, process: "DaemonProcess | None" = None) -> None:
        self.address = address
        self.process = process
        self._channel = grpc.insecure_channel(address)
        self._stub = daemon_pb2_grpc.DaemonServiceStub(self._channel)
        self._control = control_pb2_grpc.ConformanceControlStub(self._channel)
        # Scenarios name their jobs ("job-9"); on a shared daemon each
        # scenario's names map to fresh ids so scenarios never collide.
        self._scope = uuid.uuid4().hex[:8]
        self._names: dict[str, str] = {}
        self._started: list = []  # StartJob calls: their jobs are stopped at the end
        self._pending: list = []
        self._shared_channels: list[grpc.Channel] = []
        self.calls: list[RemoteWatch] = []

    def _id(self, name: str) -> str:
        return self._names.get(name, name)

    # -- the client side -----------------------------------------------------

    def watch(self, job_id: str, from_sequence: int = 0) -> RemoteWatch:
        request = daemon_pb2.WatchJobRequest(job_id=self._id(job_id), from_sequence=from_sequence)
        if len(self.calls) < OWN_CHANNEL_WATCHES:
            call = RemoteWatch(grpc.insecure_channel(self.address), request, owns_channel=True)
        else:
            # Past a few, watches share channels: a client process with a
            # thousand connections measures the client, not the daemon.
            if not self._shared_channels:
                self._shared_channels = [grpc.insecure_channel(self.address)
                                         for _ in range(SHARED_CHANNELS)]
            channel = self._shared_channels[len(self.calls) % SHARED_CHANNELS]
            call = RemoteWatch(channel, request, owns_channel=False)
        self.calls.append(call)
        return call

    def call(self, method: str, request) -> RemoteUnaryCall:
        if hasattr(request, "job_id") and request.job_id in self._names:
            request.job_id = self._names[request.job_id]
        future = getattr(self._stub, method).future(request)
        if method == "StartJob":
            self._started.append(future)
        return RemoteUnaryCall(future)

    def stall(self, call: RemoteWatch) -> None:
        call.stall()

    def unstall(self, call: RemoteWatch) -> None:
        call.unstall()

    def begin_shutdown(self) -> None:
        # Kept: a grpc future that is garbage-collected cancels its call.
        self._pending.append(
            self._stub.Shutdown.future(daemon_pb2.ShutdownRequest(wait_for_jobs=False)))

    # -- setup through the control service ------------------------------------

    def create_job(self, job_id: str, status: str) -> str:
        real = f"{job_id}-{self._scope}" if job_id else ""
        response = self._control.CreateJob(control_pb2.CreateJobRequest(job_id=real, status=status))
        self._names[job_id] = response.job_id
        return response.job_id

    def append_events(self, job_id: str, specs) -> list[int]:
        response = self._control.AppendEvents(control_pb2.AppendEventsRequest(
            job_id=self._id(job_id),
            events=[control_pb2.EventSpec(event_type=t, unit_id=u, payload_json=p)
                    for t, u, p in specs]))
        return list(response.sequences)

    def finish_job(self, job_id: str, status: str, error: str = "") -> None:
        self._control.FinishJob(control_pb2.FinishJobRequest(
            job_id=self._id(job_id), status=status, error=error))

    def subscriptions(self, job_id: str) -> list[tuple[int, bool]]:
        response = self._control.ListSubscriptions(
            control_pb2.ListSubscriptionsRequest(job_id=self._id(job_id)))
        return [(s.from_sequence, s.open) for s in response.subscriptions]

    def job(self, job_id: str) -> RemoteJob:
        """The job's state. A daemon the suite started that has since exited
        (Shutdown ends it) is started again on its database to read it back."""
        request = daemon_pb2.GetJobStatusRequest(job_id=self._id(job_id))
        try:
            response = self._stub.GetJobStatus(request, timeout=10)
        except grpc.RpcError as error:
            # UNAVAILABLE: the daemon is gone; CANCELLED: it went mid-call.
            gone = error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
            if not gone or self.process is None:
                raise
            self.process.wait_exit(STARTUP_TIMEOUT_S)
            self.process.start()
            response = self._stub.GetJobStatus(request, wait_for_ready=True, timeout=10)
        return RemoteJob(response.job_id, response.status, response.error)

    def events(self, job_id: str):
        watch = self.watch(job_id, 1)
        watch.wait_for_status(30)
        return [_Event(e) for e in watch.received()]

    def restart(self) -> list[str]:
        if self.process is None:
            return ["this daemon was not started by the suite, so it cannot be restarted"]
        problems = self.close()
        self._channel.close()
        self.process.kill()
        self.process.start()
        names = self._names
        self.__init__(self.address, self.process)
        self._names = names  # the same jobs, now read back from the database
        return problems

    def close(self, timeout: float = 5.0) -> list[str]:
        for call in self.calls:
            if not call.is_over():
                call.cancel()
        for call in self.calls:
            call.join(timeout)
        for channel in self._shared_channels:
            channel.close()
        self._stop_started_jobs()
        problems = []
        for name, job_id in self._names.items():
            try:
                still_open = [s for s in self.subscriptions(name) if s[1]]
            except grpc.RpcError:
                continue  # the daemon is gone (a scenario shut it down)
            if still_open and not wait_until(
                lambda name=name: not any(o for _, o in self.subscriptions(name)), timeout
            ):
                problems.append(f"job {job_id} still has open subscriptions after its watches ended")
        return problems

    def _stop_started_jobs(self) -> None:
        """A shared daemon must not keep running the work of a scenario that
        is over."""
        for future in self._started:
            try:
                job_id = future.result(timeout=10).job_id
                self._stub.StopJob(daemon_pb2.StopJobRequest(job_id=job_id, force=True), timeout=10)
            except (grpc.RpcError, grpc.FutureTimeoutError):
                pass  # refused, already stopped, or the daemon is gone

    def open_subscription_count(self) -> int:
        total = 0
        for name in self._names:
            try:
                total += sum(1 for _, is_open in self.subscriptions(name) if is_open)
            except grpc.RpcError:
                pass
        return total


@dataclass
class _Event:
    """A received JobEvent, shaped like choo_reference.jobs.Event."""

    sequence: int
    event_type: str
    unit_id: str
    payload_json: str

    def __init__(self, message) -> None:
        self.sequence = message.sequence
        self.event_type = message.event_type
        self.unit_id = message.unit_id
        self.payload_json = message.payload_json


class DaemonProcess:
    """An implementation under test, started from a command line with
    `{socket}` (and optionally `{db}`) placeholders."""

    _counter = itertools.count()

    def __init__(self, command: str) -> None:
        self.command = command
        self.folder = tempfile.mkdtemp(prefix="choo-conf-", dir="/tmp")
        n = next(self._counter)
        self.socket = os.path.join(self.folder, f"d{n}.sock")
        self.db = os.path.join(self.folder, f"d{n}.db")
        self.address = f"unix://{self.socket}"
        self.log_path = os.path.join(self.folder, f"d{n}.log")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        argv = [part.format(socket=self.socket, db=self.db) for part in shlex.split(self.command)]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        if not self._wait_healthy(STARTUP_TIMEOUT_S):
            self.kill()
            raise RuntimeError(
                f"the daemon did not answer Health on {self.address} within "
                f"{STARTUP_TIMEOUT_S:.0f} s; its output is in {self.log_path}")

    def _wait_healthy(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as channel:
            stub = daemon_pb2_grpc.DaemonServiceStub(channel)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    return False
                try:
                    stub.Health(daemon_pb2.HealthRequest(), timeout=1, wait_for_ready=True)
                    return True
                except grpc.RpcError:
                    continue
        return False

    def wait_exit(self, timeout: float) -> None:
        """Wait for a daemon that is on its way out; kill it if it lingers."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        """Shutdown without waiting for jobs, then SIGKILL if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            with grpc.insecure_channel(self.address) as channel:
                daemon_pb2_grpc.DaemonServiceStub(channel).Shutdown(
                    daemon_pb2.ShutdownRequest(wait_for_jobs=False), timeout=10)
        except grpc.RpcError:
            os.killpg(self.proc.pid, signal.SIGTERM)
        self.wait_exit(15)
