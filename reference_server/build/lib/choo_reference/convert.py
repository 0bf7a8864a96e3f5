"""Conversions between the job manager's records and choo.v1 messages."""

from __future__ import annotations

import functools

from google.protobuf.timestamp_pb2 import Timestamp

from choo.v1 import daemon_pb2

from .jobs import Event


def timestamp(ns: int) -> Timestamp:
    return Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


# Every watcher of a job sends the same events: build each message once. The
# size matches the job store's in-memory window, which live watchers read.
@functools.lru_cache(maxsize=16384)
def event_to_proto(event: Event) -> daemon_pb2.JobEvent:
    """The message for an event; shared, so callers must not modify it."""
    return daemon_pb2.JobEvent(
        sequence=event.sequence,
        event_type=event.event_type,
        unit_id=event.unit_id,
        payload_json=event.payload_json,
        timestamp=timestamp(event.timestamp_ns),
    )
