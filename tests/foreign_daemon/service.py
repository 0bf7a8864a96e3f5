"""The RPCs of choo.v1.DaemonService and choo.conformance.v1.ConformanceControl,
and the edge that turns them into gRPC method handlers.

Handlers are coroutines on the daemon's one event loop. They raise Refusal
for a request they turn down; the edge (`_unary`, `_streaming`) turns it into
the status, answers UNAVAILABLE once Shutdown has answered (R11), turns a
request that does not decode into INVALID_ARGUMENT with one line in the log,
and anything unforeseen into INTERNAL with the traceback in the log, never
UNKNOWN (R10).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import grpc
from google.protobuf.message import DecodeError

from choo.conformance.v1 import control_pb2
from choo.v1 import daemon_pb2

from . import environment, model
from .conductor import Conductor
from .model import FINISHED, JOB_STATUSES, Job, Refusal, invalid, now_ns, quote
from .state import State, check_job_id, unavailable
from .watch import Watcher

log = logging.getLogger("foreign")

VERSION = "foreign-2.3.1"
DEFAULT_SHUTDOWN_WAIT_S = 30
# How long StopJob(force) and a forced shutdown wait for killed commands to
# be reaped before answering.
KILL_WAIT_S = 5.0

STATUS_LIST = ", ".join(JOB_STATUSES)


def _check_text(name: str, value: str, limit: int) -> None:
    if len(value.encode()) > limit:
        raise invalid(f"{name} is longer than the limit of {limit} bytes")
    if "\0" in value:
        raise invalid(f"{name} contains a NUL character")


class Daemon:
    def __init__(self, state: State, bugs: set[str]) -> None:
        self.state = state
        self.bugs = bugs
        self.watcher = Watcher(state, bugs)
        self.runs: dict[str, Conductor] = {}
        # Set when the process should stop serving and exit.
        self.exit = asyncio.Event()
        # A Shutdown (or signal) was accepted; it begins at once, or a little
        # later with --awkward late-unhealthy.
        self.shutdown_accepted = False

    # -- DaemonService ---------------------------------------------------------

    async def StartJob(self, request, context):
        for name in ("tasks_dir", "target_branch", "repo_path"):
            if not getattr(request, name):
                raise invalid(f"{name} is required")
        if request.parallelism < 0:
            raise invalid(f"parallelism must be 0 (one unit per CPU) or more, "
                          f"got {request.parallelism}")
        for name, limit in (("tasks_dir", model.MAX_PATH_BYTES),
                            ("repo_path", model.MAX_PATH_BYTES),
                            ("target_branch", model.MAX_BRANCH_BYTES),
                            ("feature_branch", model.MAX_BRANCH_BYTES)):
            _check_text(name, getattr(request, name), limit)
        for name in ("tasks_dir", "repo_path"):
            path = getattr(request, name)
            if not os.path.isabs(path):
                raise invalid(f"{name} must be an absolute path, got {quote(path)}")
        if self.state.shutting_down:
            raise unavailable()
        tasks_dir = os.path.normpath(request.tasks_dir)
        repo_path = os.path.normpath(request.repo_path)
        for name, path in (("tasks_dir", tasks_dir), ("repo_path", repo_path)):
            if not await asyncio.to_thread(os.path.isdir, path):
                raise invalid(f"{name} {quote(path)} is not a directory this daemon can read")
        await environment.check_repository(repo_path)  # --like-choo
        if self.state.shutting_down:  # it may have begun while we looked
            raise unavailable()

        busy = self._busy_with(repo_path, request.feature_branch)
        if busy is not None:
            differences = [f"{name} ({quote(theirs)}, not {quote(ours)})"
                           for name, theirs, ours in (
                               ("target_branch", busy.target_branch, request.target_branch),
                               ("tasks_dir", busy.tasks_dir, tasks_dir))
                           if theirs != ours]
            if differences:
                raise Refusal(grpc.StatusCode.FAILED_PRECONDITION,
                              f"feature branch {quote(request.feature_branch)} of "
                              f"{quote(repo_path)} is being worked on by {busy.job_id} with a "
                              "different " + " and ".join(differences))
            return daemon_pb2.StartJobResponse(job_id=busy.job_id, status="attached")
        if "start-job-internal" in self.bugs:
            raise Refusal(grpc.StatusCode.INTERNAL,
                          f"cannot create the job's worktree in {quote(repo_path)}: "
                          "git worktree add exited with status 128")

        job = Job(job_id=self.state.new_job_id(), status="running", order=0, created_ns=now_ns(),
                  tasks_dir=tasks_dir, target_branch=request.target_branch,
                  feature_branch=request.feature_branch, repo_path=repo_path)
        try:
            self.state.add(job)
        except OSError as exc:
            raise Refusal(grpc.StatusCode.UNAVAILABLE,
                          f"cannot record the job: {exc.strerror or exc}") from None
        run = Conductor(self.state, job, request.parallelism)
        if "no-unit-starts" in self.bugs:
            run.parallelism = 0  # taken for zero workers, not one per CPU
        self.runs[job.job_id] = run
        run.start()
        log.info("job %s started: %s in %s", job.job_id, tasks_dir, repo_path)
        return daemon_pb2.StartJobResponse(job_id=job.job_id, status="running")

    def _busy_with(self, repo_path: str, feature_branch: str) -> Job | None:
        if not feature_branch:
            return None
        for job in self.state.jobs.values():
            if (not job.finished and job.repo_path == repo_path
                    and job.feature_branch == feature_branch):
                return job
        return None

    async def StopJob(self, request, context):
        job = self.state.job(request.job_id)
        if "exits-during-stop" in self.bugs:
            # Its commands are killed first only so that the test runs leave
            # no process behind; the runner sees the exit alone.
            for run in self.runs.values():
                run.stop(force=True)
            sys.stderr.write(f"foreign: fatal: StopJob {job.job_id}: nil worker handle\n")
            sys.stderr.flush()
            os._exit(3)
        if job.finished:
            raise Refusal(grpc.StatusCode.FAILED_PRECONDITION, f"job already stopped: {job.status}")
        running = self._halt(job, request.force)
        if request.force and running is not None:
            await asyncio.wait([running], timeout=KILL_WAIT_S)
        elif running is not None:
            # R5 leaves open when a graceful stop answers: --awkward moves it.
            way = self.state.awkward.graceful_stop()
            if way == "cancel-early":
                self.runs[job.job_id].end_now("cancelled")
            elif way == "stop-waits":
                await asyncio.wait([running])
        return daemon_pb2.StopJobResponse(
            success=True, message="job force killed" if request.force else "job stopped gracefully")

    def _halt(self, job: Job, force: bool) -> asyncio.Task | None:
        """Stop a job; the task that runs it, if any, to wait on."""
        run = self.runs.get(job.job_id)
        if run is None:
            # Set up through the control service: nothing runs, so it ends now.
            self.state.finish(job, "cancelled")
            return None
        run.stop(force)
        return run.task

    async def GetJobStatus(self, request, context):
        job = self.state.job(request.job_id)
        response = daemon_pb2.GetJobStatusResponse(
            job_id=job.job_id, status=job.status, error=job.error,
            units=[daemon_pb2.UnitStatus(unit_id=u.unit_id, status=u.status,
                                         tasks_complete=u.tasks_done, tasks_total=u.tasks_total)
                   for u in job.units])
        response.started_at.FromNanoseconds(job.created_ns)
        if job.finished:
            response.completed_at.FromNanoseconds(job.finished_ns)
        return response

    async def ListJobs(self, request, context):
        wanted = set(request.status_filter)
        unknown = sorted(wanted - set(JOB_STATUSES))
        if unknown:
            raise invalid(f"no job status is called {quote(unknown[0])}; "
                          f"the statuses are {STATUS_LIST}")
        response = daemon_pb2.ListJobsResponse()
        for job in self.state.newest_first():
            if wanted and job.status not in wanted:
                continue
            summary = response.jobs.add(
                job_id=job.job_id, feature_branch=job.feature_branch, status=job.status,
                units_complete=sum(u.status == model.UNIT_PASSED for u in job.units),
                units_total=len(job.units))
            summary.started_at.FromNanoseconds(job.created_ns)
        return response

    async def Health(self, request, context):
        return daemon_pb2.HealthResponse(healthy=not self.state.shutting_down,
                                         active_jobs=self.state.active_count(), version=VERSION)

    async def Shutdown(self, request, context):
        if request.wait_for_jobs and request.timeout_seconds < 0:
            raise invalid("timeout_seconds must be 0 (30 seconds) or more, "
                          f"got {request.timeout_seconds}")
        if self.state.shutting_down or self.shutdown_accepted:
            raise Refusal(grpc.StatusCode.FAILED_PRECONDITION, "shutdown already in progress")
        self.shutdown_accepted = True
        # Once begun, the shutdown runs to its end even if the caller gives
        # up waiting for the answer; the daemon exits when both are over.
        shutting_down = asyncio.get_running_loop().create_task(self.shut_down(
            request.wait_for_jobs, request.timeout_seconds or DEFAULT_SHUTDOWN_WAIT_S))
        context.add_done_callback(
            lambda _: shutting_down.add_done_callback(lambda _: self.exit.set()))
        stopped = await asyncio.shield(shutting_down)
        await self.state.awkward.before_shutdown_answers()
        return daemon_pb2.ShutdownResponse(success=True, jobs_stopped=stopped)

    async def WatchJob(self, request, context):
        await self.watcher.watch(request, context)

    # -- shutting down ---------------------------------------------------------

    async def shut_down(self, wait: bool, timeout_s: float) -> int:
        """Refuse new work, let jobs finish for up to timeout_s if asked to,
        then stop the rest by force. The number of jobs stopped."""
        self.shutdown_accepted = True
        await self.state.awkward.before_shutdown_begins()
        self.state.begin_shutdown()
        log.info("shutting down: %d jobs not finished%s", self.state.active_count(),
                 f", waiting up to {timeout_s} s" if wait else "")
        if wait:
            await self.state.wait_until_idle(timeout_s)
        return await self.stop_all_now()

    async def stop_all_now(self) -> int:
        left = [job for job in self.state.jobs.values() if not job.finished]
        running = [task for task in (self._halt(job, force=True) for job in left) if task]
        for run in self.runs.values():
            if run.job.finished and run.task is not None and not run.task.done():
                run.stop(force=True)  # a command left running by --awkward cancel-early
                running.append(run.task)
        if running:
            await asyncio.wait(running, timeout=KILL_WAIT_S)
        return len(left)

    def on_signal(self, name: str) -> None:
        """SIGTERM/SIGINT: Shutdown(wait_for_jobs=true); again: stop jobs now."""
        loop = asyncio.get_running_loop()
        if not self.shutdown_accepted:
            self.shutdown_accepted = True
            log.info("%s: shutting down, waiting for jobs (again to stop them now)", name)

            async def shut_down_then_exit() -> None:
                try:
                    await self.shut_down(True, DEFAULT_SHUTDOWN_WAIT_S)
                finally:
                    self.exit.set()

            loop.create_task(shut_down_then_exit())
        else:
            log.info("%s again: stopping every job now", name)
            loop.create_task(self.stop_all_now())

    # -- ConformanceControl ----------------------------------------------------

    async def CreateJob(self, request, context):
        if request.status not in JOB_STATUSES:
            raise invalid(f"status must be one of {STATUS_LIST}, got {quote(request.status)}")
        if request.job_id:
            check_job_id(request.job_id)
            if request.job_id in self.state.jobs:
                raise Refusal(grpc.StatusCode.ALREADY_EXISTS,
                              f"job {request.job_id} already exists")
        job = Job(job_id=request.job_id or self.state.new_job_id(), status=request.status,
                  order=0, created_ns=now_ns())
        if job.finished:
            job.finished_ns = job.created_ns
        try:
            self.state.add(job)
        except OSError as exc:
            raise Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"cannot record the job: {exc.strerror or exc}") from None
        return control_pb2.CreateJobResponse(job_id=job.job_id)

    async def AppendEvents(self, request, context):
        job = self.state.job(request.job_id)
        async with self.state.awkward.job_lock(job.job_id):
            if job.finished:
                raise Refusal(grpc.StatusCode.FAILED_PRECONDITION,
                              f"job {job.job_id} is {job.status}: it takes no more events")
            try:
                # Whole, or a few at a time with --awkward bursty: recorded
                # before the answer either way.
                sequences = await self.state.awkward.record_in_bursts(
                    lambda items: self.state.record(job, items),
                    [(e.event_type, e.unit_id, e.payload_json) for e in request.events])
            except OSError as exc:
                raise Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              f"cannot record the events: {exc.strerror or exc}") from None
        return control_pb2.AppendEventsResponse(sequences=sequences)

    async def FinishJob(self, request, context):
        if request.status not in FINISHED:
            raise invalid("status must be one of completed, failed, cancelled, "
                          f"got {quote(request.status)}")
        job = self.state.job(request.job_id)
        # Not between two bursts of an AppendEvents (--awkward bursty).
        async with self.state.awkward.job_lock(job.job_id):
            if job.finished:
                raise Refusal(grpc.StatusCode.FAILED_PRECONDITION,
                              f"job already stopped: {job.status}")
            if job.job_id in self.runs:
                raise Refusal(grpc.StatusCode.FAILED_PRECONDITION,
                              f"job {job.job_id} runs its own tasks folder; stop it with StopJob")
            self.state.finish(job, request.status, request.error)
        return control_pb2.FinishJobResponse()

    async def ListSubscriptions(self, request, context):
        job = self.state.job(request.job_id)
        return control_pb2.ListSubscriptionsResponse(subscriptions=[
            control_pb2.Subscription(from_sequence=w.from_sequence, open=w.open)
            for w in job.watches])


# -- the edge ----------------------------------------------------------------------


class _Undecodable:
    """What a request that is not a valid message decodes to."""

    def __init__(self, name: str) -> None:
        self.name = name


def _decoder(message_type):
    name = message_type.DESCRIPTOR.full_name

    def decode(data: bytes):
        try:
            return message_type.FromString(data)
        except DecodeError as error:
            log.warning("a request that is not a valid %s (%d bytes): %s", name, len(data), error)
            return _Undecodable(name)

    return decode


async def _guarded(state: State, method: str, handler, request, context):
    try:
        if state.closed:
            raise unavailable()
        if isinstance(request, _Undecodable):
            raise invalid(f"the request is not a valid {request.name} message")
        with state.calls.counted():
            try:
                return await handler(request, context)
            finally:
                # --awkward jitter holds the answer, refusals too, while the
                # call still counts: the daemon must not exit under it.
                await state.awkward.jitter()
    except Refusal as refusal:
        await context.abort(refusal.code, refusal.details)
    except Exception:
        log.exception("%s failed", method)
        await context.abort(grpc.StatusCode.INTERNAL,
                            f"{method} failed inside the daemon; its log has the details")


def _unary(state, method, handler, request_type, response_type):
    async def call(request, context):
        return await _guarded(state, method, handler, request, context)

    return grpc.unary_unary_rpc_method_handler(
        call, request_deserializer=_decoder(request_type),
        response_serializer=response_type.SerializeToString)


def _streaming(state, method, handler, request_type):
    async def call(request, context):
        await _guarded(state, method, handler, request, context)

    # No serializer: the handler writes events already encoded.
    return grpc.unary_stream_rpc_method_handler(
        call, request_deserializer=_decoder(request_type), response_serializer=None)


def handlers(daemon: Daemon, control: bool) -> list:
    """The generic handlers to serve: DaemonService, and ConformanceControl
    when asked for."""
    def unary(method: str, messages):
        return _unary(daemon.state, method, getattr(daemon, method),
                      getattr(messages, f"{method}Request"), getattr(messages, f"{method}Response"))

    services = [grpc.method_handlers_generic_handler("choo.v1.DaemonService", {
        **{method: unary(method, daemon_pb2) for method in
           ("StartJob", "StopJob", "GetJobStatus", "ListJobs", "Shutdown", "Health")},
        "WatchJob": _streaming(daemon.state, "WatchJob", daemon.WatchJob,
                               daemon_pb2.WatchJobRequest),
    })]
    if control:
        services.append(grpc.method_handlers_generic_handler(
            "choo.conformance.v1.ConformanceControl",
            {method: unary(method, control_pb2) for method in
             ("CreateJob", "AppendEvents", "FinishJob", "ListSubscriptions")}))
    return services
