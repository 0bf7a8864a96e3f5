"""Fixtures and helpers every feature's steps share: the target a scenario
talks to, what the scenario has seen so far, and small conversions."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from . import environment, journal
from .daemon_target import DaemonTarget, timestamp_ns
from .in_process import InProcessDaemon, ScriptedTarget
from .process import DaemonProcess
from .scripted_jobs import ScriptedEvent, ScriptedJobManager
from .seam import load_implementation
from .wait import wait_until

# How long a step waits for something that should happen "at once".
PROMPTLY = 1.0
# How long a step waits for something that takes real work (many events, a
# loaded machine): generous, so that only a daemon that never gets there fails.
EVENTUALLY = 30.0


def status_code(name: str) -> grpc.StatusCode:
    try:
        return grpc.StatusCode[name]
    except KeyError:
        raise ValueError(f"no gRPC status code named {name!r}") from None


def parse_timestamp_ns(text: str) -> int:
    stamp = Timestamp()
    stamp.FromJsonString(text)
    return timestamp_ns(stamp)


def events_from_table(datatable) -> list[ScriptedEvent]:
    header, *rows = datatable
    events = []
    for row in rows:
        cell = dict(zip(header, row))
        events.append(ScriptedEvent(
            sequence=int(cell["sequence"]),
            event_type=cell["event_type"],
            unit_id=cell.get("unit_id", ""),
            payload_json=cell.get("payload_json", "{}"),
            timestamp_ns=parse_timestamp_ns(cell["timestamp"]) if cell.get("timestamp") else 0,
        ))
    return events


def proto_event_fields(event) -> tuple:
    """A JobEvent message as comparable plain values, every field included."""
    return (event.sequence, event.event_type, event.unit_id, event.payload_json,
            timestamp_ns(event.timestamp))


def event_fields(event: ScriptedEvent) -> tuple:
    return (event.sequence, event.event_type, event.unit_id, event.payload_json, event.timestamp_ns)


class World:
    """What a scenario has seen so far: named watches, the scripted feed."""

    def __init__(self) -> None:
        self.watches: dict[str, object] = {}
        self.feed_events: list[ScriptedEvent] = []
        self.marks: dict[str, object] = {}
        self.recorded: dict[str, int] = {}  # job name -> events recorded so far
        # job id -> (first, last, payload size) of each recording, to rebuild
        # what each event was recorded with
        self.sizes: dict[str, list[tuple[int, int, int]]] = {}
        self.background: dict[str, tuple] = {}  # job name -> (thread, errors)

    def watch(self, name: str = "default"):
        return self.watches[name]


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def jobs_double() -> ScriptedJobManager:
    return ScriptedJobManager()


def _implementation(config):
    return load_implementation(config.getoption("implementation"))


@pytest.fixture
def target(request):
    """What the steps talk to: the scripted servicer for @scripted scenarios,
    the daemon under test for the rest."""
    chosen = request.getfixturevalue(
        "scripted_target" if request.node.get_closest_marker("scripted") else "daemon")
    journal.attach(chosen)
    return chosen


@pytest.fixture
def scripted_target(request, jobs_double):
    scripted = ScriptedTarget(_implementation(request.config), jobs_double)
    yield scripted
    problems = scripted.close(jobs_double.close_all_feeds)
    leaked = [r for r in jobs_double.subscriptions if not r.released.is_set()]
    problems += [f"subscription to {r.job_id!r} never released" for r in leaked]
    assert not problems, "; ".join(problems)


# How long a daemon shared by scenarios has to answer Health between two of
# them: it answered before, so a moment is plenty.
STILL_HEALTHY_S = 3.0

# Scenarios that end or restart the daemon get a daemon of their own.
OWN_DAEMON_TAGS = ("ends_daemon", "restarts_daemon", "fresh_daemon")


def remote_mode(config) -> bool:
    return bool(config.getoption("target") or config.getoption("server_cmd"))


@pytest.fixture(scope="session")
def shared_daemon_process(request):
    """One daemon for every scenario that can share it (--server-cmd)."""
    process = DaemonProcess(request.config.getoption("server_cmd"),
                            env=environment.settings.daemon_env())
    process.start()
    yield process
    process.close()


@pytest.fixture
def daemon(request, tmp_path):
    """The implementation under test: in process on a fresh data directory,
    or a daemon over a channel (--target, --server-cmd)."""
    from .remote import RemoteDaemon

    config = request.config
    own_process = None
    daemon: DaemonTarget
    if not remote_mode(config):
        daemon = InProcessDaemon(_implementation(config), tmp_path)
    elif config.getoption("target"):
        daemon = RemoteDaemon(config.getoption("target"))
    elif any(request.node.get_closest_marker(tag) for tag in OWN_DAEMON_TAGS):
        own_process = DaemonProcess(config.getoption("server_cmd"),
                                    env=environment.settings.daemon_env()).start()
        daemon = RemoteDaemon(own_process.address, own_process)
    else:
        process = request.getfixturevalue("shared_daemon_process")
        if not process.running() or not process.wait_healthy(STILL_HEALTHY_S):
            # A scenario before this one ended it, or it died: a fresh one.
            process.kill()
            process.start()
        daemon = RemoteDaemon(process.address, process)
    yield daemon
    try:
        problems = daemon.close()
    finally:
        if own_process is not None:
            own_process.close()
    assert not problems, "; ".join(problems)
    shared = daemon.process if own_process is None and isinstance(daemon, RemoteDaemon) else None
    if shared is not None and not shared.wait_healthy(STILL_HEALTHY_S) and not shared.running():
        # It died while the suite cleaned up after the scenario (stopping its
        # jobs): this scenario's, not the next one's.
        raise AssertionError(f"the daemon {shared.how_it_ended()} while the scenario was cleaned up "
                             "(its jobs stopped); the end of its output: "
                             + " | ".join(shared.last_lines(8)))


__all__ = ["EVENTUALLY", "PROMPTLY", "World", "event_fields", "events_from_table",
           "proto_event_fields", "status_code", "wait_until"]
