"""Root of the suite: which step modules are loaded, and the options that pick
the implementation under test."""

pytest_plugins = [
    "steps.common",
    "steps.watch_job_steps",
    "steps.event_stream_steps",
    "steps.lifecycle_steps",
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
    import pathlib
    import re

    features = pathlib.Path(__file__).parent / "features"
    tags = set()
    for feature in features.glob("*.feature"):
        tags.update(re.findall(r"@([\w.-]+)", feature.read_text()))
    for tag in sorted(tags):
        config.addinivalue_line("markers", f"{tag}: Gherkin tag")
