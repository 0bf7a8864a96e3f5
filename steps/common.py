"""Fixtures and helpers every feature's steps share."""

from __future__ import annotations

import importlib

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from reference_server.jobs import Event

from .in_process import InProcessTarget, default_servicer
from .scripted_jobs import ScriptedJobManager

# How long a step waits for something that should happen "at once".
PROMPTLY = 1.0
# How long a step waits for something that takes real work (many events).
EVENTUALLY = 10.0


def load_factory(spec: str | None):
    """`module:callable` -> the callable; None -> the reference servicer."""
    if not spec:
        return default_servicer
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def status_code(name: str) -> grpc.StatusCode:
    try:
        return grpc.StatusCode[name]
    except KeyError:
        raise ValueError(f"no gRPC status code named {name!r}") from None


def timestamp_ns(text: str) -> int:
    stamp = Timestamp()
    stamp.FromJsonString(text)
    return stamp.seconds * 1_000_000_000 + stamp.nanos


def events_from_table(datatable) -> list[Event]:
    header, *rows = datatable
    events = []
    for row in rows:
        cell = dict(zip(header, row))
        events.append(
            Event(
                sequence=int(cell["sequence"]),
                event_type=cell["event_type"],
                unit_id=cell.get("unit_id", ""),
                payload_json=cell.get("payload_json", "{}"),
                timestamp_ns=timestamp_ns(cell["timestamp"]) if cell.get("timestamp") else 0,
            )
        )
    return events


def proto_event_fields(event) -> tuple:
    """A JobEvent message as comparable plain values, every field included."""
    ns = event.timestamp.seconds * 1_000_000_000 + event.timestamp.nanos
    return (event.sequence, event.event_type, event.unit_id, event.payload_json, ns)


def event_fields(event: Event) -> tuple:
    return (event.sequence, event.event_type, event.unit_id, event.payload_json, event.timestamp_ns)


class World:
    """What a scenario has seen so far: named watches, the scripted feed."""

    def __init__(self) -> None:
        self.watches: dict[str, object] = {}
        self.feed_events: list[Event] = []
        self.marks: dict[str, int] = {}

    def watch(self, name: str = "default"):
        return self.watches[name]


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def jobs_double() -> ScriptedJobManager:
    return ScriptedJobManager()


@pytest.fixture
def target(request, jobs_double):
    factory = load_factory(request.config.getoption("servicer"))
    target = InProcessTarget(jobs_double, factory)
    yield target
    problems = target.close()
    leaked = [r for r in jobs_double.subscriptions if not r.released.is_set()]
    problems += [f"subscription to {r.job_id!r} never released" for r in leaked]
    assert not problems, "; ".join(problems)
