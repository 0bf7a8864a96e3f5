"""The explorer (`choo-conformance --explore`): correct daemons give it
nothing to find, planted defects are found and printed as scenarios whose
steps are the feature files' own, naming the rule they break.

make test runs the short ones: the reference daemon and the foreign daemon
with every awkward switch, each for a few seconds, and one planted defect.
`make explore` (CHOO_EXPLORE_TESTS=all) runs every one, and the explorer
against each mutant of the catalogue (tests/mutants/explore.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from choo_conformance.explore_report import NEW_STEP

ROOT = Path(__file__).resolve().parent.parent
FOREIGN = f"{sys.executable} {ROOT / 'tests' / 'foreign_daemon' / 'server.py'} --socket {{socket}} --db {{db}}"
REFERENCE = f"{sys.executable} -m choo_reference.cli daemon --socket {{socket}} --db {{db}} --conformance-control"
SEED = 7
ALL = os.environ.get("CHOO_EXPLORE_TESTS") == "all"
every_run = pytest.mark.skipif(not ALL, reason="make explore runs it (CHOO_EXPLORE_TESTS=all)")


def mutant(name: str) -> str:
    return f"{sys.executable} -m tests.mutants.daemon {name} --socket {{socket}} --db {{db}}"


def explore(server_cmd: str, seconds: float, *extra: str, seed: int = SEED):
    # The explorer's own bounds (budget, shrinking, a deadline on every call)
    # end it well before this.
    return subprocess.run(
        [sys.executable, "-m", "choo_conformance.cli", "--explore", f"{seconds:g}", "--seed", str(seed),
         "--server-cmd", server_cmd, *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=3 * seconds + 120,
        env={**os.environ, "PYTHONPATH": str(ROOT)})


def scenario_steps(output: str) -> list[tuple[str, str, bool]]:
    """(kind, text, marked new) for each step of the printed scenario."""
    steps, kind, new = [], "", False
    for line in output.splitlines():
        line = line.strip()
        if line == NEW_STEP:
            new = True
            continue
        keyword, _, text = line.partition(" ")
        if keyword in ("Given", "When", "Then", "And"):
            kind = kind if keyword == "And" else keyword.lower()
            steps.append((kind, text, new))
            new = False
    return steps


def assert_steps_exist(output: str) -> None:
    """Every step not marked new is one the suite's step modules define."""
    from pytest_bdd.steps import step_function_context_registry

    from choo_conformance import (  # noqa: F401  (they register their steps)
        black_box_steps,
        event_stream_steps,
        lifecycle_steps,
        watch_job_steps,
    )

    contexts = list(step_function_context_registry.values())
    steps = scenario_steps(output)
    assert steps, output
    for kind, text, new in steps:
        if new:
            continue
        assert any(c.type in (None, kind) and c.parser.is_matching(text) for c in contexts), (
            f"the printed step {kind} {text!r} matches no step definition")


def assert_found(run, rules: set[str]) -> None:
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    found = re.search(r"COUNTEREXAMPLE: the daemon breaks (\S+)", run.stdout)
    assert found and found.group(1) in rules, run.stdout[-3000:]
    assert f"Scenario: Found by the explorer (seed {SEED})" in run.stdout
    assert_steps_exist(run.stdout)


def assert_nothing_found(run) -> None:
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-3000:]
    assert "nothing found" in run.stdout
    assert f"seed {SEED}" in run.stdout


# -- what it cannot run ---------------------------------------------------------------


def test_explore_needs_a_daemon_it_starts():
    run = subprocess.run([sys.executable, "-m", "choo_conformance.cli", "--explore", "5"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "--explore needs --server-cmd" in run.stderr


@pytest.mark.slow
def test_a_daemon_without_the_control_service_cannot_be_explored():
    run = explore(FOREIGN + " --no-control", 5)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "does not serve choo.conformance.v1.ConformanceControl" in run.stdout


@pytest.mark.slow
def test_a_daemon_that_never_answers_cannot_be_explored():
    run = explore(f"{sys.executable} -c 'raise SystemExit(3)' {{socket}}", 5)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "did not answer Health" in run.stdout


# -- correct daemons: nothing to find ------------------------------------------------------


@pytest.mark.long
def test_the_reference_daemon_gives_it_nothing_to_find():
    assert_nothing_found(explore(REFERENCE, 20 if ALL else 8))


@pytest.mark.long
def test_the_foreign_daemon_with_every_awkward_switch_gives_it_nothing_to_find():
    assert_nothing_found(explore(FOREIGN + " --awkward all", 20 if ALL else 8))


@every_run
def test_the_foreign_daemon_gives_it_nothing_to_find():
    assert_nothing_found(explore(FOREIGN, 20))


# -- planted defects: found, shrunk, printed -------------------------------------------------


@pytest.mark.long
def test_it_finds_an_exclusive_from_sequence():
    run = explore(FOREIGN + " --bug exclusive-from", 30, "--explore-shrink", "10")
    assert_found(run, {"W10"})


@every_run
def test_it_finds_events_renumbered_on_replay():
    run = explore(FOREIGN + " --bug renumbered-replay", 30, "--explore-shrink", "30")
    assert_found(run, {"W9", "W10"})


@every_run
@pytest.mark.parametrize("name, rules", [
    ("from-exclusive", {"W10"}),
    ("write-behind", {"W17"}),
])
def test_it_finds_mutants_of_the_reference(name, rules):
    assert_found(explore(mutant(name), 30, "--explore-shrink", "30"), rules)


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    kids.append(int(entry.name))
            except (OSError, ValueError):
                continue
    return kids


def test_an_explorer_stopped_with_sigterm_stops_its_daemon_first():
    from choo_conformance.process import group_lives
    from choo_conformance.wait import wait_until

    explorer = subprocess.Popen(
        [sys.executable, "-m", "choo_conformance.cli", "--explore", "120", "--seed", "1",
         "--server-cmd", REFERENCE], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Its daemon runs in a process group of its own, which a SIGTERM to
        # the explorer does not reach.
        assert wait_until(lambda: _children(explorer.pid), 30, 0.05), "the explorer started no daemon"
        daemons = _children(explorer.pid)
        explorer.terminate()
        assert explorer.wait(30) == 128 + 15
        assert not any(group_lives(pid) for pid in daemons), "the explorer's daemon outlived it"
    finally:
        if explorer.poll() is None:
            explorer.kill()
            explorer.wait()
