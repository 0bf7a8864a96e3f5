"""What a client of a WatchJob call has seen, whichever target it talks to:
the events so far and, once the call is over, its status. Steps wait on it
with deadlines."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import grpc


@dataclass
class Status:
    code: grpc.StatusCode
    details: str

    def __str__(self) -> str:
        return f"{self.code.name} {self.details!r}"


OK = Status(grpc.StatusCode.OK, "")


class ReceivedStream:
    """Filled by a reader thread (`_add`, then `_finish`); read by steps.

    An event wakes a waiter only when it brings the count that waiter asked
    for: waking every waiter on every event would have the reader and the
    steps take turns for each of thousands of events."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.events: list = []
        self.status: Status | None = None
        self._counts_awaited: list[int] = []

    def _add(self, event) -> None:
        with self._cond:
            self.events.append(event)
            if len(self.events) in self._counts_awaited:
                self._cond.notify_all()

    def _finish(self, status: Status) -> None:
        with self._cond:
            self.status = status
            self._cond.notify_all()

    def wait_for_events(self, count: int, timeout: float) -> bool:
        """True once `count` events have arrived; False if the call ended
        with fewer or the deadline passed."""
        with self._cond:
            self._counts_awaited.append(count)
            try:
                return self._cond.wait_for(
                    lambda: len(self.events) >= count or self.status is not None, timeout
                ) and len(self.events) >= count
            finally:
                self._counts_awaited.remove(count)

    def wait_for_status(self, timeout: float) -> Status | None:
        with self._cond:
            self._cond.wait_for(lambda: self.status is not None, timeout)
            return self.status

    def received(self) -> list:
        with self._cond:
            return list(self.events)

    def has_events(self) -> bool:
        return bool(self.events)  # a read of the list's length: no lock needed

    def is_over(self) -> bool:
        with self._cond:
            return self.status is not None
