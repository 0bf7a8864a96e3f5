"""Deliberately broken job managers: the reference JobStore with one classic
event-stream bug each. features/event_stream.feature must catch every one
(tests/test_suite_catches_bugs.py). Each is an in-process implementation
(choo_conformance.seam) for `--implementation tests.broken_job_managers:NAME`.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

from choo_reference import in_process
from choo_reference.job_store import JobStore


class _FeedWrapper:
    def __init__(self, feed, history: int) -> None:
        self._feed = feed
        self.history = history  # events already recorded when subscribing

    def read(self, limit):
        events = self._feed.read(limit)
        return events if events is None else self.alter(list(events))

    def alter(self, events):
        return events


class _BrokenStore(JobStore):
    feed_class = _FeedWrapper

    def subscribe(self, job_id, from_sequence, wake):
        history = len(self.events(job_id))
        feed, unsubscribe = super().subscribe(job_id, from_sequence, wake)
        return self.feed_class(feed, history), unsubscribe


class _Renumbers(_FeedWrapper):
    """Numbers replayed events by their position in this watch."""

    position = 0

    def alter(self, events):
        out = []
        for event in events:
            self.position += 1
            if event.sequence <= self.history:
                event = dataclasses.replace(event, sequence=self.position)
            out.append(event)
        return out


class _DropsWhenSlow(_FeedWrapper):
    """A watcher that is behind (a full batch waiting) loses some events."""

    def read(self, limit):
        events = self._feed.read(limit)
        if events is None or len(events) < limit:
            return events
        return [e for e in events if e.sequence % 50 != 0]


class _DuplicatesHandover(_FeedWrapper):
    """Repeats the last event delivered before the watch caught up."""

    last = None
    caught_up = False

    def alter(self, events):
        if not events:
            self.caught_up = True
            return events
        if self.caught_up and self.last is not None:
            events = [self.last, *events]
        self.caught_up = False
        self.last = events[-1]
        return events


class _LosesPayloads(_FeedWrapper):
    """Replayed events come back without their payload."""

    def alter(self, events):
        return [dataclasses.replace(e, payload_json="{}") if e.sequence <= self.history else e
                for e in events]


def _store_with(feed_class):
    def daemon(data_dir):
        store = _BrokenStore(in_process.database(data_dir))
        store.feed_class = feed_class
        return in_process.ReferenceInstance(data_dir, store)

    return SimpleNamespace(daemon=daemon, watch_servicer=in_process.watch_servicer)


renumbers_on_replay = _store_with(_Renumbers)
drops_events_when_slow = _store_with(_DropsWhenSlow)
duplicates_handover_event = _store_with(_DuplicatesHandover)
loses_payloads_on_replay = _store_with(_LosesPayloads)

# The rule each broken job manager must at least break.
EXPECTED = {
    "renumbers_on_replay": "W10",
    "drops_events_when_slow": "W15",
    "duplicates_handover_event": "W13",
    "loses_payloads_on_replay": "W17",
}
