"""make mutants: every mutant of the catalogue, on each of its paths.

    python -m tests.mutants [--only NAME,...] [--path in-process|daemon] [--repeat N]
    python -m tests.mutants --matrix FILE   (every mutant on every path, a Markdown table)
    python -m tests.mutants --explore SECONDS [--only NAME,...] [--seed N]   (explore.py)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from .catalogue import BY_NAME, CATALOGUE, PATHS
from .explore import DEFAULT_SEED, explore_all
from .harness import run_all


def main() -> int:
    parser = argparse.ArgumentParser(prog="make mutants", description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated mutant names")
    parser.add_argument("--path", choices=PATHS)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each, for catch rates")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--report", type=Path, default=None)
    parser.add_argument("--explore", type=float, metavar="SECONDS",
                        help="instead: the explorer alone against each daemon mutant, this long each")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="the explorer's seed")
    parser.add_argument("--matrix", type=Path, metavar="FILE",
                        help="instead: every mutant on every path, whatever paths it names; "
                        "writes the table of what each path sees to FILE")
    args = parser.parse_args()
    mutants = [BY_NAME[n] for n in args.only.split(",")] if args.only else list(CATALOGUE)
    if args.explore:
        return explore_all(mutants, args.explore, args.seed, args.workers)
    paths = (args.path,) if args.path else PATHS
    report = args.report or Path(tempfile.mkdtemp(prefix="mutants-"))
    started = time.monotonic()
    tally: dict[tuple[str, str], list[bool]] = defaultdict(list)
    catchers: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def show(outcome) -> None:
        tally[(outcome.mutant, outcome.path)].append(outcome.as_expected)
        for scenario in outcome.failed_scenarios:
            catchers[(outcome.mutant, outcome.path)][scenario] += 1
        mark = outcome.verdict if outcome.as_expected else outcome.verdict.upper()
        rules = ",".join(outcome.failed_rules) or "-"
        print(f"{mark:<10} {outcome.mutant:<32} {outcome.path:<10} rules failed: {rules:<14} "
              f"{outcome.seconds:6.1f} s", flush=True)
        if not outcome.as_expected and outcome.detail:
            print("           " + outcome.detail.replace("\n", "\n           ")[-1500:], flush=True)

    if args.matrix:
        outcomes = run_all(mutants, paths, report / "matrix", args.workers, show, every_path=True)
        write_matrix(args.matrix, mutants, outcomes)
        print(f"matrix: {args.matrix}")
        return 0
    for attempt in range(args.repeat):
        run_all(mutants, paths, report / f"run-{attempt + 1}", args.workers, show)
    survivors = {key: runs for key, runs in tally.items() if not all(runs)}
    minutes = (time.monotonic() - started) / 60
    print(f"\n{len(tally)} mutant runs, {sum(len(r) for r in tally.values())} in all, "
          f"{minutes:.1f} min; reports in {report}")
    if args.repeat > 1:
        for (name, path), runs in sorted(tally.items()):
            print(f"  {name:<32} {path:<10} as expected {sum(runs)}/{len(runs)}")
            for scenario, count in sorted(catchers[(name, path)].items()):
                print(f"      {count}/{len(runs)}  {scenario}")
    if survivors:
        print("not as expected every time (caught, or for a correct variant passed): " + ", ".join(f"{n} ({p})" for n, p in sorted(survivors)))
        return 1
    print("every mutant was caught and every correct variant passed")
    return 0


def write_matrix(path: Path, mutants, outcomes) -> None:
    cells = {(o.mutant, o.path): o for o in outcomes}

    def cell(mutant, where: str) -> str:
        outcome = cells.get((mutant.name, where))
        if outcome is None:
            return "-"
        word = {"killed": "caught", "passed": "passes (correct)", "survived": "**not caught**",
                "failed a correct variant": "**failed (correct)**"}.get(outcome.verdict, outcome.verdict)
        return word + ("" if where in mutant.paths or outcome.verdict != "killed" else " (not in make mutants)")

    lines = ["| mutant | must fail | " + " | ".join(PATHS) + " |", "|---|---|" + "---|" * len(PATHS)]
    for mutant in mutants:
        lines.append(f"| `{mutant.name}` | {', '.join(mutant.rules)} | "
                     + " | ".join(cell(mutant, where) for where in PATHS) + " |")
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
