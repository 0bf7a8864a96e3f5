"""What a watch has received, as the steps wait on it: a waiter wakes when
its count arrives or the call ends, and not for each event before that (a
reader that woke the steps on every one of 50,000 events would have the two
threads take turns for each)."""

from __future__ import annotations

import threading

import grpc

from choo_conformance.stream import OK, ReceivedStream, Status
from choo_conformance.wait import wait_until


class _CountingStream(ReceivedStream):
    def __init__(self) -> None:
        super().__init__()
        self.wakes = 0
        notify_all = self._cond.notify_all

        def counted() -> None:
            self.wakes += 1
            notify_all()

        self._cond.notify_all = counted


def _waiting(stream: ReceivedStream, count: int) -> tuple[threading.Thread, list[bool]]:
    got: list[bool] = []
    thread = threading.Thread(target=lambda: got.append(stream.wait_for_events(count, 30)))
    thread.start()
    return thread, got


def _until_waiting(stream: ReceivedStream, count: int) -> None:
    # The waiter has registered its count once it appears in the list.
    assert wait_until(lambda: count in stream._counts_awaited, 30)


def test_a_waiter_wakes_once_its_count_arrives_not_for_every_event():
    stream = _CountingStream()
    thread, got = _waiting(stream, 5000)
    _until_waiting(stream, 5000)
    for n in range(6000):
        stream._add(n)
    thread.join(30)
    assert got == [True]
    assert stream.wakes == 1


def test_a_waiter_whose_count_has_arrived_returns_at_once():
    stream = ReceivedStream()
    for n in range(3):
        stream._add(n)
    assert stream.wait_for_events(2, 0)


def test_a_call_that_ends_short_wakes_the_waiter_with_false():
    stream = ReceivedStream()
    thread, got = _waiting(stream, 10)
    _until_waiting(stream, 10)
    stream._add(1)
    stream._finish(Status(grpc.StatusCode.UNAVAILABLE, "shutting down"))
    thread.join(30)
    assert got == [False]
    assert stream.wait_for_status(0) == Status(grpc.StatusCode.UNAVAILABLE, "shutting down")


def test_waiters_for_different_counts_each_wake_at_theirs():
    stream = ReceivedStream()
    first, got_first = _waiting(stream, 2)
    second, got_second = _waiting(stream, 4)
    _until_waiting(stream, 2)
    _until_waiting(stream, 4)
    for n in range(3):
        stream._add(n)
    first.join(30)
    assert got_first == [True] and second.is_alive()
    stream._add(3)
    second.join(30)
    assert got_second == [True]
    stream._finish(OK)
    assert not stream._counts_awaited
