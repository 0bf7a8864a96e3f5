"""The daemon's durable record: one append-only file of JSON lines at the
--db path. Every change is written here before memory is changed and before
any client hears of it; a restart replays the file (W17).

Records, one per line:

    {"rec": "job", "id", "status", "at", "tasks_dir", "target", "feature", "repo"}
    {"rec": "events", "id", "first", "items": [[type, unit, payload, at_ns], ...]}
    {"rec": "status", "id", "status", "error", "at"}
    {"rec": "units", "id", "units": [[unit, status, done, total], ...]}

A batch of events is one line and one write(2), so it is recorded whole or
not at all. Writes go to the kernel at once (no buffering in this process),
which is what surviving a crash of the process needs; they are not fsync'ed,
so a power cut may lose the newest lines. A line cut short by a crash is the
last line of the file: it is dropped (and cut off the file) on load.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import stat
from collections.abc import Iterable

from .model import FINISHED, Job, UnitState, encode_event

log = logging.getLogger("foreign")


class LedgerError(Exception):
    """The file cannot be read back as a ledger."""


class Ledger:
    def __init__(self, path: str) -> None:
        self.path = path
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, mode=0o700, exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
        self._fd = os.open(path, flags, 0o600)
        if not stat.S_ISREG(os.fstat(self._fd).st_mode):
            os.close(self._fd)
            # A device or a FIFO would never read back what was written to it.
            raise LedgerError(f"{path} is not a regular file")
        try:
            # Two daemons appending to one ledger would interleave their jobs.
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise LedgerError(f"another daemon is using {path}") from None

    def close(self) -> None:
        os.close(self._fd)

    # -- reading back ----------------------------------------------------------

    def load(self) -> list[Job]:
        """Every job in the file, in creation order."""
        with open(self._fd, "rb", closefd=False) as file:
            file.seek(0)
            data = file.read()
        jobs: dict[str, Job] = {}
        good = 0  # bytes of whole, readable lines so far
        for line in data.splitlines(keepends=True):
            try:
                if not line.endswith(b"\n"):
                    raise ValueError("no end of line")
                self._apply(jobs, json.loads(line))
            except (ValueError, KeyError, TypeError, IndexError) as error:
                if good + len(line) < len(data):
                    raise LedgerError(
                        f"{self.path}: unreadable record at byte {good}: {error}") from None
                log.warning("%s: dropping a record cut short at byte %d", self.path, good)
                os.ftruncate(self._fd, good)
                break
            good += len(line)
        return list(jobs.values())

    @staticmethod
    def _apply(jobs: dict[str, Job], record: dict) -> None:
        kind = record["rec"]
        if kind == "job":
            job_id = record["id"]
            jobs[job_id] = Job(
                job_id=job_id, status=record["status"], order=len(jobs) + 1,
                created_ns=record["at"], tasks_dir=record["tasks_dir"],
                target_branch=record["target"], feature_branch=record["feature"],
                repo_path=record["repo"])
            if jobs[job_id].finished:
                jobs[job_id].finished_ns = record["at"]
            return
        job = jobs[record["id"]]
        if kind == "events":
            if record["first"] != len(job.log) + 1:
                raise ValueError(f"events of {job.job_id} out of order")
            for offset, (event_type, unit_id, payload, at_ns) in enumerate(record["items"]):
                job.log.append(encode_event(record["first"] + offset, event_type, unit_id,
                                            payload, at_ns))
        elif kind == "status":
            job.status, job.error = record["status"], record["error"]
            job.finished_ns = record["at"] if record["status"] in FINISHED else 0
        elif kind == "units":
            job.units = [UnitState(*unit) for unit in record["units"]]
        else:
            raise ValueError(f"unknown record {kind!r}")

    # -- writing ---------------------------------------------------------------

    def _write(self, *records: dict) -> None:
        data = b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records)
        size = os.fstat(self._fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
        except OSError:
            # Leave no half record behind: what was not acknowledged is gone.
            os.ftruncate(self._fd, size)
            raise

    def job_created(self, job: Job) -> None:
        self._write({"rec": "job", "id": job.job_id, "status": job.status, "at": job.created_ns,
                     "tasks_dir": job.tasks_dir, "target": job.target_branch,
                     "feature": job.feature_branch, "repo": job.repo_path})

    def events_recorded(self, job_id: str, first: int,
                        items: Iterable[tuple[str, str, str, int]]) -> None:
        self._write({"rec": "events", "id": job_id, "first": first,
                     "items": [list(item) for item in items]})

    def status_changed(self, job: Job) -> None:
        self._write({"rec": "status", "id": job.job_id, "status": job.status,
                     "error": job.error, "at": job.finished_ns})

    def units_changed(self, job: Job) -> None:
        self._write({"rec": "units", "id": job.job_id,
                     "units": [[u.unit_id, u.status, u.tasks_done, u.tasks_total]
                               for u in job.units]})
