"""The reference daemon process: DaemonService, grpc.health.v1.Health and
server reflection on a Unix socket, jobs and events in SQLite.

One daemon per socket and per database. Each is guarded by an advisory lock
file next to it (`PATH.lock`, holding the owner's pid): grpc unlinks whatever
is at the path when it binds, so probing the socket alone would let two
daemons starting at once steal it from each other, and a second daemon on the
same database would fail the first one's running jobs when it opens it.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
import socket
import stat
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from choo.v1 import daemon_pb2, daemon_pb2_grpc

from . import __version__
from .job_store import JobStore
from .orchestrator import Orchestrator
from .servicer import AsyncWatchServicer
from .shutdown import ShutdownSignal

log = logging.getLogger("choo-ref")

DEFAULT_SOCKET = "~/.choo/daemon.sock"
DEFAULT_DB = "~/.choo/daemon.db"

DAEMON_SERVICE = daemon_pb2.DESCRIPTOR.services_by_name["DaemonService"].full_name
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name

# Threads for the RPCs that are plain functions (all but WatchJob, which is a
# coroutine on the server's event loop and holds no thread while it waits).
# The longest such call is Shutdown waiting for jobs, so a few are plenty.
DEFAULT_MAX_WORKERS = 16

# How long in-flight calls (the Shutdown response above all) get to finish
# once the daemon stops accepting new ones.
STOP_GRACE_S = 2.0

# Bytes written to the wake-up pipe besides signal numbers (all below 64).
_SHUTDOWN_ANSWERED = 254
_JOBS_STOPPED = 255

LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"


def expand(path: str | os.PathLike[str]) -> str:
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def configure_logging() -> None:
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
    root.setLevel(logging.INFO)


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)


# -- files -----------------------------------------------------------------------


def make_private_dir(path: str) -> None:
    """Create path (and its parents) if missing; a directory created here is 0700.
    An existing directory is left as it is: it may be shared, like /tmp."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    if parent and parent != path:
        make_private_dir(parent)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        return
    os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask


class LockFile:
    """An flock'ed file holding the owner's pid; released (and removed) by release()."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> str | None:
        """None once held; otherwise the holder's pid as written (may be "")."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode("ascii", "replace").strip()
                os.close(fd)
                return holder
            except BaseException:
                os.close(fd)
                raise
            # The previous owner may have removed the file between our open and
            # flock: then we locked an orphan and must start over.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self._fd = fd
            return None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.unlink(self.path)  # while still locked, so nobody holds an orphan
        except OSError:
            pass
        os.close(fd)


def _probe_socket(path: str) -> str:
    """"absent", "stale" (a socket nobody listens on), "live", "other" (not a
    socket) or an error description."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "absent"
    if not stat.S_ISSOCK(st.st_mode):
        return "other"
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        return "stale"
    except FileNotFoundError:
        return "absent"
    except TimeoutError:
        return "live"  # someone listens but its backlog is full
    except OSError as exc:
        return f"cannot check {path}: {exc.strerror or exc}"
    finally:
        probe.close()
    return "live"


def _already_serving(socket_path: str, pid: str | None) -> str:
    who = f"pid {pid}" if pid else "pid unknown"
    return (f"a daemon is already serving on {socket_path} ({who}); "
            f"stop it with `choo-ref shutdown --socket {socket_path}`")


def _load_control() -> Callable | None:
    try:
        from . import control  # type: ignore[attr-defined]
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.control":
            raise
        _error("--conformance-control needs the module choo_reference.control, "
               "which this installation does not have")
        return None
    add = getattr(control, "add_control_service", None)
    if not callable(add):
        _error("choo_reference.control has no add_control_service(server, orchestrator)")
        return None
    return add


# -- serving ---------------------------------------------------------------------


class _LoopThread:
    """An asyncio event loop running on a thread of its own."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name="choo-grpc-loop", daemon=True)
        self._thread.start()

    def run(self, coroutine):
        """Run a coroutine on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def submit(self, coroutine) -> None:
        if not self._loop.is_closed():
            asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def call(self, function, *args):
        """Call a plain function on the loop's thread and wait for its result."""
        async def call():
            return function(*args)
        return self.run(call())

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


