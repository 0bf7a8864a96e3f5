"""The reference daemon's limits on what it accepts (docs/OPERATIONS.md).

Each keeps one request, one job or one response within what the daemon and
gRPC's default limits (4 MiB per message, 8 KiB of metadata) can carry. A
request past one is refused with INVALID_ARGUMENT naming the limit.
"""

from __future__ import annotations

KIB = 1024
MIB = 1024 * KIB

# -- a tasks folder (StartJob) ----------------------------------------------------
MAX_FILE_BYTES = 1 * MIB  # each IMPLEMENTATION_PLAN.md and task file
MAX_UNITS = 1000  # unit folders in one tasks_dir
MAX_TASKS_PER_UNIT = 1000
MAX_TASKS = 10_000  # in the whole job
MAX_ID_BYTES = 256  # a unit id; a job id given to CreateJob
MAX_COMMAND_BYTES = 64 * KIB  # a task's backpressure command
MAX_TITLE_BYTES = 1 * KIB  # a task's title (its first '# ' heading)

# -- StartJob's fields ------------------------------------------------------------
MAX_PATH_BYTES = 4096  # tasks_dir, repo_path (PATH_MAX)
MAX_BRANCH_BYTES = 1 * KIB  # target_branch, feature_branch
# Units of one job running at once: a thread and a process each.
MAX_PARALLELISM = 64

# -- open calls --------------------------------------------------------------------
# WatchJob streams open at once (serve(max_watches=...)); one past it is
# RESOURCE_EXHAUSTED. Each holds its coroutine, its feed and the one message
# it is sending: HTTP/2 flow control keeps the rest of a slow client's events
# in the log, not in memory.
MAX_OPEN_WATCHES = 4096

# -- the conformance control service ----------------------------------------------
MAX_EVENT_TYPE_BYTES = 256
MAX_PAYLOAD_BYTES = 1 * MIB  # one event's payload_json
MAX_EVENTS_PER_APPEND = 10_000  # AppendEvents' answer lists a sequence for each
MAX_ERROR_BYTES = 64 * KIB  # FinishJob's error

# -- what the daemon builds itself ------------------------------------------------
# A job's error as GetJobStatus shows it (the runner's summary of its failures).
MAX_JOB_ERROR_BYTES = 4 * KIB
# One response message: gRPC clients refuse more than 4 MiB by default, and
# ListJobs lists only the newest jobs that fit (its request has no paging).
MAX_RESPONSE_BYTES = 4 * MIB - 64 * KIB


def size_text(n: int) -> str:
    """1048576 -> "1 MiB"; 4096 -> "4 KiB"; 1000 -> "1000 bytes"."""
    if n >= MIB and n % MIB == 0:
        return f"{n // MIB} MiB"
    if n >= KIB and n % KIB == 0:
        return f"{n // KIB} KiB"
    return f"{n} bytes"


def too_long(field: str, value: str, limit: int) -> str | None:
    """The message refusing a text field over `limit` bytes of UTF-8, or None."""
    if len(value) <= limit // 4:
        return None  # no character takes more than 4 bytes: no need to encode
    size = len(value.encode("utf-8", "surrogatepass"))
    if size <= limit:
        return None
    return f"{field} is {size} bytes long; the limit is {size_text(limit)}"
