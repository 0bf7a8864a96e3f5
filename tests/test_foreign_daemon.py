"""The conformance suite judged against a daemon it has never seen.

tests/foreign_daemon/ is a second implementation of the service, written
apart from the reference daemon and choosing differently wherever the
contract leaves a choice open. Two checks:

- Run as it is, it is correct: the suite must fail no scenario (no false
  failures), except the few that still assert what only the reference daemon
  does (REFERENCE_ONLY_SCENARIOS below).
- Run with one defect switched on (`--bug NAME`), the suite must fail the
  rule that defect breaks (no false passes).

Each run is the suite's own runner (`choo-conformance --server-cmd ...`),
a few at a time (the machine has two cores), and its verdict is read from the
results.json it writes: one record per scenario, teardown checks included.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from choo_conformance.rules import is_rule
from choo_conformance.runner import read_known_failing

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "tests" / "foreign_daemon" / "server.py"
RUN_TIMEOUT_S = 600
PARALLEL_RUNS = 3
# Set in the environment of the daemons a run starts, to find any it leaves.
RUN_MARKER = "FOREIGN_DAEMON_RUN"

# Scenarios that assert what only the reference daemon does, not the
# contract's rules for every implementation. They are being tagged @reference
# (never part of the verdict on another implementation); until then they fail
# here, and the reason says why that is right. Empty this once they are.
REFERENCE_ONLY_SCENARIOS = {
    "Health reports the active jobs and the version":
        "R9: compares Health.version with the reference package's version; the "
        "contract asks only for a non-empty string",
    "StartJob refuses a tasks folder it cannot parse, naming the file":
        "R1: parsing the folder in StartJob is asked of the reference daemon alone; "
        "this daemon accepts the job and fails it, naming the file",
    "GetJobStatus reports times, errors and units":
        "R6: unit status 'blocked' is the reference daemon's vocabulary; this daemon "
        "says 'skipped'",
    "A job that was running when the daemon died comes back failed, history intact":
        "W17: the error text is the reference daemon's wording; the contract asks "
        "only for `failed` with an error saying so",
}

# Each defect the daemon can switch on, and the rule the suite must fail.
BUG_BREAKS = {
    "not-found-internal": "W2",
    "replay-terminal-from-zero": "W8",
    "negative-from-clamped": "W11",
    "exclusive-from": "W10",
    "renumbered-replay": "W10",
    "replay-drops-payload": "W9",
    "drops-slow-watcher-events": "W15",
    "thread-per-watch": "W16",
}
# The scenarios each defect's run selects: its rule's, less any that would
# only add time (the 1000-watcher scenario is tagged W15 too).
BUG_SELECTION = {**BUG_BREAKS, "drops-slow-watcher-events": "W15 and not daemon_capacity"}

# The defects the runner's own tests start the daemon with
# (tests/test_conformance_runner.py); known-failing.txt lists what they break.
USUAL_BUGS = ("not-found-internal", "replay-terminal-from-zero")

# The runs that keep a core busy (thousands of events, a thousand watchers and
# their client threads): one after another, never two at once, or the
# suite's deadlines measure the contention.
HEAVY_RUNS = ("correct/rest", "correct/scale", "bug/thread-per-watch")

# The correct daemon's run, split by feature (their tags) so that the slow
# ones run side by side. Every scenario runs in exactly one part.
CORRECT_PARTS = {
    "job_lifecycle": "job_lifecycle",
    "daemon_lifecycle": "daemon_lifecycle",
    "scale": "scale",
    "rest": "not job_lifecycle and not daemon_lifecycle and not scale",
}


def _server_cmd(bugs=()) -> str:
    flags = "".join(f" --bug {bug}" for bug in bugs)
    return f"{sys.executable} {SERVER} --socket {{socket}} --db {{db}}{flags}"


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return "(gone)"


def _leftover_processes(marker: str) -> list[int]:
    """Pids of the processes whose environment carries this marker: the
    daemons a run started and the commands of their jobs."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"{RUN_MARKER}={marker}".encode() in environ:
            pids.append(int(entry.name))
    return pids


def _run_suite(name: str, folder: Path, tags: str, server_cmd: str) -> list[dict]:
    """The runner's record of each scenario: scenario, tags, outcome, detail."""
    report = folder / name
    log = folder / f"{name}.log"
    command = [sys.executable, "-m", "choo_conformance.cli", "--server-cmd", server_cmd,
               "--tags", tags, "--report", str(report)]
    env = {**os.environ, RUN_MARKER: f"{folder}/{name}"}
    with open(log, "wb") as out:
        try:
            # A failing rule makes the runner exit 1: the records say which.
            subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env,
                           check=False, timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the {name} run went over {RUN_TIMEOUT_S} s; see {log}")
    results = report / "results.json"
    assert results.exists(), f"the {name} run wrote no results:\n{log.read_text()[-3000:]}"
    return json.loads(results.read_text())


