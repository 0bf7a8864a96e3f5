"""`choo-conformance`: per-rule verdicts, every exit path, the known-failing
and known-flaky lists, the reports, and its time limits against daemons that
hang. Each runs the real runner in a process of its own and reads its
results.json (tests/conformance_run.py)."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conformance_run import (
    REFERENCE_DAEMON,
    ROOT,
    conformance,
    daemon_folders_left,
    writing_down_databases,
)

from choo_conformance.process import DaemonProcess, stat_fields
from choo_conformance.wait import wait_until


@pytest.mark.long
def test_passing_rules_exit_0_with_every_report(tmp_path):
    verdict = conformance(tmp_path, "--rules", "W3,W11,W10")
    assert verdict.code == 0, verdict.output()
    lines = verdict.stdout.splitlines()
    assert any(line.startswith("PASS    W3 ") for line in lines)
    assert any(line.startswith("PASS    W11 ") for line in lines)
    assert lines[-1].startswith("exit code 0")
    assert verdict.rules == {"W3": "PASS", "W10": "PASS", "W11": "PASS"}

    summary = (tmp_path / "summary.md").read_text()
    # Each scenario with its feature and, for an outline row, its example values.
    assert "| W10 | event_stream | from_sequence is inclusive; 0 and 1 both start at the first event |" \
        " from=3, expected=3-6 | PASS" in summary
    cases = ET.parse(tmp_path / "junit.xml").getroot().iter("testcase")
    rules_of = {case.get("name"): [p.get("value") for p in case.iter("property") if p.get("name") == "rule"]
                for case in cases}
    assert rules_of["event_stream/from_sequence is inclusive; 0 and 1 both start at the first "
                    "event[from=3, expected=3-6]"] == ["W10"]
    scenario_ids = [s["ids"] for s in verdict.results["scenarios"]]
    assert ["W10/event_stream/from_sequence is inclusive; 0 and 1 both start at the first "
            "event[from=0, expected=1-6]"] in scenario_ids


def test_pytest_plugins_installed_beside_the_suite_do_not_change_what_runs(tmp_path):
    # A plugin any distribution in the environment could register (an
    # implementer's own, pytest-randomly, ...): the suite loads only its own.
    site = tmp_path / "site"
    (site / "stray_plugin-1.0.dist-info").mkdir(parents=True)
    (site / "stray_plugin-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: stray-plugin\nVersion: 1.0\n")
    (site / "stray_plugin-1.0.dist-info" / "entry_points.txt").write_text(
        "[pytest11]\nstray = stray_plugin\n")
    (site / "stray_plugin.py").write_text(
        "def pytest_runtest_setup(item):\n"
        "    raise RuntimeError('a plugin the suite never asked for ran')\n")
    verdict = conformance(tmp_path / "report", "--rules", "W1",
                          env={"PYTHONPATH": f"{ROOT}:{site}"})
    assert verdict.code == 0, verdict.output()
    assert verdict.rules == {"W1": "PASS"}


# The reference with a W8 bug: a terminal job watched from 0 replays its history.
W8_BUG = ("--implementation", "tests.mutants.implementation")
W8_BUG_ENV = {"CHOO_MUTANT": "terminal-from-zero-replays"}


def test_a_failing_rule_exits_1_and_names_what_differed(tmp_path):
    verdict = conformance(tmp_path, "--rules", "W8", *W8_BUG, env=W8_BUG_ENV)
    assert verdict.code == 1, verdict.output()
    assert "FAIL    W8 " in verdict.stdout
    failed = [s for s in verdict.results["scenarios"] if s["verdict"] == "FAIL"]
    assert failed and all(s["rules"] == ["W8"] for s in failed)
    assert all(s["detail"] for s in failed)


@pytest.mark.long
def test_a_failure_found_in_clean_up_counts_against_its_rule(tmp_path):
    # One scenario: each that leaves a subscription open waits out the
    # clean-up's deadline.
    verdict = conformance(tmp_path, "--rules", "W3", "--tags", "not scripted", "--implementation",
                          "tests.runner_doubles:never_releases")
    assert verdict.code == 1, verdict.output()
    assert verdict.rules["W3"] == "FAIL"
    details = [s["detail"] for s in verdict.results["scenarios"] if s["verdict"] == "FAIL"]
    assert details and all(d.startswith("in clean-up:") and "open subscriptions" in d
                           for d in details), details


@pytest.mark.long
def test_known_failing_patterns(tmp_path):
    known = tmp_path / "known-failing.txt"
    known.write_text(
        "# the W8 bug of this implementation\n"
        "W8/watch_job*/*  # both W8 scenarios fail\n"
        "W3               # W3 passes: reported as XPASS, which fails the run\n"
        "W99\n".replace("W99\n", "") +
        "*/no_such_feature/*\n")
    verdict = conformance(tmp_path / "run", "--rules", "W8,W3", "--known-failing", str(known),
                          *W8_BUG, env=W8_BUG_ENV)
    assert verdict.code == 1, verdict.output()
    assert verdict.rules == {"W8": "XFAIL", "W3": "XPASS"}
    assert "take it off the known-failing list" in verdict.stdout
    assert verdict.results["unmatched"]["known-failing"] == ["*/no_such_feature/*"]
    assert "matched no scenario" in verdict.stdout

    # Without the XPASS entry the run passes: the known failure does not fail it.
    known.write_text("W8/watch_job*/*\n")
    verdict = conformance(tmp_path / "again", "--rules", "W8,W3", "--known-failing", str(known),
                          *W8_BUG, env=W8_BUG_ENV)
    assert verdict.code == 0, verdict.output()
    assert verdict.rules == {"W8": "XFAIL", "W3": "PASS"}


@pytest.mark.long
def test_a_daemon_slow_to_begin_shutting_down_passes_r8(tmp_path):
    # Until Shutdown answers, the client cannot know it has arrived: a
    # Health call sent after it may be answered first, and healthy.
    verdict = conformance(tmp_path, "--rules", "R8", "--implementation",
                          "tests.runner_doubles:late_shutdown")
    assert verdict.code == 0, verdict.output()
    assert verdict.rules == {"R8": "PASS"}


@pytest.mark.long
@pytest.mark.parametrize("double", ["stop_answers_when_commands_end", "cancelled_before_commands_end"])
def test_either_graceful_stop_r5_allows_passes(tmp_path, double):
    # R5 leaves open whether a graceful StopJob answers at once or once the
    # running commands have ended, and when the job reads cancelled: the
    # scenario must neither wait for the answer before letting the command
    # end, nor expect the command to have ended the moment the job reads
    # cancelled.
    verdict = conformance(tmp_path, "--rules", "R5", "--implementation", f"tests.runner_doubles:{double}")
    assert verdict.code == 0, verdict.output()
    assert verdict.rules == {"R5": "PASS"}


def test_a_watch_taken_up_late_fails_no_scripted_scenario(tmp_path):
    # Correct, but 1.5 s late to serve its second watch: W7's scenario opens
    # two and judges the first one's release while the second may not have
    # subscribed yet.
    verdict = conformance(tmp_path, "--tags", "scripted", "--implementation",
                          "tests.runner_doubles:late_second_watch")
    assert verdict.code == 0, verdict.output()


def test_a_known_flaky_scenario_is_retried_and_never_fails_the_run(tmp_path):
    flaky = tmp_path / "known-flaky.txt"
    flaky.write_text("W1/watch_job/*\n")
    args = ("--rules", "W1,W2", "--tags", "scripted", "--implementation",
            "tests.runner_doubles:flaky_once")
    verdict = conformance(tmp_path / "listed", *args, "--known-flaky", str(flaky),
                          env={"CHOO_TEST_FLAG": str(tmp_path / "flag-listed")})
    assert verdict.code == 0, verdict.output()
    (w1,) = [s for s in verdict.results["scenarios"] if s["rules"] == ["W1"]]
    assert (w1["verdict"], w1["attempts"]) == ("FLAKY", 2)

    verdict = conformance(tmp_path / "unlisted", *args,
                          env={"CHOO_TEST_FLAG": str(tmp_path / "flag-unlisted")})
    assert verdict.code == 1 and verdict.rules["W1"] == "FAIL", verdict.output()


@pytest.mark.parametrize("args, says", [
    (("--rules", "W99"), "not rule ids of the contract: W99"),
    (("--tags", "no_such_tag"), "no scenario selected"),
    (("--tags", "W1 and and"), "could not be collected"),
    (("--implementation", "no_such_module"), "cannot import 'no_such_module'"),
    (("--server-cmd", f"{sys.executable} -c 'raise SystemExit(3)'"), "did not answer Health"),
    # Waits out the 10 s Health deadline.
    pytest.param(("--target", "unix:///nonexistent/daemon.sock"), "no daemon answers Health",
                 marks=pytest.mark.long),
])
def test_no_verdict_exits_2(tmp_path, args, says):
    verdict = conformance(tmp_path, *args)
    assert verdict.code == 2, verdict.output()
    assert says in verdict.stderr, verdict.output()


def test_bad_arguments_exit_2(tmp_path):
    verdict = conformance(tmp_path, "--timeout", "soon")
    assert verdict.code == 2 and "not a number of seconds" in verdict.stderr


def test_a_list_naming_an_unknown_rule_exits_2(tmp_path):
    known = tmp_path / "known.txt"
    known.write_text("W42\n")
    verdict = conformance(tmp_path, "--known-failing", str(known))
    assert verdict.code == 2 and "W42" in verdict.stderr


@pytest.mark.slow
def test_skipped_rules_make_the_run_non_zero_unless_allowed(tmp_path):
    daemon = DaemonProcess(REFERENCE_DAEMON).start()
    try:
        args = ("--target", daemon.address, "--rules", "W9,W17")
        verdict = conformance(tmp_path / "strict", *args)
        assert verdict.code == 2, verdict.output()
        assert verdict.rules == {"W9": "PASS", "W17": "SKIP"}
        summary = (tmp_path / "strict" / "summary.md").read_text()
        assert "## Skipped" in summary and "not against --target" in summary

        verdict = conformance(tmp_path / "allowed", *args, "--allow-skips")
        assert verdict.code == 0, verdict.output()
    finally:
        daemon.close()


def _described(pids: list[int]) -> str:
    """Each process: its state, parent and command line, to tell whose it was."""
    lines = []
    for pid in pids:
        try:
            stat = stat_fields(pid)
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            lines.append(f"pid {pid} state {stat[0]} parent {stat[1]} group {stat[2]}: {command}")
        except OSError:
            lines.append(f"pid {pid}: gone")
    return "\n".join(lines)


def _daemons_left(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


HANGING = f"{sys.executable} {ROOT / 'tests' / 'hanging_daemon.py'}"


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.parametrize("hang, rule, tags, scenario_timeout, says", [
    # The call's own deadline (10 s) comes first. One scenario: each waits
    # out that deadline.
    ("append-while-watched", "W15", "not daemon_capacity and not daemon_process", "60",
     "AppendEvents did not answer within 10 s"),
    # Nothing the steps wait for has a shorter deadline than the scenario.
    ("stream-forever", "W14", "not volume", "8",
     "timed out after 8 s in step 'Then "),
])
def test_a_hanging_daemon_fails_its_rule_in_time_and_leaves_nothing(tmp_path, hang, rule, tags,
                                                                   scenario_timeout, says):
    marker = f"--tag {tmp_path}"  # this test's daemons, not those of one running beside it
    verdict = conformance(tmp_path, "--server-cmd", f"{HANGING} --hang {hang} --socket {{socket}} "
                          f"--db {{db}} {marker}", "--rules", rule, "--tags", tags,
                          "--scenario-timeout", scenario_timeout, timeout=300)
    assert verdict.code == 1, verdict.output()
    assert verdict.rules == {rule: "FAIL"}
    failed = [s["detail"] for s in verdict.results["scenarios"] if s["verdict"] == "FAIL"]
    assert failed and all(says in detail for detail in failed), failed
    assert wait_until(lambda: not _daemons_left(marker), 10), "a daemon outlived the run"


@pytest.mark.slow
@pytest.mark.long
def test_a_run_stopped_at_its_time_limit_leaves_no_daemon_and_no_folder(tmp_path):
    # The pytest process is stopped in a scenario that waits on a daemon
    # streaming for ever: the runner itself must end that daemon and remove
    # the folder of its socket and database. Each daemon writes its
    # database down as it starts.
    started = tmp_path / "started.txt"
    marker = f"--tag {tmp_path}"  # this test's daemons, not those of one running beside it
    command = writing_down_databases(
        f"{HANGING} --hang stream-forever --socket {{socket}} --db {{db}} {marker}", started)
    verdict = conformance(tmp_path / "report", "--server-cmd", command, "--rules", "W14",
                          "--tags", "not volume", "--timeout", "15", timeout=120)
    assert verdict.code == 1, verdict.output()
    assert "the run's time limit of 15 s ran out" in verdict.output()
    assert wait_until(lambda: not _daemons_left(marker), 10), (
        f"a daemon outlived the run:\n{_described(_daemons_left(marker))}\n"
        f"{verdict.output()[-1500:]}\nprogress:\n"
        + "\n".join(line for line in (tmp_path / "report" / "progress.jsonl").read_text().splitlines()
                    if '"daemon"' in line or '"started"' in line or '"finished"' in line))
    databases, left = daemon_folders_left(started)
    assert len(databases) >= 2, databases  # the profile's probe, and the suite's
    assert not left, f"the run left the folders of these databases: {left}"


@pytest.mark.slow
@pytest.mark.long
def test_a_pytest_process_that_stops_answering_is_stopped_and_the_run_goes_on(tmp_path):
    verdict = conformance(tmp_path, "--rules", "W11,W9", "--scenario-timeout", "3",
                          "--implementation", "tests.runner_doubles:deaf_once",
                          env={"CHOO_TEST_FLAG": str(tmp_path / "flag")}, timeout=120)
    assert verdict.code == 1, verdict.output()
    assert verdict.rules == {"W9": "FAIL", "W11": "PASS"}
    (failed,) = [s for s in verdict.results["scenarios"] if s["verdict"] == "FAIL"]
    assert "the suite had to be stopped" in failed["detail"], failed["detail"]
    assert "in step 'Given the daemon keeps its events in a fresh database'" in failed["detail"]


@pytest.mark.slow
@pytest.mark.long
def test_the_run_time_limit_fails_the_scenario_it_stops_and_lists_the_rest(tmp_path):
    verdict = conformance(tmp_path, "--rules", "W9,W11", "--timeout", "20", "--scenario-timeout", "60",
                          "--implementation", "tests.runner_doubles:deaf_once",
                          env={"CHOO_TEST_FLAG": str(tmp_path / "flag")}, timeout=120)
    assert verdict.code == 1, verdict.output()
    assert verdict.rules == {"W9": "FAIL", "W11": "NOT RUN"}
    applicable = [s["verdict"] for s in verdict.results["scenarios"] if s["verdict"] != "N/A"]
    assert applicable.count("FAIL") == 1 and set(applicable) == {"FAIL", "NOT RUN"}


@pytest.mark.long
def test_checkpoints_an_implementation_lacks_make_their_examples_not_applicable(tmp_path):
    # The seam's checkpoints are optional: without them W13 is judged by
    # its other scenarios, and the report says why the examples did not apply.
    verdict = conformance(tmp_path, "--rules", "W13", "--implementation",
                          "tests.runner_doubles:without_checkpoints")
    assert verdict.code == 0, verdict.output()
    assert verdict.rules == {"W13": "PASS"}
    scenarios = [s for s in verdict.results["scenarios"] if "hand-over reach it" in s["scenario"]]
    assert scenarios and all(s["verdict"] == "N/A" for s in scenarios), scenarios
    assert all("offers no checkpoints" in s["detail"] for s in scenarios), scenarios


@pytest.mark.slow
@pytest.mark.long
def test_a_listed_checkpoint_the_watch_never_passes_leaves_w13_undecided(tmp_path):
    # An implementation that lists a point and never runs what is asked of
    # it has not been checked there: no verdict, never a pass.
    verdict = conformance(tmp_path, "--rules", "W13", "--scenario", "*point=caught-up*",
                          "--implementation", "tests.runner_doubles:checkpoints_never_reached")
    assert verdict.code == 2, verdict.output()
    assert verdict.rules == {"W13": "SKIP"}
    skipped = [s for s in verdict.results["scenarios"] if s["verdict"] == "SKIP"]
    assert len(skipped) == 3, verdict.results["scenarios"]
    assert all("did not pass the checkpoint 'caught-up'" in s["detail"] for s in skipped), skipped
