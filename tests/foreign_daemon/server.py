"""A second, separately written implementation of choo.v1.DaemonService.

    python tests/foreign_daemon/server.py --socket PATH --db PATH [--no-control] [--like-choo] [--bug NAME]...

It exists so that the conformance suite can be judged: run against a correct
daemon it has never seen, the suite must fail no rule; run against the same
daemon with one defect switched on, it must fail the rule that defect breaks.
So it shares no code with the reference daemon or the suite (it imports only
grpcio, protobuf and the generated stubs of the `choo` package), and wherever
the contract leaves a choice open it chooses differently from the reference
daemon: see README.md beside this file.

It serves DaemonService, and ConformanceControl on the same socket unless
--no-control is given. Jobs and events are kept in a file of JSON lines at
--db. It logs to stderr. Shutdown (and SIGTERM or SIGINT, which do what
Shutdown(wait_for_jobs=true) does; a second one stops the jobs at once) ends
it with exit status 0 and removes its socket. --like-choo makes it need
what choo's own daemon needs of its surroundings (environment.py).

Defects, each switched on by `--bug NAME` (repeatable) and each a realistic
mistake, for the suite to catch:

  not-found-internal          W2   an unknown job answers INTERNAL, as if the
                                   failed lookup were a server fault, instead
                                   of NOT_FOUND.
  replay-terminal-from-zero   W8   a finished job watched from 0 replays its
                                   whole history (and opens a subscription)
                                   instead of ending OK at once.
  negative-from-clamped       W11  a negative from_sequence is treated as 0
                                   instead of refused INVALID_ARGUMENT.
  exclusive-from              W10  from_sequence is exclusive: a watch from N
                                   starts after event N (from 0 still starts
                                   at 1).
  renumbered-replay           W10  events replayed from the history are
                                   numbered by their place in the replay (a
                                   watch from 3 gets them as 1, 2, ...), not by
                                   their recorded sequence (W9: never
                                   renumbered).
  replay-drops-payload        W9   events replayed from the history lose their
                                   payload_json (W12: replay returns what was
                                   recorded); live events keep it.
  drops-slow-watcher-events   W15  a watcher more than 1000 events behind the
                                   job's log skips ahead to 1000 behind,
                                   silently losing the events in between.
  thread-per-watch            W16  each open watch holds one of 128 worker
                                   threads for its whole life: with 1000 open
                                   watches (scale.feature, tagged W15 and W16)
                                   the watchers past 128 get nothing.

Defects upstream of many rules, which break what the scenarios set up
(their Given steps), for the suite to report as one cause:

  start-job-internal          R3   every StartJob that passes its checks
                                   answers INTERNAL, as a daemon that cannot
                                   create the job's worktree does.
  no-unit-starts              R6   StartJob answers OK and the job reads
                                   running, but no unit or command ever
                                   starts: parallelism 0 is taken for zero
                                   workers instead of one per CPU. A stop
                                   still ends the job.
  exits-during-stop           R5   the process exits (code 3, a last line on
                                   stderr) on a StopJob for a job that
                                   exists, as a crash in one handler would.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import stat
import sys
from pathlib import Path

import grpc

# Run as a script: the package beside this file is foreign_daemon.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from foreign_daemon import environment
from foreign_daemon.awkward import SWITCHES as AWKWARD_SWITCHES
from foreign_daemon.awkward import Awkward
from foreign_daemon.ledger import Ledger, LedgerError
from foreign_daemon.service import VERSION, Daemon, handlers
from foreign_daemon.state import State

log = logging.getLogger("foreign")

# Each defect and the rule the suite must fail when it is on.
BUGS = {
    "not-found-internal": "W2",
    "replay-terminal-from-zero": "W8",
    "negative-from-clamped": "W11",
    "exclusive-from": "W10",
    "renumbered-replay": "W10",
    "replay-drops-payload": "W9",
    "drops-slow-watcher-events": "W15",
    "thread-per-watch": "W16",
    # Upstream of many rules: the rule that fails on its own, the others blocked.
    "start-job-internal": "R3",
    "no-unit-starts": "R6",
    "exits-during-stop": "R5",
}

# How long calls still being handled get once the daemon stops serving.
STOP_GRACE_S = 2.0


def _someone_listens(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def _claim_socket(path: str) -> str | None:
    """Clear the way to listen on path; None, or why it cannot be done."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    if not stat.S_ISSOCK(mode):
        return f"{path} exists and is not a socket"
    if _someone_listens(path):
        return f"a daemon is already listening on {path}"
    os.unlink(path)
    log.info("removed the stale socket %s", path)
    return None


