"""choo-ref: the reference daemon's command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__


def _conformance(args: argparse.Namespace) -> int:
    from steps import runner

    return runner.run(Path(args.report))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="choo-ref",
        description="Reference daemon and conformance suite for choo's DaemonService.",
    )
    parser.add_argument("--version", action="version", version=f"choo-ref {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    conformance = commands.add_parser(
        "conformance", help="run the conformance suite and report per rule"
    )
    conformance.add_argument(
        "--report", default="conformance-report", metavar="DIR",
        help="where summary.md, junit.xml and cucumber.json go (default: %(default)s)",
    )
    conformance.set_defaults(run=_conformance)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
