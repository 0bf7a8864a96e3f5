"""A second, deliberately minimal implementation of choo.v1.DaemonService.

It exists to prove that the conformance suite and its runner judge any daemon
over a real channel, not just the reference one: a correct behaviour must pass
and a wrong one must fail with the rule it breaks. It is written separately
from choo_reference/ and steps/ and shares no code with them; it uses only
the generated stubs and grpcio.

    python tests/foreign_daemon/server.py --socket PATH [--db PATH]

Everything lives in memory (a dict of jobs, a list of events per job, one
condition variable that wakes live watchers); --db is accepted and ignored.
ConformanceControl is always served on the same socket: this daemon has no
other way to get jobs.

Rules it breaks on purpose, each a classic WatchJob bug:

- W2  an unknown job answers INTERNAL (the lookup failure is reported as a
      server fault) instead of NOT_FOUND.
- W8  a terminal job watched from sequence 0 replays its whole history (and
      opens a subscription) instead of ending OK at once with no events: the
      "0 means no replay" special case is missing.
- W11 a negative from_sequence is clamped to the first event instead of being
      refused INVALID_ARGUMENT.

Rules it fails because it is minimal, not because of a bug:

- StartJob answers UNIMPLEMENTED (it runs no real work), so every scenario
  that starts a job fails: R1, R2, R3, R4, R5, R6, R7, R8, R9, and R10 (whose
  StartJob examples get UNIMPLEMENTED, a code outside the contract; its
  WatchJob example also meets the W2/W11 bugs). W18 fails the same way: its
  "shutting down while a job runs" state needs a started job.
- W17: nothing is persisted, so events do not survive a restart.
- W15, W16: each open watch holds one of the server's 128 worker threads (a
  generator handler), so with 1000 open watches (features/scale.feature) the
  later watchers are never served: the classic thread-per-stream limit.

Everything else WatchJob promises is implemented properly and passes: replay
from from_sequence inclusive by cursor over the job's log (no per-watcher
queue, so a stalled watcher costs nothing and blocks no one), live follow until
the job is terminal and then OK, subscriptions released as soon as the RPC
ends (cancel, dropped connection, failed delivery), and Shutdown ending open
watches UNAVAILABLE "daemon is shutting down".
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import uuid
from concurrent import futures

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from choo.conformance.v1 import control_pb2, control_pb2_grpc
from choo.v1 import daemon_pb2, daemon_pb2_grpc

VERSION = "0.0.1-foreign"
STATUSES = ("pending", "running", "completed", "failed", "cancelled")
TERMINAL = ("completed", "failed", "cancelled")
SHUTTING_DOWN = "daemon is shutting down"
# Events sent per wake-up of a watcher; bounds the time the lock is held.
BATCH = 256


def _stamp(ns: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(ns)
    return stamp


class Subscription:
    def __init__(self, from_sequence: int) -> None:
        self.from_sequence = from_sequence
        self.open = True


class Job:
    def __init__(self, job_id: str, status: str, order: int) -> None:
        self.job_id = job_id
        self.status = status
        self.error = ""
        self.order = order  # creation order, for newest-first listing
        self.started_ns = time.time_ns()
        self.completed_ns = 0
        self.events: list[daemon_pb2.JobEvent] = []  # events[i].sequence == i + 1
        self.subscriptions: list[Subscription] = []

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def end(self, status: str, error: str = "") -> None:
        self.status = status
        self.error = error
        self.completed_ns = time.time_ns()


class State:
    """All jobs, guarded by one condition that every change notifies."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.jobs: dict[str, Job] = {}
        self.shutting_down = False
        self.exit = threading.Event()  # the main thread stops the server

    def changed(self) -> None:
        with self.cond:
            self.cond.notify_all()


def _shown(job_id: str) -> str:
    """A job id as echoed in an error: status details travel in a trailer of
    limited size, so a huge id would turn the answer into RESOURCE_EXHAUSTED."""
    return job_id if len(job_id) <= 200 else job_id[:200] + "..."


