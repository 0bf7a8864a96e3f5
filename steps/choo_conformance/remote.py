"""The remote transport: a daemon over a real gRPC channel, ours or anyone's.

Each of the first watches has a channel of its own, so that dropping a
client's connection is a real disconnect; past those, watches share a few
channels (a client process with a thousand connections measures the client,
not the daemon).
"""

from __future__ import annotations

import threading
from typing import Any

import grpc

from choo.conformance.v1 import control_pb2_grpc
from choo.v1 import daemon_pb2, daemon_pb2_grpc

from .contract import CONTROL_SERVICE, DAEMON_SERVICE
from .daemon_target import CALL_DEADLINE_S, WATCH_DEADLINE_S, DaemonTarget, Watch
from .process import RECONNECT_PROMPTLY, STARTUP_TIMEOUT_S, DaemonProcess
from .stream import OK, Status

OWN_CHANNEL_WATCHES = 16
SHARED_CHANNELS = 8


def status_of(error: grpc.RpcError) -> Status:
    return Status(error.code(), error.details() or "")


class RemoteWatch(Watch):
    def __init__(self, channel: grpc.Channel, request: daemon_pb2.WatchJobRequest,
                 owns_channel: bool) -> None:
        super().__init__()
        self._channel = channel
        self._owns_channel = owns_channel
        self._call = daemon_pb2_grpc.DaemonServiceStub(channel).WatchJob(
            request, timeout=WATCH_DEADLINE_S)
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
            status = status_of(error)
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
            return None, status_of(error)


class RemoteDaemon(DaemonTarget):
    """A DaemonService (and, in the control profile, ConformanceControl) at
    an address; `process` when the suite started it."""

    def __init__(self, address: str, process: DaemonProcess | None = None) -> None:
        super().__init__()
        self.address = address
        self.process = process
        self._connect()

    def _connect(self) -> None:
        self._channel = grpc.insecure_channel(self.address, options=RECONNECT_PROMPTLY)
        self._daemon = daemon_pb2_grpc.DaemonServiceStub(self._channel)
        self._stubs: dict[str, Any] = {
            DAEMON_SERVICE.full_name: self._daemon,
            CONTROL_SERVICE.full_name: control_pb2_grpc.ConformanceControlStub(self._channel),
        }
        self._shared_channels: list[grpc.Channel] = []

    def _unary(self, service, method, request, timeout):
        return RemoteUnaryCall(getattr(self._stubs[service], method).future(request, timeout=timeout))

    def _open_watch(self, request):
        if len(self.calls) < OWN_CHANNEL_WATCHES:
            channel = grpc.insecure_channel(self.address, options=RECONNECT_PROMPTLY)
            return RemoteWatch(channel, request, owns_channel=True)
        if not self._shared_channels:
            self._shared_channels = [grpc.insecure_channel(self.address, options=RECONNECT_PROMPTLY)
                                     for _ in range(SHARED_CHANNELS)]
        channel = self._shared_channels[len(self.calls) % SHARED_CHANNELS]
        return RemoteWatch(channel, request, owns_channel=False)

    def stall(self, watch):
        watch.stall()

    def unstall(self, watch):
        watch.unstall()

    def reopen(self) -> bool:
        if self.process is None:
            return False
        self.process.wait_exit(STARTUP_TIMEOUT_S)
        self.process.kill()
        self.process.start()
        self._channel.close()
        for channel in self._shared_channels:
            channel.close()
        self._connect()
        return True

    def restart(self) -> list[str]:
        if self.process is None:
            return ["this daemon was not started by the suite, so it cannot be restarted"]
        problems = self.close()
        self.process.kill()
        self.process.start()
        self._connect()
        self.calls = []
        return problems

    def close(self, timeout: float = 5.0) -> list[str]:
        problems = super().close(timeout)
        for channel in self._shared_channels:
            channel.close()
        self._channel.close()
        return problems


def raw_call(address: str, method: str, data: bytes, streaming: bool) -> Status:
    """Send `data` as the request of `method` (a full name,
    "/package.Service/Method") without encoding it, and read the answer as
    bytes: only a real channel can carry a request that does not decode."""
    with grpc.insecure_channel(address) as channel:
        try:
            if streaming:
                call = channel.unary_stream(method)
                for _ in call(data, timeout=CALL_DEADLINE_S):
                    pass
            else:
                channel.unary_unary(method)(data, timeout=CALL_DEADLINE_S)
        except grpc.RpcError as error:
            return status_of(error)
    return OK
