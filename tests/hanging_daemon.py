"""The reference daemon with one way of hanging, for the runner's tests: the
suite must fail the rule the hang breaks, within its time limits, and leave
no process behind.

    python tests/hanging_daemon.py --hang append-while-watched|stream-forever \
        --socket PATH --db PATH [--tag NAME]

append-while-watched  AppendEvents blocks for good once a job has a watcher
                      (a recorder that waits for a lagging watcher).
stream-forever        a watch never ends, not even after the job's last event.
"""

from __future__ import annotations

import argparse
import sys
import threading

from choo_reference import job_store
from choo_reference.daemon import serve

_forever = threading.Event()


def _append_while_watched() -> None:
    record_many = job_store.JobStore.record_many

    def blocking(self, job_id, specs):
        if any(is_open for _, is_open in self.subscriptions(job_id)):
            _forever.wait()
        return record_many(self, job_id, specs)

    job_store.JobStore.record_many = blocking


def _stream_forever() -> None:
    read = job_store._Feed.read

    def never_ends(self, limit):
        events = read(self, limit)
        return [] if events is None else events

    job_store._Feed.read = never_ends


HANGS = {"append-while-watched": _append_while_watched, "stream-forever": _stream_forever}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hang", choices=sorted(HANGS), required=True)
    parser.add_argument("--socket", required=True)
    parser.add_argument("--db", required=True)
    # Names the test that started it, so that a test looking for its own
    # daemons left behind does not find another test's running beside it.
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    HANGS[args.hang]()
    return serve(args.socket, args.db, conformance_control=True)


if __name__ == "__main__":
    sys.exit(main())
