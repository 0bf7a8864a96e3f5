"""The choo.v1.DaemonService servicer: request checking and status codes
(R1-R10); the work is the job manager's.

Input past a limit of limits.py is INVALID_ARGUMENT naming the limit; a
write the disk cannot take is RESOURCE_EXHAUSTED (full) or UNAVAILABLE (the
database is gone); no response grows past gRPC's 4 MiB.
"""

from __future__ import annotations

import asyncio
import functools
import logging

import grpc

from choo.v1 import daemon_pb2, daemon_pb2_grpc

from . import __version__
from .async_watch import LoopWaker, watch_job_async
from .convert import set_time
from .jobs import (
    SHORTAGE_ERRNOS,
    STATUSES,
    JobBrief,
    JobManager,
    JobNotFound,
    ResourceShortage,
    StorageError,
    is_terminal,
    shorten,
)
from .limits import (
    MAX_BRANCH_BYTES,
    MAX_OPEN_WATCHES,
    MAX_PARALLELISM,
    MAX_PATH_BYTES,
    MAX_RESPONSE_BYTES,
    size_text,
    too_long,
)
from .orchestrator import AlreadyStopped, CallGone, Conflict
from .shutdown import ShutdownSignal
from .task_plan import PlanError
from .watch import SHUTTING_DOWN, watch_job

log = logging.getLogger("choo-ref")

INT32_MAX = 2**31 - 1
# Status details go percent-encoded in a trailer that clients refuse past
# 8 KiB; messages quote client input, so they are cut to 1 KiB of UTF-8.
MAX_DETAILS = 1024


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def _rpc(method):
    """Turns the job manager's errors into the statuses of the contract:
    unknown job NOT_FOUND; unreadable input INVALID_ARGUMENT; a request that
    contradicts a job's state FAILED_PRECONDITION; the daemon short of open
    files or memory RESOURCE_EXHAUSTED."""

    @functools.wraps(method)
    def handler(self, request, context):
        try:
            if self.shutdown_done.is_set():
                # Shutdown has answered: the daemon is on its way out (R11).
                raise _Abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
            return method(self, request, context)
        except _Abort as abort:
            code, details = abort.code, abort.details
        except JobNotFound as error:
            code, details = grpc.StatusCode.NOT_FOUND, str(error)
        except PlanError as error:
            code, details = grpc.StatusCode.INVALID_ARGUMENT, f"cannot read the tasks: {error}"
        except NotADirectoryError as error:
            code, details = grpc.StatusCode.INVALID_ARGUMENT, str(error)
        except (Conflict, AlreadyStopped) as error:
            code, details = grpc.StatusCode.FAILED_PRECONDITION, str(error)
        except StorageError as error:
            code, details = storage_code(error), str(error)
        except CallGone as error:
            code, details = grpc.StatusCode.DEADLINE_EXCEEDED, str(error)
        except ResourceShortage as error:
            code, details = grpc.StatusCode.RESOURCE_EXHAUSTED, str(error)
        except OSError as error:
            # Out of open files or memory anywhere on the way: the daemon's
            # trouble, not the request's.
            if error.errno not in SHORTAGE_ERRNOS:
                raise
            code, details = (grpc.StatusCode.RESOURCE_EXHAUSTED,
                             f"the daemon is short of resources: {error.strerror or error} "
                             "(try again later)")
        context.abort(code, status_details(details))

    return handler