def _rules(record: dict) -> set[str]:
    return {tag for tag in record["tags"] if is_rule(tag)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every run's scenario results, by name: 'correct/<part>' and 'bug/<name>'."""
    folder = tmp_path_factory.mktemp("foreign")
    plans = {f"correct/{part}": (tags, _server_cmd()) for part, tags in CORRECT_PARTS.items()}
    plans.update({f"bug/{bug}": (tags, _server_cmd([bug])) for bug, tags in BUG_SELECTION.items()})

    def run(name: str) -> list[dict]:
        return _run_suite(name.replace("/", "-"), folder, *plans[name])

    # The heavy runs take turns at the head of the first lane; the others go
    # to whichever lane is free.
    others: queue.SimpleQueue[str] = queue.SimpleQueue()
    for name in plans:
        if name not in HEAVY_RUNS:
            others.put(name)
    results: dict[str, list[dict]] = {}

    def lane(first: tuple[str, ...]) -> None:
        for name in first:
            results[name] = run(name)
        while True:
            try:
                name = others.get_nowait()
            except queue.Empty:
                return
            results[name] = run(name)

    try:
        with ThreadPoolExecutor(PARALLEL_RUNS) as pool:
            lanes = [pool.submit(lane, HEAVY_RUNS if i == 0 else ()) for i in range(PARALLEL_RUNS)]
            for each in lanes:
                each.result()
    finally:
        leftovers = {pid: _command_line(pid) for name in plans for pid in
                     _leftover_processes(f"{folder}/{name.replace('/', '-')}")}
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert not leftovers, f"processes outlived their runs: {leftovers}"
    return results


def _why(record: dict) -> str:
    detail = record["detail"].strip().splitlines() or ["(no detail)"]
    return f"{record['scenario']}: {detail[0]}"


@pytest.mark.slow
def test_the_correct_daemon_fails_no_scenario_of_the_contract(runs):
    records = [r for name, rs in runs.items() if name.startswith("correct/") for r in rs]
    assert records, "the correct daemon's runs found no scenario"

    failed = [r for r in records if r["outcome"] == "failed"]
    unexpected = [_why(r) for r in failed if r["scenario"] not in REFERENCE_ONLY_SCENARIOS]
    assert not unexpected, "the suite fails a correct daemon:\n" + "\n".join(unexpected)
    not_failing = sorted(set(REFERENCE_ONLY_SCENARIOS) - {r["scenario"] for r in failed})
    assert not not_failing, (
        f"listed as asserting reference-only behaviour, but did not fail: {not_failing}; "
        "take them out of REFERENCE_ONLY_SCENARIOS")

    # Skipped: only the scenarios that exist in process alone.
    skipped = [_why(r) for r in records
               if r["outcome"] == "skipped" and "scripted" not in r["tags"]]
    assert not skipped, "skipped against the daemon:\n" + "\n".join(skipped)
    # Every rule was checked by a scenario that passed (R9 has none yet but
    # its reference-only one).
    passed = {rule for r in records if r["outcome"] == "passed" for rule in _rules(r)}
    checked = {rule for r in records if r["scenario"] not in REFERENCE_ONLY_SCENARIOS
               for rule in _rules(r)}
    assert checked <= passed, f"no passing scenario for {sorted(checked - passed)}"


@pytest.mark.slow
@pytest.mark.parametrize("bug", sorted(BUG_BREAKS))
def test_each_defect_fails_the_rule_it_breaks(runs, bug):
    rule = BUG_BREAKS[bug]
    ran = [r for r in runs[f"bug/{bug}"] if rule in _rules(r) and r["outcome"] != "skipped"]
    assert ran, f"no scenario of {rule} ran against --bug {bug}"
    assert any(r["outcome"] == "failed" for r in ran), (
        f"the suite passed every {rule} scenario against --bug {bug}")


def test_every_defect_of_the_daemon_is_checked():
    help_text = subprocess.run([sys.executable, str(SERVER), "--help"], capture_output=True,
                               check=True, text=True, timeout=30).stdout
    choices = help_text.split("--bug {", 1)[1].split("}", 1)[0].split(",")
    assert set(choices) == set(BUG_BREAKS)


def test_the_shipped_known_failing_list_matches_the_usual_defects():
    listed = read_known_failing(str(SERVER.parent / "known-failing.txt"))
    assert listed == {BUG_BREAKS[bug] for bug in USUAL_BUGS}


def test_the_reference_only_scenarios_exist():
    """A renamed scenario must not linger in REFERENCE_ONLY_SCENARIOS."""
    features = "".join(p.read_text() for p in (ROOT / "features").glob("*.feature"))
    missing = [name for name in REFERENCE_ONLY_SCENARIOS if f"Scenario: {name}\n" not in features]
    assert not missing, missing
