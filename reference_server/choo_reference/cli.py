"""choo-ref: the reference daemon's command line."""

from __future__ import annotations

import os
import signal
import sys


def _interrupted_while_loading(signum, frame) -> None:
    os.write(2, b"interrupted\n")
    os._exit(130)


# A Ctrl-C while the modules below load ends with one line too; main() takes
# over once they have.
_SIGINT_BEFORE = signal.getsignal(signal.SIGINT)
if _SIGINT_BEFORE is signal.default_int_handler:
    signal.signal(signal.SIGINT, _interrupted_while_loading)

import argparse  # noqa: E402
import math  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

from . import __version__  # noqa: E402
from .limits import MAX_OPEN_WATCHES  # noqa: E402
from .paths import DEFAULT_DB, DEFAULT_SOCKET, visible  # noqa: E402

if _SIGINT_BEFORE is signal.default_int_handler:
    signal.signal(signal.SIGINT, _SIGINT_BEFORE)

# Extra seconds the client waits beyond the daemon's own shutdown timeout:
# a forced stop of the jobs that did not finish can take up to 10 s.
_SHUTDOWN_MARGIN_S = 30


def _daemon(args: argparse.Namespace) -> int:
    from .daemon import serve

    return serve(args.socket, args.db, command_timeout_s=args.command_timeout,
                 conformance_control=args.conformance_control, max_watches=args.max_watches)


# -- client commands: each gets (args, stub) and returns an exit code --------------


def _start_job(stub, request) -> tuple[Any, list[int]]:
    """StartJob with Ctrl-C held back until the daemon answers, so that a job
    it started is named. Returns the answer and the Ctrl-Cs that came; the
    caller restores SIGINT's handler."""
    from .client import CliError, call_timeout

    interrupts: list[int] = []

    def hold(signum, frame) -> None:
        interrupts.append(signum)
        if len(interrupts) > 1:
            raise KeyboardInterrupt
        print("interrupted: waiting for the daemon's answer to name the job "
              "(Ctrl-C again to stop waiting)", file=sys.stderr, flush=True)

    signal.signal(signal.SIGINT, hold)
    try:
        return stub.StartJob(request, timeout=call_timeout()), interrupts
    except KeyboardInterrupt:
        raise CliError("error: stopped waiting for the daemon; the job may have started "
                       "(see: choo-ref jobs)", 130) from None


def _run(args, stub) -> int:
    from choo.v1 import daemon_pb2

    from .client import ProgressPrinter, call_timeout, follow, summary_line
    from .live_view import event_display

    repo = os.path.abspath(args.repo)
    tasks_dir = os.path.abspath(args.tasks_dir)
    previous = signal.getsignal(signal.SIGINT)
    try:
        started, interrupts = _start_job(stub, daemon_pb2.StartJobRequest(
            tasks_dir=tasks_dir, target_branch=args.target_branch,
            feature_branch=args.feature_branch, parallelism=args.parallelism, repo_path=repo,
        ))
    except BaseException:
        signal.signal(signal.SIGINT, previous)
        raise
    job_id = visible(started.job_id)
    try:
        # Restored inside the try: from here a Ctrl-C names the job.
        signal.signal(signal.SIGINT, previous)
        verb = "attached to running job" if started.status == "attached" else "started job"
        print(f"{verb} {job_id}: {visible(tasks_dir)} in {visible(repo)}", flush=True)
        if interrupts:
            raise KeyboardInterrupt
        with event_display(stub, started.job_id, sys.stdout, plain=args.plain, from_sequence=1,
                           plain_handler=ProgressPrinter(sys.stdout).handle) as show:
            # From 1, not 0: a job that ended before the watch began still replays.
            for event in follow(stub, started.job_id, 1, retry_first=True,
                                on_retry=_reconnecting(args)):
                show(event)
    except KeyboardInterrupt:
        print(f"stopped following job {job_id}; it keeps running "
              f"(stop it with: choo-ref stop {job_id})", file=sys.stderr)
        return 130
    status = stub.GetJobStatus(daemon_pb2.GetJobStatusRequest(job_id=started.job_id),
                               timeout=call_timeout())
    print(summary_line(status), flush=True)
    return 0 if status.status == "completed" else 1


def _reconnecting(args):
    def report(error, next_sequence) -> None:
        print(f"lost the daemon ({error.code().name}: {visible(error.details() or '')}); "
              f"reconnecting to {args.socket} from event {next_sequence}",
              file=sys.stderr, flush=True)
    return report


def _jobs(args, stub) -> int:
    from choo.v1 import daemon_pb2

    from .client import call_timeout, print_jobs_table

    response = stub.ListJobs(daemon_pb2.ListJobsRequest(status_filter=args.status or []),
                             timeout=call_timeout())
    print_jobs_table(response.jobs, sys.stdout)
    return 0