def status_details(text: str) -> str:
    """text as a status message can carry it: at most MAX_DETAILS bytes of
    UTF-8. A status that cannot be encoded is never sent, and the call hangs
    until its deadline: bytes of a file name that are not UTF-8 (lone
    surrogates here) are shown as \\xNN."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "surrogateescape" if _only_escapes(text)
                           else "backslashreplace").decode("utf-8", "backslashreplace")
    return shorten(text, MAX_DETAILS)


def _only_escapes(text: str) -> bool:
    """Whether every lone surrogate in text stands for a byte (U+DC80-U+DCFF)."""
    return all(not 0xD800 <= ord(c) <= 0xDFFF or 0xDC80 <= ord(c) <= 0xDCFF for c in text)


def storage_code(error: StorageError) -> grpc.StatusCode:
    """A full disk is RESOURCE_EXHAUSTED; a database that is gone, UNAVAILABLE."""
    return grpc.StatusCode.RESOURCE_EXHAUSTED if error.full else grpc.StatusCode.UNAVAILABLE


def _deadline_not_passed(context) -> bool:
    remaining = context.time_remaining()
    return remaining is None or remaining > 0


def _require(value: str, field: str) -> None:
    if not value:
        raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"{field} is required")


def _refuse_during_shutdown(signal: ShutdownSignal) -> None:
    if signal.is_set():
        raise _Abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)


def _set_time(field, ns: int) -> None:
    if ns:
        set_time(field, ns)


class DaemonServicer(daemon_pb2_grpc.DaemonServiceServicer):
    def __init__(
        self,
        jobs: JobManager,
        shutdown: ShutdownSignal | None = None,
        version: str = __version__,
    ) -> None:
        self.jobs = jobs
        self.shutdown = shutdown if shutdown is not None else ShutdownSignal()
        self.version = version
        # Set once a Shutdown call has stopped the jobs and is answering; the
        # daemon process then stops serving and removes its socket.
        self.shutdown_done = ShutdownSignal()

    @_rpc
    def StartJob(self, request, context):
        _require(request.tasks_dir, "tasks_dir")
        _require(request.target_branch, "target_branch")
        _require(request.repo_path, "repo_path")
        for field, limit in (("tasks_dir", MAX_PATH_BYTES), ("repo_path", MAX_PATH_BYTES),
                             ("target_branch", MAX_BRANCH_BYTES),
                             ("feature_branch", MAX_BRANCH_BYTES)):
            problem = too_long(field, getattr(request, field), limit)
            if problem:
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        for field in ("tasks_dir", "repo_path"):
            if "\x00" in getattr(request, field):
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT,
                             f"{field} contains a NUL character, which no path can hold")
        if request.parallelism < 0:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT,
                         f"parallelism must be 0 (one unit per CPU) or more, got {request.parallelism}")
        if request.parallelism > MAX_PARALLELISM:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT,
                         f"parallelism must be at most {MAX_PARALLELISM} units at once "
                         f"(0 means one per CPU), got {request.parallelism}")
        _refuse_during_shutdown(self.shutdown)
        job_id, status = self.jobs.start_job(
            tasks_dir=request.tasks_dir, target_branch=request.target_branch,
            feature_branch=request.feature_branch, parallelism=request.parallelism,
            repo_path=request.repo_path,
            # A call that waited past its deadline creates no job its client
            # will never hear of (and create again when it retries).
            still_wanted=lambda: _deadline_not_passed(context),
        )
        return daemon_pb2.StartJobResponse(job_id=job_id, status=status)

    @_rpc
    def StopJob(self, request, context):
        _require(request.job_id, "job_id")
        message = self.jobs.stop_job(request.job_id, request.force)
        return daemon_pb2.StopJobResponse(success=True, message=message)

    @_rpc
    def GetJobStatus(self, request, context):
        _require(request.job_id, "job_id")
        job = self.jobs.get_job(request.job_id)
        response = daemon_pb2.GetJobStatusResponse(
            job_id=job.job_id, status=job.status, error=job.error,
            units=[
                daemon_pb2.UnitStatus(
                    unit_id=u.unit_id, status=u.status, tasks_complete=u.tasks_complete,
                    tasks_total=u.tasks_total, pr_number=u.pr_number,
                )
                for u in job.units
            ],
        )
        _set_time(response.started_at, job.started_at_ns)
        if is_terminal(job.status):
            _set_time(response.completed_at, job.completed_at_ns)
        return response

    @_rpc
    def ListJobs(self, request, context):
        unknown = sorted(set(request.status_filter) - set(STATUSES))
        if unknown:
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"unknown status {shorten(', '.join(map(repr, unknown)))}; valid statuses are "
                + ", ".join(STATUSES),
            )
        response = daemon_pb2.ListJobsResponse()
        size = 0
        # Summaries, one at a time where the job manager can: the listing
        # stops at the response's size, and no finished job is read whole.
        statuses = tuple(request.status_filter)
        listing = getattr(self.jobs, "iter_summaries", None)
        briefs = (listing(statuses) if listing is not None
                  else map(JobBrief.of, self.jobs.list_jobs(statuses)))
        for brief in briefs:
            summary = _summary(brief)
            size += summary.ByteSize() + 6  # its tag and length
            if size > MAX_RESPONSE_BYTES:
                # The request cannot page: the newest jobs that fit, and a note.
                log.warning("ListJobs: listed the newest %d jobs, the most that fit in %s",
                            len(response.jobs), size_text(MAX_RESPONSE_BYTES))
                break
            response.jobs.append(summary)
        return response

    def WatchJob(self, request, context):
        return watch_job(self.jobs, self.shutdown, request, context)

    @_rpc
    def Shutdown(self, request, context):
        if request.timeout_seconds < 0:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT,
                         f"timeout_seconds must be 0 (30 s) or more, got {request.timeout_seconds}")
        if not self.shutdown.trigger():
            raise _Abort(grpc.StatusCode.FAILED_PRECONDITION, "shutdown already in progress")
        log.info("shutting down (wait_for_jobs=%s, timeout %ss)",
                 request.wait_for_jobs, request.timeout_seconds or 30)
        stopped = self.jobs.shutdown(request.wait_for_jobs, float(request.timeout_seconds))
        self.shutdown_done.trigger()
        return daemon_pb2.ShutdownResponse(success=True, jobs_stopped=min(stopped, INT32_MAX))

    @_rpc
    def Health(self, request, context):
        return daemon_pb2.HealthResponse(
            healthy=not self.shutdown.is_set(),
            active_jobs=min(self.jobs.active_count(), INT32_MAX),
            version=self.version,
        )


def _summary(brief: JobBrief) -> daemon_pb2.JobSummary:
    summary = daemon_pb2.JobSummary(
        job_id=brief.job_id, feature_branch=brief.feature_branch, status=brief.status,
        units_complete=brief.units_complete, units_total=brief.units_total,
    )
    _set_time(summary.started_at, brief.started_at_ns)
    return summary


class AsyncWatchServicer(DaemonServicer):
    """The servicer for a grpc.aio server: WatchJob is a coroutine; the other
    RPCs stay plain functions, which the server runs on its thread pool.
    WatchJob writes serialized JobEvents: register it with add_daemon_service."""

    def __init__(self, *args, max_watches: int = MAX_OPEN_WATCHES, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._waker = None
        self.max_watches = max_watches
        # Only the event loop's thread counts: no lock.
        self._open_watches = 0

    async def WatchJob(self, request, context):
        if self._open_watches >= self.max_watches:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"too many open watches: the daemon serves at most "
                                f"{self.max_watches} at once; try again once one has ended")
        if self._waker is None:
            self._waker = LoopWaker(asyncio.get_running_loop())
        self._open_watches += 1
        try:
            await watch_job_async(self.jobs, self.shutdown, self._waker, request, context)
        finally:
            self._open_watches -= 1


def add_daemon_service(servicer: AsyncWatchServicer, server: grpc.aio.Server) -> None:
    """DaemonService as the generated code registers it, except that WatchJob
    sends the bytes the servicer writes as they are: each event is serialized
    once for all its watchers (convert.event_to_wire), not once per delivery."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}

    class _Collect:  # takes the generated code's handlers, registers nothing
        def add_generic_rpc_handlers(self, generic_handlers) -> None:
            pass

        def add_registered_method_handlers(self, service, method_handlers) -> None:
            handlers.update(method_handlers)

    daemon_pb2_grpc.add_DaemonServiceServicer_to_server(servicer, _Collect())
    watch = handlers["WatchJob"]
    handlers["WatchJob"] = grpc.unary_stream_rpc_method_handler(
        watch.unary_stream, request_deserializer=watch.request_deserializer,
        response_serializer=None)
    service = daemon_pb2.DESCRIPTOR.services_by_name["DaemonService"].full_name
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    server.add_registered_method_handlers(service, handlers)
