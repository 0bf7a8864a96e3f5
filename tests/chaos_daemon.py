"""`choo-ref daemon` with options only serve() has, for the chaos tests: a
cap on the database's size makes a full disk on demand; reads of the
database fail as on a failing disk (EIO) while a given file exists; a low
limit on open files makes them run out on demand; the daemon's stop can be
held just after it starts refusing calls (it touches FIFO.held, then reads a
line from FIFO, holding its event loop meanwhile).

usage: chaos_daemon.py --socket PATH --db PATH [--conformance-control] [--db-max-bytes N]
                       [--fail-reads-while PATH] [--max-open-files N] [--hold-stop FIFO]
"""

from __future__ import annotations

import argparse
import os
import resource
import sqlite3
import sys

from choo_reference import sqlite_log
from choo_reference.call_guard import CallGuard
from choo_reference.daemon import serve


class _FailingReader:
    """A reader connection whose queries fail with EIO while `switch` exists."""

    def __init__(self, conn: sqlite3.Connection, switch: str) -> None:
        self._conn = conn
        self._switch = switch

    def execute(self, *args):
        if os.path.exists(self._switch):
            raise sqlite3.OperationalError("disk I/O error")
        return self._conn.execute(*args)

    def close(self) -> None:
        self._conn.close()


def fail_reads_while(switch: str) -> None:
    take = sqlite_log.SqliteLog._take_reader

    def take_failing(self):
        conn = take(self)
        return conn if isinstance(conn, _FailingReader) else _FailingReader(conn, switch)

    sqlite_log.SqliteLog._take_reader = take_failing  # type: ignore[method-assign]


def hold_stop(fifo: str) -> None:
    close = CallGuard.close

    def close_and_hold(self) -> None:
        close(self)
        with open(fifo + ".held", "w"):
            pass
        with open(fifo) as gate:  # blocks until the test writes a line
            gate.readline()

    CallGuard.close = close_and_hold  # type: ignore[method-assign]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--conformance-control", action="store_true")
    parser.add_argument("--db-max-bytes", type=int, default=None)
    parser.add_argument("--fail-reads-while", default=None)
    parser.add_argument("--max-open-files", type=int, default=None)
    parser.add_argument("--hold-stop", default=None)
    args = parser.parse_args()
    if args.max_open_files is not None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (args.max_open_files, args.max_open_files))
    if args.hold_stop:
        hold_stop(args.hold_stop)
    if args.fail_reads_while:
        fail_reads_while(args.fail_reads_while)
    return serve(args.socket, args.db, conformance_control=args.conformance_control,
                 db_max_bytes=args.db_max_bytes)


if __name__ == "__main__":
    sys.exit(main())
