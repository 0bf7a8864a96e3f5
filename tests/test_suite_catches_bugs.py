"""The suite must be able to fail: run the scenarios against each
deliberately broken implementation and check the rule it breaks goes red."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import broken_job_managers
import broken_servicers
import pytest
from conformance_run import conformance

WATCH_RULES = ",".join(f"W{n}" for n in range(1, 9))


def _failed(verdict) -> set[str]:
    return {rule for rule, outcome in verdict.rules.items() if outcome == "FAIL"}


def test_reference_servicer_passes_every_watch_job_rule(tmp_path):
    verdict = conformance(tmp_path, "--rules", WATCH_RULES, "--tags", "scripted")
    assert verdict.code == 0, verdict.output()
    assert verdict.rules == {f"W{n}": "PASS" for n in range(1, 9)}


@pytest.mark.slow
def test_each_broken_servicer_turns_its_rule_red(tmp_path):
    names = sorted(broken_servicers.EXPECTED)
    with ThreadPoolExecutor(max_workers=2) as pool:
        verdicts = dict(zip(names, pool.map(
            lambda name: conformance(tmp_path / name, "--rules", WATCH_RULES, "--tags", "scripted",
                                     "--implementation", f"tests.broken_servicers:{name}"),
            names)))
    for name, verdict in verdicts.items():
        assert len(verdict.rules) == 8, f"{name}: not all eight rules ran: {verdict.output()}"
        assert verdict.code == 1, f"{name}: exit code {verdict.code}"
    # Each must fail at least the rules it breaks. (Exactly those, in a quiet
    # run; a loaded machine can also trip a one-second deadline elsewhere.)
    missed = {name: sorted(broken_servicers.EXPECTED[name] - _failed(verdict))
              for name, verdict in verdicts.items()
              if broken_servicers.EXPECTED[name] - _failed(verdict)}
    assert not missed, f"rules not caught, by broken servicer: {missed}"


@pytest.mark.slow
def test_each_broken_job_manager_is_caught(tmp_path):
    names = sorted(broken_job_managers.EXPECTED)
    with ThreadPoolExecutor(max_workers=2) as pool:
        verdicts = dict(zip(names, pool.map(
            lambda name: conformance(tmp_path / name, "--tags", "event_stream",
                                     "--implementation", f"tests.broken_job_managers:{name}"),
            names)))
    missed = {name: sorted(_failed(verdict)) for name, verdict in verdicts.items()
              if broken_job_managers.EXPECTED[name] not in _failed(verdict)}
    assert not missed, f"broken job managers not caught by their rule (rules that failed): {missed}"
