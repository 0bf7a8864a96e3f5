"""A scripted JobManager double: the role of the seed's Go mockJobManager.

Each job has a feed script; every subscribe() builds a fresh feed from it and
records what the servicer asked for (the from_sequence) and whether the
subscription was released.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ScriptedEvent:
    """An event as a job manager hands it to a watch servicer."""

    sequence: int
    event_type: str
    unit_id: str = ""
    payload_json: str = "{}"
    timestamp_ns: int = 0  # nanoseconds since the Unix epoch, UTC


@dataclass(frozen=True)
class ScriptedJob:
    job_id: str
    status: str


class UnknownJob(LookupError):
    """The seam's "no such job" (a LookupError)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job not found: {job_id}")
        self.job_id = job_id


class Script:
    """How a job's feed behaves."""

    def feed(self) -> ScriptedFeed:
        raise NotImplementedError


@dataclass
class Scripted(Script):
    """Yields these events (whatever from_sequence was), then closes or
    stays open without more."""

    events: Sequence[ScriptedEvent]
    closes: bool = True

    def feed(self):
        return ScriptedFeed(iter(self.events), self.closes)


class Blocking(Script):
    """Never yields an event and never closes on its own."""

    def feed(self):
        return ScriptedFeed(iter(()), closes=False)


class Firehose(Script):
    """Always has more events pending: 1, 2, 3, ... without end."""

    def feed(self):
        events = (
            ScriptedEvent(n, "task.backpressure", "unit-1", f'{{"n": {n}}}', n)
            for n in itertools.count(1)
        )
        return ScriptedFeed(events, closes=False)


class ScriptedFeed:
    def __init__(self, events, closes: bool) -> None:
        self._events = events
        self._closes = closes
        self._exhausted = False
        self._closed = False  # by release or teardown: reads end the feed

    def read(self, limit: int):
        if self._closed:
            return None
        if not self._exhausted:
            batch = list(itertools.islice(self._events, limit))
            if batch:
                return batch
            self._exhausted = True
        return None if self._closes else []

    def close(self) -> None:
        self._closed = True


@dataclass
class SubscriptionRecord:
    job_id: str
    from_sequence: int
    feed: ScriptedFeed
    wake: Callable[[], None]
    released: threading.Event = field(default_factory=threading.Event)


class ScriptedJobManager:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, ScriptedJob] = {}
        self._scripts: dict[str, Script] = {}
        self.subscriptions: list[SubscriptionRecord] = []

    # -- scripting ---------------------------------------------------------

    def add_job(self, job_id: str, status: str, script: Script | None = None) -> None:
        with self._lock:
            self._jobs[job_id] = ScriptedJob(job_id=job_id, status=status)
            self._scripts[job_id] = script or Blocking()

    def set_script(self, job_id: str, script: Script) -> None:
        with self._lock:
            self._scripts[job_id] = script

    def close_all_feeds(self) -> None:
        """End every feed and wake its reader, so no handler stays blocked."""
        with self._lock:
            records = list(self.subscriptions)
        for record in records:
            record.feed.close()
            record.wake()

    def open_subscriptions(self) -> list[SubscriptionRecord]:
        with self._lock:
            return [r for r in self.subscriptions if not r.released.is_set()]

    # -- the JobManager interface -------------------------------------------

    def get_job(self, job_id: str) -> ScriptedJob:
        with self._lock:
            try:
                return self._jobs[job_id]
            except KeyError:
                raise UnknownJob(job_id) from None

    def subscribe(self, job_id: str, from_sequence: int, wake):
        with self._lock:
            if job_id not in self._jobs:
                raise UnknownJob(job_id)
            record = SubscriptionRecord(job_id, from_sequence, self._scripts[job_id].feed(), wake)
            self.subscriptions.append(record)

        def unsubscribe() -> None:
            record.feed.close()
            record.released.set()

        return record.feed, unsubscribe
