"""Run a Plan: every task's backpressure command, in repo_path.

Units run in dependency order, at most `parallelism` at once; a unit's tasks
run one at a time in dependency order. A failing task fails its unit, and
units that depend on it (directly or not) are blocked rather than run. Each
command runs under /bin/sh in its own process group, so a timeout or a forced
stop can kill everything it started, and whatever it leaves behind in that
group is killed when it exits.

Threads: one coordinator thread per run (it dispatches units, emits the orch.*
events and calls on_done), one thread per running unit, and one output reader
per running command. All of them have ended when wait() returns True.

Events go to the RunRecorder in choo's vocabulary; recorder calls are
serialised, so a recorder sees one call at a time. Neither the recorder nor
on_done is ever called while the run holds its state lock, so they may call
stop(). Do not call wait() while holding a lock the recorder or on_done needs.
A recorder that cannot record (the disk is full) raises RecordingFailed: the
run kills its commands and ends failed with that message, recording nothing
more.

With a CommandProcesses (processes.py), commands are started through it and
whatever they leave outside their groups is killed on a forced stop and when
the run ends.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import logging
import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .jobs import CANCELLED, COMPLETED, FAILED, PENDING, RUNNING, UnitState
from .limits import MAX_PARALLELISM
from .task_plan import Plan, Task, Unit

BLOCKED = "blocked"  # unit status: a unit it depends on failed

OUTPUT_TAIL_BYTES = 4096
# After a command exits and its process group is killed, the output pipe
# normally reaches EOF at once; a process that escaped the group could hold
# it open forever, so stop reading after this long.
_OUTPUT_DRAIN_S = 1.0

KILLED_BY_STOP = "killed: the job was force-stopped"

# A command that cannot start because the daemon is short of something of its
# own (open files, its own or the system's; processes; memory) is not the
# command's fault: it is tried again, backing off, for up to
# RESOURCE_WAIT_S before its task fails.
RESOURCE_SHORTAGES = frozenset({errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM})
RESOURCE_WAIT_S = 60.0
_FIRST_RETRY_S = 0.05
_LAST_RETRY_S = 1.0

log = logging.getLogger(__name__)


class RecordingFailed(Exception):
    """Raised by a RunRecorder that cannot record; str() says why."""


class RunRecorder(Protocol):
    def record(self, event_type: str, unit_id: str, payload: dict) -> None: ...

    def update_unit(self, unit: UnitState) -> None: ...


class CommandProcesses(Protocol):
    """Where a run's commands are started and tracked (processes.JobProcesses)."""

    def spawn(self, start: Callable[[dict], subprocess.Popen]) -> subprocess.Popen:
        """start(env) the command; may raise when it cannot be tracked."""

    def ended(self, proc: subprocess.Popen) -> None: ...

    def kill_strays(self) -> int:
        """Kill what the run's commands left running outside their groups."""


@dataclass(frozen=True, slots=True)
class _CommandResult:
    kind: str  # "ok", "failed", "timeout", "killed" (forced stop), "not_started"
    exit_code: int | None
    duration_ms: int
    output_tail: str
    error: str