async def serve(socket_path: str, db_path: str, control: bool, bugs: set[str],
                awkward: Awkward | None = None) -> int:
    problem = _claim_socket(socket_path)
    if problem:
        log.error("%s", problem)
        return 1
    try:
        ledger = Ledger(db_path)
    except OSError as exc:
        log.error("cannot open %s: %s", db_path, exc.strerror or exc)
        return 1
    except LedgerError as exc:
        log.error("%s", exc)
        return 1
    try:
        state = State(ledger)
        if awkward is not None:
            state.awkward = awkward
        try:
            state.load()
        except LedgerError as exc:
            log.error("%s", exc)
            return 1
        daemon = Daemon(state, bugs)
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(handlers(daemon, control))
        umask = os.umask(0o077)  # private from the moment they exist
        try:
            os.makedirs(os.path.dirname(socket_path), mode=0o700, exist_ok=True)
            server.add_insecure_port(f"unix:{socket_path}")
            os.chmod(socket_path, 0o600)
        except (OSError, RuntimeError) as exc:
            log.error("cannot listen on %s: %s", socket_path, exc)
            return 1
        finally:
            os.umask(umask)
        await server.start()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, daemon.on_signal, signal.Signals(signum).name)
        log.info("foreign daemon %s (pid %d) on %s, ledger %s%s%s", VERSION, os.getpid(),
                 socket_path, db_path, "" if control else ", without the control service",
                 f", defects: {', '.join(sorted(bugs))}" if bugs else "")
        if state.awkward:
            log.info("%s", state.awkward.describe())

        await daemon.exit.wait()
        # From here every new call is UNAVAILABLE (R11), and with the socket
        # gone nobody new can connect.
        state.closed = True
        _remove_socket(socket_path)
        await state.calls.wait_for_none(STOP_GRACE_S)
        log.info("stopped")
        logging.shutdown()
        # Leave without stopping the gRPC server: its stop cancels the calls
        # that race it (CANCELLED), whereas the end of the process closes the
        # connections, which every client reads as UNAVAILABLE. Nothing is
        # lost: the ledger has no buffer, and no job is left running.
        os._exit(0)
    finally:
        ledger.close()
        _remove_socket(socket_path)


def _remove_socket(path: str) -> None:
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="A second implementation of choo.v1.DaemonService, for judging the "
        "conformance suite.")
    parser.add_argument("--socket", required=True, help="Unix socket to listen on")
    parser.add_argument("--db", required=True, help="file of JSON lines that keeps jobs and events")
    parser.add_argument("--no-control", action="store_true",
                        help="serve DaemonService only, not ConformanceControl")
    parser.add_argument("--bug", action="append", default=[], choices=sorted(BUGS),
                        help="switch on a defect (repeatable); see the module's docstring")
    parser.add_argument("--like-choo", action="store_true",
                        help="need what choo's own daemon needs: a GitHub origin, a git identity "
                        "in the repository, a coding agent in CHOO_AGENT_CMD (environment.py)")
    parser.add_argument("--awkward", action="append", default=[],
                        choices=[*AWKWARD_SWITCHES, "all"],
                        help="move a moment the contract leaves open (repeatable; all: every one); "
                        "see awkward.py")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the --awkward delays (default: a random one; logged)")
    args = parser.parse_args(argv)
    if args.like_choo:
        environment.switch_on()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s foreign %(levelname)s %(message)s")
    return asyncio.run(serve(os.path.abspath(args.socket), os.path.abspath(args.db),
                             not args.no_control, set(args.bug),
                             Awkward(set(args.awkward), args.seed)))


if __name__ == "__main__":
    sys.exit(main())
