"""Conversions between the job manager's records and choo.v1 messages."""

from __future__ import annotations

import threading
from collections import OrderedDict

from google.protobuf.timestamp_pb2 import Timestamp

from choo.v1 import daemon_pb2

from .jobs import Event


def set_time(stamp: Timestamp, ns: int) -> None:
    """Set a message's Timestamp field in place: a Timestamp built apart and
    copied in costs twice as much, once per event."""
    stamp.seconds, stamp.nanos = divmod(ns, 1_000_000_000)


def event_to_proto(event: Event) -> daemon_pb2.JobEvent:
    """The message for an event (a new one each call)."""
    message = daemon_pb2.JobEvent(sequence=event.sequence, event_type=event.event_type,
                                  unit_id=event.unit_id, payload_json=event.payload_json)
    set_time(message.timestamp, event.timestamp_ns)
    return message


# -- the daemon's WatchJob: each event serialized once for all its watchers --------

# Events whose bytes are kept for the next watcher: those with a payload of at
# most this many characters, the newest of them, up to this many events and
# this many bytes (with the events they hold: a few MB of memory at most). A
# larger event is serialized for each delivery.
CACHED_PAYLOAD_MAX = 1024
CACHED_EVENTS = 8192
CACHED_BYTES = 2 * 1024 * 1024

# (sequence, timestamp_ns) -> (event, its JobEvent bytes). Every live watcher
# of a job reads the same Event objects from the job's in-memory window, so a
# hit is a dict probe and an identity check; a watcher paging through SQLite
# gets equal copies, which hit too (compared whole, as another job's event can
# share both numbers). Oldest out first: an OrderedDict, whose oldest entry is
# taken in constant time, where a plain dict's first entry is found by
# walking past the slots of every entry taken before it (about 7 µs an event
# once the cache is full, twice what serializing the event costs).
_wire: OrderedDict[tuple[int, int], tuple[Event, bytes]] = OrderedDict()
_wire_bytes = 0  # the length of the bytes in _wire
# Held to change _wire (once per event, not per delivery): watches on several
# threads may add at once, and evicting iterates.
_changing = threading.Lock()


def event_to_wire(event: Event) -> bytes:
    """The event as WatchJob sends it: a serialized JobEvent."""
    key = (event.sequence, event.timestamp_ns)
    entry = _wire.get(key)
    if entry is not None and (entry[0] is event or entry[0] == event):
        return entry[1]
    return _serialize(key, event)


def _serialize(key: tuple[int, int], event: Event) -> bytes:
    global _wire_bytes
    data = event_to_proto(event).SerializeToString()
    if len(event.payload_json) > CACHED_PAYLOAD_MAX:
        return data
    with _changing:
        old = _wire.pop(key, None)  # built meanwhile, or another job's event
        if old is not None:
            _wire_bytes -= len(old[1])
        _wire[key] = (event, data)
        _wire_bytes += len(data)
        while len(_wire) > CACHED_EVENTS or _wire_bytes > CACHED_BYTES:
            _wire_bytes -= len(_wire.popitem(last=False)[1][1])
    return data
