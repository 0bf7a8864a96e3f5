"""choo.conformance.v1.ConformanceControl: lets the conformance suite set up
a job's state and events without running real work (docs/SPEC.md, the
conformance control service).

Served only when the daemon is started with --conformance-control. Events go
through the same JobStore.record_many as a real job's, so they are numbered,
persisted and delivered exactly as real events are.

Like DaemonService: an empty job_id is INVALID_ARGUMENT "job_id is required"
(CreateJob excepted, where it lets the daemon choose), input past a limit
of limits.py is INVALID_ARGUMENT naming it, every message quoting input is
cut short, and a write the disk cannot take is RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import functools

import grpc

from choo.conformance.v1 import control_pb2, control_pb2_grpc

from .convert import set_time
from .job_store import JobExists, JobTerminal
from .jobs import RUNNING, STATUSES, JobNotFound, StorageError, is_terminal, shorten
from .limits import (
    MAX_ERROR_BYTES,
    MAX_EVENT_TYPE_BYTES,
    MAX_EVENTS_PER_APPEND,
    MAX_ID_BYTES,
    MAX_PAYLOAD_BYTES,
    too_long,
)
from .orchestrator import Orchestrator
from .servicer import MAX_DETAILS, storage_code


class _Refused(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code


def _answer(method):
    """The store's errors as statuses, every message cut to MAX_DETAILS."""

    @functools.wraps(method)
    def handler(self, request, context):
        try:
            return method(self, request, context)
        except _Refused as refused:
            code, details = refused.code, str(refused)
        except JobNotFound as error:
            code, details = grpc.StatusCode.NOT_FOUND, str(error)
        except JobExists as error:
            code, details = grpc.StatusCode.ALREADY_EXISTS, str(error)
        except JobTerminal as error:
            code, details = grpc.StatusCode.FAILED_PRECONDITION, str(error)
        except StorageError as error:
            code, details = storage_code(error), str(error)
        context.abort(code, shorten(details, MAX_DETAILS))

    return handler


def _invalid(details: str) -> _Refused:
    return _Refused(grpc.StatusCode.INVALID_ARGUMENT, details)


def _require_job_id(job_id: str) -> None:
    if not job_id:
        raise _invalid("job_id is required")


def _check(field: str, value: str, limit: int) -> None:
    problem = too_long(field, value, limit)
    if problem:
        raise _invalid(problem)


def _valid_statuses() -> str:
    return ", ".join(STATUSES)


class ConformanceControlServicer(control_pb2_grpc.ConformanceControlServicer):
    def __init__(self, orchestrator: Orchestrator) -> None:
        self.store = orchestrator.store

    @_answer
    def CreateJob(self, request, context):
        _check("job_id", request.job_id, MAX_ID_BYTES)
        # An empty status means "running", the state a watch test usually wants.
        status = request.status or RUNNING
        if status not in STATUSES:
            raise _invalid(f"unknown status {shorten(repr(status))}; valid statuses are "
                           f"{_valid_statuses()}")
        job = self.store.create_job(request.job_id or None, status)
        return control_pb2.CreateJobResponse(job_id=job.job_id)

    @_answer
    def AppendEvents(self, request, context):
        _require_job_id(request.job_id)
        if len(request.events) > MAX_EVENTS_PER_APPEND:
            raise _invalid(f"events: {len(request.events)} in one call; the limit is "
                           f"{MAX_EVENTS_PER_APPEND}")
        for event in request.events:
            _check("event_type", event.event_type, MAX_EVENT_TYPE_BYTES)
            _check("unit_id", event.unit_id, MAX_ID_BYTES)
            _check("payload_json", event.payload_json, MAX_PAYLOAD_BYTES)
        specs = [(e.event_type, e.unit_id, e.payload_json or "{}") for e in request.events]
        events = self.store.record_many(request.job_id, specs)
        response = control_pb2.AppendEventsResponse(sequences=[e.sequence for e in events])
        add_timestamp = response.timestamps.add
        for event in events:
            set_time(add_timestamp(), event.timestamp_ns)
        return response

    @_answer
    def FinishJob(self, request, context):
        _require_job_id(request.job_id)
        if not is_terminal(request.status):
            raise _invalid("status must be completed, failed or cancelled, got "
                           f"{shorten(repr(request.status))}")
        _check("error", request.error, MAX_ERROR_BYTES)
        self.store.set_status(request.job_id, request.status, request.error)
        return control_pb2.FinishJobResponse()

    @_answer
    def ListSubscriptions(self, request, context):
        _require_job_id(request.job_id)
        subscriptions = self.store.subscriptions(request.job_id)
        return control_pb2.ListSubscriptionsResponse(subscriptions=[
            control_pb2.Subscription(from_sequence=from_sequence, open=is_open)
            for from_sequence, is_open in subscriptions
        ])


def add_control_service(server: grpc.Server, orchestrator: Orchestrator) -> None:
    control_pb2_grpc.add_ConformanceControlServicer_to_server(
        ConformanceControlServicer(orchestrator), server)
