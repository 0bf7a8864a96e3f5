"""The in-process transport: servicers under grpc_testing, no sockets.

grpc_testing runs each call's handler on a thread of its own and gives the
client side an object to take responses from. Two of its habits shape this
module (see docs/ARCHITECTURE.md, "grpc_testing quirks"):

- After the client side cancels, `termination()` raises ValueError instead of
  reporting a status, so a cancelled call is reported as CANCELLED by us.
- The server keeps pulling a handler's generator after the client cancelled;
  only the handler can notice. What the handler itself did is therefore
  observed on the server side, by wrapping the servicer (HandlerProbe).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import grpc
import grpc_testing

from choo.v1 import daemon_pb2

from .contract import CONTROL_SERVICE, DAEMON_SERVICE
from .daemon_target import WATCH_DEADLINE_S, DaemonTarget, Watch
from .seam import Checkpoints, Implementation, JobManager
from .stream import OK, Status

CALL_ID_KEY = "conformance-call-id"
_DESCRIPTORS = {d.full_name: d for d in (DAEMON_SERVICE, CONTROL_SERVICE)}


class HandlerRecord:
    """What one handler did on the server side: when it ended, and how."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.ended = threading.Event()
        self.outcome: Status | None = None
        self.aborted: Status | None = None

    def finish(self, outcome: Status) -> None:
        self.outcome = outcome
        self.ended.set()


class _RecordingContext:
    """Passes everything to the real context and notes abort()'s status."""

    def __init__(self, context, record: HandlerRecord) -> None:
        self._context = context
        self._record = record

    def abort(self, code, details):
        self._record.aborted = Status(code, details)
        return self._context.abort(code, details)

    def __getattr__(self, name):
        return getattr(self._context, name)


def _open_gate() -> threading.Event:
    gate = threading.Event()
    gate.set()
    return gate


def _call_id(context) -> str | None:
    for key, value in context.invocation_metadata():
        if key == CALL_ID_KEY:
            return value
    return None


class HandlerProbe:
    """Wraps a DaemonService servicer; records every handler's end by the
    caller's call id, and holds WatchJob's messages while a call is stalled."""

    def __init__(self, servicer) -> None:
        self._servicer = servicer
        self._lock = threading.Lock()
        self.records: dict[str, HandlerRecord] = {}
        # Per call: set while the transport accepts messages. A cleared gate
        # holds the handler at its next message, as HTTP/2 flow control holds
        # a real server's send when the client stops reading.
        self._gates: dict[str, threading.Event] = {}

    def gate(self, call_id: str) -> threading.Event:
        with self._lock:
            return self._gates.setdefault(call_id, _open_gate())

    def open_all_gates(self) -> None:
        with self._lock:
            gates = list(self._gates.values())
        for gate in gates:
            gate.set()

    def _record(self, method: str, context) -> HandlerRecord:
        record = HandlerRecord(method)
        with self._lock:
            self.records[_call_id(context) or f"anonymous-{len(self.records)}"] = record
        return record

    @staticmethod
    def _ended_by(record: HandlerRecord, error: BaseException) -> Status:
        if record.aborted is not None:
            return record.aborted
        return Status(grpc.StatusCode.UNKNOWN, f"handler raised {error!r}")

    def __getattr__(self, name: str):
        method = getattr(self._servicer, name)
        if name == "WatchJob":

            def stream(request, context):
                record = self._record(name, context)
                gate = self.gate(_call_id(context) or "")
                context.add_callback(gate.set)  # a call that ends is no longer held
                try:
                    for message in method(request, _RecordingContext(context, record)):
                        gate.wait()
                        yield message
                except BaseException as error:
                    record.finish(self._ended_by(record, error))
                    raise
                record.finish(OK)

            return stream

        def unary(request, context):
            record = self._record(name, context)
            try:
                response = method(request, _RecordingContext(context, record))
            except BaseException as error:
                record.finish(self._ended_by(record, error))
                raise
            record.finish(OK)
            return response

        return unary

    def unfinished(self) -> list[HandlerRecord]:
        with self._lock:
            return [r for r in self.records.values() if not r.ended.is_set()]


