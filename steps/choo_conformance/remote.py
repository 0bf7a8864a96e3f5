"""The remote transport: a daemon over a real gRPC channel, ours or anyone's.

Each of the first watches has a channel of its own, so that dropping a
client's connection is a real disconnect; past those, watches share a few
channels (a client process with a thousand connections measures the client,
not the daemon). Watches are read on one event loop (watch_loop); the unary
calls go over a plain channel.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

import grpc

from choo.conformance.v1 import control_pb2_grpc
from choo.v1 import daemon_pb2, daemon_pb2_grpc

from . import watch_loop
from .contract import CONTROL_SERVICE, DAEMON_SERVICE
from .daemon_target import CALL_DEADLINE_S, WATCH_DEADLINE_S, DaemonTarget, Watch
from .process import RECONNECT_PROMPTLY, STARTUP_TIMEOUT_S, DaemonProcess
from .stream import OK, Status

OWN_CHANNEL_WATCHES = 16
SHARED_CHANNELS = 8
# Watch channels keep HTTP/2's initial flow-control window instead of growing
# it to what a fast burst suggests (several MB): a client that stops reading
# must leave the daemon little room to push its backlog into the transport,
# so that what W15 weighs is the daemon's own memory.
WATCH_CHANNEL_OPTIONS = [*RECONNECT_PROMPTLY, ("grpc.http2.bdp_probe", 0)]


def status_of(error: grpc.RpcError) -> Status:
    return Status(error.code(), error.details() or "")


class RemoteWatch(Watch):
    """One WatchJob call, read on the watch loop. Stalled, it stops reading:
    what the daemon sends waits in the transport, as with a client that has
    stopped reading its socket."""

    def __init__(self, channel: grpc.aio.Channel, request: daemon_pb2.WatchJobRequest,
                 owns_channel: bool) -> None:
        super().__init__()
        self._channel = channel
        self._owns_channel = owns_channel
        self._call: Any = None
        self._cancelled = False
        # Cleared and set again on the loop only, once the reader runs.
        self._reading = asyncio.Event()
        self._reading.set()
        self._reader = watch_loop.submit(self._read(request))

    async def _read(self, request: daemon_pb2.WatchJobRequest) -> None:
        status = OK
        try:
            self._call = call = daemon_pb2_grpc.DaemonServiceStub(self._channel).WatchJob(
                request, timeout=WATCH_DEADLINE_S)
            if self._cancelled:
                call.cancel()
            while True:
                event = await call.read()
                if event is grpc.aio.EOF:
                    break
                self._add(event)
                await self._reading.wait()
            code = await call.code()
            if code != grpc.StatusCode.OK:
                status = Status(code, await call.details() or "")
        except grpc.aio.AioRpcError as error:
            status = status_of(error)
        except asyncio.CancelledError:
            # The call was cancelled (cancel(), or its channel closed): no
            # task of the loop is ever cancelled.
            status = Status(grpc.StatusCode.CANCELLED, "cancelled by the client")
        except Exception as error:  # a status the steps can report, not a hang
            status = Status(grpc.StatusCode.UNKNOWN, f"the client failed to read the watch: {error!r}")
        self._finish(status)

    def _cancel_on_loop(self) -> None:
        self._cancelled = True
        if self._call is not None:
            self._call.cancel()
        self._reading.set()

    def cancel(self) -> None:
        watch_loop.call(self._cancel_on_loop, CALL_DEADLINE_S)

    def drop_connection(self) -> None:
        """The client goes away without a word: its channel closes."""
        assert self._owns_channel, "only a watch with a channel of its own can drop it"
        watch_loop.call(self._reading.set, CALL_DEADLINE_S)
        watch_loop.close_channel(self._channel, CALL_DEADLINE_S)

    def stall(self) -> None:
        watch_loop.call(self._reading.clear, CALL_DEADLINE_S)

    def unstall(self) -> None:
        watch_loop.call(self._reading.set, CALL_DEADLINE_S)

    def join(self, timeout: float) -> None:
        concurrent.futures.wait([self._reader], timeout)
        if self._owns_channel:
            watch_loop.close_channel(self._channel, timeout)


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
        self._shared_channels: list[grpc.aio.Channel] = []

    def _watch_channel(self) -> grpc.aio.Channel:
        return watch_loop.open_channel(self.address, WATCH_CHANNEL_OPTIONS, CALL_DEADLINE_S)

    def _close_shared_channels(self) -> None:
        for channel in self._shared_channels:
            watch_loop.close_channel(channel, CALL_DEADLINE_S)
        self._shared_channels = []

    def _unary(self, service, method, request, timeout):
        return RemoteUnaryCall(getattr(self._stubs[service], method).future(request, timeout=timeout))

    def _open_watch(self, request):
        if len(self.calls) < OWN_CHANNEL_WATCHES:
            return RemoteWatch(self._watch_channel(), request, owns_channel=True)
        if not self._shared_channels:
            self._shared_channels = [self._watch_channel() for _ in range(SHARED_CHANNELS)]
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
        self._close_shared_channels()
        self._connect()
        return True

    def kill_now(self) -> None:
        assert self.process is not None, "this daemon was not started by the suite"
        self.process.kill()

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
        self._close_shared_channels()
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


# How long a daemon that answered before has to answer Health once more.
STILL_THERE_S = 3.0


def answers_health(address: str) -> bool:
    """Whether a daemon answers Health at address (any answer, within a few
    seconds): after a failure against --target, whether it is still there."""
    if not address:
        return True
    with grpc.insecure_channel(address) as channel:
        try:
            daemon_pb2_grpc.DaemonServiceStub(channel).Health(
                daemon_pb2.HealthRequest(), timeout=STILL_THERE_S, wait_for_ready=True)
        except grpc.RpcError as error:
            return error.code() not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
    return True
