"""The suite as an implementer installs it: wheels built from this
repository, installed into a fresh virtual environment outside the checkout,
run from an unrelated directory against the reference daemon over a socket.

The suite's wheel carries the feature files and needs nothing of the
repository; without an implementation to run in process it says so and exits
2; the reference daemon's wheel runs without pytest.

The installed suite runs a few rules of four feature files (it reads them
all to collect any): what could differ once installed (a file left out of
the wheel, an import, configuration found elsewhere) shows in collection or
in any scenario, and the whole suite over a socket against the reference
daemon is `make conformance`'s run, which CI makes too.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conformance_run import daemon_folders_left, writing_down_databases

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
# Rules of four feature files (job and daemon lifecycle, the event stream,
# WatchJob over a socket), run by the installed suite.
RUN_RULES = {"R3", "R9", "W9", "W3"}


def _run(argv, cwd, timeout=600):
    run = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, f"{argv} failed:\n{run.stdout[-3000:]}{run.stderr[-3000:]}"
    return run


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, Path]:
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
          "-w", str(dist), str(ROOT / "proto"), str(ROOT / "reference_server"), str(ROOT)], ROOT)
    for built in (ROOT / "build", ROOT / "proto" / "build", ROOT / "reference_server" / "build"):
        shutil.rmtree(built, ignore_errors=True)  # setuptools builds in the source tree
    found = {path.name.split("-")[0]: path for path in dist.glob("*.whl")}
    assert set(found) == {"choo_proto", "choo_reference", "choo_conformance"}, found
    return found


def test_the_suite_wheel_carries_its_features_and_no_generic_top_level_names(wheels):
    names = zipfile.ZipFile(wheels["choo_conformance"]).namelist()
    features = [n for n in names if n.startswith("choo_conformance/features/") and n.endswith(".feature")]
    assert len(features) == len(list((ROOT / "features").glob("*.feature")))
    assert "choo_conformance/pytest.ini" in names
    top_level = {n.split("/")[0] for n in names if not n.startswith("choo_conformance-")}
    assert top_level == {"choo_conformance"}, top_level


def test_installed_from_wheels_the_suite_judges_the_reference_daemon(wheels, tmp_path):
    venv = tmp_path / "venv"
    # Without a pip of its own: this environment's pip installs into it
    # (--python), as the venv's own would, without the seconds ensurepip takes;
    # and without compiling what it installs, as Python compiles what a run
    # imports (a few seconds less).
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-compile"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # A directory with a pytest configuration of its own must not change what runs.
    (elsewhere / "pytest.ini").write_text("[pytest]\naddopts = --this-option-does-not-exist\n")

    _run([*pip, str(wheels["choo_proto"]), str(wheels["choo_conformance"])], elsewhere)
    alone = subprocess.run([str(venv / "bin" / "choo-conformance"), "--report", "r0"],
                           cwd=elsewhere, capture_output=True, text=True, timeout=300)
    assert alone.returncode == 2, alone.stdout + alone.stderr
    assert "choo-reference, is not installed" in alone.stderr

    _run([*pip, str(wheels["choo_reference"])], elsewhere)
    imports = _run([str(python), "-c", "import sys, choo_reference.cli, choo_reference.daemon; "
                    "print(sorted(m for m in sys.modules if m.split('.')[0] in "
                    "('pytest', 'pytest_bdd', 'grpc_testing', 'choo_conformance')))"], elsewhere)
    assert imports.stdout.strip() == "[]", "the daemon imports the suite or its test tools"

    # Each daemon the run starts writes down its database, whose folder the
    # run must remove (the profile's probe, the shared daemon, one of its own).
    started = tmp_path / "started.txt"
    daemon = writing_down_databases(
        f"{venv / 'bin' / 'choo-ref'} daemon --socket {{socket}} --db {{db}} --conformance-control",
        started)
    run = subprocess.run([str(venv / "bin" / "choo-conformance"), "--server-cmd", daemon,
                          "--profile", "reference", "--report", "report",
                          "--rules", ",".join(sorted(RUN_RULES)),
                          "--tags", "not volume and not daemon_capacity"],
                         cwd=elsewhere, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    results = json.loads((elsewhere / "report" / "results.json").read_text())
    verdicts = {r["id"]: r["verdict"] for r in results["rules"]}
    assert {rule for rule, verdict in verdicts.items() if verdict == "PASS"} == RUN_RULES, verdicts
    # The suite reads every feature file to collect any scenario (a file it
    # could not read would end the run with 2); these four ran.
    ran = {s["feature"] for s in results["scenarios"] if s["verdict"] == "PASS"}
    assert ran == {"job_lifecycle", "daemon_lifecycle", "event_stream", "watch_job_daemon"}
    not_applicable = [s for s in results["scenarios"] if s["verdict"] == "N/A"]
    assert all(s["detail"] for s in not_applicable)
    databases, left = daemon_folders_left(started)
    assert len(databases) >= 3, databases
    assert not left, f"the run left the folders of these databases: {left}"
