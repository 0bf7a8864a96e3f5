"""A DaemonService in the test's own process, for the choo-ref client tests:
it answers what the test sets, can hold StartJob until the test lets it go,
and records what it was sent."""

from __future__ import annotations

import threading
from concurrent import futures
from pathlib import Path

import grpc

from choo.v1 import daemon_pb2, daemon_pb2_grpc


class FakeDaemon(daemon_pb2_grpc.DaemonServiceServicer):
    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.job_id = "job-1"
        self.status = daemon_pb2.GetJobStatusResponse(job_id=self.job_id, status="completed")
        self.jobs: list[daemon_pb2.JobSummary] = []
        self.events: list[daemon_pb2.JobEvent] = []
        self.requests: list[object] = []
        self.hold_start_job = False
        self.start_job_received = threading.Event()
        self.release_start_job = threading.Event()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        daemon_pb2_grpc.add_DaemonServiceServicer_to_server(self, self._server)
        self._server.add_insecure_port(f"unix://{socket_path}")

    def __enter__(self) -> FakeDaemon:
        self._server.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release_start_job.set()
        self._server.stop(None)

    def StartJob(self, request, context):
        self.requests.append(request)
        self.start_job_received.set()
        if self.hold_start_job:
            self.release_start_job.wait(30)
        return daemon_pb2.StartJobResponse(job_id=self.job_id, status="running")

    def GetJobStatus(self, request, context):
        self.requests.append(request)
        return self.status

    def ListJobs(self, request, context):
        self.requests.append(request)
        return daemon_pb2.ListJobsResponse(jobs=self.jobs)

    def WatchJob(self, request, context):
        self.requests.append(request)
        yield from self.events

    def StopJob(self, request, context):
        self.requests.append(request)
        return daemon_pb2.StopJobResponse(success=True, message="job stopped gracefully")

    def Health(self, request, context):
        self.requests.append(request)
        return daemon_pb2.HealthResponse(healthy=True, version="fake")
