"""The suite must be able to fail: run features/watch_job.feature against each
deliberately broken servicer and check the rule it breaks goes red."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import broken_job_managers
import broken_servicers
from choo_conformance.cucumber import read_results

ROOT = Path(__file__).resolve().parent.parent


def run_suite(tmp_path: Path, factory: str, feature_test: str,
              option: str = "--servicer") -> dict[str, str]:
    """Runs one feature's scenarios with the factory given to `option`;
    returns rule -> status (failed if any scenario of the rule failed)."""
    report = tmp_path / f"{factory.rsplit(':', 1)[-1]}.json"
    subprocess.run(
        [sys.executable, "-m", "pytest", feature_test, f"{option}={factory}",
         f"--cucumberjson={report}", "-q", "-p", "no:randomly"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    results: dict[str, str] = {}
    for result in read_results(report):
        for rule in result.rules:
            if results.get(rule) != "failed":
                results[rule] = result.status
    return results


def test_reference_servicer_passes_every_watch_job_rule(tmp_path):
    results = run_suite(tmp_path, "choo_conformance.in_process:default_servicer", "steps/choo_conformance/scenarios/test_watch_job.py")
    assert results == {f"W{n}": "passed" for n in range(1, 9)}


@pytest.mark.slow
def test_each_broken_servicer_turns_its_rule_red(tmp_path):
    names = sorted(broken_servicers.EXPECTED)
    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = dict(zip(names, pool.map(
            lambda name: run_suite(tmp_path, f"tests.broken_servicers:{name}", "steps/choo_conformance/scenarios/test_watch_job.py"),
            names,
        )))
    failed = {name: {rule for rule, status in results.items() if status == "failed"}
              for name, results in outcomes.items()}
    for name, results in outcomes.items():
        assert len(results) == 8, f"{name}: the suite did not run all eight rules: {results}"
    # Each must fail at least the rules it breaks. (Exactly those, in a quiet
    # run; a loaded machine can also trip a one-second deadline elsewhere.)
    missed = {name: sorted(broken_servicers.EXPECTED[name] - rules)
              for name, rules in failed.items() if broken_servicers.EXPECTED[name] - rules}
    assert not missed, f"rules not caught, by broken servicer: {missed}; all failures: {failed}"


@pytest.mark.slow
def test_each_broken_job_manager_is_caught(tmp_path):
    names = sorted(broken_job_managers.EXPECTED)
    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = dict(zip(names, pool.map(
            lambda name: run_suite(tmp_path, f"tests.broken_job_managers:{name}",
                                   "steps/choo_conformance/scenarios/test_event_stream.py", option="--job-manager"),
            names,
        )))
    failed = {name: {rule for rule, status in results.items() if status == "failed"}
              for name, results in outcomes.items()}
    missed = {name: rules for name, rules in failed.items()
              if broken_job_managers.EXPECTED[name] not in rules}
    assert not missed, f"broken job managers not caught by their rule (rules that failed): {missed}"
