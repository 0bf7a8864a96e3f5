"""The daemon's job manager: the durable JobStore plus the runs that do each
job's work. The servicer asks it to start, stop, list and watch jobs, and to
shut down; it raises the errors below, which the servicer turns into statuses.

No call waits on another's file reading: a tasks folder is read before the
lock that serialises StartJob's check-then-create is taken, and that lock
is held only for the database work.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator

from .job_runner import JobRun, RecordingFailed
from .job_store import JobStore, JobTerminal, JobUnwanted
from .jobs import (
    CANCELLED,
    RUNNING,
    Job,
    JobBrief,
    StorageError,
    UnitState,
    is_terminal,
    shorten,
)
from .limits import MAX_JOB_ERROR_BYTES
from .processes import ProcessTracker
from .task_plan import load_plan

log = logging.getLogger("choo-ref")

DEFAULT_SHUTDOWN_WAIT_S = 30.0
# A forced stop kills process groups; this is how long StopJob(force) and
# Shutdown wait for a killed job to record its end.
FORCED_STOP_WAIT_S = 10.0


class Conflict(Exception):
    """The request contradicts the state of an existing job."""


class CallGone(Exception):
    """The caller's deadline passed before the job was created; none was."""


class AlreadyStopped(Exception):
    def __init__(self, status: str) -> None:
        super().__init__(f"job already stopped: {status}")
        self.status = status


class _Recorder:
    """Writes a run's events and unit states into the store."""

    def __init__(self, store: JobStore, job_id: str) -> None:
        self._store = store
        self._job_id = job_id

    def record(self, event_type: str, unit_id: str, payload: dict) -> None:
        try:
            self._store.record(self._job_id, event_type, unit_id, json.dumps(payload))
        except StorageError as error:
            raise RecordingFailed(f"cannot record the job's events: {error}") from None

    def update_unit(self, unit: UnitState) -> None:
        try:
            self._store.update_unit(self._job_id, unit)
        except StorageError as error:
            raise RecordingFailed(f"cannot record the job's units: {error}") from None


