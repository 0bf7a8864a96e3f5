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

ROOT = Path(__file__).resolve().parents[1]
GRACE_S = 5.0


class Processes:
    def __init__(self) -> None:
        self._started: list[subprocess.Popen] = []

    def spawn(self, args: list[str], log: Path | None = None) -> subprocess.Popen:
        out = open(log, "ab") if log is not None else subprocess.DEVNULL
        try:
            # Own session: a Ctrl-C in the terminal reaches the benchmark only,
            # which then stops its children in order.
            proc = subprocess.Popen(args, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            if log is not None:
                out.close()
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