def _required_job(state: State, job_id: str, context) -> Job:
    """Caller holds state.cond."""
    if not job_id:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "job_id is required")
    job = state.jobs.get(job_id)
    if job is None:
        context.abort(grpc.StatusCode.NOT_FOUND, f"job not found: {_shown(job_id)}")
    return job


class Daemon(daemon_pb2_grpc.DaemonServiceServicer):
    def __init__(self, state: State) -> None:
        self.state = state

    def StartJob(self, request, context):
        if self.state.shutting_down:
            context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "this daemon does not run jobs")

    def StopJob(self, request, context):
        with self.state.cond:
            job = _required_job(self.state, request.job_id, context)
            if job.terminal:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                              f"job already stopped: {job.status}")
            job.end("cancelled")
            self.state.cond.notify_all()
        message = "job force killed" if request.force else "job stopped gracefully"
        return daemon_pb2.StopJobResponse(success=True, message=message)

    def GetJobStatus(self, request, context):
        with self.state.cond:
            job = _required_job(self.state, request.job_id, context)
            response = daemon_pb2.GetJobStatusResponse(
                job_id=job.job_id, status=job.status, error=job.error,
                started_at=_stamp(job.started_ns))
            if job.terminal:
                response.completed_at.CopyFrom(_stamp(job.completed_ns))
            return response

    def ListJobs(self, request, context):
        unknown = [s for s in request.status_filter if s not in STATUSES]
        if unknown:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"unknown status {_shown(unknown[0])!r}; valid: {', '.join(STATUSES)}")
        wanted = set(request.status_filter) or set(STATUSES)
        with self.state.cond:
            jobs = sorted(self.state.jobs.values(), key=lambda j: j.order, reverse=True)
            return daemon_pb2.ListJobsResponse(jobs=[
                daemon_pb2.JobSummary(job_id=j.job_id, status=j.status,
                                      started_at=_stamp(j.started_ns))
                for j in jobs if j.status in wanted])

    def Health(self, request, context):
        with self.state.cond:
            active = sum(1 for j in self.state.jobs.values() if not j.terminal)
            healthy = not self.state.shutting_down
        return daemon_pb2.HealthResponse(healthy=healthy, active_jobs=active, version=VERSION)

    def Shutdown(self, request, context):
        state = self.state
        with state.cond:
            if state.shutting_down:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, "shutdown already in progress")
            state.shutting_down = True
            state.cond.notify_all()  # open watches end UNAVAILABLE now
            if request.wait_for_jobs:
                timeout = request.timeout_seconds or 30
                state.cond.wait_for(
                    lambda: all(j.terminal for j in state.jobs.values()), timeout)
            stopped = 0
            for job in state.jobs.values():
                if not job.terminal:
                    job.end("cancelled")
                    stopped += 1
            state.cond.notify_all()
        state.exit.set()  # the server stops with a grace period: this answer gets out
        return daemon_pb2.ShutdownResponse(success=True, jobs_stopped=stopped)

    def WatchJob(self, request, context):
        state = self.state
        with state.cond:
            if state.shutting_down:
                context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
            if not request.job_id:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "job_id is required")
            # Deliberate bug (W11): a negative from_sequence is clamped to the
            # first event instead of being refused.
            start = max(request.from_sequence, 1)
            job = state.jobs.get(request.job_id)
            if job is None:
                # Deliberate bug (W2): a missing job is reported as a server
                # fault, INTERNAL, instead of NOT_FOUND.
                context.abort(grpc.StatusCode.INTERNAL, f"job not found: {_shown(request.job_id)}")
            # Deliberate bug (W8): no special case for a terminal job watched
            # from 0, so it replays its history instead of ending at once.
            subscription = Subscription(request.from_sequence)
            job.subscriptions.append(subscription)

        def on_end() -> None:
            # Runs when the RPC ends for any reason, even while this handler
            # is blocked handing a message to a stalled transport.
            with state.cond:
                subscription.open = False
                state.cond.notify_all()

        if not context.add_callback(on_end):
            on_end()
            return
        cursor = start - 1  # index into job.events: a cursor, not a queue
        try:
            while True:
                with state.cond:
                    state.cond.wait_for(lambda: (
                        state.shutting_down or not subscription.open
                        or cursor < len(job.events) or job.terminal))
                    if state.shutting_down:
                        unavailable = True
                    elif not subscription.open:
                        return
                    else:
                        unavailable = False
                        batch = job.events[cursor:cursor + BATCH]
                        if not batch:  # terminal and everything delivered
                            return
                if unavailable:
                    context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
                for event in batch:
                    yield event
                    cursor += 1
        finally:
            on_end()


class Control(control_pb2_grpc.ConformanceControlServicer):
    def __init__(self, state: State) -> None:
        self.state = state
        self.created = 0

    def CreateJob(self, request, context):
        if request.status not in STATUSES:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"unknown status {_shown(request.status)!r}; valid: {', '.join(STATUSES)}")
        job_id = request.job_id or f"job-{uuid.uuid4().hex[:12]}"
        with self.state.cond:
            if job_id in self.state.jobs:
                context.abort(grpc.StatusCode.ALREADY_EXISTS, f"job already exists: {_shown(job_id)}")
            self.created += 1
            job = Job(job_id, request.status, self.created)
            if job.terminal:
                job.completed_ns = job.started_ns
            self.state.jobs[job_id] = job
        return control_pb2.CreateJobResponse(job_id=job_id)

    def AppendEvents(self, request, context):
        with self.state.cond:
            job = _required_job(self.state, request.job_id, context)
            if job.terminal:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                              f"job {job.job_id} is {job.status}: no more events")
            sequences = []
            for spec in request.events:
                sequence = len(job.events) + 1
                job.events.append(daemon_pb2.JobEvent(
                    sequence=sequence, event_type=spec.event_type, unit_id=spec.unit_id,
                    payload_json=spec.payload_json, timestamp=_stamp(time.time_ns())))
                sequences.append(sequence)
            self.state.cond.notify_all()
        return control_pb2.AppendEventsResponse(sequences=sequences)

    def FinishJob(self, request, context):
        if request.status not in TERMINAL:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"not a terminal status: {_shown(request.status)!r}; valid: {', '.join(TERMINAL)}")
        with self.state.cond:
            job = _required_job(self.state, request.job_id, context)
            if job.terminal:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                              f"job already stopped: {job.status}")
            job.end(request.status, request.error)
            self.state.cond.notify_all()
        return control_pb2.FinishJobResponse()

    def ListSubscriptions(self, request, context):
        with self.state.cond:
            job = _required_job(self.state, request.job_id, context)
            return control_pb2.ListSubscriptionsResponse(subscriptions=[
                control_pb2.Subscription(from_sequence=s.from_sequence, open=s.open)
                for s in job.subscriptions])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True)
    parser.add_argument("--db", help="accepted and ignored: nothing is persisted")
    args = parser.parse_args(argv)

    state = State()
    # One thread per open watch: enough for the suite's 20-watcher scenarios
    # plus whatever a shared daemon still has open.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=128))
    daemon_pb2_grpc.add_DaemonServiceServicer_to_server(Daemon(state), server)
    control_pb2_grpc.add_ConformanceControlServicer_to_server(Control(state), server)
    if os.path.exists(args.socket):
        os.unlink(args.socket)
    server.add_insecure_port(f"unix:{args.socket}")
    server.start()

    def on_signal(signum, frame):
        with state.cond:
            state.shutting_down = True
            state.cond.notify_all()
        state.exit.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not state.exit.wait(0.5):
        pass
    server.stop(grace=1.0).wait()
    try:
        os.unlink(args.socket)
    except FileNotFoundError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