class WatchCall(Watch):
    """The client side of one WatchJob call under grpc_testing."""

    def __init__(self, call_id: str, rpc) -> None:
        super().__init__()
        self.call_id = call_id
        self._rpc = rpc
        self._reader = threading.Thread(target=self._read, name=f"watch-client-{call_id}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                self._add(self._rpc.take_response())
            except ValueError:  # grpc_testing: the call is over, nothing left
                break
        try:
            _, code, details = self._rpc.termination()
            self._finish(Status(code, details))
        except ValueError:  # grpc_testing: termination() after cancel()
            self._finish(Status(grpc.StatusCode.CANCELLED, "cancelled by the client"))

    def cancel(self) -> None:
        self._rpc.cancel()

    def drop_connection(self) -> None:
        # grpc_testing has no connection to drop: the call is cancelled, which
        # is what the server sees when the transport goes away.
        self.cancel()

    def join(self, timeout: float) -> None:
        self._reader.join(timeout)


class InProcessUnaryCall:
    """The client side of one unary call; its answer is awaited with a deadline."""

    def __init__(self, rpc) -> None:
        self._done = threading.Event()
        self.response = None
        self.status: Status | None = None
        threading.Thread(target=self._wait, args=(rpc,), daemon=True).start()

    def _wait(self, rpc) -> None:
        response, _, code, details = rpc.termination()
        self.response, self.status = response, Status(code, details)
        self._done.set()

    def result(self, timeout: float):
        self._done.wait(timeout)
        return self.response, self.status


class InProcessServer:
    """Servicers behind grpc_testing, the DaemonService one wrapped in a probe."""

    def __init__(self, servicers: Mapping[str, object]) -> None:
        self.probe = HandlerProbe(servicers[DAEMON_SERVICE.full_name])
        wrapped = {_DESCRIPTORS[name]: (self.probe if name == DAEMON_SERVICE.full_name else servicer)
                   for name, servicer in servicers.items() if name in _DESCRIPTORS}
        self._server = grpc_testing.server_from_dictionary(wrapped, grpc_testing.strict_real_time())
        self._ids = itertools.count(1)
        self.watches: list[WatchCall] = []

    def unary(self, service: str, method: str, request, timeout: float) -> InProcessUnaryCall:
        descriptor = _DESCRIPTORS[service].methods_by_name[method]
        return InProcessUnaryCall(self._server.invoke_unary_unary(descriptor, (), request, timeout))

    def watch(self, request: daemon_pb2.WatchJobRequest) -> WatchCall:
        call_id = str(next(self._ids))
        rpc = self._server.invoke_unary_stream(
            DAEMON_SERVICE.methods_by_name["WatchJob"], ((CALL_ID_KEY, call_id),), request,
            WATCH_DEADLINE_S)
        call = WatchCall(call_id, rpc)
        self.watches.append(call)
        return call

    def stall(self, call: WatchCall) -> None:
        self.probe.gate(call.call_id).clear()

    def unstall(self, call: WatchCall) -> None:
        self.probe.gate(call.call_id).set()

    def handler(self, call: WatchCall) -> HandlerRecord | None:
        return self.probe.records.get(call.call_id)

    def close(self, timeout: float = 5.0) -> list[str]:
        """Cancel what is still open and let every handler end; returns the
        handlers that did not."""
        self.probe.open_all_gates()
        for call in self.watches:
            if not call.is_over():
                call.cancel()
        problems = [f"the {record.method} handler of call {call_id} never ended"
                    for call_id, record in list(self.probe.records.items())
                    if not record.ended.wait(timeout)]
        for call in self.watches:
            call.join(timeout)
        return problems


class ScriptedTarget:
    """A watch servicer on the suite's scripted job manager (the seed's eight
    rows): only WatchJob, and the daemon's shutdown switch."""

    def __init__(self, implementation: Implementation, jobs: JobManager) -> None:
        self.jobs = jobs
        servicer, self._begin_shutdown = implementation.watch_servicer(jobs)
        self.server = InProcessServer({DAEMON_SERVICE.full_name: servicer})

    def watch(self, job_id: str, from_sequence: int = 0) -> WatchCall:
        return self.server.watch(daemon_pb2.WatchJobRequest(job_id=job_id, from_sequence=from_sequence))

    def handler(self, call: WatchCall) -> HandlerRecord | None:
        return self.server.handler(call)

    def begin_shutdown(self) -> None:
        self._begin_shutdown()

    def close(self, close_feeds: Callable[[], None]) -> list[str]:
        self.server.probe.open_all_gates()
        close_feeds()  # no handler stays blocked on a feed that never ends
        return self.server.close()


class InProcessDaemon(DaemonTarget):
    """A whole daemon from the implementation's `daemon(data_dir)`, its
    DaemonService and ConformanceControl driven through grpc_testing."""

    def __init__(self, implementation: Implementation, data_dir: Path) -> None:
        super().__init__()
        self._implementation = implementation
        self._data_dir = data_dir
        self._start()

    def _start(self) -> None:
        self.instance = self._implementation.daemon(self._data_dir)
        self.server = InProcessServer(self.instance.servicers)

    def _unary(self, service, method, request, timeout):
        return self.server.unary(service, method, request, timeout)

    def _open_watch(self, request):
        return self.server.watch(request)

    def stall(self, watch):
        self.server.stall(watch)

    def unstall(self, watch):
        self.server.unstall(watch)

    def handler(self, call: WatchCall) -> HandlerRecord | None:
        return self.server.handler(call)

    def checkpoints(self) -> Checkpoints | None:
        return getattr(self.instance, "checkpoints", None)

    def reopen(self) -> bool:
        problems = self.server.close()
        assert not problems, problems
        self.instance.close()
        self._start()
        return True

    def kill_now(self) -> None:
        self.instance.crash()

    def restart(self) -> list[str]:
        self.server.probe.open_all_gates()
        self.instance.crash()
        problems = self.server.close()
        self._start()
        return problems

    def close(self, timeout: float = 5.0) -> list[str]:
        problems = super().close(timeout)
        self.instance.close()
        return problems + self.server.close(timeout)
