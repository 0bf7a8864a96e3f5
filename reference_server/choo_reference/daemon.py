"""The reference daemon process: DaemonService, grpc.health.v1.Health and
server reflection on a Unix socket, jobs and events in SQLite.

Its whole life runs on one asyncio event loop on the main thread: the
grpc.aio server, the signals (loop.add_signal_handler, which never loses one
whichever thread the kernel hands it to), and the waits of a shutdown, which
block and so run through asyncio.to_thread.

One daemon per socket and per database. Each is guarded by an advisory lock
file next to it (`PATH.lock`, holding the owner's pid): grpc unlinks whatever
is at the path when it binds, so probing the socket alone would let two
daemons starting at once steal it from each other, and a second daemon on the
same database would fail the first one's running jobs when it opens it. The
database file itself is flock'ed as well, so that deleting its lock file does
not let a second daemon in (files.DatabaseLock).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from choo.v1 import daemon_pb2

from . import __version__
from .call_guard import CallGuard
from .connections import end_client_connections
from .files import (
    Created,
    DatabaseLock,
    FileProblem,
    LockFile,
    open_log,
    remove_pid_file,
    remove_socket,
    write_pid_file,
)
from .job_store import DEFAULT_SUBSCRIPTION_HISTORY, JobStore
from .jobs import StorageError
from .limits import MAX_OPEN_WATCHES
from .orchestrator import Orchestrator
from .paths import DEFAULT_DB, DEFAULT_SOCKET, expand, probe_socket, socket_path_problem
from .processes import ProcessTracker, become_subreaper
from .servicer import AsyncWatchServicer, add_daemon_service
from .shutdown import ShutdownSignal

log = logging.getLogger("choo-ref")


DAEMON_SERVICE = daemon_pb2.DESCRIPTOR.services_by_name["DaemonService"].full_name
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name

# Threads for the RPCs that are plain functions (all but WatchJob, which is a
# coroutine on the server's event loop and holds no thread while it waits).
# The longest such call is Shutdown waiting for jobs, so a few are plenty.
DEFAULT_MAX_WORKERS = 16

# How long in-flight calls (the Shutdown response above all) get to finish
# once the daemon stops accepting new ones.
STOP_GRACE_S = 2.0

_SIGNALS = (signal.SIGTERM, signal.SIGINT)

LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"

# Beside the default socket, as choo's own daemon keeps them.
CHOO_PID_FILE = "daemon.pid"
CHOO_LOG = "daemon.log"


def configure_logging() -> None:
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
    root.setLevel(logging.INFO)


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)


class _StartFailed(Exception):
    """The daemon cannot start; str() is the one line it prints."""


def _already_serving(socket_path: str, pid: str | None) -> str:
    who = f"pid {pid}" if pid else "pid unknown"
    return (f"a daemon is already serving on {socket_path} ({who}); "
            f"stop it with `choo-ref shutdown --socket {socket_path}`")


def _load_control() -> Callable | None:
    try:
        from . import control
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


def serve(
    socket_path: str | os.PathLike[str] = DEFAULT_SOCKET,
    db_path: str | os.PathLike[str] = DEFAULT_DB,
    *,
    command_timeout_s: float = 600,
    conformance_control: bool = False,
    max_workers: int = DEFAULT_MAX_WORKERS,
    db_max_bytes: int | None = None,
    max_watches: int = MAX_OPEN_WATCHES,
) -> int:
    """Serve until a Shutdown call, SIGTERM or SIGINT; returns the exit code.
    db_max_bytes caps the database: writes past it fail as on a full disk.
    max_watches caps the WatchJob streams open at once."""
    configure_logging()
    socket_path = expand(socket_path)
    db_path = expand(db_path)
    problem = socket_path_problem(socket_path)
    if problem:
        _error(problem)
        return 1
    add_control = None
    if conformance_control:
        add_control = _load_control()
        if add_control is None:
            return 2
    daemon = _Daemon(socket_path, db_path, command_timeout_s=command_timeout_s,
                     add_control=add_control, max_workers=max_workers,
                     db_max_bytes=db_max_bytes, max_watches=max_watches)
    return asyncio.run(daemon.run())


class _Daemon:
    def __init__(self, socket_path: str, db_path: str, *, command_timeout_s: float,
                 add_control: Callable | None, max_workers: int,
                 db_max_bytes: int | None, max_watches: int = MAX_OPEN_WATCHES) -> None:
        self.socket_path = socket_path
        self.db_path = db_path
        self.command_timeout_s = command_timeout_s
        self.add_control = add_control
        self.max_workers = max_workers
        self.db_max_bytes = db_max_bytes
        self.max_watches = max_watches
        self.shutdown = ShutdownSignal()
        self.guard = CallGuard()
        self.orchestrator: Orchestrator | None = None
        self._forcing = False
        self._tasks: set[asyncio.Future] = set()  # kept: the loop holds only weak references
        self._reap_scheduled = False

    # -- the process's life ---------------------------------------------------------

    async def run(self) -> int:
        self.loop = asyncio.get_running_loop()
        # Set by a Shutdown call once answered, or by the signal path once the
        # jobs are stopped: then the daemon stops serving.
        self.stopped = asyncio.Event()
        previous = self._install_signal_handlers()
        created = Created()
        socket_lock = LockFile(self.socket_path + ".lock")
        db_lock = DatabaseLock(self.db_path)
        try:
            try:
                store, server, tracker, pool = self._start(created, socket_lock, db_lock)
            except _StartFailed as failure:
                _error(str(failure))
                db_lock.release()
                socket_lock.release()
                created.undo()
                return 1
            log_handler = self._open_choo_log()
            try:
                await self._serve(server)
                return 0
            finally:
                await server.stop(None)
                tracker.end()  # nothing a job started outlives the daemon
                store.close()
                pool.shutdown(wait=False)
                problem = remove_socket(self.socket_path)
                if problem:
                    log.warning("%s", problem)
                log.info("daemon stopped")
                self._close_choo_files(log_handler)
        finally:
            db_lock.release()
            socket_lock.release()
            self._restore_signal_handlers(previous)

    def _start(self, created: Created, socket_lock: LockFile, db_lock: DatabaseLock):
        """Everything up to serving; raises _StartFailed having undone what it did."""
        steps_done: list[Callable[[], None]] = []
        try:
            for folder, what in ((os.path.dirname(self.db_path), "the database"),
                                 (os.path.dirname(self.socket_path), "the socket")):
                try:
                    created.private_dir(folder)
                except OSError as exc:
                    raise _StartFailed(f"cannot create the folder {exc.filename} for {what}: "
                                       f"{exc.strerror}") from None
            holder = socket_lock.acquire()
            if holder is not None:
                raise _StartFailed(_already_serving(self.socket_path, holder))
            self._take_over_socket()
            try:
                holder = db_lock.acquire()
            except FileProblem as problem:
                if problem.errno in (errno.ELOOP, errno.EPERM, errno.EINVAL):
                    raise _StartFailed(f"cannot use the database {self.db_path}: "
                                       f"{problem}") from None
                raise _StartFailed(
                    f"cannot use the database {self.db_path}: cannot create files in "
                    f"{os.path.dirname(self.db_path)} ({os.strerror(problem.errno or 0)})"
                ) from None
            if holder is not None:
                raise _StartFailed(f"another daemon (pid {holder or 'unknown'}) is using the "
                                   f"database {self.db_path}")
            pool = ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="choo-rpc")
            steps_done.append(lambda: pool.shutdown(wait=False))
            server = grpc.aio.server(migration_thread_pool=pool, interceptors=[self.guard])
            self._bind(server)
            steps_done.append(self._unbind)
            try:
                store = JobStore(self.db_path, max_bytes=self.db_max_bytes,
                                 subscription_history=DEFAULT_SUBSCRIPTION_HISTORY
                                 if self.add_control else 0)
            except Exception as exc:  # StorageError, or not a database at all
                raise _StartFailed(f"cannot open the database {self.db_path}: {exc}") from None
            steps_done.append(store.close)
            tracker = ProcessTracker(store)
            if not become_subreaper():
                log.warning("cannot become a child subreaper: a command that leaves its "
                            "process group is only found by its environment")
            try:
                tracker.kill_leftovers()
                tracker.begin()
            except StorageError as error:
                log.warning("cannot record this run's processes (%s): after a crash, the "
                            "next start cannot find what its commands left", error)
            self.orchestrator = Orchestrator(store, command_timeout_s=self.command_timeout_s,
                                             processes=tracker)
            self._add_services(server)
            return store, server, tracker, pool
        except FileProblem as problem:
            self._undo(steps_done)
            raise _StartFailed(str(problem)) from None
        except BaseException:
            self._undo(steps_done)
            raise

    @staticmethod
    def _undo(steps: list[Callable[[], None]]) -> None:
        for step in reversed(steps):
            step()

    def _take_over_socket(self) -> None:
        state = probe_socket(self.socket_path)
        if state == "live":
            raise _StartFailed(_already_serving(self.socket_path, None))
        if state == "other":
            raise _StartFailed(f"{self.socket_path} exists and is not a socket; remove it or "
                               "use another --socket")
        if state == "stale":
            os.unlink(self.socket_path)
            log.info("removed stale socket %s (nobody was listening)", self.socket_path)
        elif state != "absent":
            raise _StartFailed(state)

    def _bind(self, server: grpc.aio.Server) -> None:
        # The socket is created by bind(); the umask keeps it private from its
        # first moment, the chmod makes sure whatever the umask was.
        old_umask = os.umask(0o177)
        try:
            server.add_insecure_port(f"unix://{self.socket_path}")
        except RuntimeError as exc:
            raise _StartFailed(f"cannot listen on {self.socket_path}: {exc}") from None
        finally:
            os.umask(old_umask)
        os.chmod(self.socket_path, 0o600)

    def _unbind(self) -> None:
        remove_socket(self.socket_path)  # a start that fails leaves no socket behind

    def _add_services(self, server: grpc.aio.Server) -> None:
        self.servicer = AsyncWatchServicer(self.orchestrator, self.shutdown, __version__,
                                           max_watches=self.max_watches)
        add_daemon_service(self.servicer, server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        services = [DAEMON_SERVICE, HEALTH_SERVICE]
        if self.add_control is not None:
            from choo.conformance.v1 import control_pb2

            self.add_control(server, self.orchestrator)
            services.append(control_pb2.DESCRIPTOR.services_by_name["ConformanceControl"].full_name)
        reflection.enable_server_reflection(services + [reflection.SERVICE_NAME], server)

    async def _serve(self, server: grpc.aio.Server) -> None:
        for service in ("", DAEMON_SERVICE):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        # Listeners run on whichever thread sets the signal.
        self.shutdown.add_listener(lambda: self._call_soon(self._enter_graceful_shutdown))
        self.servicer.shutdown_done.add_listener(lambda: self._call_soon(self.stopped.set))
        await server.start()
        self._write_choo_pid_file()
        log.info("choo-ref daemon %s (pid %d) serving on unix://%s (db %s)",
                 __version__, os.getpid(), self.socket_path, self.db_path)
        await self.stopped.wait()
        # From here every new call is UNAVAILABLE; calls in flight (the
        # Shutdown answer) get STOP_GRACE_S to finish.
        self.guard.close()
        await self._end_connections()
        await server.stop(None)
        for task in list(self._tasks):
            await task

    async def _end_connections(self) -> None:
        """End every client's connection, so that grpc's server, stopping
        after, has no call left to cancel: a call it cancels is CANCELLED
        for its client, a connection that ends makes each call on it
        UNAVAILABLE (R11). The socket's name goes first: no connection can
        come after the last has been ended."""
        problem = remove_socket(self.socket_path)
        if problem:
            log.warning("%s", problem)
        if not await self.guard.open_calls.wait_for_none(STOP_GRACE_S):
            log.info("calls still open after %.0f s are ended with their connections",
                     STOP_GRACE_S)
        end_client_connections(self.socket_path)

    # -- the files choo's own CLI looks for -------------------------------------------
    # choo's CLI finds a running daemon by ~/.choo/daemon.pid and shows
    # ~/.choo/daemon.log: a daemon on the default socket keeps both beside it.

    def _choo_file(self, name: str) -> str | None:
        if self.socket_path != expand(DEFAULT_SOCKET):
            return None
        return os.path.join(os.path.dirname(self.socket_path), name)

    def _open_choo_log(self) -> logging.StreamHandler | None:
        path = self._choo_file(CHOO_LOG)
        if path is None:
            return None
        try:
            handler = logging.StreamHandler(open_log(path))
        except (OSError, FileProblem) as exc:
            log.warning("cannot write the log to %s: %s", path, exc)
            return None
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logging.getLogger().addHandler(handler)
        return handler

    def _write_choo_pid_file(self) -> None:
        path = self._choo_file(CHOO_PID_FILE)
        if path is None:
            return
        try:
            write_pid_file(path)
        except OSError as exc:
            log.warning("cannot write %s (choo's CLI will not find this daemon): %s",
                        path, exc.strerror or exc)

    def _close_choo_files(self, log_handler: logging.StreamHandler | None) -> None:
        # After the socket is gone: a pid file removed first would let choo's
        # CLI start a daemon whose new socket this one would then remove.
        path = self._choo_file(CHOO_PID_FILE)
        if path is not None:
            remove_pid_file(path)
        if log_handler is not None:
            logging.getLogger().removeHandler(log_handler)
            log_handler.close()
            log_handler.stream.close()

    def _call_soon(self, callback: Callable[[], object]) -> None:
        try:
            self.loop.call_soon_threadsafe(callback)
        except RuntimeError:
            pass  # the loop is closed: the daemon is exiting

    def _enter_graceful_shutdown(self) -> None:
        self._keep(self.loop.create_task(self.health.enter_graceful_shutdown()))

    def _keep(self, task: asyncio.Future) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- signals ---------------------------------------------------------------------

    def _install_signal_handlers(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}  # only the main thread may set handlers; the caller handles signals
        previous = {}
        for sig in _SIGNALS:
            previous[sig] = signal.getsignal(sig)
            self.loop.add_signal_handler(sig, self._on_signal, sig)
        previous[signal.SIGCHLD] = signal.getsignal(signal.SIGCHLD)
        self.loop.add_signal_handler(signal.SIGCHLD, self._reap_soon)
        return previous

    def _restore_signal_handlers(self, previous: dict) -> None:
        for sig, handler in previous.items():
            self.loop.remove_signal_handler(sig)
            signal.signal(sig, handler)

    def _on_signal(self, sig: signal.Signals) -> None:
        name = signal.Signals(sig).name
        if self.shutdown.trigger():
            log.info("%s: shutting down, waiting for running jobs (up to 30 s); "
                     "send it again to stop them now", name)
            self._keep(self.loop.create_task(self._stop_jobs()))
        elif not self._forcing:
            self._forcing = True
            log.info("%s again: force-stopping running jobs", name)
            self._keep(self.loop.create_task(asyncio.to_thread(self._force_stop_jobs)))

    async def _stop_jobs(self) -> None:
        # The same path as Shutdown(wait_for_jobs=true, timeout_seconds=0).
        try:
            if self.orchestrator is not None:
                stopped = await asyncio.to_thread(self.orchestrator.shutdown, True, 0)
                log.info("jobs stopped: %d interrupted", stopped)
        except Exception:
            log.exception("stopping the jobs failed")
        finally:
            self.stopped.set()

    def _force_stop_jobs(self) -> None:
        if self.orchestrator is None:
            return
        for job in self.orchestrator.list_jobs(("pending", "running")):
            try:
                self.orchestrator.stop_job(job.job_id, True)
            except Exception as exc:  # it ended meanwhile
                log.info("job %s: %s", job.job_id, exc)

    def _reap_soon(self) -> None:
        """SIGCHLD: a command or something it orphaned ended; reap the orphans."""
        processes = self.orchestrator.processes if self.orchestrator is not None else None
        if self._reap_scheduled or processes is None:
            return
        self._reap_scheduled = True

        def reap() -> None:
            self._reap_scheduled = False
            processes.reap()

        self._keep(asyncio.ensure_future(asyncio.to_thread(reap)))
