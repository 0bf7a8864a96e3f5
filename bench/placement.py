"""Which cores the server and the client processes run on.

    python -m bench.run --server-cpus 0 --client-cpus 1-15

On a machine with few cores the watcher processes take most of it, and a
figure measures the clients as much as the server. Given cores of its own,
the server is what limits the figure. A process started inside
`Placement.server()` or `.clients()` runs on those cores (and so do its
threads and children): Linux hands a new process the CPU affinity of the
thread that started it, so this sets the starting thread's own affinity for
the moment of the start (os.sched_setaffinity, as `taskset` does).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass


def parse_cpus(text: str) -> frozenset[int]:
    """'0', '1-15', '0,2-3' -> the set of CPU numbers (taskset -c's syntax)."""
    cpus: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        first, dash, last = part.partition("-")
        try:
            low = int(first)
            high = int(last) if dash else low
        except ValueError:
            raise ValueError(f"not a CPU list: {text!r} (write it as 0 or 1-15 or 0,2-3)") from None
        if low < 0 or high < low:
            raise ValueError(f"not a CPU range: {part!r} in {text!r}")
        cpus.update(range(low, high + 1))
    return frozenset(cpus)


def format_cpus(cpus: frozenset[int]) -> str:
    """The inverse of parse_cpus, with ranges: {0, 1, 2, 5} -> '0-2,5'."""
    parts, ordered = [], sorted(cpus)
    start = prev = None
    for cpu in ordered + [None]:
        if cpu is not None and prev is not None and cpu == prev + 1:
            prev = cpu
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = cpu
    return ",".join(parts)


@dataclass(frozen=True)
class Placement:
    """The server's and the clients' cores; None: wherever the system puts them."""

    server_cpus: frozenset[int] | None = None
    client_cpus: frozenset[int] | None = None

    @classmethod
    def from_args(cls, server: str | None, clients: str | None) -> Placement:
        usable = frozenset(os.sched_getaffinity(0))
        chosen: dict[str, frozenset[int] | None] = {}
        for flag, text in (("--server-cpus", server), ("--client-cpus", clients)):
            cpus = None if text is None else parse_cpus(text)
            if cpus is not None and not cpus <= usable:
                raise ValueError(f"{flag} {text}: CPU {format_cpus(cpus - usable)} is not "
                                 f"usable here (usable: {format_cpus(usable)})")
            chosen[flag] = cpus
        return cls(chosen["--server-cpus"], chosen["--client-cpus"])

    @property
    def pinned(self) -> bool:
        return self.server_cpus is not None or self.client_cpus is not None

    def client_core_count(self) -> int:
        cpus = self.client_cpus if self.client_cpus is not None else os.sched_getaffinity(0)
        return len(cpus)

    def describe(self) -> str:
        if not self.pinned:
            return "server and clients share every core"
        where = [f"server on CPU {format_cpus(self.server_cpus)}" if self.server_cpus else
                 "server on any CPU",
                 f"clients and driver on CPU {format_cpus(self.client_cpus)}" if self.client_cpus
                 else "clients on any CPU"]
        return ", ".join(where)

    def server(self) -> contextlib.AbstractContextManager[None]:
        """Processes started inside run on the server's cores."""
        return _running_on(self.server_cpus)

    def clients(self) -> contextlib.AbstractContextManager[None]:
        """Processes started inside run on the clients' cores."""
        return _running_on(self.client_cpus)


@contextlib.contextmanager
def _running_on(cpus: frozenset[int] | None) -> Iterator[None]:
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)  # pid 0: this thread
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
