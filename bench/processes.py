"""Every process the benchmark starts goes through Processes, so all of them
are stopped at the end, on failure and on Ctrl-C too: by their own pid, with
SIGTERM first and SIGKILL for whatever is still there after a grace period."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .placement import Placement

ROOT = Path(__file__).resolve().parents[1]
GRACE_S = 5.0


class Processes:
    """Every process of a run; `placement` says which cores the server and
    the clients get (bench.placement)."""

    def __init__(self, placement: Placement | None = None) -> None:
        self.placement = placement or Placement()
        self._started: list[subprocess.Popen] = []

    def spawn(self, args: list[str], log: Path | None = None) -> subprocess.Popen:
        """A client-side process (a watcher, a profiler, the suite)."""
        out = open(log, "ab") if log is not None else subprocess.DEVNULL
        try:
            # Own session: a Ctrl-C in the terminal reaches the benchmark only,
            # which then stops its children in order.
            with self.placement.clients():
                proc = subprocess.Popen(args, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            if log is not None:
                out.close()
        return self.adopt(proc)

    def adopt(self, proc: subprocess.Popen) -> subprocess.Popen:
        """Stop this one at the end too (a process started elsewhere)."""
        self._started.append(proc)
        return proc

    def python(self, module: str, *args: str, log: Path | None = None) -> subprocess.Popen:
        return self.spawn([sys.executable, "-m", module, *args], log=log)

    def stop(self, proc: subprocess.Popen, grace_s: float = GRACE_S) -> int | None:
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def stop_all(self) -> None:
        for proc in reversed(self._started):
            self.stop(proc)
        self._started.clear()


def wait_all(procs: list[subprocess.Popen], timeout_s: float) -> bool:
    """Whether every process exited within timeout_s (all share the deadline)."""
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        try:
            proc.wait(max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            return False
    return True


# -- what /proc says about a process ---------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU time the process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / _TICK, int(fields[12]) / _TICK


def cpu_s(pid: int) -> float:
    return sum(cpu_times(pid))


def main_thread_cpu_s(pid: int) -> float:
    """CPU time of the process's main thread alone: a grpc.aio server's event
    loop, the thread whose speed bounds it once it has cores enough."""
    with open(f"/proc/{pid}/task/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK
