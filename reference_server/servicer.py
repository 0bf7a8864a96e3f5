"""The choo.v1.DaemonService servicer: request checking and status codes;
the work is the job manager's."""

from __future__ import annotations

import grpc

from choo.v1 import daemon_pb2_grpc

from . import __version__
from .jobs import JobManager
from .shutdown import ShutdownSignal
from .watch import watch_job


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

    def WatchJob(self, request, context):
        return watch_job(self.jobs, self.shutdown, request, context)
