"""convert.event_to_wire: each event serialized once for all its watchers.
The bytes must be the event's own, whatever else shares its numbers, and the
cache must stay within its bounds."""

from __future__ import annotations

import threading

import pytest

from choo.v1 import daemon_pb2
from choo_reference import convert
from choo_reference.jobs import Event


@pytest.fixture(autouse=True)
def empty_cache():
    with convert._changing:
        convert._wire.clear()
        convert._wire_bytes = 0
    yield


def _event(sequence: int, payload: str = '{"n": 1}', timestamp_ns: int = 1_700_000_000_123_456_789):
    return Event(sequence=sequence, event_type="task_output", unit_id="u1",
                 payload_json=payload, timestamp_ns=timestamp_ns)


def _decoded(data: bytes) -> daemon_pb2.JobEvent:
    return daemon_pb2.JobEvent.FromString(data)


def test_the_bytes_are_the_event_as_watchjob_sends_it():
    event = _event(7)
    message = _decoded(convert.event_to_wire(event))
    assert (message.sequence, message.event_type, message.unit_id, message.payload_json) == (
        7, "task_output", "u1", '{"n": 1}')
    assert message.timestamp.seconds * 10**9 + message.timestamp.nanos == event.timestamp_ns
    assert convert.event_to_wire(event) is convert.event_to_wire(event), "serialized again"


def test_events_of_two_jobs_with_the_same_numbers_keep_their_own_payloads():
    # Two jobs can record sequence 1 in the same nanosecond.
    first, second = _event(1, '{"job": "a"}'), _event(1, '{"job": "b"}')
    assert _decoded(convert.event_to_wire(first)).payload_json == '{"job": "a"}'
    assert _decoded(convert.event_to_wire(second)).payload_json == '{"job": "b"}'
    assert _decoded(convert.event_to_wire(first)).payload_json == '{"job": "a"}'


def test_an_equal_copy_read_from_the_database_shares_the_bytes():
    data = convert.event_to_wire(_event(3))
    assert convert.event_to_wire(_event(3)) is data


def test_a_large_event_is_not_kept():
    big = _event(1, '{"x": "' + "y" * convert.CACHED_PAYLOAD_MAX + '"}')
    assert _decoded(convert.event_to_wire(big)).payload_json == big.payload_json
    assert not convert._wire


def test_the_cache_stays_within_its_count_and_bytes_from_many_threads():
    def serialize(offset: int) -> None:
        for n in range(offset, offset + convert.CACHED_EVENTS):
            convert.event_to_wire(_event(n, '{"pad": "' + "p" * 300 + '"}'))

    threads = [threading.Thread(target=serialize, args=(i * 3000,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    assert len(convert._wire) <= convert.CACHED_EVENTS
    assert convert._wire_bytes <= convert.CACHED_BYTES
    assert convert._wire_bytes == sum(len(data) for _, data in convert._wire.values())


def test_the_oldest_events_leave_first():
    for n in range(1, convert.CACHED_EVENTS + 11):
        convert.event_to_wire(_event(n))
    kept = sorted(sequence for sequence, _ in convert._wire)
    assert kept == list(range(11, convert.CACHED_EVENTS + 11))
    # A hit does not make an old event young again: the first in stays first out.
    convert.event_to_wire(_event(11))
    convert.event_to_wire(_event(convert.CACHED_EVENTS + 11))
    assert 11 not in {sequence for sequence, _ in convert._wire}