class JobRun:
    """One run of a Plan. start() it, optionally stop() it, wait() for it."""

    def __init__(
        self,
        plan: Plan,
        *,
        repo_path: str,
        parallelism: int,
        recorder: RunRecorder,
        on_done: Callable[[str, str], None],
        command_timeout_s: float | None = 600.0,
        processes: CommandProcesses | None = None,
        resource_wait_s: float = RESOURCE_WAIT_S,
    ) -> None:
        if parallelism < 0:
            raise ValueError(f"parallelism must be >= 0, got {parallelism}")
        if command_timeout_s is not None and command_timeout_s <= 0:
            raise ValueError(f"command_timeout_s must be > 0, got {command_timeout_s}")
        self.plan = plan
        self.repo_path = os.fspath(repo_path)
        # At most MAX_PARALLELISM units at once: a thread and a process each.
        self.parallelism = min(parallelism or os.cpu_count() or 1, MAX_PARALLELISM)
        self.command_timeout_s = command_timeout_s
        self._processes = processes
        self.resource_wait_s = resource_wait_s
        self.status = PENDING  # RUNNING once started, then the final status
        self.error = ""

        self._recorder = recorder
        self._on_done = on_done
        self._units: dict[str, UnitState] = {
            u.unit_id: UnitState(u.unit_id, PENDING, 0, len(u.tasks)) for u in plan.units
        }
        # Serialises recorder calls and unit state changes.
        self._emit_lock = threading.Lock()
        # Guards everything below; workers and stop() notify it.
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stop_requested = False
        self._force = False
        self._settled = False  # the outcome is decided; stop() no longer matters
        self._finished_units: list[tuple[str, str, str]] = []  # (unit, status, error)
        self._workers: dict[str, threading.Thread] = {}
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._recording_failed: RecordingFailed | None = None
        self._done = threading.Event()
        self._started_at = 0.0

    # -- public API ---------------------------------------------------------

    @property
    def units(self) -> tuple[UnitState, ...]:
        """Each unit's current state, in plan order."""
        return tuple(self._units[u.unit_id] for u in self.plan.units)

    def start(self) -> None:
        """Begin the run on its own thread and return at once."""
        with self._cond:
            if self._thread is not None:
                raise RuntimeError("job run already started")
            self.status = RUNNING
            self._thread = threading.Thread(
                target=self._main, name="choo-job-run", daemon=True
            )
        self._thread.start()

    def stop(self, force: bool) -> bool:
        """Stop the run; it ends "cancelled".

        Graceful: running commands may finish, nothing new starts. Forced:
        running commands' whole process groups are killed now (a graceful
        stop can be escalated by a later forced one). Returns False when the
        run had already decided its outcome, so the stop changed nothing.
        """
        with self._cond:
            if self._settled:
                return False
            self._stop_requested = True
            if force and not self._force:
                self._force = True
                for proc in self._procs:
                    _kill_group(proc)
            self._cond.notify_all()
        if force:
            self._kill_strays()
        return True

    def _kill_strays(self) -> None:
        if self._processes is not None:
            try:
                self._processes.kill_strays()
            except Exception:
                log.exception("could not kill what the job's commands left running")

    def wait(self, timeout: float | None = None) -> bool:
        """True once the run has finished: on_done has returned and no thread
        or process of the run is alive."""
        if self._thread is threading.current_thread():
            return self._done.is_set()  # called from on_done: it cannot wait for itself
        if not self._done.wait(timeout):
            return False
        thread = self._thread
        if thread is not None:
            thread.join()  # it is past its last statement
        return True

    # -- coordinator ----------------------------------------------------------

    def _main(self) -> None:
        self._started_at = time.monotonic()
        try:
            status, error = self._orchestrate()
        except RecordingFailed as failure:
            self._fail_recording(failure)
            self._abort()
            status, error = FAILED, str(self._recording_failed)
            log.warning("job run stopped: %s", error)
        except BaseException as exc:  # a bug or a failing recorder: still finish
            log.exception("job run failed unexpectedly")
            status, error = FAILED, f"internal error: {exc!r}"
            try:
                self._abort()
                self._emit("orch.failed", "", {"error": error})
            except RecordingFailed:
                pass
            except Exception:
                log.exception("could not end the failed run cleanly")
        self.status, self.error = status, error
        self._kill_strays()  # nothing a job started outlives it
        try:
            self._on_done(status, error)
        except Exception:
            log.exception("on_done callback raised")
        finally:
            self._done.set()

    def _orchestrate(self) -> tuple[str, str]:
        plan = self.plan
        for unit in plan.units:
            self._publish(unit.unit_id)
        self._emit(
            "orch.started",
            "",
            {
                "units": len(plan.units),
                "tasks_total": plan.task_count,
                "parallelism": self.parallelism,
            },
        )

        pending = [u.unit_id for u in plan.units]  # not yet started, in plan order
        outcome: dict[str, str] = {}
        errors: dict[str, str] = {}
        by_id = {u.unit_id: u for u in plan.units}

        while True:
            with self._cond:
                finished, self._finished_units = self._finished_units, []
                stopping = self._stop_requested
            for unit_id, status, error in finished:
                self._workers.pop(unit_id).join()
                outcome[unit_id] = status
                if status == FAILED:
                    errors[unit_id] = error
                    self._block_dependents(unit_id, pending, outcome)

            if not stopping:
                for unit_id in list(pending):
                    if len(self._workers) >= self.parallelism:
                        break
                    unit = by_id[unit_id]
                    if all(outcome.get(d) == COMPLETED for d in unit.depends_on):
                        if not self._launch(unit):
                            break  # a stop came in
                        pending.remove(unit_id)

            if not self._workers:
                with self._cond:
                    # From here on the outcome no longer depends on stop().
                    self._settled = True
                    cancelled = self._stop_requested
                    forced = self._force
                    failure = self._recording_failed
                if failure is not None:
                    raise failure
                break

            with self._cond:
                while not self._finished_units and self._stop_requested == stopping:
                    self._cond.wait()

        duration_ms = _ms_since(self._started_at)
        if cancelled:
            for unit_id in pending:
                self._publish(unit_id, status=CANCELLED)
            self._emit("orch.cancelled", "", {"forced": forced, "duration_ms": duration_ms})
            return CANCELLED, ""

        # Only a plan whose units name dependencies outside it leaves units
        # here; they can never run.
        for unit_id in pending:
            missing = next(d for d in by_id[unit_id].depends_on if d not in outcome)
            outcome[unit_id] = BLOCKED
            self._publish(unit_id, status=BLOCKED)
            self._emit(
                "unit.blocked",
                unit_id,
                {"blocked_by": missing, "error": f"dependency {missing!r} never ran"},
            )

        failed = [u.unit_id for u in plan.units if outcome.get(u.unit_id) == FAILED]
        blocked = [u.unit_id for u in plan.units if outcome.get(u.unit_id) == BLOCKED]
        if not failed and not blocked:
            self._emit(
                "orch.completed", "", {"units": len(plan.units), "duration_ms": duration_ms}
            )
            return COMPLETED, ""
        parts = [f"unit {u!r} failed: {errors[u]}" for u in failed]
        if blocked:
            parts.append(
                f"{len(blocked)} unit{'s' if len(blocked) != 1 else ''} blocked: "
                + ", ".join(blocked)
            )
        error = "; ".join(parts)
        self._emit(
            "orch.failed",
            "",
            {
                "error": error,
                "failed_units": failed,
                "blocked_units": blocked,
                "duration_ms": duration_ms,
            },
        )
        return FAILED, error

    def _launch(self, unit: Unit) -> bool:
        """Start a worker thread for the unit, unless a stop came in."""
        with self._cond:
            if self._stop_requested:
                return False
        self._publish(unit.unit_id, status=RUNNING)
        self._emit(
            "unit.started",
            unit.unit_id,
            {"tasks_total": len(unit.tasks), "depends_on": list(unit.depends_on)},
        )
        worker = threading.Thread(
            target=self._unit_worker,
            args=(unit,),
            name=f"choo-unit-{unit.unit_id}",
            daemon=True,
        )
        worker.start()
        self._workers[unit.unit_id] = worker
        return True

    def _block_dependents(
        self, failed_id: str, pending: list[str], outcome: dict[str, str]
    ) -> None:
        """Every pending unit that depends, directly or not, on failed_id
        will never run: mark it blocked."""
        doomed = {failed_id}
        changed = True
        while changed:
            changed = False
            for unit in self.plan.units:
                if (
                    unit.unit_id in pending
                    and unit.unit_id not in doomed
                    and doomed.intersection(unit.depends_on)
                ):
                    doomed.add(unit.unit_id)
                    changed = True
        for unit in self.plan.units:
            if unit.unit_id in doomed and unit.unit_id != failed_id:
                pending.remove(unit.unit_id)
                outcome[unit.unit_id] = BLOCKED
                self._publish(unit.unit_id, status=BLOCKED)
                self._emit(
                    "unit.blocked",
                    unit.unit_id,
                    {"blocked_by": failed_id, "error": f"dependency {failed_id!r} failed"},
                )

    def _fail_recording(self, failure: RecordingFailed) -> None:
        """Recording failed: keep the first reason, stop everything now."""
        with self._cond:
            if self._recording_failed is None:
                self._recording_failed = failure
            self._stop_requested = True
            self._force = True
            for proc in self._procs:
                _kill_group(proc)
            self._cond.notify_all()

    def _abort(self) -> None:
        """Kill everything still running and wait for the workers."""
        with self._cond:
            self._settled = True
            self._stop_requested = True
            self._force = True
            for proc in self._procs:
                _kill_group(proc)
            self._cond.notify_all()
        for worker in list(self._workers.values()):
            worker.join()

    # -- unit workers -----------------------------------------------------------

    def _unit_worker(self, unit: Unit) -> None:
        status, error = FAILED, "internal error"
        try:
            status, error = self._run_unit(unit)
        except RecordingFailed as failure:
            self._fail_recording(failure)
            status, error = FAILED, str(failure)
        except BaseException as exc:
            log.exception("unit %s failed unexpectedly", unit.unit_id)
            status, error = FAILED, f"internal error: {exc!r}"
            try:
                self._publish(unit.unit_id, status=FAILED)
                self._emit("unit.failed", unit.unit_id, {"error": error})
            except RecordingFailed:
                pass
            except Exception:
                log.exception("could not record unit.failed")
        finally:
            with self._cond:
                self._finished_units.append((unit.unit_id, status, error))
                self._cond.notify_all()

    def _run_unit(self, unit: Unit) -> tuple[str, str]:
        uid = unit.unit_id
        started = time.monotonic()
        for task in unit.tasks:
            with self._cond:
                stopping = self._stop_requested
            if stopping:
                self._publish(uid, status=CANCELLED)
                return CANCELLED, ""
            self._emit(
                "task.started",
                uid,
                {"task": task.number, "title": task.title, "command": task.backpressure},
            )
            self._emit(
                "task.backpressure", uid, {"task": task.number, "command": task.backpressure}
            )
            result = self._run_command(uid, task)

            if result.kind == "ok":
                self._emit(
                    "task.validation.ok",
                    uid,
                    {
                        "task": task.number,
                        "exit_code": 0,
                        "duration_ms": result.duration_ms,
                        "output_tail": result.output_tail,
                    },
                )
                self._publish(uid, tasks_complete=self._units[uid].tasks_complete + 1)
                self._emit(
                    "task.completed",
                    uid,
                    {"task": task.number, "title": task.title, "duration_ms": result.duration_ms},
                )
                continue

            if result.kind in ("failed", "timeout"):
                self._emit(
                    "task.validation.fail",
                    uid,
                    {
                        "task": task.number,
                        "exit_code": result.exit_code,
                        "duration_ms": result.duration_ms,
                        "output_tail": result.output_tail,
                        "error": result.error,
                    },
                )
            payload: dict[str, object] = {
                "task": task.number,
                "title": task.title,
                "error": result.error,
                "duration_ms": result.duration_ms,
            }
            if result.exit_code is not None:
                payload["exit_code"] = result.exit_code
            self._emit("task.failed", uid, payload)

            if result.kind == "killed":
                self._publish(uid, status=CANCELLED)
                return CANCELLED, ""
            error = f"task {task.number} ({task.title}) failed: {result.error}"
            self._publish(uid, status=FAILED)
            self._emit("unit.failed", uid, {"error": error, "task": task.number})
            return FAILED, error

        self._publish(uid, status=COMPLETED)
        self._emit(
            "unit.completed",
            uid,
            {"tasks_complete": len(unit.tasks), "duration_ms": _ms_since(started)},
        )
        return COMPLETED, ""

    def _run_command(self, unit_id: str, task: Task) -> _CommandResult:
        started = time.monotonic()
        with self._cond:
            if self._force:
                return _CommandResult("killed", None, 0, "", KILLED_BY_STOP)
        problem = _repo_problem(self.repo_path)
        if problem:
            return _CommandResult(
                "not_started", None, _ms_since(started), "",
                f"cannot run backpressure command: {problem}",
            )

        def start(env: dict | None = None) -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                ["/bin/sh", "-c", task.backpressure],
                cwd=self.repo_path,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: killable as a whole
            )

        started_command = self._start_command(unit_id, task, start)
        if isinstance(started_command, _CommandResult):
            return started_command
        proc, selector, wake_r, wake_w = started_command

        assert proc.stdout is not None
        tail = bytearray()
        reader = threading.Thread(
            target=_read_tail,
            args=(selector, proc.stdout.fileno(), wake_r, tail),
            name=f"choo-output-{unit_id}-{task.number}",
            daemon=True,
        )
        timed_out = False
        try:
            reader.start()
            with self._cond:
                self._procs.add(proc)
                if self._force:
                    _kill_group(proc)
            try:
                returncode = proc.wait(timeout=self.command_timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc)
                returncode = proc.wait()
        finally:
            with self._cond:
                self._procs.discard(proc)
                forced = self._force
            if proc.returncode is None:  # only on an unexpected error above
                _kill_group(proc)
                proc.wait()
            # Whatever the command left running in its group goes with it.
            _kill_group(proc)
            if self._processes is not None:
                self._processes.ended(proc)
            if reader.ident is not None:
                reader.join(_OUTPUT_DRAIN_S)
                if reader.is_alive():
                    os.write(wake_w, b"\0")
                    reader.join()
            proc.stdout.close()
            selector.close()
            os.close(wake_r)
            os.close(wake_w)

        duration_ms = _ms_since(started)
        output = _decode_tail(tail)
        if forced and returncode != 0:
            return _CommandResult("killed", None, duration_ms, output, KILLED_BY_STOP)
        if timed_out:
            return _CommandResult(
                "timeout", None, duration_ms, output,
                f"timed out after {self.command_timeout_s:g} s",
            )
        if returncode == 0:
            return _CommandResult("ok", 0, duration_ms, output, "")
        if returncode < 0:
            error = f"backpressure command killed by {_signal_name(-returncode)}"
        else:
            error = f"backpressure command exited with code {returncode}"
        return _CommandResult("failed", returncode, duration_ms, output, error)

    def _start_command(self, unit_id: str, task: Task,
                       start: Callable[..., subprocess.Popen[bytes]]):
        """(proc, selector, wake_r, wake_w): the command started, with what
        reading its output needs, all opened before it starts so that no
        shortage of open files can strike once it runs. Or the result of a
        command that was not started."""
        began = time.monotonic()
        delay = _FIRST_RETRY_S
        while True:
            opened: list[Callable[[], None]] = []
            try:
                selector = selectors.DefaultSelector()
                opened.append(selector.close)
                wake_r, wake_w = os.pipe()
                opened += [functools.partial(os.close, wake_r), functools.partial(os.close, wake_w)]
                proc = start() if self._processes is None else self._processes.spawn(start)
                return proc, selector, wake_r, wake_w
            except OSError as exc:
                for close in reversed(opened):
                    close()
                reason = exc.strerror or str(exc)
                if exc.errno not in RESOURCE_SHORTAGES:
                    return _CommandResult(
                        "not_started", None, _ms_since(began), "",
                        f"cannot run backpressure command in {self.repo_path!r}: {reason}")
                waited = time.monotonic() - began
                if waited >= self.resource_wait_s:
                    return _CommandResult(
                        "not_started", None, _ms_since(began), "",
                        f"cannot run backpressure command: the daemon is short of resources "
                        f"({reason}) and waited {waited:.0f} s for them")
                if delay == _FIRST_RETRY_S:
                    log.warning("unit %s, task %d: cannot start its command yet (%s); trying "
                                "again for up to %g s", unit_id, task.number, reason,
                                self.resource_wait_s)
            except Exception as exc:  # it could not be tracked, so it was not run
                for close in reversed(opened):
                    close()
                return _CommandResult("not_started", None, _ms_since(began), "",
                                      f"cannot run backpressure command: {exc}")
            with self._cond:
                # A forced stop ends the wait at once; it notifies the condition.
                if not self._force:
                    self._cond.wait(delay)
                if self._force:
                    return _CommandResult("killed", None, _ms_since(began), "", KILLED_BY_STOP)
            delay = min(delay * 2, _LAST_RETRY_S)

    # -- recording ------------------------------------------------------------

    def _emit(self, event_type: str, unit_id: str, payload: dict) -> None:
        with self._emit_lock:
            self._check_recording()
            self._recorder.record(event_type, unit_id, payload)

    def _publish(self, unit_id: str, **changes: Any) -> None:
        """Apply changes to a unit's state and hand the new state to the recorder."""
        with self._emit_lock:
            self._check_recording()
            state = dataclasses.replace(self._units[unit_id], **changes)
            self._units[unit_id] = state
            self._recorder.update_unit(state)

    def _check_recording(self) -> None:
        # Once recording has failed nothing more is recorded: the run ends.
        failure = self._recording_failed
        if failure is not None:
            raise failure


