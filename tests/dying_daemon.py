"""The reference daemon, but it dies the moment a client calls StopJob, as a
daemon with a crash bug in one handler would:

    python tests/dying_daemon.py --socket PATH --db PATH [daemon options]

It writes a last line to stderr and exits with code 7, leaving its socket
behind."""

from __future__ import annotations

import os
import sys

from choo_reference import servicer
from choo_reference.cli import main


def _dies(self, request, context):
    sys.stderr.write("dying: StopJob is not implemented safely here\n")
    sys.stderr.flush()
    os._exit(7)


if __name__ == "__main__":
    servicer.DaemonServicer.StopJob = _dies
    sys.exit(main(["daemon", *sys.argv[1:]]))
