"""choo-ref: the reference daemon's command line."""

from __future__ import annotations

import argparse
import math
import os
import sys

from . import __version__
from .paths import DEFAULT_DB, DEFAULT_SOCKET

# Extra seconds the client waits beyond the daemon's own shutdown timeout:
# a forced stop of the jobs that did not finish can take up to 10 s.
_SHUTDOWN_MARGIN_S = 30


def _daemon(args: argparse.Namespace) -> int:
    from .daemon import serve

    return serve(args.socket, args.db, command_timeout_s=args.command_timeout,
                 conformance_control=args.conformance_control)


# -- client commands: each gets (args, stub) and returns an exit code --------------


def _run(args, stub) -> int:
    from choo.v1 import daemon_pb2

    from .client import ProgressPrinter, follow, summary_line
    from .live_view import event_display

    repo = os.path.abspath(args.repo)
    tasks_dir = os.path.abspath(args.tasks_dir)
    started = stub.StartJob(daemon_pb2.StartJobRequest(
        tasks_dir=tasks_dir, target_branch=args.target_branch,
        feature_branch=args.feature_branch, parallelism=args.parallelism, repo_path=repo,
    ))
    job_id = started.job_id
    verb = "attached to running job" if started.status == "attached" else "started job"
    print(f"{verb} {job_id}: {tasks_dir} in {repo}", flush=True)
    try:
        with event_display(stub, job_id, sys.stdout, plain=args.plain, from_sequence=1,
                           plain_handler=ProgressPrinter(sys.stdout).handle) as show:
            # From 1, not 0: a job that ended before the watch began still replays.
            for event in follow(stub, job_id, 1, retry_first=True,
                                on_retry=_reconnecting(args)):
                show(event)
    except KeyboardInterrupt:
        print(f"stopped following job {job_id}; it keeps running "
              f"(stop it with: choo-ref stop {job_id})", file=sys.stderr)
        return 130
    status = stub.GetJobStatus(daemon_pb2.GetJobStatusRequest(job_id=job_id))
    print(summary_line(status), flush=True)
    return 0 if status.status == "completed" else 1


def _reconnecting(args):
    def report(error, next_sequence) -> None:
        print(f"lost the daemon ({error.code().name}: {error.details()}); "
              f"reconnecting to {args.socket} from event {next_sequence}",
              file=sys.stderr, flush=True)
    return report


def _jobs(args, stub) -> int:
    from choo.v1 import daemon_pb2

    from .client import print_jobs_table

    response = stub.ListJobs(daemon_pb2.ListJobsRequest(status_filter=args.status or []))
    print_jobs_table(response.jobs, sys.stdout)
    return 0


def _status(args, stub) -> int:
    from choo.v1 import daemon_pb2

    from .client import print_status

    print_status(stub.GetJobStatus(daemon_pb2.GetJobStatusRequest(job_id=args.job)), sys.stdout)
    return 0


def _watch(args, stub) -> int:
    from .client import follow, print_event
    from .live_view import event_display

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

    response = stub.StopJob(daemon_pb2.StopJobRequest(job_id=args.job, force=args.force))
    print(f"job {args.job}: {response.message}")
    return 0 if response.success else 1


def _health(args, stub) -> int:
    from choo.v1 import daemon_pb2

    response = stub.Health(daemon_pb2.HealthRequest(), timeout=10)
    state = "healthy" if response.healthy else "not healthy (shutting down)"
    print(f"{state}, {response.active_jobs} active job{'s' if response.active_jobs != 1 else ''}, "
          f"version {response.version}")
    return 0 if response.healthy else 1


def _shutdown(args, stub) -> int:
    from choo.v1 import daemon_pb2

    from .client import wait_until_gone

    response = stub.Shutdown(
        daemon_pb2.ShutdownRequest(wait_for_jobs=args.wait, timeout_seconds=args.timeout),
        timeout=(args.timeout or 30) + _SHUTDOWN_MARGIN_S,
    )
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
        except KeyboardInterrupt:
            return 130

    return run


# The largest value of the int32 fields these options fill.
INT32_MAX = 2**31 - 1


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    if value > INT32_MAX:
        raise argparse.ArgumentTypeError(f"must be at most {INT32_MAX}, got {value}")
    return value


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
    daemon.add_argument("--conformance-control", action="store_true",
                        help="also serve choo.conformance.v1.ConformanceControl")
    daemon.set_defaults(run=_daemon)

    run = client("run", _run, "start a job and follow it until it ends")
    run.add_argument("tasks_dir", metavar="TASKS_DIR", help="the folder of unit folders")
    run.add_argument("--repo", default=".", metavar="DIR",
                     help="where the commands run (default: the current directory)")
    run.add_argument("--target-branch", default="main", metavar="BRANCH",
                     help="the branch the work is for (default: %(default)s)")
    run.add_argument("--feature-branch", default="", metavar="BRANCH",
                     help="the job's feature branch; a job already running the same "
                     "work on it is followed instead of starting another")
    run.add_argument("--parallelism", type=_non_negative_int, default=0, metavar="N",
                     help="units at once; 0 means one per CPU (default: 0)")
    run.add_argument("--plain", action="store_true", help=_PLAIN_HELP)

    jobs = client("jobs", _jobs, "list jobs, newest first")
    jobs.add_argument("--status", action="extend", nargs="+", metavar="S",
                      help="only jobs in these statuses (pending, running, completed, "
                      "failed, cancelled)")

    status = client("status", _status, "show a job's status and units")
    status.add_argument("job", metavar="JOB")

    watch = client("watch", _watch, "print a job's events until it ends, "
                   "reconnecting if the daemon restarts")
    watch.add_argument("job", metavar="JOB")
    watch.add_argument("--from", dest="from_sequence", type=_non_negative_int, default=1,
                       metavar="N", help="first sequence to print (default: 1, the first "
                       "event; 0 prints nothing for a job that has already ended)")
    watch.add_argument("--plain", action="store_true", help=_PLAIN_HELP)

    stop = client("stop", _stop, "stop a job")
    stop.add_argument("job", metavar="JOB")
    stop.add_argument("--force", action="store_true",
                      help="kill running commands now instead of letting them finish")

    client("health", _health, "ask the daemon whether it is healthy")

    shutdown = client("shutdown", _shutdown, "stop the daemon")
    shutdown.add_argument("--wait", action="store_true",
                          help="let running jobs finish first (up to --timeout)")
    shutdown.add_argument("--timeout", type=_non_negative_int, default=0, metavar="S",
                          help="with --wait: how long to wait, 0 means 30 s (default: 0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.run(args)
    except BrokenPipeError:
        # The reader of stdout went away (`choo-ref watch JOB | head`): stop
        # quietly, and keep the interpreter's final flush from failing again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
