"""The live view of `choo-ref run` and `choo-ref watch` on a terminal.

One line per unit (a progress bar of tasks done of total, its status, the
command it runs now and its elapsed time), the failures with their output
tail, and the job's totals, redrawn in place by rich. Piped, or with
--plain, the commands print their line-per-event form instead (client.py),
which scripts rely on.

What it shows comes only from the events the reference daemon records
(job_runner.py's vocabulary) and from GetJobStatus: a status at the start
names the units before they start, one at the end settles the last frame.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

import grpc
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from choo.v1 import daemon_pb2

from .client import call_timeout, format_duration_ms, payload_of
from .paths import visible

# Lines of a failed task's output kept on screen; the unit lines share it.
TAIL_LINES = 8
REFRESH_PER_SECOND = 4
BAR_WIDTH = 20
_TERMINAL = ("completed", "failed", "cancelled")

_STATUS_STYLE = {
    "pending": "dim",
    "running": "bold cyan",
    "completed": "green",
    "failed": "bold red",
    "blocked": "yellow",
    "cancelled": "yellow",
}

EventHandler = Callable[[daemon_pb2.JobEvent], None]


def wants_live_view(out: TextIO, plain: bool) -> bool:
    """A person is watching: a terminal that can redraw, and no --plain."""
    if plain or os.environ.get("TERM") == "dumb":
        return False
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


def event_display(stub, job_id: str, out: TextIO, *, plain: bool, from_sequence: int,
                  plain_handler: EventHandler) -> contextlib.AbstractContextManager[EventHandler]:
    """A context whose value handles each event: the live view on a terminal,
    plain_handler otherwise."""
    if wants_live_view(out, plain):
        return LiveView(stub, job_id, out, from_sequence=from_sequence)
    return contextlib.nullcontext(plain_handler)


# -- what the view knows ------------------------------------------------------------


def _ns(ts) -> int | None:
    """A Timestamp in ns since the epoch; None when unset."""
    if ts is None or (ts.seconds == 0 and ts.nanos == 0):
        return None
    return ts.seconds * 1_000_000_000 + ts.nanos


@dataclass
class UnitLine:
    unit_id: str
    status: str = "pending"
    tasks_done: int = 0
    tasks_total: int = 0
    command: str = ""  # what runs now; empty between tasks
    started_ns: int | None = None
    ended_ns: int | None = None
    note: str = ""  # why it is blocked


@dataclass
class Failure:
    unit_id: str
    task: object
    title: str
    error: str
    tail: list[str] = field(default_factory=list)


class JobProgress:
    """The state of one job as its events and statuses tell it."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.status = "pending"
        self.error = ""
        self.tasks_total: int | None = None  # from orch.started
        self.started_ns: int | None = None
        self.ended_ns: int | None = None
        self.units: dict[str, UnitLine] = {}
        self.failures: list[Failure] = []
        self._tails: dict[tuple[str, object], str] = {}

    def unit(self, unit_id: str) -> UnitLine:
        line = self.units.get(unit_id)
        if line is None:
            line = self.units[unit_id] = UnitLine(unit_id)
        return line

    def seed(self, status: daemon_pb2.GetJobStatusResponse, *, with_progress: bool) -> None:
        """Learn the units and their sizes before their events arrive. With
        with_progress (a watch that skips the first events) also take their
        statuses and counts, which the events from there on continue."""
        self.started_ns = self.started_ns or _ns(status.started_at)
        for unit in status.units:
            line = self.unit(unit.unit_id)
            line.tasks_total = max(line.tasks_total, unit.tasks_total)
            if with_progress:
                line.status = unit.status
                line.tasks_done = unit.tasks_complete
        if with_progress:
            self.status = status.status

    def settle(self, status: daemon_pb2.GetJobStatusResponse) -> None:
        """The job's status once its stream has ended: it has the last word."""
        self.status = status.status
        self.error = status.error
        self.started_ns = self.started_ns or _ns(status.started_at)
        self.ended_ns = self.ended_ns or _ns(status.completed_at)
        for unit in status.units:
            line = self.unit(unit.unit_id)
            line.status, line.tasks_done = unit.status, unit.tasks_complete
            line.tasks_total = unit.tasks_total
            if line.status in _TERMINAL or line.status == "blocked":
                line.command = ""

    def apply(self, event: daemon_pb2.JobEvent) -> None:
        kind, p, at = event.event_type, payload_of(event), _ns(event.timestamp)
        if kind == "orch.started":
            self.status = "running"
            self.started_ns = at
            if isinstance(p.get("tasks_total"), int):
                self.tasks_total = p["tasks_total"]
            return
        if kind in ("orch.completed", "orch.failed", "orch.cancelled"):
            self.status = kind.split(".")[1]
            self.error = str(p.get("error", ""))
            self.ended_ns = at
            if kind == "orch.cancelled":
                for line in self.units.values():
                    if line.status in ("pending", "running"):
                        line.status, line.command, line.ended_ns = "cancelled", "", at
            return
        if not event.unit_id:
            return
        line = self.unit(event.unit_id)
        if kind == "unit.started":
            line.status, line.started_ns = "running", at
            if isinstance(p.get("tasks_total"), int):
                line.tasks_total = p["tasks_total"]
        elif kind == "task.started":
            line.status = "running"
            line.command = str(p.get("command", ""))
        elif kind == "task.validation.fail":
            self._tails[(line.unit_id, p.get("task"))] = str(p.get("output_tail", ""))
        elif kind == "task.completed":
            line.tasks_done = min(line.tasks_done + 1, line.tasks_total or line.tasks_done + 1)
            line.command = ""
        elif kind == "task.failed":
            line.command = ""
            tail = self._tails.pop((line.unit_id, p.get("task")), "")
            self.failures.append(Failure(
                line.unit_id, p.get("task", "?"), str(p.get("title", "")), str(p.get("error", "")),
                tail.rstrip("\n").splitlines()[-TAIL_LINES:]))
        elif kind in ("unit.completed", "unit.failed", "unit.blocked"):
            line.status = kind.split(".")[1]
            line.command, line.ended_ns = "", at
            if kind == "unit.completed" and isinstance(p.get("tasks_complete"), int):
                line.tasks_done = p["tasks_complete"]
            if kind == "unit.blocked":
                line.note = f"after {p['blocked_by']}" if p.get("blocked_by") else ""