def _status(args, stub) -> int:
    from choo.v1 import daemon_pb2

    from .client import call_timeout, print_status

    print_status(stub.GetJobStatus(daemon_pb2.GetJobStatusRequest(job_id=args.job),
                                   timeout=call_timeout()), sys.stdout)
    return 0


def _watch(args, stub) -> int:
    from choo.v1 import daemon_pb2

    from .client import call_timeout, follow, print_event
    from .live_view import event_display

    # The stream has no deadline (a job may be quiet for hours): a call that
    # has one first shows that the daemon answers at all.
    stub.GetJobStatus(daemon_pb2.GetJobStatusRequest(job_id=args.job), timeout=call_timeout())
    try:
        with event_display(stub, args.job, sys.stdout, plain=args.plain,
                           from_sequence=args.from_sequence,
                           plain_handler=lambda event: print_event(event, sys.stdout)) as show:
            for event in follow(stub, args.job, args.from_sequence, on_retry=_reconnecting(args)):
                show(event)
    except KeyboardInterrupt:
        return 130
    return 0


def _stop(args, stub) -> int:
    from choo.v1 import daemon_pb2

    from .client import call_timeout

    response = stub.StopJob(daemon_pb2.StopJobRequest(job_id=args.job, force=args.force),
                            timeout=call_timeout())
    print(f"job {visible(args.job)}: {visible(response.message)}")
    return 0 if response.success else 1


def _health(args, stub) -> int:
    from choo.v1 import daemon_pb2

    from .client import call_timeout

    response = stub.Health(daemon_pb2.HealthRequest(), timeout=call_timeout())
    state = "healthy" if response.healthy else "not healthy (shutting down)"
    print(f"{state}, {response.active_jobs} active job{'s' if response.active_jobs != 1 else ''}, "
          f"version {visible(response.version)}")
    return 0 if response.healthy else 1


def _shutdown(args, stub) -> int:
    import grpc

    from choo.v1 import daemon_pb2

    from .client import CliError, no_answer_message, wait_until_gone

    deadline = (args.timeout or 30) + _SHUTDOWN_MARGIN_S
    try:
        response = stub.Shutdown(
            daemon_pb2.ShutdownRequest(wait_for_jobs=args.wait, timeout_seconds=args.timeout),
            timeout=deadline,
        )
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise CliError(no_answer_message(args.socket, deadline)) from None
        raise
    n = response.jobs_stopped
    print(f"daemon shutting down: {n} job{'s' if n != 1 else ''} stopped", flush=True)
    if not wait_until_gone(args.socket, 15):
        print(f"note: the daemon has answered but is still running on {args.socket}",
              file=sys.stderr)
    return 0 if response.success else 1


def _client_command(command):
    """Wrap a client command: a stub on --socket, and every failure reported on
    one line of stderr with exit code 1."""

    def run(args: argparse.Namespace) -> int:
        import grpc

        from choo.v1 import daemon_pb2_grpc

        from .client import CliError, describe_error, open_channel, socket_problem

        problem = socket_problem(args.socket)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 1
        try:
            with open_channel(args.socket) as channel:
                return command(args, daemon_pb2_grpc.DaemonServiceStub(channel))
        except CliError as error:
            print(error.message, file=sys.stderr)
            return error.exit_code
        except grpc.RpcError as error:
            print(describe_error(error, args.socket), file=sys.stderr)
            return 1

    return run


# The largest value of the int32 fields these options fill.
INT32_MAX = 2**31 - 1


def _whole_number(least: int, most: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number from least up to most."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be {least} or more, got {value}")
        if most is not None and value > most:
            raise argparse.ArgumentTypeError(f"must be at most {most}, got {value}")
        return value

    return parse


