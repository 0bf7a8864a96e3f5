"""In-process implementations that misbehave the way the runner must cope
with (`--implementation tests.runner_doubles:NAME`): each is the reference,
with one fault. Faults that should happen once per test read the flag file
named by CHOO_TEST_FLAG: the first process to find it missing creates it."""

from __future__ import annotations

import itertools
import os
import signal
import threading
from types import SimpleNamespace

import grpc

from choo.v1 import daemon_pb2
from choo_conformance.seam import CHECKPOINTS
from choo_reference import in_process
from choo_reference.job_store import JobStore


def _first_time() -> bool:
    try:
        os.close(os.open(os.environ["CHOO_TEST_FLAG"], os.O_CREAT | os.O_EXCL))
        return True
    except FileExistsError:
        return False


def _reference_with(**wrappers):
    """An implementation: the reference in process, with DaemonService
    handlers replaced. Each wrapper gets the handler it replaces and the
    instance, and returns the handler that takes its place."""
    def daemon(data_dir):
        instance = in_process.ReferenceInstance(data_dir)
        servicer = instance.servicers[in_process.DAEMON_SERVICE]
        for method, wrap in wrappers.items():
            setattr(servicer, method, wrap(getattr(servicer, method), instance))
        return instance

    return SimpleNamespace(daemon=daemon, watch_servicer=in_process.watch_servicer)


def _deaf_daemon(data_dir):
    """Hangs the pytest process where its own scenario clock cannot reach:
    SIGALRM is blocked in the main thread, which then waits for good."""
    if _first_time():
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        threading.Event().wait()
    return in_process.daemon(data_dir)


deaf_once = SimpleNamespace(daemon=_deaf_daemon, watch_servicer=in_process.watch_servicer)


def _flaky_watch_servicer(job_manager):
    """The first time: an empty job_id is not refused (W1 fails)."""
    servicer, begin_shutdown = in_process.watch_servicer(job_manager)
    if _first_time():
        watch = servicer.WatchJob

        def accepts_empty(request, context):
            return iter(()) if not request.job_id else watch(request, context)

        servicer.WatchJob = accepts_empty
    return servicer, begin_shutdown


flaky_once = SimpleNamespace(daemon=in_process.daemon, watch_servicer=_flaky_watch_servicer)


class _NeverReleases(JobStore):
    """A subscription is never given back: only the clean-up after a
    scenario can see it."""

    def subscribe(self, job_id, from_sequence, wake):
        feed, _ = super().subscribe(job_id, from_sequence, wake)
        return feed, lambda: None


def _never_releasing_daemon(data_dir):
    return in_process.ReferenceInstance(data_dir, _NeverReleases(in_process.database(data_dir)))


never_releases = SimpleNamespace(daemon=_never_releasing_daemon,
                                 watch_servicer=in_process.watch_servicer)


def _late_shutdown(shutdown, instance):
    """Correct, but slow to begin shutting down: a Shutdown call that has
    not been answered may not have reached the daemon yet, so a Health
    call sent after it can still be answered healthy."""
    def late(request, context):
        threading.Event().wait(0.5)
        return shutdown(request, context)

    return late


late_shutdown = _reference_with(Shutdown=_late_shutdown)


def _late_second_watch_servicer(job_manager):
    """Correct, but slow to take up its second watch: it starts serving 1.5 s
    after the call arrives, as a loaded daemon might."""
    servicer, begin_shutdown = in_process.watch_servicer(job_manager)
    watch = servicer.WatchJob
    calls = itertools.count()

    def late(request, context):
        if next(calls) == 1:
            threading.Event().wait(1.5)
        yield from watch(request, context)

    servicer.WatchJob = late
    return servicer, begin_shutdown


late_second_watch = SimpleNamespace(daemon=in_process.daemon,
                                    watch_servicer=_late_second_watch_servicer)


def _answers_when_ended(stop, instance):
    """Correct, but a graceful StopJob answers only once the job's running
    commands have ended (R5 allows it): a client that waits for the answer
    before it lets the command end waits for ever."""
    orchestrator = instance.orchestrator

    def answers_when_ended(request, context):
        response = stop(request, context)
        if not request.force:
            with orchestrator._lock:
                run = orchestrator._runs.get(request.job_id)
            if run is not None:
                run.wait(60)
        return response

    return answers_when_ended


stop_answers_when_commands_end = _reference_with(StopJob=_answers_when_ended)


def _cancelled_at_once_daemon(data_dir):
    """Correct, but a job stopped gracefully reads `cancelled` from the moment
    StopJob answers, while its running command still finishes (R5: commands
    already running may finish)."""
    instance = in_process.ReferenceInstance(data_dir)
    daemon = instance.servicers[in_process.DAEMON_SERVICE]
    stop, status = daemon.StopJob, daemon.GetJobStatus
    stopped: set[str] = set()

    def stop_and_note(request, context):
        response = stop(request, context)
        stopped.add(request.job_id)
        return response

    def cancelled_once_stopped(request, context):
        response = status(request, context)
        if request.job_id in stopped and response.status == "running":
            response.status = "cancelled"
            response.completed_at.GetCurrentTime()
        return response

    daemon.StopJob, daemon.GetJobStatus = stop_and_note, cancelled_once_stopped
    return instance


cancelled_before_commands_end = SimpleNamespace(daemon=_cancelled_at_once_daemon,
                                                watch_servicer=in_process.watch_servicer)


def _valid(request) -> bool:
    return bool(request.tasks_dir and request.target_branch and request.repo_path
                and request.parallelism >= 0)


def _refuses(start, instance):
    """An upstream defect: every StartJob that passes validation answers
    INTERNAL. Every scenario that needs a started job is blocked by it."""
    def refuses(request, context):
        if _valid(request):
            context.abort(grpc.StatusCode.INTERNAL, "could not create the job's worktree")
        return start(request, context)

    return refuses


start_job_internal = _reference_with(StartJob=_refuses)


def _never_runs(start, instance):
    """An upstream defect: StartJob answers a job that never runs a command
    (as with a parallelism of 0 taken for zero workers)."""
    store = instance.orchestrator.store

    def never_runs(request, context):
        if not _valid(request):
            return start(request, context)
        job = store.create_job(tasks_dir=request.tasks_dir, target_branch=request.target_branch,
                               feature_branch=request.feature_branch, repo_path=request.repo_path)
        return daemon_pb2.StartJobResponse(job_id=job.job_id, status="running")

    return never_runs


no_unit_starts = _reference_with(StartJob=_never_runs)


class _WithoutCheckpoints:
    """The reference in process, offering no checkpoints (they are optional)."""

    def __init__(self, data_dir) -> None:
        self._instance = in_process.ReferenceInstance(data_dir)
        self.servicers = self._instance.servicers
        self.crash = self._instance.crash
        self.close = self._instance.close


without_checkpoints = SimpleNamespace(daemon=_WithoutCheckpoints,
                                      watch_servicer=in_process.watch_servicer)


class _DeafCheckpoints:
    """Lists every point, and never runs what is asked of them."""

    points = frozenset(CHECKPOINTS)

    def at(self, point, action) -> None:
        pass


def _deaf_checkpoints_daemon(data_dir):
    instance = in_process.ReferenceInstance(data_dir)
    instance.checkpoints = _DeafCheckpoints()
    return instance


checkpoints_never_reached = SimpleNamespace(daemon=_deaf_checkpoints_daemon,
                                            watch_servicer=in_process.watch_servicer)
