"""The vocabulary shared by the servicer and any job manager: jobs, events,
the event feed a watch reads, and the JobManager interface the servicer is
written against (the role of the seed's Go JobManager)."""

from __future__ import annotations

import errno
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

PENDING, RUNNING, COMPLETED, FAILED, CANCELLED = (
    "pending",
    "running",
    "completed",
    "failed",
    "cancelled",
)
STATUSES = (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED)
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED})


def is_terminal(status: str) -> bool:
    return status in TERMINAL


@dataclass(frozen=True, slots=True)
class Event:
    """One recorded job event. Immutable: replay must return it unchanged (W9)."""

    sequence: int
    event_type: str
    unit_id: str = ""
    payload_json: str = "{}"
    timestamp_ns: int = 0  # nanoseconds since the Unix epoch, UTC


@dataclass(frozen=True, slots=True)
class UnitState:
    unit_id: str
    status: str = PENDING
    tasks_complete: int = 0
    tasks_total: int = 0
    pr_number: int = 0


@dataclass(frozen=True, slots=True)
class Job:
    """A snapshot of a job's state."""

    job_id: str
    status: str
    tasks_dir: str = ""
    target_branch: str = ""
    feature_branch: str = ""
    parallelism: int = 0
    repo_path: str = ""
    error: str = ""
    created_at_ns: int = 0
    started_at_ns: int = 0
    completed_at_ns: int = 0  # 0 until the job is terminal
    units: tuple[UnitState, ...] = field(default_factory=tuple)


@dataclass(slots=True)
class JobBrief:
    """What ListJobs shows of a job, and all that a finished job keeps in
    the daemon's memory: the rest of it is read from the database when asked."""

    job_id: str
    status: str
    feature_branch: str
    started_at_ns: int
    units_complete: int
    units_total: int

    @classmethod
    def of(cls, job: Job) -> JobBrief:
        return cls(job.job_id, job.status, job.feature_branch, job.started_at_ns,
                   sum(1 for u in job.units if u.status == COMPLETED), len(job.units))


def shorten(text: str, limit: int = 200) -> str:
    """Client-supplied text quoted in a message, cut to `limit` bytes of
    UTF-8. A status message travels percent-encoded in a trailer, which gRPC
    clients refuse past 8 KiB: each byte may take three there."""
    encoded = text.encode("utf-8", "replace")
    if len(encoded) <= limit:
        return text
    cut = encoded[:limit].decode("utf-8", "ignore")
    return f"{cut}... ({len(text)} characters)"


class StorageError(Exception):
    """A change that could not be recorded durably, so it was not made.
    `full`: the disk holding the database (or its size cap) is full."""

    def __init__(self, message: str, *, full: bool = False) -> None:
        super().__init__(message)
        self.full = full


# OSError numbers that say the daemon itself is short of something for now
# (open files, its own or the system's; memory), not that a request is wrong.
SHORTAGE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


class ResourceShortage(Exception):
    """The daemon ran out of a resource of its own (open files, memory) while
    serving a request: RESOURCE_EXHAUSTED, worth trying again later."""


class JobNotFound(LookupError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job not found: {shorten(job_id)}")
        self.job_id = job_id


class EventFeed(Protocol):
    """What one watch reads: a cursor over a job's events.

    read() never blocks. It returns the next events available now (at most
    `limit`), an empty list when none is available yet, or None once the feed
    has ended (the job is terminal and every event from the start sequence
    has been read). The `wake` callback given to subscribe() is called, from
    any thread, whenever read() may have something new; it may be called
    spuriously and must be cheap.
    """

    def read(self, limit: int) -> Sequence[Event] | None: ...


Wake = Callable[[], None]
Unsubscribe = Callable[[], None]


class JobManager(Protocol):
    def get_job(self, job_id: str) -> Job:
        """The job's current state; raises LookupError (JobNotFound, or any
        other LookupError of a job manager written elsewhere) for an unknown job."""

    def subscribe(
        self, job_id: str, from_sequence: int, wake: Wake
    ) -> tuple[EventFeed, Unsubscribe]:
        """A feed of the job's events with sequence >= from_sequence (0 and 1
        both mean the first), and the call that releases it. Unsubscribe is
        idempotent. Raises JobNotFound."""
