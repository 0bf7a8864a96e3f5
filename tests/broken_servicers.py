"""Deliberately broken WatchJob servicers. Each must turn at least one
scenario of features/watch_job.feature red (tests/test_suite_catches_bugs.py).

Each is an in-process implementation (choo_conformance.seam): the reference
daemon, with a broken servicer on the scripted job manager, for
`--implementation tests.broken_servicers:NAME`.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import grpc

from choo_reference import in_process
from choo_reference.jobs import RUNNING, is_terminal
from choo_reference.servicer import DaemonServicer
from choo_reference.shutdown import ShutdownSignal
from choo_reference.watch import watch_job


def broken(factory):
    """factory(jobs, shutdown) -> servicer, as an implementation."""

    def watch_servicer(job_manager):
        shutdown = ShutdownSignal()
        return factory(job_manager, shutdown), shutdown.trigger

    return SimpleNamespace(daemon=in_process.daemon, watch_servicer=watch_servicer)


class _JobsWrapper:
    def __init__(self, jobs):
        self._jobs = jobs

    def __getattr__(self, name):
        return getattr(self._jobs, name)


@broken
def accepts_empty_job_id(jobs, shutdown):
    class Servicer(DaemonServicer):
        def WatchJob(self, request, context):
            if not request.job_id:
                return iter(())
            return super().WatchJob(request, context)

    return Servicer(jobs, shutdown)


@broken
def internal_for_unknown_job(jobs, shutdown):
    class Servicer(DaemonServicer):
        def WatchJob(self, request, context):
            try:
                if request.job_id:
                    self.jobs.get_job(request.job_id)
            except LookupError:
                context.abort(grpc.StatusCode.INTERNAL, "lookup failed")
            return super().WatchJob(request, context)

    return Servicer(jobs, shutdown)


@broken
def drops_last_event(jobs, shutdown):
    class Servicer(DaemonServicer):
        def WatchJob(self, request, context):
            held = None
            for event in super().WatchJob(request, context):
                if held is not None:
                    yield held
                held = event

    return Servicer(jobs, shutdown)


@broken
def ignores_from_sequence(jobs, shutdown):
    class Jobs(_JobsWrapper):
        def subscribe(self, job_id, from_sequence, wake):
            return self._jobs.subscribe(job_id, 0, wake)

    return DaemonServicer(Jobs(jobs), shutdown)


class _DeafContext:
    """A context whose RPC never seems to end: cancellation goes unnoticed."""

    def __init__(self, context):
        self._context = context

    def is_active(self):
        return True

    def add_callback(self, callback):
        return True

    def __getattr__(self, name):
        return getattr(self._context, name)


@broken
def keeps_running_after_cancel(jobs, shutdown):
    class Servicer(DaemonServicer):
        def WatchJob(self, request, context):
            return super().WatchJob(request, _DeafContext(context))

    return Servicer(jobs, shutdown)


@broken
def ignores_shutdown(jobs, shutdown):
    class Servicer(DaemonServicer):
        def WatchJob(self, request, context):
            return watch_job(self.jobs, ShutdownSignal(), request, context)

    return Servicer(jobs, shutdown)


@broken
def swallows_failed_send(jobs, shutdown):
    class Servicer(DaemonServicer):
        def WatchJob(self, request, context):
            try:
                yield from super().WatchJob(request, context)
            except Exception:
                if context.is_active():
                    raise
                return  # the client is gone: end as if the watch had completed

    return Servicer(jobs, shutdown)


@broken
def replays_completed_job_from_zero(jobs, shutdown):
    class Jobs(_JobsWrapper):
        def get_job(self, job_id):
            job = self._jobs.get_job(job_id)
            if is_terminal(job.status):
                return dataclasses.replace(job, status=RUNNING)
            return job

    return DaemonServicer(Jobs(jobs), shutdown)


# The rules each broken servicer breaks: exactly these scenarios must go red.
EXPECTED = {
    "accepts_empty_job_id": {"W1"},
    "internal_for_unknown_job": {"W2"},
    "drops_last_event": {"W3", "W4"},
    "ignores_from_sequence": {"W4"},
    "keeps_running_after_cancel": {"W5", "W7"},
    "ignores_shutdown": {"W6"},
    "swallows_failed_send": {"W5", "W7"},
    "replays_completed_job_from_zero": {"W8"},
}
