"""Runs one job started by StartJob: reads its tasks folder, then runs the
units' steps (their backpressure commands) with /bin/sh in repo_path.

Units start once every unit they depend on has passed, at most `parallelism`
at a time (0: one per CPU); the steps of a unit run one after another in
their dependency order. A failing step fails its unit; a unit depending on a
unit that did not pass is skipped. Each command runs in a process group of
its own, so that a forced stop kills everything it started.

The folder is read when the job starts running, not by StartJob: a folder
that cannot be read or parsed fails the job, with an error naming the file.

Events it records (its own vocabulary; payloads are JSON objects):

    job/begin    {"units": [ids in plan order], "parallelism": n}
    unit/begin   {"steps": n}
    step/run     {"step": n, "title": ..., "cmd": ...}
    step/ok      {"step": n, "ms": ...}
    step/fail    {"step": n, "exit": code, "ms": ..., "tail": last output}
    step/killed  {"step": n, "ms": ...}
    unit/end     {"result": "passed" | "failed" | "stopped"}
    unit/skip    {"waits_for": [units that did not pass]}
    job/end      {"result": job status, "error": ...}
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import tempfile
import time

from . import environment, model
from .model import Job, UnitState
from .plan import PlanError, Unit, read_plan

log = logging.getLogger("foreign")

OUTPUT_TAIL_BYTES = 1024


def _ms_since(start: float) -> int:
    return int((time.monotonic() - start) * 1000)


class Conductor:
    def __init__(self, state, job: Job, parallelism: int) -> None:
        self.state = state
        self.job = job
        self.parallelism = parallelism or os.cpu_count() or 1
        self.stopping = False  # nothing new starts
        self.forced = False  # and what runs is killed
        self._stop_asked = asyncio.Event()
        self._groups: set[int] = set()  # process groups of running commands
        self._failures: list[str] = []
        self.task: asyncio.Task | None = None
        # --awkward bursty: the job's events wait here, recorded a few at a time.
        self.buffer = state.awkward.event_buffer(lambda items: state.record(job, items))
        self._ended = False  # job/end is recorded

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run(), name=self.job.job_id)

    def stop(self, force: bool) -> None:
        self.stopping = True
        self._stop_asked.set()
        if force:
            self.forced = True
            for group in list(self._groups):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)

    def end_now(self, status: str) -> None:
        """--awkward cancel-early: the job ends now, its last event then its
        status; a command still running finishes on its own, recording nothing."""
        if self.job.finished:
            return
        try:
            if not self._ended:
                self._record("job/end", result=status, error="")
            if self.buffer is not None:
                self.buffer.flush_now()
        except OSError as exc:
            log.error("job %s: cannot record its end: %s", self.job.job_id, exc)
        self.state.finish(self.job, status)

    def _record(self, event_type: str, unit_id: str = "", **payload) -> None:
        if self.job.finished:  # ended early (cancel-early): a terminal job records nothing
            return
        item = (event_type, unit_id, json.dumps(payload, sort_keys=True))
        if self.buffer is not None:
            self.buffer.add(item)
        else:
            self.state.record(self.job, [item])
        self._ended = event_type == "job/end"

    # -- the job ---------------------------------------------------------------

    async def _run(self) -> None:
        try:
            status, error = await self._run_units()
        except Exception as exc:  # a fault of this daemon: the job must still end
            log.exception("job %s: the run broke down", self.job.job_id)
            status, error = "failed", f"the daemon could not run the job: {exc}"
        try:
            self._record("job/end", result=status, error=error)
            if self.buffer is not None:
                await self.buffer.drain()
        except OSError as exc:
            log.error("job %s: cannot record its end: %s", self.job.job_id, exc)
        await self.state.awkward.before_status_flip()
        if self.job.finished:  # ended early by a graceful stop (cancel-early)
            return
        if self.stopping and status != "cancelled":  # stopped between its last event and now
            status, error = "cancelled", ""
        self.state.finish(self.job, status, error)
        log.info("job %s %s%s", self.job.job_id, status, f": {error}" if error else "")

    async def _run_units(self) -> tuple[str, str]:
        try:
            units = await asyncio.to_thread(read_plan, self.job.tasks_dir)
        except PlanError as problem:
            return "failed", f"cannot use the tasks folder {self.job.tasks_dir}: {problem}"
        self.job.units = [UnitState(u.unit_id, model.UNIT_QUEUED, 0, len(u.steps)) for u in units]
        self.state.save_units(self.job)
        self._record("job/begin", units=[u.unit_id for u in units], parallelism=self.parallelism)

        states = {state.unit_id: state for state in self.job.units}
        waiting = list(units)
        running: dict[asyncio.Task, Unit] = {}
        while True:
            if not self.stopping:
                for unit in list(waiting):
                    blockers = [d for d in unit.after
                                if states[d].status in (model.UNIT_FAILED, model.UNIT_SKIPPED)]
                    if blockers:
                        waiting.remove(unit)
                        states[unit.unit_id].status = model.UNIT_SKIPPED
                        self.state.save_units(self.job)
                        self._record("unit/skip", unit.unit_id, waits_for=blockers)
                for unit in list(waiting):
                    if len(running) >= self.parallelism:
                        break
                    if all(states[d].status == model.UNIT_PASSED for d in unit.after):
                        waiting.remove(unit)
                        task = asyncio.get_running_loop().create_task(
                            self._run_unit(unit, states[unit.unit_id]))
                        running[task] = unit
            if not running and waiting and self.parallelism == 0 and not self.stopping:
                # --bug no-unit-starts: zero workers wait for work they never
                # take, until the job is stopped.
                await self._stop_asked.wait()
                continue
            if not running:
                break
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                del running[task]
                task.result()  # a fault in a unit's run ends the job failed
        for unit in waiting:  # never started: the job was stopped
            states[unit.unit_id].status = model.UNIT_STOPPED
        self.state.save_units(self.job)

        if self.stopping:
            return "cancelled", ""
        if self._failures:
            more = len(self._failures) - 1
            return "failed", self._failures[0] + (f" (and {more} more)" if more else "")
        return "completed", ""

    # -- a unit ----------------------------------------------------------------

    async def _run_unit(self, unit: Unit, state: UnitState) -> None:
        state.status = model.UNIT_RUNNING
        self.state.save_units(self.job)
        self._record("unit/begin", unit.unit_id, steps=len(unit.steps))
        result = model.UNIT_PASSED
        for step in unit.steps:
            if self.stopping:
                result = model.UNIT_STOPPED
                break
            # --like-choo: the coding agent before the command, a commit after it.
            outcome = (await environment.before_step(self, unit, step)
                       or await self._run_step(unit, step))
            if outcome == "ok":
                outcome = await environment.after_step(self, unit, step) or "ok"
            if outcome == "ok":
                state.tasks_done += 1
                self.state.save_units(self.job)
                continue
            if outcome == "killed":
                result = model.UNIT_STOPPED
            else:
                result = model.UNIT_FAILED
                self._failures.append(f"unit {unit.unit_id} failed at step {step.number} "
                                      f"({step.file}): {outcome}")
            break
        state.status = result
        self.state.save_units(self.job)
        self._record("unit/end", unit.unit_id, result=result)

    async def _run_step(self, unit: Unit, step) -> str:
        """'ok', 'killed', or why the step failed."""
        self._record("step/run", unit.unit_id, step=step.number, title=step.title, cmd=step.command)
        started = time.monotonic()
        with tempfile.TemporaryFile(prefix="foreign-step-") as output:
            try:
                proc = await asyncio.create_subprocess_exec(
                    "/bin/sh", "-c", step.command, cwd=self.job.repo_path,
                    stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                    process_group=0)
            except OSError as exc:
                why = f"cannot start /bin/sh: {exc.strerror or exc}"
                self._record("step/fail", unit.unit_id, step=step.number, exit=-1,
                             ms=_ms_since(started), tail=why)
                return why
            self._groups.add(proc.pid)
            if self.forced:  # stopped while the command was starting
                os.killpg(proc.pid, signal.SIGKILL)
            try:
                code = await proc.wait()
            finally:
                self._groups.discard(proc.pid)
            output.seek(max(0, output.seek(0, os.SEEK_END) - OUTPUT_TAIL_BYTES))
            tail = output.read().decode("utf-8", "replace")
        if self.forced and code < 0:
            self._record("step/killed", unit.unit_id, step=step.number, ms=_ms_since(started))
            return "killed"
        if code == 0:
            self._record("step/ok", unit.unit_id, step=step.number, ms=_ms_since(started))
            return "ok"
        self._record("step/fail", unit.unit_id, step=step.number, exit=code,
                     ms=_ms_since(started), tail=tail)
        return f"exit status {code}" if code > 0 else f"killed by signal {-code}"
