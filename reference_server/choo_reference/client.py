"""Client side of choo-ref's commands: a channel to the daemon's socket, error
messages, the event printers, and a WatchJob follower that survives daemon
restarts."""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import TextIO

import grpc

from choo.v1 import daemon_pb2

from .paths import DEFAULT_SOCKET, daemon_listening, expand, socket_path_problem, visible

# grpc backs off up to 120 s between reconnection attempts by default; a
# restarted daemon should be found again within a second. Not
# grpc.min_reconnect_backoff_ms: gRPC core also takes it as the time a
# connection attempt gets to receive the daemon's SETTINGS, and a busy
# daemon must not be given up on after 100 ms.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]

# follow(): how long to keep trying without a daemon, and the retry backoff.
GIVE_UP_AFTER_S = 30.0
RETRY_MIN_S = 0.05
RETRY_MAX_S = 1.0
# An attempt that lasted this long had reached the daemon, so its failure
# starts a new outage rather than extending the previous one.
_CONNECTED_AFTER_S = 1.0

# Lines of a failed task's output shown by `run`.
TAIL_LINES = 20

# The deadline of every call but WatchJob's stream and Shutdown's wait: a
# daemon that is stopped (SIGSTOP) or wedged must not hold a command forever.
DEFAULT_CALL_TIMEOUT_S = 30.0
CALL_TIMEOUT_VARIABLE = "CHOO_REF_CALL_TIMEOUT"


def call_timeout() -> float:
    """Seconds a call may take: $CHOO_REF_CALL_TIMEOUT, else 30."""
    try:
        value = float(os.environ.get(CALL_TIMEOUT_VARIABLE, ""))
    except ValueError:
        return DEFAULT_CALL_TIMEOUT_S
    return value if 0 < value < float("inf") else DEFAULT_CALL_TIMEOUT_S


class CliError(Exception):
    """A failure to report on one line of stderr, and the exit code to use."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class DaemonLost(CliError):
    pass


def socket_problem(socket_path: str) -> str | None:
    """Why the client will not call a daemon on this path (too long for a Unix
    socket, not UTF-8, another user's socket), or None."""
    path = expand(socket_path)
    return socket_path_problem(path) or _owner_problem(path)


def _owner_problem(path: str) -> str | None:
    # The client sends the daemon repository paths and runs what it is told to
    # watch: a socket someone else made in a shared folder must not get them.
    try:
        owner = os.stat(path).st_uid
    except OSError:
        return None  # absent or out of reach: the call says which
    if owner in (0, os.geteuid()):
        return None
    return (f"the socket {path} belongs to another user (uid {owner}); "
            "choo-ref talks only to a daemon run by you or by root")


def permission_problem(path: str) -> str | None:
    """What on the way to the socket this user may not use, or None."""
    way = []
    folder = os.path.dirname(path)
    while True:
        way.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    for folder in reversed(way):
        try:
            os.stat(os.path.join(folder, "."))
        except PermissionError:
            where = ("the folder of the socket" if folder == os.path.dirname(path)
                     else "on the way to the socket")
            return f"error: permission denied: cannot enter {folder}, {where} {path}"
        except OSError:
            return None
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(2.0)
        probe.connect(path)
    except PermissionError:
        return f"error: permission denied: this user may not open the socket {path}"
    except OSError:
        return None
    finally:
        probe.close()
    return None


def open_channel(socket_path: str) -> grpc.Channel:
    return grpc.insecure_channel(f"unix://{expand(socket_path)}", options=CHANNEL_OPTIONS)


def no_daemon_message(socket_path: str) -> str:
    path = expand(socket_path)
    start = "choo-ref daemon"
    if path != expand(DEFAULT_SOCKET):
        start += f" --socket {path}"
    return f"error: no daemon is answering on {path} (start one with: {start})"


def no_answer_message(socket_path: str, timeout: float) -> str:
    return (f"error: the daemon on {expand(socket_path)} did not answer within {timeout:g} s "
            f"(it may be stopped or overloaded; ${CALL_TIMEOUT_VARIABLE} sets the deadline)")


def describe_error(error: grpc.RpcError, socket_path: str) -> str:
    """One line for stderr: the daemon's status code and message, that no
    daemon answers on the socket, that it did not answer in time, or that
    this user may not open the socket."""
    code = error.code() if callable(getattr(error, "code", None)) else None
    details = error.details() if callable(getattr(error, "details", None)) else str(error)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return no_answer_message(socket_path, call_timeout())
    if code == grpc.StatusCode.UNAVAILABLE:
        denied = permission_problem(expand(socket_path))
        if denied:
            return denied
        if not daemon_listening(socket_path):
            return no_daemon_message(socket_path)
    name = code.name if code is not None else "UNKNOWN"
    return f"error: {name}: {visible(details or '')}"


# -- following a job's events ------------------------------------------------------


def _retryable(error: grpc.RpcError) -> bool:
    """The connection failed or the daemon went away (or is restarting); the
    watch itself was not refused. The client never cancels its own calls
    except when it stops reading, and then nobody sees the error."""
    code = error.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return True
    if code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL):
        # A stream cut without a status surfaces as one of these.
        details = (error.details() or "").lower()
        return any(s in details for s in (
            "stream removed", "rst_stream", "socket closed", "connection reset",
            "broken pipe", "end of tcp stream", "received rst",
        ))
    return False