# -- how it looks --------------------------------------------------------------------


def _elapsed(start_ns: int | None, end_ns: int | None, now_ns: int) -> str:
    if start_ns is None:
        return ""
    return format_duration_ms(max((end_ns or now_ns) - start_ns, 0) // 1_000_000)


def render(progress: JobProgress, now_ns: int) -> RenderableType:
    table = Table.grid(padding=(0, 1), expand=True)
    table.add_column("unit", no_wrap=True)
    table.add_column("bar", width=BAR_WIDTH, no_wrap=True)
    table.add_column("tasks", justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("command", no_wrap=True, overflow="ellipsis", ratio=1)
    table.add_column("elapsed", justify="right", no_wrap=True)
    # Text from the daemon goes in as Text, never as a str that rich would read
    # as markup, and made visible, so that no escape sequence reaches the terminal.
    for line in progress.units.values():
        total = line.tasks_total or None
        table.add_row(
            Text(visible(line.unit_id)),
            ProgressBar(total=total, completed=line.tasks_done, width=BAR_WIDTH,
                        pulse=total is None and line.status == "running", animation_time=0),
            f"{line.tasks_done}/{line.tasks_total}",
            Text(visible(line.status), style=_STATUS_STYLE.get(line.status, "")),
            Text(visible(line.command or line.note), style="dim" if line.note else ""),
            _elapsed(line.started_ns, line.ended_ns, now_ns),
        )

    parts: list[RenderableType] = [table]
    for failure in progress.failures:
        heading = Text(f"FAILED [{visible(failure.unit_id)}] task {visible(str(failure.task))}",
                       style="bold red")
        if failure.title:
            heading.append(f" {visible(failure.title)}")
        heading.append(f": {visible(failure.error)}")
        parts.append(heading)
        parts.extend(Text(f"    | {visible(text)}", style="dim", no_wrap=True,
                          overflow="ellipsis")
                     for text in failure.tail)
    parts.append(totals(progress, now_ns))
    return Group(*parts)


def totals(progress: JobProgress, now_ns: int) -> Text:
    units = progress.units.values()
    done = sum(1 for u in units if u.status == "completed")
    tasks_done = sum(u.tasks_done for u in units)
    tasks_total = progress.tasks_total or sum(u.tasks_total for u in units)
    text = Text(f"job {visible(progress.job_id)} ")
    text.append(visible(progress.status), style=_STATUS_STYLE.get(progress.status, ""))
    text.append(f": {done}/{len(progress.units)} units completed, "
                f"{tasks_done}/{tasks_total} tasks")
    failed = sum(1 for u in units if u.status == "failed")
    if failed:
        text.append(f", {failed} failed", style="bold red")
    elapsed = _elapsed(progress.started_ns, progress.ended_ns, now_ns)
    if elapsed:
        text.append(f", {elapsed}")
    return text


# -- on the terminal -----------------------------------------------------------------


class LiveView:
    """Redraws the job's progress in place while its events are handled.

    Entered, it asks GetJobStatus for the units and starts drawing; each
    event updates the state, which a rich refresh thread draws a few times a
    second. On a clean exit a last GetJobStatus settles the final frame,
    which stays on screen.
    """

    def __init__(self, stub, job_id: str, out: TextIO, *, from_sequence: int) -> None:
        self._stub = stub
        self._from_sequence = from_sequence
        self.progress = JobProgress(job_id)
        self._lock = threading.Lock()
        self._live = Live(console=Console(file=out), get_renderable=self._render,
                          refresh_per_second=REFRESH_PER_SECOND, transient=False)
        self._drawing = False

    def _status(self) -> daemon_pb2.GetJobStatusResponse | None:
        try:
            return self._stub.GetJobStatus(
                daemon_pb2.GetJobStatusRequest(job_id=self.progress.job_id),
                timeout=call_timeout())
        except grpc.RpcError:
            return None  # the watch reports what is wrong

    def _render(self) -> RenderableType:
        with self._lock:
            return render(self.progress, time.time_ns())

    def _draw(self) -> None:
        if not self._drawing:
            self._drawing = True
            self._live.start()

    def __enter__(self) -> EventHandler:
        status = self._status()
        if status is not None:
            # From 0 or 1 the events replay everything the status counts.
            self.progress.seed(status, with_progress=self._from_sequence > 1)
            self._draw()
        return self.handle

    def handle(self, event: daemon_pb2.JobEvent) -> None:
        with self._lock:
            self.progress.apply(event)
        self._draw()

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._drawing:
            return
        if exc_type is None:
            status = self._status()
            if status is not None:
                with self._lock:
                    self.progress.settle(status)
        self._live.stop()