class Orchestrator:
    def __init__(self, store: JobStore, *, command_timeout_s: float = 600.0,
                 processes: ProcessTracker | None = None) -> None:
        """processes: where the daemon tracks its commands' processes; None
        leaves each command to its process group."""
        self.store = store
        self.command_timeout_s = command_timeout_s
        self.processes = processes
        self._lock = threading.Lock()  # serialises start_job's check-then-create
        self._runs: dict[str, JobRun] = {}

    # -- the JobManager interface the WatchJob handler uses -------------------

    def get_job(self, job_id: str) -> Job:
        return self.store.get_job(job_id)

    def subscribe(self, job_id, from_sequence, wake):
        return self.store.subscribe(job_id, from_sequence, wake)

    # -- lifecycle -------------------------------------------------------------

    def start_job(self, *, tasks_dir: str, target_branch: str, feature_branch: str,
                  parallelism: int, repo_path: str,
                  still_wanted: Callable[[], bool] | None = None) -> tuple[str, str]:
        """Returns (job_id, "running"), or (job_id, "attached") for a job
        already running the same work on the same feature branch (R4).
        Raises NotADirectoryError for a repo_path that is not a directory,
        PlanError for a tasks_dir that cannot be read, Conflict, StorageError,
        and CallGone when still_wanted() says the caller gave up before the
        job could be created."""
        repo_path = os.path.abspath(repo_path)
        if not os.path.isdir(repo_path):
            raise NotADirectoryError(
                f"repo_path is not a directory on the daemon's host: {shorten(repo_path)}")
        tasks_dir = os.path.abspath(os.path.join(repo_path, tasks_dir))
        if feature_branch:
            existing = self.store.find_active(repo_path, feature_branch)
            if existing is not None:
                return existing.job_id, self._attach(existing, target_branch, tasks_dir)
        plan = load_plan(tasks_dir)  # outside the lock: reading may be slow
        with self._lock:
            if feature_branch:  # again: another call may have created it meanwhile
                existing = self.store.find_active(repo_path, feature_branch)
                if existing is not None:
                    return existing.job_id, self._attach(existing, target_branch, tasks_dir)
            job_id = uuid.uuid4().hex
            run = JobRun(
                plan, repo_path=repo_path, parallelism=parallelism,
                recorder=_Recorder(self.store, job_id),
                on_done=functools.partial(self._finished, job_id),
                command_timeout_s=self.command_timeout_s,
                processes=None if self.processes is None else self.processes.for_job(job_id),
            )
            try:
                # The job and its units in one commit, and only if the caller
                # still waits once it is made: a stalled disk can hold the
                # commit past the call's deadline.
                job = self.store.create_job(
                    job_id, RUNNING, tasks_dir=tasks_dir, target_branch=target_branch,
                    feature_branch=feature_branch, parallelism=parallelism,
                    repo_path=repo_path, units=run.units, still_wanted=still_wanted,
                )
            except JobUnwanted:
                raise CallGone("the call's deadline passed before the job was created; "
                               "no job was created") from None
            self._runs[job.job_id] = run
        log.info("job %s started: %s in %s (%d units)", job.job_id, tasks_dir, repo_path,
                 len(plan.units))
        run.start()
        return job.job_id, RUNNING

    @staticmethod
    def _attach(existing: Job, target_branch: str, tasks_dir: str) -> str:
        differences = []
        if existing.target_branch != target_branch:
            differences.append(
                f"target_branch {target_branch!r} (the job has {existing.target_branch!r})")
        if existing.tasks_dir != tasks_dir:
            differences.append(f"tasks_dir {tasks_dir!r} (the job has {existing.tasks_dir!r})")
        if differences:
            raise Conflict(
                f"job {existing.job_id} is already {existing.status} on feature branch "
                f"{existing.feature_branch!r} of {existing.repo_path} with a different "
                + " and ".join(differences) + "; stop it first or use another feature branch"
            )
        return "attached"

    def _finished(self, job_id: str, status: str, error: str) -> None:
        error = shorten(error, MAX_JOB_ERROR_BYTES)
        try:
            # Kept in memory if the disk cannot take it: the job ends either way.
            self.store.set_status(job_id, status, error, keep_if_unsaved=True)
        except JobTerminal:
            pass  # shutdown gave up waiting for this run and already ended the job
        except Exception:
            log.exception("job %s: could not record its end (%s)", job_id, status)
        finally:
            with self._lock:
                self._runs.pop(job_id, None)
        log.info("job %s %s%s", job_id, status, f": {error}" if error else "")

    def stop_job(self, job_id: str, force: bool) -> str:
        job = self.store.get_job(job_id)  # raises JobNotFound
        if is_terminal(job.status):
            raise AlreadyStopped(job.status)
        with self._lock:
            run = self._runs.get(job_id)
        if run is None:
            # A job with no run in this process (set up by the conformance
            # control service): nothing is executing, so it ends now.
            try:
                self.store.set_status(job_id, CANCELLED, "stopped by request")
            except JobTerminal as error:
                raise AlreadyStopped(error.status) from None
        else:
            run.stop(force)
            if force:
                run.wait(FORCED_STOP_WAIT_S)
        log.info("job %s stop requested (%s)", job_id, "force" if force else "graceful")
        return "job force killed" if force else "job stopped gracefully"

    def crash(self) -> None:
        """Stop as a killed daemon would (an in-process stand-in for SIGKILL):
        the store takes no more writes, and every running command is killed
        without its job recording an end."""
        self.store.abandon()
        with self._lock:
            runs = list(self._runs.values())
        for run in runs:
            run.stop(force=True)
        for run in runs:
            run.wait(FORCED_STOP_WAIT_S)

    def list_jobs(self, statuses: Collection[str] = ()) -> list[Job]:
        return self.store.list_jobs(statuses)

    def active_count(self) -> int:
        return self.store.active_count()

    def iter_summaries(self, statuses: Collection[str] = ()) -> Iterator[JobBrief]:
        return self.store.iter_summaries(statuses)

    def shutdown(self, wait_for_jobs: bool, timeout_s: float) -> int:
        """Let running jobs finish for up to timeout_s (when asked), then
        force-stop the rest. Returns how many jobs were interrupted."""
        with self._lock:
            runs = dict(self._runs)
        if wait_for_jobs:
            deadline = time.monotonic() + (timeout_s or DEFAULT_SHUTDOWN_WAIT_S)
            for run in runs.values():
                run.wait(max(0.0, deadline - time.monotonic()))
        interrupted = 0
        for run in runs.values():
            if run.stop(force=True):
                interrupted += 1
        for run in runs.values():
            run.wait(FORCED_STOP_WAIT_S)
        # Jobs without a run here (conformance control) are interrupted too.
        for job in self.store.active_jobs():
            if not is_terminal(job.status):
                try:
                    self.store.set_status(job.job_id, CANCELLED, "daemon shut down",
                                          keep_if_unsaved=True)
                except JobTerminal:
                    continue  # it ended meanwhile
                interrupted += 1
        return interrupted
