"""The processes of the commands a daemon's jobs run, wherever they go.

Each command runs in a process group of its own (job_runner), which a forced
stop kills. A command can leave its group (`setsid`, a double fork), so the
daemon also:

- is a child subreaper (Linux, prctl PR_SET_CHILD_SUBREAPER): what a command
  orphans becomes the daemon's child instead of init's, and is reaped here;
- tags every command with CHOO_REF_PROCESS_TAG=<run token>:<job id> in its
  environment, which whatever it starts inherits: a job's strays are the
  processes with its tag, killed when the job ends or is force-stopped, and
  the daemon kills every process tagged with its run, and every descendant,
  when it exits;
- records its run's token and each command's process (pid, which is also the
  group id, its start time and the boot) in the database, so that the next
  start after a crash kills what the crashed daemon left: a recorded group
  whose leader still has the recorded start time in this boot, and every
  process tagged with a crashed run's token. Nothing else is provably the
  crashed daemon's, so nothing else is touched.

All of it reads /proc; where there is none, only the process groups remain.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable

from .jobs import StorageError

log = logging.getLogger("choo-ref")

TAG_VARIABLE = "CHOO_REF_PROCESS_TAG"
_TAG_PREFIX = TAG_VARIABLE.encode() + b"="
_PR_SET_CHILD_SUBREAPER = 36
# A stray can fork while it is being killed; look again this many times.
_KILL_PASSES = 3


def become_subreaper() -> bool:
    """Make orphaned descendants this process's children; False where the
    system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name: [0] state,
    [1] ppid, [2] pgrp, ... [19] starttime."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data.rsplit(b")", 1)[1].decode("ascii", "replace").split()


def start_ticks(pid: int) -> int | None:
    """When the process started, in clock ticks since boot; None if it is gone."""
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def _pids() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []


def _tag(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
    except OSError:  # gone, or not ours to read
        return None
    for entry in environ.split(b"\0"):
        if entry.startswith(_TAG_PREFIX):
            return entry[len(_TAG_PREFIX):].decode("ascii", "replace")
    return None


def _kill(pid: int) -> None:
    """SIGKILL the process, and its group when it leads one."""
    fields = _stat(pid)
    try:
        if fields is not None and int(fields[2]) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class ProcessTracker:
    """The commands of one daemon run. Thread-safe."""

    def __init__(self, store, token: str | None = None) -> None:
        self.store = store  # a JobStore
        self.token = token or uuid.uuid4().hex
        self._boot = boot_id()
        # Held while a command is being started and while zombies are
        # reaped: a child not yet in _children could otherwise be reaped
        # before its Popen waits for it, which would then see exit code 0.
        self._lock = threading.Lock()
        self._children: set[int] = set()  # our Popen children not yet waited for

    # -- the daemon's run ----------------------------------------------------------

    def begin(self) -> None:
        """Record this run, so a crash of it can be cleaned up after."""
        self.store.begin_run(self.token)

    def end(self) -> None:
        """At the daemon's exit: nothing it started outlives it."""
        self.kill_all()
        try:
            self.store.forget_runs([self.token])
        except StorageError as error:
            log.warning("could not forget this run's process records: %s", error)

    # -- commands --------------------------------------------------------------------

    def for_job(self, job_id: str) -> JobProcesses:
        return JobProcesses(self, job_id)

    def spawn(self, job_id: str, start: Callable[[dict], subprocess.Popen]) -> subprocess.Popen:
        """start(env) a job's command, tagged, and record it. Raises
        StorageError (the command killed again) when it cannot be recorded."""
        env = dict(os.environ)
        env[TAG_VARIABLE] = f"{self.token}:{job_id}"
        with self._lock:
            proc = start(env)
            self._children.add(proc.pid)
        try:
            self.store.record_process(self.token, job_id, proc.pid,
                                      start_ticks(proc.pid) or 0, self._boot)
        except BaseException:
            _kill(proc.pid)
            proc.wait()
            self.ended(proc)
            raise
        return proc

    def ended(self, proc: subprocess.Popen) -> None:
        """The command has been waited for (and its group killed)."""
        with self._lock:
            self._children.discard(proc.pid)
        try:
            self.store.forget_process(self.token, proc.pid)
        except StorageError:
            pass  # its pid no longer matches its start time: harmless at restart

    def kill_job(self, job_id: str) -> int:
        """Kill what the job's commands left outside their groups."""
        tag = f"{self.token}:{job_id}"
        return self._kill_matching(lambda pid, parents: _tag(pid) == tag)

    def kill_all(self) -> int:
        """Kill every process tagged with this run, and every descendant."""
        prefix = f"{self.token}:"
        own = os.getpid()

        def ours(pid: int, parents: dict[int, int]) -> bool:
            if (_tag(pid) or "").startswith(prefix):
                return True
            seen = set()
            while pid in parents and pid not in seen:
                seen.add(pid)
                pid = parents[pid]
                if pid == own:
                    return True
            return False

        return self._kill_matching(ours)

    def _kill_matching(self, match: Callable[[int, dict[int, int]], bool]) -> int:
        """Kill every live process `match(pid, parents)` picks, in passes
        until none is left (a dying parent may leave children to find)."""
        own = os.getpid()
        killed = 0
        for _ in range(_KILL_PASSES):
            states, parents = {}, {}
            for pid in _pids():
                fields = _stat(pid)
                if fields is not None:
                    states[pid], parents[pid] = fields[0], int(fields[1])
            doomed = [pid for pid, state in states.items()
                      if pid != own and state not in ("Z", "X") and match(pid, parents)]
            if not doomed:
                break
            for pid in doomed:
                _kill(pid)
            killed += len(doomed)
        self.reap()
        return killed

    def reap(self) -> int:
        """Wait for the zombies among this process's children that no Popen
        waits for (what commands orphaned, handed to us as subreaper)."""
        own = os.getpid()
        reaped = 0
        with self._lock:
            for pid in _pids():
                fields = _stat(pid)
                if (fields is None or fields[0] != "Z" or int(fields[1]) != own
                        or pid in self._children):
                    continue
                try:
                    os.waitpid(pid, os.WNOHANG)
                    reaped += 1
                except ChildProcessError:
                    pass
        return reaped

    # -- after a crash -------------------------------------------------------------

    def kill_leftovers(self) -> int:
        """Kill what crashed daemon runs on this database left, where it is
        provably theirs; forget their records. Returns how many were killed."""
        tokens, records = self.store.recorded_runs()
        tokens = [token for token in tokens if token != self.token]
        if not tokens:
            return 0
        killed = 0
        for token, job_id, pid, ticks, boot in records:
            if token == self.token:
                continue
            if boot and boot == self._boot and ticks and start_ticks(pid) == ticks:
                _kill(pid)
                killed += 1
                log.info("killed the command (pid %d) of job %s that a crashed daemon left",
                         pid, job_id)
        crashed = set(tokens)
        strays = self._kill_matching(
            lambda pid, parents: (_tag(pid) or ":").split(":")[0] in crashed)
        if strays:
            log.info("killed %d process%s that a crashed daemon's commands left", strays,
                     "" if strays == 1 else "es")
        self.store.forget_runs(tokens)
        return killed + strays


class JobProcesses:
    """One job's view of the tracker (job_runner.CommandProcesses)."""

    def __init__(self, tracker: ProcessTracker, job_id: str) -> None:
        self._tracker = tracker
        self._job_id = job_id

    def spawn(self, start: Callable[[dict], subprocess.Popen]) -> subprocess.Popen:
        return self._tracker.spawn(self._job_id, start)

    def ended(self, proc: subprocess.Popen) -> None:
        self._tracker.ended(proc)

    def kill_strays(self) -> int:
        return self._tracker.kill_job(self._job_id)

