"""Runs the suite against each mutant on each of its paths and tells which
it killed: a mutant is killed when the runner exits 1 with one of the
mutant's rules FAIL. One that survives (exit 0), gives no verdict (exit 2)
or outlives its time limit (a hang the suite failed to bound) fails the
harness. A variant that stays correct must pass instead: exit 0, every rule
PASS."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .catalogue import BLACK_BOX, IN_PROCESS, PATHS, Mutant

ROOT = Path(__file__).resolve().parents[2]
# The suite's own clock fails a hung scenario long before this.
RUN_TIMEOUT_S = 900
SCENARIO_TIMEOUT_S = 90


@dataclass
class Outcome:
    mutant: str
    path: str
    verdict: str  # killed, survived, no verdict, hung; passed, failed a correct variant
    failed_rules: list[str]
    seconds: float
    detail: str = ""
    failed_scenarios: tuple[str, ...] = ()  # the ids of the scenarios that caught it

    @property
    def as_expected(self) -> bool:
        """Killed, or, for a variant that stays correct, passed."""
        return self.verdict in ("killed", "passed")


def run_one(mutant: Mutant, path: str, report_dir: Path) -> Outcome:
    report = report_dir / f"{mutant.name}-{path}"
    command = [sys.executable, "-m", "choo_conformance.cli", "--report", str(report),
               "--rules", ",".join(mutant.rules), "--scenario-timeout", str(SCENARIO_TIMEOUT_S)]
    if mutant.tags:
        command += ["--tags", mutant.tags]
    if path == IN_PROCESS:
        command += ["--implementation", "tests.mutants.implementation"]
    else:
        daemon = shlex.join([sys.executable, "-m", "tests.mutants.daemon", mutant.name])
        command += ["--server-cmd", f"{daemon} --socket {{socket}} --db {{db}}"]
        if path == BLACK_BOX:
            command += ["--profile", "black-box"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CHOO_MUTANT": mutant.name}
    started = time.monotonic()
    try:
        run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return Outcome(mutant.name, path, "hung", [], time.monotonic() - started,
                       f"the run outlived {RUN_TIMEOUT_S} s")
    seconds = time.monotonic() - started
    results_path = report / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    # A blocked rule is red too: the defect kept its scenarios from their check.
    failed = [r["id"] for r in results.get("rules", []) if r["verdict"] in ("FAIL", "BLOCKED")]
    catchers = tuple(s["id"] for s in results.get("scenarios", []) if s["verdict"] == "FAIL")
    detail = (run.stdout[-1500:] + run.stderr[-1500:]).strip()
    if run.returncode == 2 and not [s for s in results.get("scenarios", []) if s["verdict"] != "N/A"]:
        # Nothing of its rules runs on this path (the control service, a
        # scripted job manager, a daemon's own process): the path cannot see it.
        return Outcome(mutant.name, path, "cannot run here", failed, seconds, detail)
    if mutant.stays_correct:
        if run.returncode == 0 and failed == []:
            return Outcome(mutant.name, path, "passed", failed, seconds)
        return Outcome(mutant.name, path, "failed a correct variant", failed, seconds, detail,
                       failed_scenarios=catchers)
    if run.returncode == 1 and set(failed) & set(mutant.rules):
        return Outcome(mutant.name, path, "killed", failed, seconds, failed_scenarios=catchers)
    verdict = "survived" if run.returncode == 0 else "no verdict"
    if run.returncode == 1:
        verdict = "survived"  # it failed, but not by the rules that should catch it
    return Outcome(mutant.name, path, verdict, failed, seconds, detail)


def run_all(mutants: list[Mutant], paths: tuple[str, ...], report_dir: Path, workers: int = 2,
            on_outcome=None, every_path: bool = False) -> list[Outcome]:
    """Each mutant on each of its paths (every_path: on every path there is,
    for the matrix of what each path can see)."""
    jobs = [(m, p) for m in mutants for p in PATHS if p in paths and (every_path or p in m.paths)]
    outcomes: list[Outcome] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for outcome in pool.map(lambda job: run_one(job[0], job[1], report_dir), jobs):
            outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
    return outcomes
