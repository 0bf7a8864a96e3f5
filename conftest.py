"""Running pytest in this repository loads the suite's plugin, as the
`choo-conformance` runner does for an installed suite.

`make test` spreads the tests over several processes (pytest-xdist, `--dist
loadscope`): each test goes to whichever process is free, except the files
named below, whose tests run in one process, one after another. Those
files go out first, then the tests marked `long`, then the rest: a long
test handed out last would keep its process busy after the others end."""

from __future__ import annotations

import pytest

pytest_plugins = ["choo_conformance.plugin"]

# File -> the name of the tests that share one process, so that a module
# fixture runs once: the foreign daemon's runs (which schedule their own
# parallelism), the wheels (built in the source tree, which two processes
# at once would trip over) and the interop tools (installed into one folder).
SHARED_PROCESS = {
    "tests/test_foreign_daemon.py": "foreign daemon",
    "tests/test_wheel.py": "wheel",
    "tests/test_interop.py": "interop",
}


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # After any shuffling plugin: a stable sort keeps its order otherwise.
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedProcessScheduling(LoadScopeScheduling):
        """Each test its own unit of work, but SHARED_PROCESS's files by name.
        (xdist_group marks would do this, but pytest-xdist 3.8 cannot apply
        them under pytest 9.2.) The largest units go out first."""

        def _split_scope(self, nodeid: str) -> str:
            return SHARED_PROCESS.get(nodeid.split("::", 1)[0], nodeid)

    return SharedProcessScheduling(config, log)
