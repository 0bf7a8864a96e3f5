"""Waiting on a condition with a deadline: the suite's only way to wait."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

# Re-check interval for conditions nobody signals. Waiting on an Event that is
# never set yields the thread without busy-looping.
_RECHECK = 0.002
# The longest interval for a condition that asks the daemon (a call each
# time): re-checked at first as often as any, then less, so that a long wait
# does not load the daemon it waits on with hundreds of calls a second.
ASKS_THE_DAEMON = 0.05
_never = threading.Event()


def wait_until(condition: Callable[[], object], timeout: float, longest: float = _RECHECK) -> bool:
    """True as soon as condition() is truthy; False if the deadline passes.
    The interval between checks starts at 2 ms and doubles up to `longest`."""
    deadline = time.monotonic() + timeout
    interval = _RECHECK
    while True:
        if condition():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return bool(condition())
        _never.wait(min(interval, remaining))
        interval = min(interval * 2, longest)


class Patience:
    """How long to wait for a precondition that, once a whole wait for it
    has run out in this run, is not expected to come: later waits for it
    get `after_a_miss` seconds, so that one upstream defect does not cost
    every scenario after it the whole wait. A daemon that met it in time
    keeps the whole wait."""

    def __init__(self, after_a_miss: float) -> None:
        self.after_a_miss = after_a_miss
        self.missed = False

    def timeout(self, whole: float) -> float:
        return min(whole, self.after_a_miss) if self.missed else whole

    def ran_out(self) -> None:
        self.missed = True
