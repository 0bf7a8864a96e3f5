"""The suite as a pytest plugin: the step modules, and the options that pick
the implementation under test. Loaded by the repository's conftest.py and by
the `choo-conformance` runner (`-p choo_conformance.plugin`)."""

from __future__ import annotations

import re
from pathlib import Path

FEATURES = Path(__file__).resolve().parent / "features"

pytest_plugins = [
    "choo_conformance.common",
    "choo_conformance.watch_job_steps",
    "choo_conformance.event_stream_steps",
    "choo_conformance.lifecycle_steps",
]


def pytest_addoption(parser):
    group = parser.getgroup("choo conformance")
    group.addoption(
        "--servicer",
        default=None,
        metavar="MODULE:FACTORY",
        help="build the servicer under test with FACTORY(jobs, shutdown) "
        "instead of the reference servicer (used to prove the suite can fail)",
    )
    group.addoption(
        "--job-manager",
        default=None,
        metavar="MODULE:FACTORY",
        help="build the job manager under test with FACTORY(db_path) instead "
        "of the reference JobStore",
    )
    group.addoption(
        "--target",
        default=None,
        metavar="ADDRESS",
        help="run the scenarios against a daemon already serving at ADDRESS "
        "(for example unix:///tmp/choo.sock) with its conformance control service",
    )
    group.addoption(
        "--server-cmd",
        default=None,
        metavar="COMMAND",
        help="start the daemon under test with COMMAND, in which {socket} (and "
        "optionally {db}) stand for paths the suite chooses",
    )


def pytest_configure(config):
    # Every Gherkin tag becomes a pytest marker; register them so `-m W7`
    # selects a rule without warnings.
    tags = set()
    for feature in FEATURES.glob("*.feature"):
        tags.update(re.findall(r"@([\w.-]+)", feature.read_text()))
    for tag in sorted(tags):
        config.addinivalue_line("markers", f"{tag}: Gherkin tag")
