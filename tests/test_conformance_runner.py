"""`choo-ref conformance`: per-rule verdicts, the known-failing list, the
report files, and a run over a real socket against the reference daemon."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHOO_CONFORMANCE = [sys.executable, "-m", "choo_conformance.cli"]
REFERENCE_DAEMON = (f"{sys.executable} -m choo_reference.cli daemon "
                    "--socket {socket} --db {db} --conformance-control")


def conformance(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CHOO_CONFORMANCE, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_selected_rules_in_process_with_report_files(tmp_path):
    run = conformance("--rules", "W3,W11", "--report", str(tmp_path))
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert any(line.startswith("PASS  W3 ") for line in lines)
    assert any(line.startswith("PASS  W11 ") for line in lines)
    assert lines[-1] == "2 passed, 0 failed, 0 skipped"
    for name in ("summary.md", "junit.xml", "cucumber.json", "results.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert "| W3 |" in (tmp_path / "summary.md").read_text()


def test_a_known_failing_rule_that_passes_is_flagged(tmp_path):
    known = tmp_path / "known-failing.txt"
    known.write_text("# expected to fail\nW11  # negative from_sequence\n")
    run = conformance("--rules", "W11", "--known-failing", str(known), "--report", str(tmp_path))
    assert run.returncode == 1
    assert "XPASS W11" in run.stdout and "remove it from the known-failing list" in run.stdout


def test_failures_name_the_rule_and_what_differed(tmp_path):
    run = subprocess.run(
        [sys.executable, "-c",
         "import sys; from choo_conformance import runner; from pathlib import Path;"
         "sys.exit(runner.run(Path(sys.argv[1]), rules=['W8']))", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**__import__("os").environ, "PYTEST_ADDOPTS":
             "--servicer=tests.broken_servicers:replays_completed_job_from_zero"},
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "FAIL  W8 " in run.stdout
    records = json.loads((tmp_path / "results.json").read_text())
    failed = [r for r in records if r["outcome"] == "failed"]
    assert failed and all("W8" in r["tags"] for r in failed)
    assert "W8" in (tmp_path / "summary.md").read_text()


def test_unknown_rule_ids_are_refused(tmp_path):
    run = conformance("--rules", "W99", "--report", str(tmp_path))
    assert run.returncode == 2 and "W99" in run.stderr


@pytest.mark.slow
def test_reference_daemon_over_a_real_socket_passes_every_rule(tmp_path):
    run = conformance("--server-cmd", REFERENCE_DAEMON, "--report", str(tmp_path))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.splitlines()[-1] == "28 passed, 0 failed, 0 skipped"
    summary = (tmp_path / "summary.md").read_text()
    assert "in process only" in summary  # the scripted rows say why they were skipped


# The foreign daemon with the two defects its known-failing.txt lists.
FOREIGN_DAEMON = (f"{sys.executable} {ROOT / 'tests' / 'foreign_daemon' / 'server.py'} "
                  "--socket {socket} --db {db} --bug not-found-internal --bug replay-terminal-from-zero")
# The rules those defects break and rules it gets right: fast to run, and
# enough to see the runner tell them apart.
FOREIGN_RULES = "W2,W3,W8,W13,W14"


@pytest.mark.slow
def test_runner_fails_the_rules_a_foreign_daemon_breaks(tmp_path):
    run = conformance("--server-cmd", FOREIGN_DAEMON, "--rules", FOREIGN_RULES,
                      "--report", str(tmp_path))
    assert run.returncode == 1, run.stdout + run.stderr
    verdicts = {line.split()[1]: line.split()[0] for line in run.stdout.splitlines()
                if line.split() and line.split()[0] in ("PASS", "FAIL", "SKIP")}
    assert verdicts == {"W2": "FAIL", "W3": "PASS", "W8": "FAIL", "W13": "PASS", "W14": "PASS"}
    assert run.stdout.splitlines()[-1] == "3 passed, 2 failed, 0 skipped"


@pytest.mark.slow
def test_runner_accepts_a_foreign_daemon_with_its_known_failing_list(tmp_path):
    known = ROOT / "tests" / "foreign_daemon" / "known-failing.txt"
    run = conformance("--server-cmd", FOREIGN_DAEMON, "--rules", FOREIGN_RULES,
                      "--known-failing", str(known), "--report", str(tmp_path))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "XFAIL W2" in run.stdout and "XFAIL W8" in run.stdout
    assert run.stdout.splitlines()[-1] == "3 passed, 0 failed, 0 skipped"
