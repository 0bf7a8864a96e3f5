"""What the steps talk to: a daemon under test, whatever carries the calls.

`DaemonTarget` holds everything the two transports share: the client-side
calls, the set-up operations of the conformance control service (create a
job, append events, finish it, list its subscriptions), the naming of a
scenario's jobs, and the clean-up that checks no subscription leaked. The
in-process target (grpc_testing) and the remote one (a real channel) supply
the transport: a unary call, a watch, and a stalled reader.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from choo.conformance.v1 import control_pb2
from choo.v1 import daemon_pb2

from . import journal
from .contract import CONTROL_SERVICE, DAEMON_SERVICE
from .seam import Checkpoints
from .stream import ReceivedStream, Status
from .wait import ASKS_THE_DAEMON, wait_until

# The deadline of every unary call the suite makes.
CALL_DEADLINE_S = 10.0
# The deadline of a WatchJob call: it lasts as long as its job, but never
# longer than a scenario may.
WATCH_DEADLINE_S = 300.0
# How long a daemon has to take up a watch it was sent (DaemonTarget.watch).
TAKE_UP_S = 30.0


class UnaryCall(Protocol):
    def result(self, timeout: float) -> tuple[Any, Status | None]:
        """(response, status); (None, None) if no answer came in time."""


class Watch(ReceivedStream):
    """One WatchJob call as its client sees it."""

    job_id = ""  # the job it watches, as sent

    def cancel(self) -> None:
        raise NotImplementedError

    def drop_connection(self) -> None:
        raise NotImplementedError

    def join(self, timeout: float) -> None:
        raise NotImplementedError


class ControlError(AssertionError):
    """A set-up call of the conformance control service failed: the scenario
    cannot go on, and the daemon is to blame (it fails the scenario)."""


class SetupError(AssertionError):
    """What a scenario needs before it can check its rule never came about
    (StartJob refused, the job never ran a command): the scenario is
    BLOCKED with this cause, not failed, and its rule was not reached.
    `cause` names the precondition in words every scenario that misses it
    shares, so that the report shows one cause, not one per step."""

    def __init__(self, message: str, cause: str = "") -> None:
        super().__init__(message)
        self.cause = cause


@dataclass
class JobState:
    job_id: str
    status: str
    error: str


def timestamp_ns(stamp: Timestamp) -> int:
    return stamp.seconds * 1_000_000_000 + stamp.nanos


class DaemonTarget:
    """A daemon under test, driven through DaemonService and, for set-up,
    ConformanceControl."""

    def __init__(self) -> None:
        # Scenarios name their jobs ("job-9"); each scenario's names map to
        # fresh ids, so scenarios sharing a daemon never collide.
        self._scope = uuid.uuid4().hex[:8]
        self._names: dict[str, str] = {}
        self._started: list[UnaryCall] = []  # StartJob calls: stopped at the end
        self.calls: list[Watch] = []
        # job id -> {sequence: timestamp in ns} as AppendEvents reported them
        self.recorded_times: dict[str, dict[int, int]] = {}

    # -- the transport ----------------------------------------------------------

    def _unary(self, service: str, method: str, request, timeout: float) -> UnaryCall:
        raise NotImplementedError

    def _open_watch(self, request: daemon_pb2.WatchJobRequest) -> Watch:
        raise NotImplementedError

    def stall(self, watch: Watch) -> None:
        """The watch's transport stops accepting messages."""
        raise NotImplementedError

    def unstall(self, watch: Watch) -> None:
        raise NotImplementedError

    def kill_now(self) -> None:
        """Stop the daemon as SIGKILL would, this instant, whatever the
        scenario's other threads are sending it; restart() then starts it
        again on its data."""
        raise NotImplementedError

    def restart(self) -> list[str]:
        """Stop as a crash would and start again on the same data."""
        raise NotImplementedError

    def checkpoints(self) -> Checkpoints | None:
        """The points of a watch's hand-over where the suite can act, if
        the implementation offers them (in process only; seam.py)."""
        return None

    # -- the client side ----------------------------------------------------------

    def job_id(self, name: str) -> str:
        return self._names.get(name, name)

    def watch(self, job: str, from_sequence: int = 0) -> Watch:
        """A watch of the job, returned once the daemon has taken it up (see
        _wait_taken_up)."""
        return self.watch_many(job, [from_sequence])[0]

    def watch_many(self, job: str, starts: Sequence[int]) -> list[Watch]:
        """Watches of one job, one per start, returned once the daemon has
        taken up every one; a single wait for them all."""
        watches = []
        for from_sequence in starts:
            request = daemon_pb2.WatchJobRequest(job_id=self.job_id(job), from_sequence=from_sequence)
            watch = self._open_watch(request)
            watch.job_id = request.job_id
            journal.record(DAEMON_SERVICE.full_name, "WatchJob", request, watch)
            self.calls.append(watch)
            watches.append(watch)
        if job in self._names:
            self._wait_taken_up(job, watches)
        return watches

    def _wait_taken_up(self, job: str, watches: list[Watch]) -> None:
        """Waits until the daemon serves these watches of a job the scenario
        made through the control service: an event or the watch's end has
        reached the client, or the daemon lists as many open subscriptions
        of the job as the scenario has watches of it still going.

        A call reaches the daemon some time after the client sends it, on a
        connection of its own. Without this wait, what the scenario does next
        (finish the job, cancel the watch) could reach the daemon first, and
        a correct daemon would answer another question: a job watched from 0
        after it ended ends at once with no events (W8); a watch cancelled
        before it arrived never subscribes (W4)."""
        job_id = self.job_id(job)

        def taken_up() -> bool:
            if all(watch.has_events() or watch.is_over() for watch in watches):
                return True
            going = sum(1 for watch in self.calls if watch.job_id == job_id and not watch.is_over())
            try:
                return self.open_subscriptions(job) >= going
            except ControlError:
                # The daemon no longer answers (a scenario is shutting it
                # down): the watch's own end will come through instead.
                return False

        if not wait_until(taken_up, TAKE_UP_S, ASKS_THE_DAEMON):
            waiting = sum(1 for w in watches if not (w.has_events() or w.is_over()))
            raise AssertionError(
                f"the daemon had not taken up {waiting} of {len(watches)} new watches of job {job_id} "
                f"after {TAKE_UP_S:g} s: no event or end had reached them, and ListSubscriptions did "
                "not list them open")

    def call(self, method: str, request) -> UnaryCall:
        if hasattr(request, "job_id") and request.job_id in self._names:
            request.job_id = self._names[request.job_id]
        call = self._unary(DAEMON_SERVICE.full_name, method, request, CALL_DEADLINE_S)
        if method == "StartJob":
            self._started.append(call)
        return journal.RecordedCall(call, journal.record(DAEMON_SERVICE.full_name, method, request, call))

    def begin_shutdown(self) -> None:
        """Shutdown(wait_for_jobs=false), not waiting for the answer."""
        self.shutdown_call = self.call("Shutdown", daemon_pb2.ShutdownRequest(wait_for_jobs=False))

    def _call_ok(self, service: str, method: str, request):
        call = self._unary(service, method, request, CALL_DEADLINE_S)
        entry = journal.record(service, method, request, call)
        response, status = call.result(CALL_DEADLINE_S + 1)
        entry.note(status)
        if status is None or status.code == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise ControlError(f"{method} did not answer within {CALL_DEADLINE_S:g} s")
        if status.code != grpc.StatusCode.OK:
            raise ControlError(f"{method} answered {journal.status_text(status)}")
        return response

    def reopen(self) -> bool:
        """Start the daemon again on its data after it has shut down (its
        jobs' end is read back there); False if this target cannot."""
        return False

    def job(self, job: str) -> JobState:
        """The job's state. A daemon that has shut down (Shutdown ends it;
        R11 has it refuse every call until then) is started again on its data
        to read the state back."""
        request = daemon_pb2.GetJobStatusRequest(job_id=self.job_id(job))
        call = self._unary(DAEMON_SERVICE.full_name, "GetJobStatus", request, CALL_DEADLINE_S)
        entry = journal.record(DAEMON_SERVICE.full_name, "GetJobStatus", request, call)
        response, status = call.result(CALL_DEADLINE_S + 1)
        entry.note(status)
        gone = status is not None and status.code in (grpc.StatusCode.UNAVAILABLE,
                                                      grpc.StatusCode.CANCELLED)
        if gone and self.reopen():
            response = self._call_ok(DAEMON_SERVICE.full_name, "GetJobStatus", request)
        elif status is None or status.code != grpc.StatusCode.OK:
            raise ControlError(f"GetJobStatus failed: {status or 'no answer'}")
        return JobState(response.job_id, response.status, response.error)

    def events(self, job: str) -> list:
        """Every event of a job as a watch from 1 returns it (the job must be
        terminal, so that the watch ends)."""
        watch = self.watch(job, 1)
        status = watch.wait_for_status(CALL_DEADLINE_S * 3)
        assert status is not None, f"a watch of job {job} from 1 did not end"
        assert status.code == grpc.StatusCode.OK, f"a watch of job {job} from 1 ended {status}"
        return watch.received()

    # -- set-up through the control service --------------------------------------

    def _control(self, method: str, request):
        return self._call_ok(CONTROL_SERVICE.full_name, method, request)

    def create_job(self, name: str, status: str) -> str:
        wanted = f"{name}-{self._scope}" if name else ""
        response = self._control("CreateJob", control_pb2.CreateJobRequest(job_id=wanted, status=status))
        self._names[name] = response.job_id
        return response.job_id

    def append_events(self, job: str, specs: Sequence[tuple[str, str, str]]) -> list[int]:
        job_id = self.job_id(job)
        response = self._control("AppendEvents", control_pb2.AppendEventsRequest(
            job_id=job_id,
            events=[control_pb2.EventSpec(event_type=t, unit_id=u, payload_json=p) for t, u, p in specs]))
        sequences = list(response.sequences)
        stamps = list(getattr(response, "timestamps", ()))
        if stamps:
            assert len(stamps) == len(sequences), (
                f"AppendEvents returned {len(sequences)} sequences but {len(stamps)} timestamps")
            times = self.recorded_times.setdefault(job_id, {})
            times.update(zip(sequences, map(timestamp_ns, stamps)))
        return sequences

    def finish_job(self, job: str, status: str, error: str = "") -> None:
        self._control("FinishJob", control_pb2.FinishJobRequest(
            job_id=self.job_id(job), status=status, error=error))

    def subscriptions(self, job: str) -> list[tuple[int, bool]]:
        response = self._control("ListSubscriptions",
                                 control_pb2.ListSubscriptionsRequest(job_id=self.job_id(job)))
        return [(s.from_sequence, s.open) for s in response.subscriptions]

    def _all_released(self, job: str) -> bool:
        return not self.open_subscriptions(job)

    def open_subscriptions(self, job: str) -> int:
        return sum(1 for _, is_open in self.subscriptions(job) if is_open)

    # -- the end of a scenario -------------------------------------------------------

    def close(self, timeout: float = 5.0) -> list[str]:
        """Cancel what is still open and stop the scenario's jobs; returns the
        problems found: subscriptions that outlived their watches."""
        for watch in self.calls:
            if not watch.is_over():
                watch.cancel()
        for watch in self.calls:
            watch.join(timeout)
        self._stop_started_jobs()
        problems = []
        for name, job_id in self._names.items():
            try:
                if not self.open_subscriptions(name):
                    continue
            except ControlError:
                continue  # the daemon is gone (a scenario shut it down)
            if not wait_until(functools.partial(self._all_released, name), timeout, ASKS_THE_DAEMON):
                problems.append(f"job {job_id} still has open subscriptions after its watches ended")
        return problems

    def _stop_started_jobs(self) -> None:
        """A daemon shared by scenarios must not keep running the work of a
        scenario that is over."""
        for call in self._started:
            response, status = call.result(CALL_DEADLINE_S)
            if status is None or status.code != grpc.StatusCode.OK:
                continue
            self._unary(DAEMON_SERVICE.full_name, "StopJob", daemon_pb2.StopJobRequest(
                job_id=response.job_id, force=True), CALL_DEADLINE_S).result(CALL_DEADLINE_S)