_non_negative_int = _whole_number(0, INT32_MAX)  # an int32 field of a request
_positive_int = _whole_number(1)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def _text(text: str) -> str:
    """An argument sent to the daemon: gRPC strings are UTF-8, and an argument
    that is not (bytes kept by os.fsdecode) cannot be sent."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(
            f"not valid UTF-8: {visible(text, quoted=True)}") from None
    return text


_PLAIN_HELP = ("print a line per event even on a terminal (the output when piped) "
               "instead of the live view")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="choo-ref",
        description="Reference daemon for choo's DaemonService, and its client commands.",
    )
    parser.add_argument("--version", action="version", version=f"choo-ref {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    socket_option = argparse.ArgumentParser(add_help=False)
    socket_option.add_argument(
        "--socket", default=DEFAULT_SOCKET, metavar="PATH",
        help="the daemon's Unix socket (default: %(default)s)",
    )

    def client(name, function, help):
        sub = commands.add_parser(name, parents=[socket_option], help=help, description=help)
        sub.set_defaults(run=_client_command(function))
        return sub

    daemon = commands.add_parser(
        "daemon", parents=[socket_option], help="serve DaemonService on a Unix socket",
        description="Serve choo.v1.DaemonService, grpc.health.v1.Health and server "
        "reflection on a Unix socket until Shutdown, SIGTERM or SIGINT.",
    )
    daemon.add_argument("--db", default=DEFAULT_DB, metavar="PATH",
                        help="the SQLite database of jobs and events (default: %(default)s)")
    daemon.add_argument("--command-timeout", type=_positive_float, default=600.0,
                        metavar="SECONDS",
                        help="kill a backpressure command after this long (default: 600)")
    daemon.add_argument("--max-watches", type=_positive_int, default=MAX_OPEN_WATCHES,
                        metavar="N",
                        help="WatchJob streams open at once; one more is RESOURCE_EXHAUSTED "
                        "(default: %(default)s)")
    daemon.add_argument("--conformance-control", action="store_true",
                        help="also serve choo.conformance.v1.ConformanceControl")
    daemon.set_defaults(run=_daemon)

    run = client("run", _run, "start a job and follow it until it ends")
    run.add_argument("tasks_dir", type=_text, metavar="TASKS_DIR",
                     help="the folder of unit folders")
    run.add_argument("--repo", type=_text, default=".", metavar="DIR",
                     help="where the commands run (default: the current directory)")
    run.add_argument("--target-branch", type=_text, default="main", metavar="BRANCH",
                     help="the branch the work is for (default: %(default)s)")
    run.add_argument("--feature-branch", type=_text, default="", metavar="BRANCH",
                     help="the job's feature branch; a job already running the same "
                     "work on it is followed instead of starting another")
    run.add_argument("--parallelism", type=_non_negative_int, default=0, metavar="N",
                     help="units at once; 0 means one per CPU (default: 0)")
    run.add_argument("--plain", action="store_true", help=_PLAIN_HELP)

    jobs = client("jobs", _jobs, "list jobs, newest first")
    jobs.add_argument("--status", type=_text, action="extend", nargs="+", metavar="S",
                      help="only jobs in these statuses (pending, running, completed, "
                      "failed, cancelled)")

    status = client("status", _status, "show a job's status and units")
    status.add_argument("job", type=_text, metavar="JOB")

    watch = client("watch", _watch, "print a job's events until it ends, "
                   "reconnecting if the daemon restarts")
    watch.add_argument("job", type=_text, metavar="JOB")
    watch.add_argument("--from", dest="from_sequence", type=_non_negative_int, default=1,
                       metavar="N", help="first sequence to print (default: 1, the first "
                       "event; 0 prints nothing for a job that has already ended)")
    watch.add_argument("--plain", action="store_true", help=_PLAIN_HELP)

    stop = client("stop", _stop, "stop a job")
    stop.add_argument("job", type=_text, metavar="JOB")
    stop.add_argument("--force", action="store_true",
                      help="kill running commands now instead of letting them finish")

    client("health", _health, "ask the daemon whether it is healthy")

    shutdown = client("shutdown", _shutdown, "stop the daemon")
    shutdown.add_argument("--wait", action="store_true",
                          help="let running jobs finish first (up to --timeout)")
    shutdown.add_argument("--timeout", type=_non_negative_int, default=0, metavar="S",
                          help="with --wait: how long to wait, 0 means 30 s (default: 0)")
    return parser


class _OutputFailed(Exception):
    """Writing to stdout failed (a full disk, an I/O error)."""


class _GuardedOutput:
    """sys.stdout while a command runs: a write that fails is told apart from
    every other OSError, so that it ends the command with one line."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise _OutputFailed(exc.strerror or str(exc)) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise _OutputFailed(exc.strerror or str(exc)) from None

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def _discard_stdout() -> None:
    """Keep the interpreter's final flush of what is left from failing again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return args.run(args)


def main(argv: list[str] | None = None) -> int:
    stdout = sys.stdout
    sys.stdout = _GuardedOutput(stdout)
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()  # here, where a failure is still reported
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (`choo-ref watch JOB | head`): stop quietly.
        sys.stdout = stdout
        _discard_stdout()
        return 1
    except _OutputFailed as failed:
        print(f"error: cannot write the output: {failed}", file=sys.stderr)
        sys.stdout = stdout
        _discard_stdout()
        return 1
    finally:
        sys.stdout = stdout


if __name__ == "__main__":
    sys.exit(main())
