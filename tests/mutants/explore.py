"""What the explorer alone finds: `choo-conformance --explore SECONDS`
against each mutant of the catalogue that runs as a daemon, with a fixed
seed. Reports found (the rule it named, and when) or not found; a correct
variant must give it nothing to find.

    python -m tests.mutants --explore 60 [--only NAME,...] [--seed N]
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .catalogue import DAEMON, Mutant
from .harness import ROOT

DEFAULT_SEED = 20260101
# Shrinking a counterexample once found: enough for the short ones these
# mutants give; the budget counts finding, not shrinking.
SHRINK_S = 15.0
# Past the budget and the shrinking: starting and stopping the daemon.
MARGIN_S = 60.0
_FOUND = re.compile(r"COUNTEREXAMPLE: the daemon breaks (\S+).*?, in (\d+) operations")
_AFTER = re.compile(r"found after (\d+) s")


@dataclass
class Explored:
    mutant: str
    exit_code: int | None  # None: the explorer outlived its bounds
    rule: str = ""
    operations: int = 0
    found_after_s: int | None = None
    seconds: float = 0.0
    output: str = ""

    @property
    def verdict(self) -> str:
        if self.exit_code == 1:
            return "found"
        if self.exit_code == 0:
            return "not found"
        return "could not run" if self.exit_code == 2 else "hung"


def command(mutant: Mutant, seconds: float, seed: int) -> list[str]:
    daemon = shlex.join([sys.executable, "-m", "tests.mutants.daemon", mutant.name])
    return [sys.executable, "-m", "choo_conformance.cli", "--explore", f"{seconds:g}",
            "--explore-shrink", f"{SHRINK_S:g}", "--seed", str(seed),
            "--server-cmd", f"{daemon} --socket {{socket}} --db {{db}}"]


def explore_one(mutant: Mutant, seconds: float, seed: int) -> Explored:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    try:
        run = subprocess.run(command(mutant, seconds, seed), cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=seconds + SHRINK_S + MARGIN_S)
    except subprocess.TimeoutExpired:
        return Explored(mutant.name, None, seconds=time.monotonic() - started)
    result = Explored(mutant.name, run.returncode, seconds=time.monotonic() - started,
                      output=run.stdout + run.stderr)
    found = _FOUND.search(run.stdout)
    if found:
        result.rule, result.operations = found.group(1), int(found.group(2))
    after = _AFTER.search(run.stdout)
    if after:
        result.found_after_s = int(after.group(1))
    return result


def explore_all(mutants: list[Mutant], seconds: float, seed: int, workers: int) -> int:
    chosen = [m for m in mutants if DAEMON in m.paths]
    print(f"the explorer alone, {seconds:g} s per mutant (seed {seed}), {len(chosen)} daemon mutants:",
          flush=True)
    rows: list[tuple[Mutant, Explored]] = []

    def show(mutant: Mutant, result: Explored) -> None:
        expected = "nothing found" if mutant.stays_correct else ",".join(mutant.rules)
        found = (f"{result.rule} in {result.operations} operations, after {result.found_after_s} s"
                 if result.exit_code == 1 else "-")
        print(f"{result.verdict:<12} {mutant.name:<32} must fail: {expected:<14} found: {found}", flush=True)
        if result.exit_code not in (0, 1):
            print("    " + result.output[-1500:].replace("\n", "\n    "), flush=True)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for mutant, result in zip(chosen, pool.map(lambda m: explore_one(m, seconds, seed), chosen)):
            rows.append((mutant, result))
            show(mutant, result)
    print("\n| mutant | must fail | the explorer |\n|---|---|---|")
    for mutant, result in rows:
        if result.exit_code == 1:
            cell = (f"found: {result.rule}, {result.operations} operations, after "
                    f"{result.found_after_s} s")
        else:
            cell = result.verdict
        expected = "(correct: nothing)" if mutant.stays_correct else ", ".join(mutant.rules)
        print(f"| `{mutant.name}` | {expected} | {cell} |")
    wrong = [m.name for m, r in rows if m.stays_correct and r.exit_code != 0]
    broken = [m.name for m, r in rows if r.exit_code not in (0, 1)]
    if wrong or broken:
        print("the explorer reported a correct variant, or could not run: " + ", ".join(wrong + broken))
        return 1
    return 0
