"""Every job the daemon has, and the one path by which anything about a job
changes: written to the ledger first, then to memory, then the job's
watchers are woken."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re

import grpc

from . import model
from .awkward import Awkward
from .ledger import Ledger
from .model import FINISHED, Job, Refusal, encode_event, invalid, not_found, now_ns

log = logging.getLogger("foreign")

JOB_ID_FORMAT = "job_{:06d}"
_OUR_ID = re.compile(r"^job_(\d{6,})$")
INTERRUPTED = "the daemon went away while this job ran; it was not finished"


class CallCounter:
    """The calls being handled, so that the daemon can let them finish
    before it exits."""

    def __init__(self) -> None:
        self.count = 0
        self._none = asyncio.Event()
        self._none.set()

    @contextlib.contextmanager
    def counted(self):
        self.count += 1
        self._none.clear()
        try:
            yield
        finally:
            self.count -= 1
            if not self.count:
                self._none.set()

    async def wait_for_none(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._none.wait(), timeout_s)


class State:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.jobs: dict[str, Job] = {}
        self._last_number = 0
        self.shutting_down = False
        # Set once Shutdown has answered: every new call is UNAVAILABLE (R11).
        self.closed = False
        self.calls = CallCounter()
        self._a_job_finished = asyncio.Event()
        # The moments moved by --awkward (awkward.py); none by default.
        self.awkward = Awkward()

    def load(self) -> None:
        """The jobs of a previous run. One that was not finished then never
        will be: it is marked failed (its events stay as they were)."""
        for job in self.ledger.load():
            self.jobs[job.job_id] = job
            self._note_id(job.job_id)
            if not job.finished:
                job.units = [model.UnitState(u.unit_id,
                                             model.UNIT_STOPPED if u.status in
                                             (model.UNIT_QUEUED, model.UNIT_RUNNING) else u.status,
                                             u.tasks_done, u.tasks_total) for u in job.units]
                self.ledger.units_changed(job)
                self.finish(job, "failed", INTERRUPTED)
        if self.jobs:
            log.info("%d jobs read back from %s", len(self.jobs), self.ledger.path)

    def _note_id(self, job_id: str) -> None:
        match = _OUR_ID.match(job_id)
        if match:
            self._last_number = max(self._last_number, int(match.group(1)))

    def new_job_id(self) -> str:
        while True:
            self._last_number += 1
            job_id = JOB_ID_FORMAT.format(self._last_number)
            if job_id not in self.jobs:
                return job_id

    # -- lookups ---------------------------------------------------------------

    def job(self, job_id: str) -> Job:
        check_job_id(job_id)
        job = self.jobs.get(job_id)
        if job is None:
            raise not_found(job_id)
        return job

    def newest_first(self) -> list[Job]:
        return sorted(self.jobs.values(), key=lambda job: job.order, reverse=True)

    def active_count(self) -> int:
        return sum(1 for job in self.jobs.values() if not job.finished)

    # -- changes ---------------------------------------------------------------

    def add(self, job: Job) -> None:
        job.order = len(self.jobs) + 1
        self.ledger.job_created(job)
        self.jobs[job.job_id] = job
        self._note_id(job.job_id)

    def record(self, job: Job, items: list[tuple[str, str, str]]) -> list[int]:
        """Append events (type, unit, payload_json); their sequences."""
        first = len(job.log) + 1
        stamped = [(event_type, unit_id, payload, now_ns())
                   for event_type, unit_id, payload in items]
        self.ledger.events_recorded(job.job_id, first, stamped)
        for offset, (event_type, unit_id, payload, at_ns) in enumerate(stamped):
            job.log.append(encode_event(first + offset, event_type, unit_id, payload, at_ns))
        job.notify()
        self.awkward.recorded(len(items))
        return list(range(first, first + len(items)))

    def finish(self, job: Job, status: str, error: str = "") -> None:
        assert status in FINISHED
        job.status, job.error, job.finished_ns = status, error, now_ns()
        try:
            self.ledger.status_changed(job)
        except OSError as exc:
            # Still finished in memory: a job must never be left running.
            log.error("job %s: cannot record that it %s: %s", job.job_id, status, exc)
        job.notify()
        self._a_job_finished.set()

    async def wait_until_idle(self, timeout_s: float) -> None:
        """Returns once no job is unfinished, or after timeout_s."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self.active_count():
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            self._a_job_finished.clear()
            try:
                await asyncio.wait_for(self._a_job_finished.wait(), remaining)
            except TimeoutError:
                return

    def save_units(self, job: Job) -> None:
        self.ledger.units_changed(job)

    def begin_shutdown(self) -> None:
        self.shutting_down = True
        for job in self.jobs.values():
            job.notify()  # open watches end UNAVAILABLE (W6)


def check_job_id(job_id: str) -> None:
    if not job_id:
        raise invalid("job_id is required")
    if len(job_id.encode()) > model.MAX_JOB_ID_BYTES:
        raise invalid(f"job_id is longer than the limit of {model.MAX_JOB_ID_BYTES} bytes")
    if "\0" in job_id:
        raise invalid("job_id contains a NUL character")


def unavailable() -> Refusal:
    return Refusal(grpc.StatusCode.UNAVAILABLE, model.SHUTTING_DOWN)
