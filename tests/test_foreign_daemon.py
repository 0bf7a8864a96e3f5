"""The conformance suite judges a daemon it has never seen: run it against the
separately written foreign daemon (tests/foreign_daemon/server.py) and check
that exactly the rules that daemon breaks fail, and that what it does right
passes.

The suite runs in three pytest processes at once, split by feature file. The
split changes no result (every scenario still runs, each process against a
daemon of its own) but keeps the wall time down: a daemon that runs no real
jobs makes several lifecycle scenarios wait out their 10 s deadlines.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from choo_conformance.cucumber import read_results

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "tests" / "foreign_daemon" / "server.py"
SHARD_TIMEOUT_S = 180

# The rules the foreign daemon must fail, and why.
EXPECTED_FAILING = {
    # Its deliberate bugs.
    "W2": "bug: an unknown job answers INTERNAL instead of NOT_FOUND",
    "W8": "bug: a terminal job watched from 0 replays its history",
    "W11": "bug: a negative from_sequence is clamped to 1 instead of refused",
    # Its design: one of 128 pool threads per open watch.
    "W15": "1000 open watches take every worker thread: later watchers get nothing",
    "W16": "1000 open watches take every worker thread: not every watcher sees the events",
    # What it does not have.
    "W17": "keeps events in memory only: a restart loses them",
    "W18": "shutting down while a job runs needs a job from StartJob",
    "R1": "StartJob is UNIMPLEMENTED: no field validation",
    "R2": "its scenario needs a running job from StartJob",
    "R3": "StartJob is UNIMPLEMENTED",
    "R4": "StartJob is UNIMPLEMENTED",
    "R5": "its scenarios stop jobs started with StartJob",
    "R6": "its scenarios inspect jobs started with StartJob",
    "R7": "its scenarios list jobs started with StartJob",
    "R8": "its scenarios shut down while StartJob's jobs run",
    "R9": "its scenario counts a job started with StartJob",
    "R10": "StartJob answers UNIMPLEMENTED (and WatchJob INTERNAL, the W2 bug): not contract codes",
}

# Implemented correctly; the suite must say so.
MUST_PASS = {"W1", "W3", "W4", "W5", "W6", "W7", "W9", "W10", "W12", "W13", "W14"}

LIFECYCLE = ["steps/choo_conformance/scenarios/test_job_lifecycle.py", "steps/choo_conformance/scenarios/test_daemon_lifecycle.py"]
SHARDS = {
    "job_lifecycle": [LIFECYCLE[0]],
    "daemon_lifecycle": [LIFECYCLE[1]],
    # Everything else, so a new feature file is never left out.
    "rest": ["steps/choo_conformance/scenarios", *(f"--ignore={path}" for path in LIFECYCLE)],
}


def _foreign_daemons(marker: str) -> list[int]:
    """Pids of foreign daemons started by this test (their --db names marker)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(SERVER).encode() in argv and marker.encode() in argv:
            pids.append(int(entry.name))
    return pids


def _per_rule(results) -> dict[str, str]:
    """A rule fails if any of its scenarios failed, passes if all that ran
    passed, and is skipped if none ran."""
    outcomes: dict[str, set[str]] = {}
    for result in results:
        for rule in result.rules:
            outcomes.setdefault(rule, set()).add(result.status)
    rules = {}
    for rule, statuses in outcomes.items():
        if "failed" in statuses:
            rules[rule] = "failed"
        elif "passed" in statuses:
            rules[rule] = "passed"
        else:
            rules[rule] = "skipped"
    return rules


def _run_suite(tmp_path: Path) -> list:
    marker = str(tmp_path / "unused.db")  # nothing is stored there
    server_cmd = f"{sys.executable} {SERVER} --socket {{socket}} --db {marker}"
    procs = {}
    try:
        for name, args in SHARDS.items():
            command = [sys.executable, "-m", "pytest", *args, "-q", "-p", "no:cacheprovider",
                       "--server-cmd", server_cmd, f"--cucumberjson={tmp_path}/{name}.json"]
            log = open(tmp_path / f"{name}.log", "wb")
            procs[name] = subprocess.Popen(command, cwd=ROOT, stdout=log,
                                           stderr=subprocess.STDOUT)
            log.close()
        for name, proc in procs.items():
            try:
                proc.wait(timeout=SHARD_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"the {name} part of the suite ran over {SHARD_TIMEOUT_S} s; "
                            f"see {tmp_path}/{name}.log")
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        leaked = _foreign_daemons(marker)
        for pid in leaked:
            os.kill(pid, signal.SIGKILL)
    assert not leaked, f"foreign daemons outlived the suite: pids {leaked}"

    results = []
    for name in SHARDS:
        report = tmp_path / f"{name}.json"
        assert report.exists(), (
            f"the {name} part of the suite wrote no report:\n"
            + (tmp_path / f"{name}.log").read_text()[-3000:])
        results += read_results(report)
    return results


def test_the_suite_fails_exactly_the_rules_the_foreign_daemon_breaks(tmp_path):
    results = _run_suite(tmp_path)
    rules = _per_rule(results)

    failing = {rule for rule, status in rules.items() if status == "failed"}
    why = {r.name: r.message.strip().splitlines()[-1] if r.message.strip() else ""
           for r in results if r.status == "failed"}
    assert failing == set(EXPECTED_FAILING), (
        f"unexpected failures: {sorted(failing - set(EXPECTED_FAILING))}; "
        f"expected to fail but did not: {sorted(set(EXPECTED_FAILING) - failing)}; "
        f"failed scenarios: {why}")

    passing = {rule for rule, status in rules.items() if status == "passed"}
    assert MUST_PASS <= passing, f"did not pass: {sorted(MUST_PASS - passing)}; rules: {rules}"


def test_the_shipped_known_failing_list_matches():
    from choo_conformance.runner import read_known_failing

    assert read_known_failing(str(SERVER.parent / "known-failing.txt")) == set(EXPECTED_FAILING)
