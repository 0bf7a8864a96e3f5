"""`make bench --server-cpus/--client-cpus`: the CPU lists, and a process
started for the server or the clients runs on the cores it was given."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench.placement import Placement, format_cpus, parse_cpus


@pytest.mark.parametrize("text, cpus", [
    ("0", {0}), ("1-3", {1, 2, 3}), ("0,2-3", {0, 2, 3}), (" 4 , 1 ", {1, 4}),
])
def test_cpu_lists_read_as_taskset_writes_them(text, cpus):
    assert parse_cpus(text) == cpus
    assert parse_cpus(format_cpus(frozenset(cpus))) == cpus


@pytest.mark.parametrize("text", ["", "a", "3-1", "-1", "1-"])
def test_a_bad_cpu_list_says_how_to_write_one(text):
    with pytest.raises(ValueError, match="CPU"):
        parse_cpus(text)


def test_a_cpu_this_machine_lacks_is_refused_by_name():
    missing = max(os.sched_getaffinity(0)) + 1
    with pytest.raises(ValueError, match=f"--server-cpus {missing}: CPU {missing} is not usable"):
        Placement.from_args(str(missing), None)


def test_server_and_clients_start_on_their_own_cores():
    cpu = min(os.sched_getaffinity(0))
    placement = Placement.from_args(str(cpu), None)
    before = os.sched_getaffinity(0)
    with placement.server():
        child = subprocess.run([sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
                               capture_output=True, text=True, timeout=30, check=True)
    assert child.stdout.strip() == f"[{cpu}]"
    assert os.sched_getaffinity(0) == before, "the starting thread kept the server's cores"
    with placement.clients():  # not pinned: wherever the system puts them
        assert os.sched_getaffinity(0) == before
