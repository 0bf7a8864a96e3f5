"""Property tests of JobStore feeds: random interleavings of recording,
watchers joining, reading, cancelling and the job finishing (W9-W17)."""

from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

from choo_reference.job_store import JobStore, JobTerminal
from choo_reference.jobs import Event

SETTINGS = settings(
    max_examples=150,
    stateful_step_count=50,
    deadline=None,  # SQLite commit times vary with the machine's load
    database=None,  # keep no example files in the work tree
    suppress_health_check=[HealthCheck.too_slow],
)

texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
specs = st.tuples(st.sampled_from(["task.started", "task.completed", "x"]), texts, texts)


class Watcher:
    def __init__(self, start: int, feed, unsubscribe) -> None:
        self.start = start
        self.feed = feed
        self.unsubscribe = unsubscribe
        self.got: list[Event] = []
        self.wakes = 0
        self.caught_up = False  # the last read returned []
        self.ended = False
        self.cancelled = False

    def wake(self) -> None:
        self.wakes += 1


class FeedMachine(RuleBasedStateMachine):
    """One job, a model of its log (the list of recorded events), and
    watchers that must each see exactly the run from their start."""

    watchers = Bundle("watchers")

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="jobstore-"))
        self.clock = itertools.count(1_000_000, 7)
        self.store: JobStore | None = None
        self.log: list[Event] = []
        self.all: list[Watcher] = []
        self.finished = False

    @initialize(window=st.sampled_from([1, 3, 16, 1 << 16]))
    def open_store(self, window: int) -> None:
        # Small windows push readers through the SQLite pages and back.
        self.store = JobStore(
            self.dir / "jobs.db", clock_ns=lambda: next(self.clock), event_window=window
        )
        self.store.create_job("job")

    def expected_for(self, w: Watcher) -> list[Event]:
        return self.log[max(w.start, 1) - 1 :]

    def check_wakes_after_change(self, before: dict[int, int]) -> None:
        # Every watcher that had caught up must have been woken; that wake
        # stays pending until it reads again, so it covers later changes.
        for w in self.all:
            if w.caught_up and not w.cancelled:
                assert w.wakes > before[id(w)], "a caught-up watcher was not woken"
                w.caught_up = False

    @precondition(lambda self: not self.finished)
    @rule(spec=specs)
    def record(self, spec) -> None:
        before = {id(w): w.wakes for w in self.all}
        event = self.store.record("job", *spec)
        assert event.sequence == len(self.log) + 1
        assert (event.event_type, event.unit_id, event.payload_json) == spec
        self.log.append(event)
        self.check_wakes_after_change(before)

    @precondition(lambda self: not self.finished)
    @rule(batch=st.lists(specs, min_size=1, max_size=12))
    def record_many(self, batch) -> None:
        before = {id(w): w.wakes for w in self.all}
        events = self.store.record_many("job", batch)
        assert [e.sequence for e in events] == list(
            range(len(self.log) + 1, len(self.log) + len(batch) + 1)
        )
        self.log.extend(events)
        self.check_wakes_after_change(before)

    @precondition(lambda self: self.finished)
    @rule(spec=specs)
    def record_after_finish_is_refused(self, spec) -> None:
        try:
            self.store.record("job", *spec)
        except JobTerminal:
            return
        raise AssertionError("recorded on a terminal job")

    @rule(target=watchers, data=st.data())
    def subscribe(self, data) -> Watcher:
        n = len(self.log)
        start = data.draw(
            st.one_of(st.sampled_from([0, 1, n, n + 1, n + 2]), st.integers(0, n + 3)),
            label="from_sequence",
        )
        holder: list[Watcher] = []
        feed, unsubscribe = self.store.subscribe("job", start, lambda: holder[0].wake())
        w = Watcher(start, feed, unsubscribe)
        holder.append(w)
        self.all.append(w)
        return w

    def _read(self, w: Watcher, limit: int):
        batch = w.feed.read(limit)
        if w.cancelled:
            assert batch == []
            return batch
        expected = self.expected_for(w)
        if batch is None:
            # Never None while a recorded event remains unread (W14).
            assert self.finished and w.got == expected
            w.ended = True
            return batch
        assert not w.ended, "a feed returned events after it ended"
        assert len(batch) <= limit
        w.got.extend(batch)
        w.caught_up = not batch
        if not batch:
            assert w.got == expected, "read() returned [] with events unread"
        return batch

    @rule(w=watchers, limit=st.integers(1, 7))
    def read(self, w: Watcher, limit: int) -> None:
        self._read(w, limit)

    @rule(w=watchers)
    def catch_up(self, w: Watcher) -> None:
        while self._read(w, 64):
            pass

    @rule(w=consumes(watchers))
    def cancel(self, w: Watcher) -> None:
        w.unsubscribe()
        w.unsubscribe()  # idempotent
        w.cancelled = True

    @precondition(lambda self: not self.finished)
    @rule(status=st.sampled_from(["completed", "failed", "cancelled"]))
    def finish(self, status: str) -> None:
        before = {id(w): w.wakes for w in self.all}
        self.store.set_status("job", status)
        self.finished = True
        self.check_wakes_after_change(before)

    @invariant()
    def each_watcher_has_a_prefix_of_its_run(self) -> None:
        for w in self.all:
            expected = self.expected_for(w)
            assert w.got == expected[: len(w.got)]

    @invariant()
    def subscriptions_are_listed(self) -> None:
        if self.store is not None:
            assert self.store.subscriptions("job") == [(w.start, not w.cancelled) for w in self.all]
            assert self.store.open_subscription_count() == sum(not w.cancelled for w in self.all)

    def teardown(self) -> None:
        try:
            if self.store is None:
                return
            if not self.finished:
                # Every watcher caught up, then the end: each must be woken.
                for w in self.all:
                    if not w.cancelled:
                        while self._read(w, 64):
                            pass
                self.finish("completed")
            for w in self.all:
                if w.cancelled:
                    assert w.feed.read(5) == []
                    continue
                while (batch := w.feed.read(5)) is not None:
                    assert batch, "feed of a finished job returned [] before None"
                    w.got.extend(batch)
                assert w.got == self.expected_for(w)
            assert self.store.events("job") == self.log
            self.store.close()
            # The same log after reopening (W17).
            with JobStore(self.dir / "jobs.db") as again:
                assert again.events("job") == self.log
                assert again.get_job("job").status == self.store.get_job("job").status
        finally:
            if self.store is not None:
                self.store.close()
            shutil.rmtree(self.dir, ignore_errors=True)


FeedMachine.TestCase.settings = SETTINGS
TestFeedMachine = pytest.mark.long(FeedMachine.TestCase)


@SETTINGS
@given(
    n=st.integers(0, 30),
    start=st.integers(0, 35),
    limit=st.integers(1, 9),
    window=st.sampled_from([1, 4, 64]),
)
def test_terminal_replay_is_exactly_the_run_from_start(n, start, limit, window) -> None:
    with tempfile.TemporaryDirectory() as d:
        with JobStore(Path(d) / "j.db", event_window=window) as store:
            store.create_job("j")
            recorded = [store.record("j", "t", "", str(i)) for i in range(n)]
            store.set_status("j", "completed")
            feed, _ = store.subscribe("j", start, lambda: None)
            got = []
            while (batch := feed.read(limit)) is not None:
                assert 0 < len(batch) <= limit
                got.extend(batch)
            assert got == recorded[max(start, 1) - 1 :]
