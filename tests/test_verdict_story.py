"""What a red says: a failure names the step, the call and what came back;
a scenario whose set-up the daemon never let it build is BLOCKED, not
failed, and the blocked rules are grouped by that one cause, first; every
failure says how to rerun it alone (--scenario), and that command reruns
exactly it. The implementations are the reference with one upstream defect
each (tests/runner_doubles.py)."""

from __future__ import annotations

import shlex
import sys
import xml.etree.ElementTree as ET

import pytest
from conformance_run import ROOT, conformance

from choo_conformance.process import DaemonProcess

START_JOB_INTERNAL = ("--implementation", "tests.runner_doubles:start_job_internal")
NEVER_RUNS = ("--implementation", "tests.runner_doubles:no_unit_starts")
# The rules whose scenarios all need a job that StartJob started.
NEED_A_STARTED_JOB = ("R2", "R5", "R6", "R7", "R9", "R11")


@pytest.fixture(scope="module")
def refused(tmp_path_factory):
    report = tmp_path_factory.mktemp("refused")
    return report, conformance(report, "--rules", ",".join(("R1", "R3", *NEED_A_STARTED_JOB)),
                               *START_JOB_INTERNAL)


def test_a_refused_start_job_blocks_the_rules_that_need_a_job_and_fails_r3(refused):
    _, verdict = refused
    assert verdict.code == 1, verdict.output()
    assert verdict.rules == {"R1": "PASS", "R3": "FAIL", **dict.fromkeys(NEED_A_STARTED_JOB, "BLOCKED")}


def test_the_one_cause_comes_first_with_the_rules_it_blocked(refused):
    _, verdict = refused
    tail = verdict.stdout[verdict.stdout.index("\n\n"):]
    first = tail.strip().splitlines()[0]
    assert first.startswith(f"BLOCKED {len(NEED_A_STARTED_JOB)} rules (R2, R5, R6, R7, R9, R11) by one cause"), tail
    assert 'StartJob answered INTERNAL "could not create the job\'s worktree"' in first


def test_a_failure_names_the_step_the_call_and_the_answer_never_a_python_exception(refused):
    _, verdict = refused
    scenarios = verdict.results["scenarios"]
    wrong = [s for s in scenarios if s["verdict"] in ("FAIL", "BLOCKED")]
    assert wrong
    for scenario in wrong:
        story = "\n".join(scenario["story"])
        assert story.startswith("failed at: "), story
        assert "StartJob {tasks_dir:" in story and "-> INTERNAL" in story, story
        for python_error in ("AttributeError", "IndexError", "TypeError", "KeyError"):
            assert python_error not in scenario["detail"], scenario["detail"]


def test_summary_and_junit_say_blocked(refused):
    report, _ = refused
    summary = (report / "summary.md").read_text()
    assert summary.index("## Blocked: look at these first") < summary.index("## Rules")
    assert "## What happened" in summary and "Rerun it alone: `choo-conformance" in summary
    cases = ET.parse(report / "junit.xml").getroot().iter("testcase")
    errors = [c for c in cases if c.find("error") is not None]
    assert errors and all(c.find("failure") is None for c in errors)


def test_the_rerun_line_reruns_that_scenario_alone(refused, tmp_path):
    _, verdict = refused
    line = next(text for text in verdict.stdout.splitlines() if "rerun it alone:" in text)
    argv = shlex.split(line.split("rerun it alone:", 1)[1])
    assert argv[0] == "choo-conformance"
    args = [a for a in argv[1:]]
    report = args.index("--report")
    del args[report:report + 2]
    again = conformance(tmp_path, *args)
    assert len([s for s in again.results["scenarios"] if s["verdict"] != "N/A"]) == 1, again.output()
    assert again.code == 1


@pytest.mark.long
def test_a_daemon_whose_jobs_never_run_is_blocked_by_that_in_little_more_than_one_wait(tmp_path):
    verdict = conformance(tmp_path, "--rules", "R5,R7,R8", *NEVER_RUNS)
    assert verdict.code == 1, verdict.output()
    assert verdict.rules == {"R5": "BLOCKED", "R7": "BLOCKED", "R8": "BLOCKED"}, verdict.output()
    waits = [s["detail"] for s in verdict.results["scenarios"] if s["verdict"] == "BLOCKED"]
    # The whole wait once; after that the same precondition is given half a second.
    assert sum("waited 30 s" in w for w in waits) == 1, waits
    assert all("waited 0.5 s" in w for w in waits if "waited 30 s" not in w), waits
    # One cause, however many steps it showed in.
    assert len([line for line in verdict.stdout.splitlines() if line.startswith("BLOCKED ")
                and "by one cause" in line]) == 1, verdict.output()


DYING_DAEMON = f"{sys.executable} {ROOT / 'tests' / 'dying_daemon.py'} --socket {{socket}} --db {{db}}"


@pytest.mark.long
def test_a_daemon_that_dies_is_named_in_the_scenario_it_died_in_and_the_next_gets_a_fresh_one(tmp_path):
    verdict = conformance(tmp_path, "--rules", "R3,R5", "--server-cmd",
                          DYING_DAEMON + " --conformance-control")
    assert verdict.code == 1, verdict.output()
    assert verdict.rules["R5"] == "FAIL", verdict.output()
    died = [s for s in verdict.results["scenarios"]
            if "the daemon exited with code 7 during this scenario" in s["detail"]]
    # Each StopJob scenario met a daemon of its own, and it died there.
    assert len(died) >= 2, verdict.output()
    assert all(any("dying: StopJob" in line for line in s["story"]) for s in died)
    # R3 stops its jobs when it is done with them, and that kills this daemon:
    # said of R3's clean-up, not of the scenario after it.
    for scenario in verdict.results["scenarios"]:
        if "R3" in scenario["rules"] and scenario["verdict"] == "FAIL":
            assert "in clean-up: the daemon exited with code 7 while the scenario was cleaned up" in (
                scenario["detail"]), scenario["detail"]


@pytest.mark.long
def test_a_target_that_stops_answering_ends_the_run_there_naming_the_scenario(tmp_path):
    daemon = DaemonProcess(DYING_DAEMON + " --conformance-control").start()
    try:
        verdict = conformance(tmp_path / "report", "--rules", "R5,R6,R7", "--target", daemon.address,
                              "--allow-skips")
    finally:
        daemon.close()
    assert verdict.code == 1, verdict.output()
    assert "stopped answering during" in verdict.stdout, verdict.output()
    verdicts = [s["verdict"] for s in verdict.results["scenarios"]]
    assert "FAIL" in verdicts and "NOT RUN" in verdicts, verdict.output()
    not_run = [s for s in verdict.results["scenarios"] if s["verdict"] == "NOT RUN"]
    assert all("the daemon stopped answering during" in s["detail"] for s in not_run)