def follow(
    stub,
    job_id: str,
    from_sequence: int = 0,
    *,
    give_up_after: float = GIVE_UP_AFTER_S,
    retry_first: bool = False,
    on_retry: Callable[[grpc.RpcError, int], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[daemon_pb2.JobEvent]:
    """Yield the job's events from from_sequence until its stream ends OK.

    When the connection drops (the daemon died, restarted or is shutting
    down), watch again from the last sequence seen + 1 after a bounded
    backoff, so no event is missed or repeated. Raises DaemonLost after
    give_up_after seconds without a daemon, and the RpcError of a watch the
    daemon refuses (NOT_FOUND, INVALID_ARGUMENT, ...). Unless retry_first, a
    first watch that fails at once raises its error: there was no daemon to
    lose. on_retry(error, next_sequence) is called once per outage.
    """
    next_sequence = from_sequence
    reached_daemon = False  # some watch has streamed or lasted
    outage_since: float | None = None
    backoff = RETRY_MIN_S
    while True:
        call = stub.WatchJob(
            daemon_pb2.WatchJobRequest(job_id=job_id, from_sequence=next_sequence))
        started = clock()
        try:
            for event in call:
                if event.sequence < next_sequence:
                    continue  # already yielded; a resumed stream never repeats
                reached_daemon = True
                outage_since = None
                backoff = RETRY_MIN_S
                next_sequence = event.sequence + 1
                yield event
            return
        except grpc.RpcError as error:
            if not _retryable(error):
                raise
            now = clock()
            connected = now - started >= _CONNECTED_AFTER_S
            if not (reached_daemon or connected or retry_first):
                raise
            reached_daemon = True
            if connected:
                outage_since = None
            if outage_since is None:
                outage_since = now
                if on_retry is not None:
                    on_retry(error, max(next_sequence, 1))
            elif now - outage_since >= give_up_after:
                raise DaemonLost(
                    f"error: lost the daemon while watching job {visible(job_id)} and it did "
                    f"not come back within {give_up_after:g} s (last error: "
                    f"{error.code().name}: {visible(error.details() or '')})") from None
        finally:
            call.cancel()  # the consumer stopped early: release the watch
        sleep(backoff)
        backoff = min(backoff * 2, RETRY_MAX_S)
        # 0 means "from the first event" only while the job runs; for a resumed
        # watch the first event wanted is explicit.
        next_sequence = max(next_sequence, 1)


# -- formatting --------------------------------------------------------------------


def format_time(ts, *, millis: bool = False) -> str:
    """A Timestamp in local time; "-" when unset."""
    if ts is None or (ts.seconds == 0 and ts.nanos == 0):
        return "-"
    when = _dt.datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9)
    if millis:
        return when.strftime("%Y-%m-%d %H:%M:%S.") + f"{ts.nanos // 1_000_000:03d}"
    return when.strftime("%Y-%m-%d %H:%M:%S")


def format_duration_ms(ms: object) -> str:
    if not isinstance(ms, (int, float)):
        return "?"
    if ms < 1000:
        return f"{int(ms)} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    minutes, seconds = divmod(int(ms / 1000), 60)
    return f"{minutes} min {seconds} s"


def job_duration_ms(status: daemon_pb2.GetJobStatusResponse) -> int | None:
    if not status.HasField("started_at") or not status.HasField("completed_at"):
        return None
    start = status.started_at.seconds * 1000 + status.started_at.nanos // 1_000_000
    end = status.completed_at.seconds * 1000 + status.completed_at.nanos // 1_000_000
    return max(end - start, 0)


def payload_of(event: daemon_pb2.JobEvent) -> dict:
    try:
        payload = json.loads(event.payload_json or "{}")
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def print_event(event: daemon_pb2.JobEvent, out: TextIO) -> None:
    """One line per event: sequence, time, type, unit, payload."""
    print(
        f"{event.sequence:>6}  {format_time(event.timestamp, millis=True)}  "
        f"{visible(event.event_type):<21}  {visible(event.unit_id) or '-':<12}  "
        f"{visible(event.payload_json)}",
        file=out, flush=True,
    )


def print_jobs_table(jobs, out: TextIO) -> None:
    if not jobs:
        print("no jobs", file=out)
        return
    rows = [("JOB", "STATUS", "FEATURE BRANCH", "UNITS", "STARTED")]
    for job in jobs:
        rows.append((
            visible(job.job_id), visible(job.status), visible(job.feature_branch) or "-",
            f"{job.units_complete}/{job.units_total}", format_time(job.started_at),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)]
        print("  ".join(cells + [row[-1]]), file=out)


def print_status(status: daemon_pb2.GetJobStatusResponse, out: TextIO) -> None:
    print(f"job        {visible(status.job_id)}", file=out)
    print(f"status     {visible(status.status)}", file=out)
    print(f"started    {format_time(status.started_at)}", file=out)
    completed = format_time(status.completed_at) if status.HasField("completed_at") else "-"
    duration = job_duration_ms(status)
    if duration is not None:
        completed += f" (after {format_duration_ms(duration)})"
    print(f"completed  {completed}", file=out)
    if status.error:
        print(f"error      {visible(status.error)}", file=out)
    if not status.units:
        print("units      none", file=out)
        return
    print("units", file=out)
    width = max(len(visible(u.unit_id)) for u in status.units)
    status_width = max(len(visible(u.status)) for u in status.units)
    for unit in status.units:
        line = (f"  {visible(unit.unit_id).ljust(width)}  "
                f"{visible(unit.status).ljust(status_width)}  "
                f"{unit.tasks_complete}/{unit.tasks_total} tasks")
        if unit.pr_number:
            line += f"  PR #{unit.pr_number}"
        print(line, file=out)


class ProgressPrinter:
    """The live display of `choo-ref run`: one line per event that matters."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._titles: dict[tuple[str, object], str] = {}
        self._tails: dict[tuple[str, object], str] = {}

    def _line(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def _task(self, unit: str, payload: dict) -> str:
        number = payload.get("task", "?")
        title = payload.get("title") or self._titles.get((unit, number), "")
        return f"[{unit}] task {number}" + (f" {title}" if title else "")

    def handle(self, event: daemon_pb2.JobEvent) -> None:
        # Whatever the daemon sent is shown, never obeyed by the terminal.
        kind, unit, p = event.event_type, visible(event.unit_id), _visible_payload(event)
        if kind == "orch.started":
            self._line(f"{p.get('units', '?')} units, {p.get('tasks_total', '?')} tasks, "
                       f"up to {p.get('parallelism', '?')} units at once")
        elif kind == "unit.started":
            after = p.get("depends_on") or []
            self._line(f"[{unit}] unit started ({p.get('tasks_total', '?')} tasks"
                       + (f", after {', '.join(map(str, after))})" if after else ")"))
        elif kind == "task.started":
            self._titles[(unit, p.get("task"))] = p.get("title", "")
            self._line(f"{self._task(unit, p)}: started: {p.get('command', '')}")
        elif kind == "task.validation.fail":
            self._tails[(unit, p.get("task"))] = p.get("output_tail", "")
        elif kind == "task.completed":
            self._line(f"{self._task(unit, p)}: ok ({format_duration_ms(p.get('duration_ms'))})")
        elif kind == "task.failed":
            self._line(f"{self._task(unit, p)}: FAILED after "
                       f"{format_duration_ms(p.get('duration_ms'))}: {p.get('error', '')}")
            tail = self._tails.pop((unit, p.get("task")), "")
            lines = tail.rstrip("\n").splitlines()[-TAIL_LINES:]
            for text in lines:
                self._line(f"    | {visible(text)}")
        elif kind == "unit.completed":
            self._line(f"[{unit}] unit completed ({p.get('tasks_complete', '?')} tasks, "
                       f"{format_duration_ms(p.get('duration_ms'))})")
        elif kind == "unit.failed":
            self._line(f"[{unit}] unit FAILED: {p.get('error', '')}")
        elif kind == "unit.blocked":
            self._line(f"[{unit}] unit blocked: {p.get('error', '')}")
        elif kind == "orch.cancelled":
            self._line("job cancelled" + (" (forced)" if p.get("forced") else ""))


def _visible_payload(event: daemon_pb2.JobEvent) -> dict:
    """The payload with its text made visible; an output tail keeps its
    newlines, each line is made visible where it is printed."""
    def shown(key, value):
        if isinstance(value, str):
            return value if key == "output_tail" else visible(value)
        if isinstance(value, list):
            return [visible(v) if isinstance(v, str) else v for v in value]
        return value
    return {key: shown(key, value) for key, value in payload_of(event).items()}


def summary_line(status: daemon_pb2.GetJobStatusResponse) -> str:
    done = sum(1 for u in status.units if u.status == "completed")
    line = f"job {visible(status.job_id)} {visible(status.status)}"
    duration = job_duration_ms(status)
    if duration is not None:
        line += f" in {format_duration_ms(duration)}"
    line += f": {done}/{len(status.units)} units completed"
    if status.error:
        line += f"; {visible(status.error)}"
    return line


def wait_until_gone(socket_path: str, timeout: float) -> bool:
    """After a Shutdown: wait for the daemon to remove its socket and its lock file."""
    path = expand(socket_path)
    deadline = time.monotonic() + timeout
    while os.path.exists(path) or os.path.exists(path + ".lock"):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True