def serve(
    socket_path: str | os.PathLike[str] = DEFAULT_SOCKET,
    db_path: str | os.PathLike[str] = DEFAULT_DB,
    *,
    command_timeout_s: float = 600,
    conformance_control: bool = False,
    max_workers: int = DEFAULT_MAX_WORKERS,
) -> int:
    """Serve until a Shutdown call, SIGTERM or SIGINT; returns the exit code."""
    configure_logging()
    socket_path = expand(socket_path)
    db_path = expand(db_path)

    add_control = None
    if conformance_control:
        add_control = _load_control()
        if add_control is None:
            return 2

    try:
        make_private_dir(os.path.dirname(socket_path))
        make_private_dir(os.path.dirname(db_path))
    except OSError as exc:
        _error(f"cannot create {exc.filename}: {exc.strerror}")
        return 1

    socket_lock = LockFile(socket_path + ".lock")
    db_lock = LockFile(db_path + ".lock")
    try:
        holder = socket_lock.acquire()
        if holder is not None:
            _error(_already_serving(socket_path, holder))
            return 1
        state = _probe_socket(socket_path)
        if state == "live":
            _error(_already_serving(socket_path, None))
            return 1
        if state == "other":
            _error(f"{socket_path} exists and is not a socket; remove it or use another --socket")
            return 1
        if state == "stale":
            os.unlink(socket_path)
            log.info("removed stale socket %s (nobody was listening)", socket_path)
        elif state != "absent":
            _error(state)
            return 1
        holder = db_lock.acquire()
        if holder is not None:
            _error(f"another daemon (pid {holder or 'unknown'}) is using the database {db_path}")
            return 1
        try:
            store = JobStore(db_path)
        except Exception as exc:
            _error(f"cannot open the database {db_path}: {exc}")
            return 1
        try:
            return _Daemon(socket_path, db_path, store, command_timeout_s,
                           add_control, max_workers).run()
        finally:
            store.close()
    except OSError as exc:
        _error(f"{exc.filename or 'error'}: {exc.strerror or exc}")
        return 1
    finally:
        db_lock.release()
        socket_lock.release()


