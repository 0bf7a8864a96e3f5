"""What the contract fixes, as the suite's own constants: service names, job
statuses, the status codes a daemon may answer with, and the details strings
the contract spells out."""

from __future__ import annotations

import re

import grpc

from choo.conformance.v1 import control_pb2
from choo.v1 import daemon_pb2

DAEMON_SERVICE = daemon_pb2.DESCRIPTOR.services_by_name["DaemonService"]
CONTROL_SERVICE = control_pb2.DESCRIPTOR.services_by_name["ConformanceControl"]

PENDING, RUNNING, COMPLETED, FAILED, CANCELLED = (
    "pending", "running", "completed", "failed", "cancelled")
STATUSES = (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED)
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED})

# Every code the contract names; R10 allows no other.
CONTRACT_CODES = frozenset({
    grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.CANCELLED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
})

SHUTTING_DOWN = "daemon is shutting down"


def _words(text: str) -> str:
    return " ".join(re.split(r"[\s_-]+", text.lower()))


def names_field(details: str, field: str) -> bool:
    """Whether status details name a request field as a person would read
    it: `target_branch`, `target branch`, `Target-Branch` all name
    target_branch. Where the specification asks only that details name a
    field, the wording around it and how it is spelled are the daemon's."""
    return f" {_words(field)} " in f" {_words(details)} "

# gRPC's default limits, which every response and status must stay within.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_METADATA_BYTES = 8 * 1024
