"""Waiting on a condition with a deadline: the suite's only way to wait."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

# Re-check interval for conditions nobody signals. Waiting on an Event that is
# never set yields the thread without busy-looping.
_RECHECK = 0.002
_never = threading.Event()


def wait_until(condition: Callable[[], object], timeout: float) -> bool:
    """True as soon as condition() is truthy; False if the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return bool(condition())
        _never.wait(min(_RECHECK, remaining))
