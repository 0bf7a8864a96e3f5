"""Fixtures and helpers every feature's steps share."""

from __future__ import annotations

import importlib

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from choo_reference.jobs import Event

from .in_process import InProcessDaemon, InProcessTarget, default_servicer
from .scripted_jobs import ScriptedJobManager
from .wait import wait_until

# How long a step waits for something that should happen "at once".
PROMPTLY = 1.0
# How long a step waits for something that takes real work (many events).
EVENTUALLY = 10.0


def load_factory(spec: str | None, default=default_servicer):
    """`module:callable` -> the callable; None -> the default."""
    if not spec:
        return default
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
        self.recorded: dict[str, int] = {}  # job id -> events recorded so far
        self.background: dict[str, tuple] = {}  # job id -> (thread, errors)

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


# Scenario tags that decide where a scenario can run, and why not elsewhere.
NEEDS_IN_PROCESS = {
    "scripted": "uses the scripted job manager double, which exists only in process",
}
NEEDS_CHANNEL = {
    "daemon_capacity": "checks the capacity of a daemon process; grpc_testing gives every "
    "call a thread of its own, so in process it would measure the harness",
}
NEEDS_OWN_DAEMON = {
    "ends_daemon": "ends the daemon, so it needs one of its own (--server-cmd)",
    "restarts_daemon": "restarts the daemon, so it needs one started by the suite (--server-cmd)",
    "fresh_daemon": "counts the daemon's jobs, so it needs one of its own (--server-cmd)",
}


def remote_mode(config) -> bool:
    return bool(config.getoption("target") or config.getoption("server_cmd"))


@pytest.fixture(autouse=True)
def _skip_where_a_scenario_cannot_run(request):
    config = request.config
    if not remote_mode(config):
        for tag, reason in NEEDS_CHANNEL.items():
            if request.node.get_closest_marker(tag):
                pytest.skip(f"over a channel only: this scenario {reason}")
        return
    for tag, reason in NEEDS_IN_PROCESS.items():
        if request.node.get_closest_marker(tag):
            pytest.skip(f"in process only: {reason}")
    if config.getoption("target"):
        for tag, reason in NEEDS_OWN_DAEMON.items():
            if request.node.get_closest_marker(tag):
                pytest.skip(f"not against --target: this scenario {reason}")


@pytest.fixture(scope="session")
def shared_daemon_process(request):
    """One daemon for every scenario that can share it (--server-cmd)."""
    from .remote import DaemonProcess

    process = DaemonProcess(request.config.getoption("server_cmd"))
    process.start()
    yield process
    process.stop()


def _remote_daemon(request):
    from .remote import DaemonProcess, RemoteDaemon

    config = request.config
    if config.getoption("target"):
        return RemoteDaemon(config.getoption("target")), None
    if any(request.node.get_closest_marker(tag) for tag in NEEDS_OWN_DAEMON):
        process = DaemonProcess(config.getoption("server_cmd"))
        process.start()
        return RemoteDaemon(process.address, process), process
    process = request.getfixturevalue("shared_daemon_process")
    return RemoteDaemon(process.address, process), None


@pytest.fixture
def daemon(request, tmp_path):
    """The implementation under test: the reference job manager on a fresh
    database, in process; or a daemon over a channel (--target/--server-cmd)."""
    if remote_mode(request.config):
        daemon, own_process = _remote_daemon(request)
        yield daemon
        problems = daemon.close()
        if own_process is not None:
            own_process.stop()
        assert not problems, "; ".join(problems)
        return
    daemon = InProcessDaemon(
        tmp_path / "daemon.db",
        load_factory(request.config.getoption("servicer")),
        load_factory(request.config.getoption("job_manager"), None),
    )
    yield daemon
    problems = daemon.close()
    if not wait_until(lambda: daemon.open_subscription_count() == 0, PROMPTLY):
        problems.append(f"{daemon.open_subscription_count()} subscriptions never released")
    daemon.store.close()
    assert not problems, "; ".join(problems)
