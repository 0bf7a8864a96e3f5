"""Named points of a watch's hand-over from recorded history to live events,
where a test can run something in the watch's own thread before it goes on.

A new watch reads what the job has recorded and takes a subscription to
what it records next; an event recorded between those two steps is where
a watch loses or repeats one (W13). The conformance suite, running this
daemon in process, records events at each point below and checks that the
watch still gets every event once, in order: the race made certain instead
of likely. The daemon itself runs with NO_CHECKPOINTS, which does nothing.

The points, in the order this daemon passes them (an implementation that
reads its history first passes AFTER_HISTORY_READ first):

- BEFORE_SUBSCRIBE: the watch has checked its request and found the job;
  it has not subscribed and has read nothing.
- AFTER_SUBSCRIBE: it has subscribed (every event recorded from now on
  reaches it) and has read nothing yet.
- AFTER_HISTORY_READ: it has read a page of the job's history from the
  database and has not yet taken its next step (the next page, or the
  events held in memory).
- CAUGHT_UP: it has read every event recorded so far and has not yet begun
  to wait for the next (an event recorded now must wake it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

BEFORE_SUBSCRIBE = "before-subscribe"
AFTER_SUBSCRIBE = "after-subscribe"
AFTER_HISTORY_READ = "after-history-read"
CAUGHT_UP = "caught-up"
POINTS = frozenset({BEFORE_SUBSCRIBE, AFTER_SUBSCRIBE, AFTER_HISTORY_READ, CAUGHT_UP})


class Checkpoints:
    """Actions waiting for the next watch to reach a point; each runs once."""

    points = POINTS

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._actions: dict[str, list[Callable[[], None]]] = {}

    def at(self, point: str, action: Callable[[], None]) -> None:
        """Run action, once, in the thread of the next watch that reaches point."""
        if point not in POINTS:
            raise ValueError(f"no checkpoint {point!r}; there are {sorted(POINTS)}")
        with self._lock:
            self._actions.setdefault(point, []).append(action)

    def reached(self, point: str) -> None:
        """Called by the watch, holding no lock, at point."""
        if not self._actions:
            return  # nothing is waiting: the common case costs one test
        with self._lock:
            actions = self._actions.pop(point, [])
        for action in actions:
            action()


class _NoCheckpoints(Checkpoints):
    points: frozenset[str] = frozenset()  # a suite that asks is told there are none

    def at(self, point: str, action: Callable[[], None]) -> None:
        raise RuntimeError("this daemon runs without checkpoints")

    def reached(self, point: str) -> None:
        pass


NO_CHECKPOINTS: Checkpoints = _NoCheckpoints()
