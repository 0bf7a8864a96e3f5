"""The in-process target: the servicer under grpc_testing, no sockets.

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
from typing import Callable

import grpc
import grpc_testing

from choo.v1 import daemon_pb2
from choo_reference.servicer import DaemonServicer
from choo_reference.shutdown import ShutdownSignal

from .stream import OK, ReceivedStream, Status

SERVICE = daemon_pb2.DESCRIPTOR.services_by_name["DaemonService"]
CALL_ID_KEY = "conformance-call-id"

ServicerFactory = Callable[[object, ShutdownSignal], object]


def default_servicer(jobs, shutdown: ShutdownSignal):
    return DaemonServicer(jobs, shutdown)


class HandlerRecord:
    """What one handler did on the server side: when it ended, and how."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.ended = threading.Event()
        self.outcome: Status | None = None
        self._aborted: Status | None = None

    def finish(self, outcome: Status) -> None:
        self.outcome = outcome
        self.ended.set()


class _RecordingContext:
    """Passes everything to the real context and notes abort()'s status."""

    def __init__(self, context, record: HandlerRecord) -> None:
        self._context = context
        self._record = record

    def abort(self, code, details):
        self._record._aborted = Status(code, details)
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
    """Wraps a servicer; records every handler's end by the caller's call id."""

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

    def _ended_by(self, record: HandlerRecord, error: BaseException) -> Status:
        if record._aborted is not None:
            return record._aborted
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


class WatchCall(ReceivedStream):
    """The client side of one WatchJob call: collects events as they come."""

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


class InProcessTarget:
    """A DaemonService servicer behind grpc_testing, with a probe on it."""

    def __init__(self, jobs, servicer_factory: ServicerFactory = default_servicer) -> None:
        self.jobs = jobs
        self.shutdown = ShutdownSignal()
        self.servicer = servicer_factory(jobs, self.shutdown)
        self.probe = HandlerProbe(self.servicer)
        self._server = grpc_testing.server_from_dictionary(
            {SERVICE: self.probe}, grpc_testing.strict_real_time()
        )
        self._ids = itertools.count(1)
        self.calls: list[WatchCall] = []

    def watch(self, job_id: str, from_sequence: int = 0) -> WatchCall:
        call_id = str(next(self._ids))
        rpc = self._server.invoke_unary_stream(
            SERVICE.methods_by_name["WatchJob"],
            ((CALL_ID_KEY, call_id),),
            daemon_pb2.WatchJobRequest(job_id=job_id, from_sequence=from_sequence),
            None,
        )
        call = WatchCall(call_id, rpc)
        self.calls.append(call)
        return call

    def stall(self, call: WatchCall) -> None:
        """The call's transport stops accepting messages."""
        self.probe.gate(call.call_id).clear()

    def unstall(self, call: WatchCall) -> None:
        self.probe.gate(call.call_id).set()

    def handler(self, call: WatchCall) -> HandlerRecord | None:
        return self.probe.records.get(call.call_id)

    def begin_shutdown(self) -> None:
        self.shutdown.trigger()

    def close(self, timeout: float = 5.0) -> list[str]:
        """Cancel what is still open and let every handler end; returns the
        problems left over (handlers that did not end)."""
        self.probe.open_all_gates()
        for call in self.calls:
            if not call.is_over():
                call.cancel()
        close_feeds = getattr(self.jobs, "close_all_feeds", None)
        if close_feeds is not None:
            close_feeds()
        problems = []
        for call_id, record in list(self.probe.records.items()):
            if not record.ended.wait(timeout):
                problems.append(f"the {record.method} handler of call {call_id} never ended")
        for call in self.calls:
            call.join(timeout)
        return problems


class UnaryCall:
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
        """(response, status), or (None, None) if no answer came in time."""
        self._done.wait(timeout)
        return self.response, self.status


class InProcessDaemon(InProcessTarget):
    """The reference daemon's job manager (the orchestrator over a JobStore on
    a database file) behind the servicer.

    Its setup operations are those of the conformance control service
    (CreateJob, AppendEvents, FinishJob, ListSubscriptions), so the same steps
    can drive a daemon over a channel.
    """

    def __init__(self, db_path, servicer_factory: ServicerFactory = default_servicer,
                 job_manager_factory=None) -> None:
        from choo_reference.orchestrator import Orchestrator

        self.db_path = db_path
        self._job_manager_factory = job_manager_factory or default_job_manager
        self._servicer_factory = servicer_factory
        self.store = self._job_manager_factory(db_path)
        super().__init__(Orchestrator(self.store), servicer_factory)

    def call(self, method: str, request) -> UnaryCall:
        return UnaryCall(self._server.invoke_unary_unary(
            SERVICE.methods_by_name[method], (), request, None))

    def create_job(self, job_id: str, status: str) -> str:
        return self.store.create_job(job_id, status).job_id

    def append_events(self, job_id: str, specs) -> list[int]:
        return [e.sequence for e in self.store.record_many(job_id, list(specs))]

    def finish_job(self, job_id: str, status: str, error: str = "") -> None:
        self.store.set_status(job_id, status, error)

    def job(self, job_id: str):
        return self.store.get_job(job_id)

    def events(self, job_id: str):
        return self.store.events(job_id)

    def subscriptions(self, job_id: str) -> list[tuple[int, bool]]:
        return self.store.subscriptions(job_id)

    def open_subscription_count(self) -> int:
        return self.store.open_subscription_count()

    def close(self, timeout: float = 5.0) -> list[str]:
        # No run outlives the scenario; a Shutdown call still waiting for one
        # returns once it is stopped.
        self.jobs.shutdown(wait_for_jobs=False, timeout_s=0)
        return super().close(timeout)

    def restart(self) -> list[str]:
        """Stop as a crash would (no job is finished on the way down) and
        start again on the same database file."""
        problems = InProcessTarget.close(self)
        self.store.close()
        self.__init__(self.db_path, self._servicer_factory, self._job_manager_factory)
        return problems


def default_job_manager(db_path):
    from choo_reference.job_store import JobStore

    return JobStore(db_path)
