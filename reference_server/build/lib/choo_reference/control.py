"""choo.conformance.v1.ConformanceControl: lets the conformance suite set up
a job's state and events without running real work (docs/SPEC.md, the
conformance control service).

Served only when the daemon is started with --conformance-control. Events go
through the same JobStore.record_many as a real job's, so they are numbered,
persisted and delivered exactly as real events are.
"""

from __future__ import annotations

import grpc

from choo.conformance.v1 import control_pb2, control_pb2_grpc

from .convert import timestamp
from .job_store import JobExists, JobTerminal
from .jobs import RUNNING, STATUSES, JobNotFound, is_terminal
from .orchestrator import Orchestrator


def _valid_statuses() -> str:
    return ", ".join(STATUSES)


class ConformanceControlServicer(control_pb2_grpc.ConformanceControlServicer):
    def __init__(self, orchestrator: Orchestrator) -> None:
        self.store = orchestrator.store

    def CreateJob(self, request, context):
        # An empty status means "running", the state a watch test usually wants.
        status = request.status or RUNNING
        if status not in STATUSES:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"unknown status {status!r}; valid statuses are {_valid_statuses()}")
        try:
            job = self.store.create_job(request.job_id or None, status)
        except JobExists as error:
            context.abort(grpc.StatusCode.ALREADY_EXISTS, str(error))
        return control_pb2.CreateJobResponse(job_id=job.job_id)

    def AppendEvents(self, request, context):
        if not request.job_id:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "job_id is required")
        specs = [(e.event_type, e.unit_id, e.payload_json or "{}") for e in request.events]
        try:
            events = self.store.record_many(request.job_id, specs)
        except JobNotFound as error:
            context.abort(grpc.StatusCode.NOT_FOUND, str(error))
        except JobTerminal as error:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
        return control_pb2.AppendEventsResponse(
            sequences=[e.sequence for e in events],
            timestamps=[timestamp(e.timestamp_ns) for e in events])

    def FinishJob(self, request, context):
        if not is_terminal(request.status):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"status must be completed, failed or cancelled, got {request.status!r}")
        try:
            self.store.set_status(request.job_id, request.status, request.error)
        except JobNotFound as error:
            context.abort(grpc.StatusCode.NOT_FOUND, str(error))
        except JobTerminal as error:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
        return control_pb2.FinishJobResponse()

    def ListSubscriptions(self, request, context):
        try:
            subscriptions = self.store.subscriptions(request.job_id)
        except JobNotFound as error:
            context.abort(grpc.StatusCode.NOT_FOUND, str(error))
        return control_pb2.ListSubscriptionsResponse(subscriptions=[
            control_pb2.Subscription(from_sequence=from_sequence, open=is_open)
            for from_sequence, is_open in subscriptions
        ])


def add_control_service(server: grpc.Server, orchestrator: Orchestrator) -> None:
    control_pb2_grpc.add_ConformanceControlServicer_to_server(
        ConformanceControlServicer(orchestrator), server)
