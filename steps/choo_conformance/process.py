"""A daemon under test as a process: started from a command line, waited on
until it answers Health, and stopped with its whole process group however a
run ends. The one class that starts and stops daemons, for the suite, the
repository's tests and the benchmarks."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator

import grpc

from choo.v1 import daemon_pb2, daemon_pb2_grpc

from .wait import wait_until

STARTUP_TIMEOUT_S = 20.0
# Retry a refused connection within a quarter second, not gRPC's backoff of
# up to 2 minutes. grpc.min_reconnect_backoff_ms is left alone: gRPC core
# also takes it as the time a connection attempt gets to receive the
# server's SETTINGS (20 s by default), and a busy daemon can take longer than
# a few hundred milliseconds to send them.
RECONNECT_PROMPTLY = [("grpc.initial_reconnect_backoff_ms", 50),
                      ("grpc.max_reconnect_backoff_ms", 250)]
STOP_TIMEOUT_S = 15.0

# Called with every daemon started, so that whoever runs the suite can stop
# its process group and remove its folder when a killed run leaves them.
on_start: list[Callable[[DaemonProcess], None]] = []


class DaemonNeverHealthy(RuntimeError):
    """The daemon did not answer Health in time, or exited first."""


class DaemonProcess:
    """`command` with `{socket}` and `{db}` replaced by paths in a private
    folder (or the ones given). Each start is a new process on the same
    socket and database, so a restart keeps the daemon's data; close() ends
    it for good and removes the private folder, database and log with it."""

    def __init__(self, command: str | list[str], *, socket: str | None = None,
                 db: str | None = None, folder: str | None = None, cwd: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.argv_template = shlex.split(command) if isinstance(command, str) else list(command)
        # Unix socket paths hold ~107 bytes: keep the folder short.
        self.owns_folder = folder is None
        self.folder = folder or tempfile.mkdtemp(prefix="choo-", dir="/tmp")
        self.socket = socket or os.path.join(self.folder, "d.sock")
        self.db = db or os.path.join(self.folder, "d.db")
        self.address = f"unix://{self.socket}"
        self.log_path = os.path.join(self.folder, "daemon.log")
        self.cwd = cwd
        self.env = env
        self.proc: subprocess.Popen | None = None

    @property
    def argv(self) -> list[str]:
        return [part.format(socket=self.socket, db=self.db) for part in self.argv_template]

    @property
    def pid(self) -> int:
        assert self.proc is not None, "the daemon was never started"
        return self.proc.pid

    def launch(self) -> subprocess.Popen:
        """Start the process without waiting for it to serve."""
        with open(self.log_path, "ab") as log:
            # A session of its own: the daemon and whatever it starts are one
            # process group that stop() can end.
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         cwd=self.cwd, env=self.env)
        for callback in on_start:
            callback(self)
        return self.proc

    def start(self, timeout: float = STARTUP_TIMEOUT_S) -> DaemonProcess:
        first = self.proc is None
        self.launch()
        if not self.wait_healthy(timeout):
            self.kill()
            failure = DaemonNeverHealthy(
                f"the daemon did not answer Health on {self.address} within {timeout:.0f} s "
                f"(command: {shlex.join(self.argv)}); its output:\n{self.log_tail()}")
            if first and self.owns_folder:
                # Nobody holds a daemon that never served: its folder would
                # be left in /tmp. A restart keeps its data, for the caller.
                remove_folder(self.folder)
            raise failure
        return self

    def wait_healthy(self, timeout: float) -> bool:
        """Whether Health answers (any answer) before the deadline or the exit."""
        deadline = time.monotonic() + timeout
        # gRPC backs off up to 2 minutes between connection attempts; a daemon
        # that comes up late must be found at once.
        with grpc.insecure_channel(self.address, options=RECONNECT_PROMPTLY) as channel:
            stub = daemon_pb2_grpc.DaemonServiceStub(channel)
            while time.monotonic() < deadline:
                if self.proc is None or self.proc.poll() is not None:
                    return False
                try:
                    # Blocks until the channel connects or the short deadline passes.
                    stub.Health(daemon_pb2.HealthRequest(), timeout=0.5, wait_for_ready=True)
                    return True
                except grpc.RpcError:
                    continue
        return False

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def how_it_ended(self) -> str:
        """The exit in words: its code, or the signal that ended it."""
        code = None if self.proc is None else self.proc.poll()
        if code is None:
            return "it still runs"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exited with code {code}"

    def wait_exit(self, timeout: float) -> int | None:
        """The exit code, or None if it still runs after timeout."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def signal(self, signum: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signum)

    def kill(self, whole_group: bool = True) -> None:
        """SIGKILL to the whole process group, or to the daemon alone (a
        crash, after which what it started may live on)."""
        if self.proc is None:
            return
        if whole_group:
            kill_group(self.proc.pid)
        elif self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        """Shutdown without waiting for jobs, SIGTERM if it refuses, SIGKILL
        to the group if it lingers; the group is killed in every case."""
        if self.running():
            try:
                with grpc.insecure_channel(self.address) as channel:
                    daemon_pb2_grpc.DaemonServiceStub(channel).Shutdown(
                        daemon_pb2.ShutdownRequest(wait_for_jobs=False), timeout=STOP_TIMEOUT_S)
            except grpc.RpcError:
                self.signal(signal.SIGTERM)
            self.wait_exit(STOP_TIMEOUT_S)
        self.kill()

    def close(self) -> None:
        """stop(), then remove the private folder: every run would
        otherwise leave a database in /tmp."""
        try:
            self.stop()
        finally:
            if self.owns_folder:
                remove_folder(self.folder)

    def last_lines(self, count: int) -> list[str]:
        """The last lines of its output: what a daemon said before it ended."""
        return self.log_tail(1500).rstrip().splitlines()[-count:]

    def log_tail(self, limit: int = 4000) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - limit))
                return log.read().decode("utf-8", "replace")
        except OSError:
            return ""


def exit_on_sigterm(signum, frame):
    """A SIGTERM handler: leave through SystemExit, so that the finally
    clauses stop the daemons this process started (they live in process
    groups of their own, which the signal does not reach)."""
    raise SystemExit(128 + signum)


def remove_folder(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


# How long a process group killed with SIGKILL gets to be gone: the kernel
# ends its processes at once, but a loaded machine can take seconds to tear
# down a large one.
GONE_WITHIN_S = 30.0


def kill_group(pgid: int, wait_s: float = GONE_WITHIN_S) -> bool:
    """SIGKILL to every process of the group, and return only once none of
    them lives on (a zombie has ended), or wait_s has passed: whoever called
    this may then say that nothing it started is left. False if some still
    live."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return True  # already gone
    # Polls /proc: nothing signals the end of a process that is not our child.
    return wait_until(lambda: not group_lives(pgid), wait_s, longest=0.05)


def group_lives(pgid: int) -> bool:
    """Whether a process of the group is alive (not a zombie)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not os.path.isdir("/proc"):
        return True  # no way to tell a zombie apart here
    return any(fields[0] not in ("Z", "X") for _, fields in group_members(pgid))


def stat_fields(pid: int | str) -> list[str]:
    """The fields of /proc/PID/stat after the command name: [0] the state
    (Z or X: it has ended), [1] the parent, [2] the process group. Raises
    OSError as open() does (FileNotFoundError: no such process)."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()


def group_members(pgid: int) -> Iterator[tuple[int, list[str]]]:
    """(pid, stat_fields) of each process of the group, from /proc."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = stat_fields(entry.name)
        except OSError:
            continue
        if int(fields[2]) == pgid:
            yield int(entry.name), fields
