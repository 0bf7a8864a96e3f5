"""The reference daemon, as `choo-ref daemon --conformance-control` runs it,
but with the size of its RPC thread pool chosen by the benchmark.

`choo-ref daemon` has no option for the pool size (DEFAULT_MAX_WORKERS in
choo_reference/daemon.py). Where each open WatchJob holds one of the pool's
threads, a thousand watchers need a pool of more than a thousand; the
benchmark checks `choo-ref daemon` itself first and only falls back to this
when its pool cannot take the watchers of the figures.

    python -m bench.reference_daemon --socket /tmp/x.sock --db /tmp/x.db --max-workers 1100
"""

from __future__ import annotations

import argparse
import sys

from choo_reference.daemon import DEFAULT_MAX_WORKERS, serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--max-workers", type=int, default=DEFAULT_MAX_WORKERS)
    args = parser.parse_args(argv)
    return serve(args.socket, args.db, conformance_control=True, max_workers=args.max_workers)


if __name__ == "__main__":
    sys.exit(main())
