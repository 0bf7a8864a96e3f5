"""`make test` runs the tests in several processes (pytest-xdist); the
repository's conftest.py keeps the tests of some files in one, so that
their module fixtures (the foreign daemon's runs, the wheels built in the
source tree, the interop tools) run once, and hands out the tests marked
`long` before the others."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import SHARED_PROCESS, pytest_collection_modifyitems, pytest_xdist_make_scheduler

ROOT = Path(__file__).resolve().parent.parent


class _Options:
    def __init__(self, dist: str) -> None:
        self._values = {"dist": dist, "tx": ["2*popen"]}

    def getvalue(self, name: str):
        return self._values[name]


def _unit_of(nodeid: str) -> str:
    scheduler = pytest_xdist_make_scheduler(_Options("loadscope"), None)
    return scheduler._split_scope(nodeid)


def test_the_tests_of_a_named_file_share_one_process():
    assert _unit_of("tests/test_wheel.py::test_installed") == _unit_of("tests/test_wheel.py::test_carries")
    assert _unit_of("tests/test_foreign_daemon.py::test_each_defect[exclusive-from]") == \
        _unit_of("tests/test_foreign_daemon.py::test_the_correct_daemon_fails_no_scenario[control]")
    assert _unit_of("tests/test_interop.py::test_a") == _unit_of("tests/test_interop.py::test_b")
    assert _unit_of("tests/test_interop.py::test_a") != _unit_of("tests/test_wheel.py::test_installed")


def test_every_other_test_goes_to_whichever_process_is_free():
    assert _unit_of("tests/test_cli.py::test_a") != _unit_of("tests/test_cli.py::test_b")


def test_every_file_named_exists():
    # A file renamed would silently leave its tests to any process.
    assert [name for name in SHARED_PROCESS if not (ROOT / name).is_file()] == []


def test_other_ways_of_spreading_are_left_to_xdist():
    assert pytest_xdist_make_scheduler(_Options("load"), None) is None


class _Item:
    def __init__(self, name: str, long: bool) -> None:
        self.name, self._long = name, long

    def get_closest_marker(self, name: str):
        return pytest.mark.long.mark if name == "long" and self._long else None


def test_long_tests_come_first_and_the_order_is_otherwise_kept():
    items = [_Item("a", False), _Item("b", True), _Item("c", False), _Item("d", True)]
    pytest_collection_modifyitems(items)
    assert [item.name for item in items] == ["b", "d", "a", "c"]