def _read_tail(selector: selectors.BaseSelector, fd: int, wake_fd: int,
               tail: bytearray) -> None:
    """Read fd to EOF (or until wake_fd is written), keeping only the last
    OUTPUT_TAIL_BYTES in tail. The caller closes the selector."""
    selector.register(fd, selectors.EVENT_READ)
    selector.register(wake_fd, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            if key.fd == wake_fd:
                return
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            tail += chunk
            if len(tail) > OUTPUT_TAIL_BYTES:
                del tail[: len(tail) - OUTPUT_TAIL_BYTES]


def _decode_tail(tail: bytearray) -> str:
    start = 0
    if len(tail) == OUTPUT_TAIL_BYTES:
        # The cut may have split a UTF-8 sequence; drop its continuation bytes.
        while start < min(3, len(tail)) and tail[start] & 0xC0 == 0x80:
            start += 1
    return bytes(tail[start:]).decode("utf-8", "replace")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone


def _repo_problem(repo_path: str) -> str:
    if not os.path.exists(repo_path):
        return f"repo_path {repo_path!r} does not exist"
    if not os.path.isdir(repo_path):
        return f"repo_path {repo_path!r} is not a directory"
    return ""


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _ms_since(start: float) -> int:
    return int((time.monotonic() - start) * 1000)
