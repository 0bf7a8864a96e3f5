"""`choo-ref daemon` with options only serve() has, for the chaos tests: a
cap on the database's size makes a full disk on demand.

usage: chaos_daemon.py --socket PATH --db PATH [--conformance-control] [--db-max-bytes N]
"""

from __future__ import annotations

import argparse
import sys

from choo_reference.daemon import serve


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--conformance-control", action="store_true")
    parser.add_argument("--db-max-bytes", type=int, default=None)
    args = parser.parse_args()
    return serve(args.socket, args.db, conformance_control=args.conformance_control,
                 db_max_bytes=args.db_max_bytes)


if __name__ == "__main__":
    sys.exit(main())
