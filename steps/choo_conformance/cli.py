"""choo-conformance: run the conformance suite against an implementation of
choo.v1.DaemonService and give a verdict per rule."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import environment, runner
from .limits import DEFAULT_SCENARIO_TIMEOUT_S
from .profiles import PROFILES
from .seam import DEFAULT_IMPLEMENTATION


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="choo-conformance",
        description="Run the conformance suite against an implementation of "
        "choo.v1.DaemonService and give a verdict per rule. With neither --server-cmd nor "
        "--target it runs in process, against the reference implementation. Exit code: 0 "
        "every selected rule passed (or is known to fail and still fails); 1 a rule failed, "
        "or a known-failing rule passed; 2 no verdict (bad arguments, nothing selected, a "
        "collection error, the daemon never answered, or a selected rule was skipped).",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--server-cmd", metavar="COMMAND",
        help="start the implementation under test with COMMAND whenever a run needs one; "
        "{socket} (and optionally {db}) in it stand for paths the suite chooses")
    where.add_argument(
        "--target", metavar="ADDRESS",
        help="use a daemon already serving at ADDRESS, e.g. unix:///tmp/d.sock (scenarios "
        "that end or restart the daemon are skipped: allow that with --allow-skips)")
    where.add_argument(
        "--implementation", metavar="MODULE[:OBJECT]",
        help=f"in process: the implementation to drive (default {DEFAULT_IMPLEMENTATION}); "
        "see choo_conformance.seam")
    parser.add_argument(
        "--repo-origin", type=environment.repo_origin, metavar="URL",
        help="give each repository the suite makes for StartJob (its repo_path) an `origin` "
        "remote with this URL, for a daemon that insists on one; nothing is ever fetched from it")
    parser.add_argument(
        "--server-env", action="append", default=[], type=environment.server_env_item,
        metavar="KEY=VALUE",
        help="add KEY=VALUE to the environment of the daemon --server-cmd starts (repeatable), "
        "e.g. to point its coding agent at a stub")
    parser.add_argument(
        "--profile", choices=PROFILES,
        help="control: the daemon serves ConformanceControl; black-box: DaemonService only; "
        "reference: control plus the reference daemon's own behaviour (default: reference in "
        "process with the default implementation, control otherwise)")
    parser.add_argument("--rules", metavar="IDS", help="only these rules, e.g. W1,R5")
    parser.add_argument("--tags", metavar="EXPR",
                        help="only scenarios whose tags match EXPR, e.g. 'event_stream and not W15'")
    parser.add_argument(
        "--scenario", action="append", default=[], metavar="ID",
        help="only the scenarios whose id matches ID, a pattern like the known lists' (repeatable); "
        "a failure's report line gives the one that reruns it alone")
    parser.add_argument(
        "--known-failing", metavar="FILE",
        help="scenarios expected to fail, as patterns over scenario ids (one per line, # "
        "comments; a bare rule id means all its scenarios): reported, not failed; one that "
        "passes fails the run")
    parser.add_argument(
        "--known-flaky", metavar="FILE",
        help="scenarios known to be flaky, same patterns: retried when they fail, reported, "
        "never failing the run")
    parser.add_argument("--allow-skips", action="store_true",
                        help="do not count skipped rules against the run")
    parser.add_argument(
        "--scenario-timeout", type=_positive, default=DEFAULT_SCENARIO_TIMEOUT_S, metavar="S",
        help="fail a scenario that runs longer than S seconds (default %(default)g)")
    parser.add_argument(
        "--timeout", type=_positive, default=runner.DEFAULT_RUN_TIMEOUT_S, metavar="S",
        help="stop the whole run after S seconds; what did not run is 'not run' "
        "(default %(default)g)")
    parser.add_argument(
        "--explore", type=_positive, metavar="SECONDS",
        help="instead of the feature files: drive the daemon --server-cmd starts (with its control "
        "service) through random sequences of operations for SECONDS, check every answer against a "
        "model of the contract, and print a failure, shrunk, as a Gherkin scenario naming the rule "
        "it breaks. Exit code 0 nothing found (no verdict on any rule), 1 a counterexample, 2 it "
        "could not run")
    parser.add_argument(
        "--explore-shrink", type=_positive, metavar="SECONDS",
        help="with --explore: how long shrinking a counterexample may take once found (default: "
        "as long as --explore)")
    parser.add_argument(
        "--seed", type=int, metavar="N",
        help="with --explore: the seed of its random choices (default: a random one, printed)")
    parser.add_argument(
        "--report", default="conformance-report", metavar="DIR", type=Path,
        help="where summary.md, junit.xml and results.json go (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.server_env and not args.server_cmd:
        parser.error("--server-env is the environment of the daemon --server-cmd starts: "
                     "give --server-cmd too")
    if args.explore is not None or args.seed is not None or args.explore_shrink is not None:
        return _explore(parser, args)
    rules = [r.strip() for r in args.rules.split(",") if r.strip()] if args.rules else None
    options = runner.Options(
        report=args.report, server_cmd=args.server_cmd, target=args.target,
        implementation=args.implementation, profile=args.profile, rules=rules, tags=args.tags,
        known_failing=args.known_failing, known_flaky=args.known_flaky,
        allow_skips=args.allow_skips, scenario_timeout=args.scenario_timeout,
        timeout=args.timeout, scenarios=args.scenario,
        argv=list(sys.argv[1:] if argv is None else argv),
        repo_origin=args.repo_origin, server_env=dict(args.server_env))
    return runner.run(options)


def _explore(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.explore is None:
        parser.error("--seed and --explore-shrink go with --explore: give --explore SECONDS too")
    if not args.server_cmd:
        parser.error("--explore needs --server-cmd: it kills and restarts the daemon, and drives "
                     "it through its control service")
    from . import explorer  # imports Hypothesis, which only the explorer needs

    return explorer.explore(args.server_cmd, args.explore, args.seed,
                            environment.Settings(server_env=dict(args.server_env)).daemon_env(),
                            shrink_seconds=args.explore_shrink)


if __name__ == "__main__":
    sys.exit(main())
