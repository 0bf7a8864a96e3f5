"""What the daemon knows about a job: its status, its units, its event log
and the watches it has had. Plain data; the daemon's single event loop is the
only writer, so nothing here takes a lock."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import grpc

from choo.v1 import daemon_pb2

# The job statuses of the contract, in the order error messages list them.
JOB_STATUSES = ("pending", "running", "completed", "failed", "cancelled")
FINISHED = frozenset({"completed", "failed", "cancelled"})

# This daemon's own unit statuses (the contract leaves them open).
UNIT_QUEUED = "queued"
UNIT_RUNNING = "running"
UNIT_PASSED = "passed"
UNIT_FAILED = "failed"
UNIT_SKIPPED = "skipped"  # a unit it depends on did not pass
UNIT_STOPPED = "stopped"  # the job was stopped before or while it ran

SHUTTING_DOWN = "daemon is shutting down"

# Input limits, each refused with INVALID_ARGUMENT naming it. They keep what
# one job adds to an answer small (ListJobs stays under gRPC's 4 MiB per
# message up to some 3000 jobs at the limits), and QUOTE_CHARS keeps every
# status message far below gRPC's 8 KiB of metadata.
MAX_JOB_ID_BYTES = 256
MAX_PATH_BYTES = 4096
MAX_BRANCH_BYTES = 1024
# How much client text an error message quotes.
QUOTE_CHARS = 80


class Refusal(Exception):
    """A request the daemon answers with a non-OK status. Raised anywhere in
    the handlers; turned into the gRPC status at the edge (service.py)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def invalid(details: str) -> Refusal:
    return Refusal(grpc.StatusCode.INVALID_ARGUMENT, details)


def not_found(job_id: str) -> Refusal:
    return Refusal(grpc.StatusCode.NOT_FOUND, f"job not found: {job_id}")


def quote(text: str) -> str:
    """Client text as an error message shows it: bounded, so the status
    always fits in its trailer."""
    return repr(text) if len(text) <= QUOTE_CHARS else repr(text[:QUOTE_CHARS]) + "..."


def now_ns() -> int:
    return time.time_ns()


def encode_event(sequence: int, event_type: str, unit_id: str, payload_json: str,
                 at_ns: int) -> bytes:
    """A JobEvent as it goes on the wire. Encoded once, when recorded: every
    watcher, live or replaying, is sent these very bytes (W9)."""
    event = daemon_pb2.JobEvent(sequence=sequence, event_type=event_type, unit_id=unit_id,
                                payload_json=payload_json)
    event.timestamp.FromNanoseconds(at_ns)
    return event.SerializeToString()


@dataclass
class Watch:
    """One WatchJob subscription, as ListSubscriptions reports it."""

    from_sequence: int
    open: bool = True


@dataclass
class UnitState:
    unit_id: str
    status: str
    tasks_done: int
    tasks_total: int


@dataclass
class Job:
    job_id: str
    status: str
    order: int  # creation order: ListJobs lists newest first by it
    created_ns: int
    finished_ns: int = 0
    error: str = ""
    tasks_dir: str = ""
    target_branch: str = ""
    feature_branch: str = ""
    repo_path: str = ""
    units: list[UnitState] = field(default_factory=list)
    log: list[bytes] = field(default_factory=list)  # log[n - 1] is event n
    watches: list[Watch] = field(default_factory=list)
    # Wakes every watcher waiting for more whenever the log grows or the
    # status changes. No watcher holds a queue of its own (W15).
    _waiting: set[asyncio.Future] = field(default_factory=set)
    # Called after each change, for watchers that wait on a thread (the
    # thread-per-watch defect only).
    listeners: list = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    async def next_change(self) -> None:
        """Returns at the next change of the log or the status."""
        # A future of its own: a watcher that is cancelled while it waits
        # cancels only its own. A set, so that leaving it costs O(1) with a
        # thousand others waiting.
        change = asyncio.get_running_loop().create_future()
        self._waiting.add(change)
        try:
            await change
        finally:
            self._waiting.discard(change)

    def notify(self) -> None:
        waiting, self._waiting = self._waiting, set()
        for change in waiting:
            if not change.done():
                change.set_result(None)
        for listener in self.listeners:
            listener()
