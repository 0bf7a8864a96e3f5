"""choo-conformance: run the conformance suite against an implementation of
choo.v1.DaemonService and report per rule."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import runner


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="choo-conformance",
        description="Run the feature files against an implementation of choo.v1.DaemonService "
        "and report which rules of the contract it meets. With no target: in process, against "
        "the reference servicer.",
    )
    parser.add_argument(
        "--server-cmd", metavar="COMMAND",
        help="start the implementation under test with COMMAND for each run that needs one; "
        "{socket} (and optionally {db}) in it stand for paths the suite chooses; it must serve "
        "choo.conformance.v1.ConformanceControl too",
    )
    parser.add_argument(
        "--target", metavar="ADDRESS",
        help="use a daemon already serving at ADDRESS, e.g. unix:///tmp/d.sock "
        "(scenarios that end or restart the daemon are skipped)",
    )
    parser.add_argument("--rules", metavar="IDS", help="only these rules, e.g. W1,R5")
    parser.add_argument("--tags", metavar="EXPR",
                        help="only scenarios whose tags match EXPR, e.g. 'event_stream and not W15'")
    parser.add_argument(
        "--known-failing", metavar="FILE",
        help="rule ids expected to fail, one per line (# comments): reported, not failed",
    )
    parser.add_argument(
        "--report", default="conformance-report", metavar="DIR",
        help="where summary.md, junit.xml, cucumber.json and results.json go "
        "(default: %(default)s)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.server_cmd and args.target:
        print("error: give --server-cmd or --target, not both", file=sys.stderr)
        return 2
    rules = [r.strip() for r in args.rules.split(",") if r.strip()] if args.rules else None
    return runner.run(Path(args.report), server_cmd=args.server_cmd, target=args.target,
                      rules=rules, tags=args.tags, known_failing=args.known_failing)


if __name__ == "__main__":
    sys.exit(main())