class _Daemon:
    def __init__(self, socket_path: str, db_path: str, store: JobStore,
                 command_timeout_s: float, add_control: Callable | None,
                 max_workers: int) -> None:
        self.socket_path = socket_path
        self.db_path = db_path
        self.orchestrator = Orchestrator(store, command_timeout_s=command_timeout_s)
        self.shutdown = ShutdownSignal()
        self.servicer = AsyncWatchServicer(self.orchestrator, self.shutdown, __version__)
        # grpc.aio runs on an event loop of its own thread; the main thread
        # keeps signals and the shutdown sequence.
        self.loop = _LoopThread()
        self.server = self.loop.run(self._build_server(add_control, max_workers))
        # Runs inside ShutdownSignal.trigger(), whoever triggers it.
        self.shutdown.add_listener(
            lambda: self.loop.submit(self.health.enter_graceful_shutdown()))

        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._pipe_closed = False
        self._forcing = False

    async def _build_server(self, add_control: Callable | None, max_workers: int) -> grpc.aio.Server:
        server = grpc.aio.server(migration_thread_pool=ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="choo-rpc"))
        daemon_pb2_grpc.add_DaemonServiceServicer_to_server(self.servicer, server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self.health.set(DAEMON_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        services = [DAEMON_SERVICE, HEALTH_SERVICE]
        if add_control is not None:
            from choo.conformance.v1 import control_pb2

            add_control(server, self.orchestrator)
            services.append(control_pb2.DESCRIPTOR.services_by_name["ConformanceControl"].full_name)
        reflection.enable_server_reflection(services + [reflection.SERVICE_NAME], server)
        return server

    def _wake(self, code: int) -> None:
        if self._pipe_closed:
            return
        try:
            os.write(self._wake_w, bytes([code]))
        except (BlockingIOError, OSError):
            pass  # the pipe is full of wake-ups already, or closed at exit

    def _bind(self) -> bool:
        # The socket is created by bind(); the umask keeps it private from its
        # first moment, the chmod makes sure whatever the umask was.
        old_umask = os.umask(0o177)
        try:
            self.loop.call(self.server.add_insecure_port, f"unix://{self.socket_path}")
        except RuntimeError as exc:
            _error(f"cannot listen on {self.socket_path}: {exc}")
            return False
        finally:
            os.umask(old_umask)
        os.chmod(self.socket_path, 0o600)
        return True

    def run(self) -> int:
        # Installed until the very end: a signal that arrives while the server
        # stops is absorbed instead of raising KeyboardInterrupt mid-cleanup.
        previous = self._install_signal_handlers()
        try:
            if not self._bind():
                return 1
            self.loop.run(self.server.start())
            log.info("choo-ref daemon %s (pid %d) serving on unix://%s (db %s)",
                     __version__, os.getpid(), self.socket_path, self.db_path)
            # Wakes the main loop once a Shutdown call has stopped the jobs; the
            # main loop sets shutdown_done itself on the signal path, so this
            # thread always ends.
            waiter = threading.Thread(target=self._await_shutdown_call,
                                      name="choo-shutdown-wait", daemon=True)
            waiter.start()
            try:
                self._main_loop()
            finally:
                self.servicer.shutdown_done.set()
                waiter.join()  # it writes to the pipe, which is closed below
            self.loop.run(self.server.stop(STOP_GRACE_S))
            log.info("daemon stopped")
            return 0
        finally:
            self.loop.run(self.server.stop(None))
            self.loop.close()
            self._pipe_closed = True
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._restore_signal_handlers(previous)
            self._remove_socket()

    def _await_shutdown_call(self) -> None:
        self.servicer.shutdown_done.wait()
        self._wake(_SHUTDOWN_ANSWERED)

    def _main_loop(self) -> None:
        while True:
            for code in os.read(self._wake_r, 64):
                if code in (_SHUTDOWN_ANSWERED, _JOBS_STOPPED):
                    return
                self._on_signal(code)

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.shutdown.trigger():
            log.info("%s: shutting down, waiting for running jobs (up to 30 s); "
                     "send it again to stop them now", name)
            threading.Thread(target=self._stop_jobs, name="choo-shutdown",
                             daemon=True).start()
        elif not self._forcing:
            self._forcing = True
            log.info("%s again: force-stopping running jobs", name)
            threading.Thread(target=self._force_stop_jobs, name="choo-force-stop",
                             daemon=True).start()

    def _stop_jobs(self) -> None:
        # The same path as Shutdown(wait_for_jobs=true, timeout_seconds=0).
        try:
            stopped = self.orchestrator.shutdown(True, 0)
            log.info("jobs stopped: %d interrupted", stopped)
        except Exception:
            log.exception("stopping the jobs failed")
        finally:
            self._wake(_JOBS_STOPPED)

    def _force_stop_jobs(self) -> None:
        for job in self.orchestrator.list_jobs(("pending", "running")):
            try:
                self.orchestrator.stop_job(job.job_id, True)
            except Exception as exc:  # it ended meanwhile
                log.info("job %s: %s", job.job_id, exc)

    def _install_signal_handlers(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}  # only the main thread may set handlers; the caller handles signals

        def handler(signum, frame):
            self._wake(signum)

        return {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}

    @staticmethod
    def _restore_signal_handlers(previous: dict) -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    def _remove_socket(self) -> None:
        # grpc usually unlinks it when the server stops; this covers the rest.
        try:
            if stat.S_ISSOCK(os.lstat(self.socket_path).st_mode):
                os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not remove %s: %s", self.socket_path, exc.strerror)
