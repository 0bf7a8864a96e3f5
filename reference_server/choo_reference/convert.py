"""Conversions between the job manager's records and choo.v1 messages."""

from __future__ import annotations

import functools

from google.protobuf.timestamp_pb2 import Timestamp

from choo.v1 import daemon_pb2

from .jobs import Event


def timestamp(ns: int) -> Timestamp:
    return Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


# Events whose messages are built once for all watchers: those with a payload
# of at most this many characters, the newest 16,384 of them (16 MiB of
# payloads at most). A larger event's message is built for each delivery.
CACHED_PAYLOAD_MAX = 1024
CACHED_EVENTS = 16384


def event_to_proto(event: Event) -> daemon_pb2.JobEvent:
    """The message for an event; shared, so callers must not modify it."""
    if len(event.payload_json) <= CACHED_PAYLOAD_MAX:
        return _cached(event)
    return _build(event)


def _build(event: Event) -> daemon_pb2.JobEvent:
    return daemon_pb2.JobEvent(
        sequence=event.sequence,
        event_type=event.event_type,
        unit_id=event.unit_id,
        payload_json=event.payload_json,
        timestamp=timestamp(event.timestamp_ns),
    )


# Every watcher of a job sends the same events: build each message once.
_cached = functools.lru_cache(maxsize=CACHED_EVENTS)(_build)
