"""Steps of features/watch_job_black_box.feature: WatchJob through
DaemonService alone. Jobs come from StartJob on the suite's tasks folders
(lifecycle_steps), and every expectation is built from what the daemon
itself delivered: the job's own events, replayed, are the reference."""

from __future__ import annotations

import grpc
from pytest_bdd import given, parsers, then, when

from .event_stream_steps import time_for
from .fixtures import EVENTUALLY, PROMPTLY, proto_event_fields
from .lifecycle_steps import (
    _jobs,
    _last_job,
    _start,
    tasks_folder,
    wait_for_progress,
    wait_held_command_started,
)

STEP_KINDS = {
    "pass": lambda n: "true",
    "print a line": lambda n: f"echo step {n} of many",
    "wait for their release": lambda n: f'wait for "step-{n}"',
}


def _fields(watch) -> list[tuple]:
    return [proto_event_fields(e) for e in watch.received()]


def _ended_ok(watch, count_hint: int = 0):
    status = watch.wait_for_status(time_for(count_hint))
    assert status is not None, f"the watch had not ended; it had {len(watch.received())} events"
    assert status.code == grpc.StatusCode.OK, f"the watch ended {status}"


def _contiguous_from_1(watch) -> list[int]:
    sequences = [e.sequence for e in watch.received()]
    assert sequences, "the watch received no events: a job that ran commands recorded nothing"
    assert sequences == list(range(1, len(sequences) + 1)), (
        f"sequences are not 1, 2, 3, ...: first {sequences[:8]}, last {sequences[-5:]}")
    unstamped = [e.sequence for e in watch.received() if not e.HasField("timestamp")]
    assert not unstamped, (f"{len(unstamped)} events came without the timestamp they were recorded "
                           f"with (W9), the first: {unstamped[:5]}")
    return sequences


def _job_events(target, world) -> list[tuple]:
    """Every event of the (finished) job, as a watch from 1 returns it."""
    if "job_events" not in world.marks:
        watch = target.watch(_last_job(world), 1)
        _ended_ok(watch)
        world.marks["job_events"] = _fields(watch)
    return world.marks["job_events"]


def _wait_started(target, world, name: str) -> None:
    wait_held_command_started(target, world, world.jobs.root / f"started-{name}",
                              f'the command "{name}"')


def _released(target, world, name: str) -> None:
    _wait_started(target, world, name)
    (world.jobs.root / f"release-{name}").touch()


# -- Given ------------------------------------------------------------------


@given(parsers.re(r'a tasks folder "(?P<name>[^"]+)" with (?P<units>one|\d+) (?P<independent>independent )?'
                  r'units? of (?P<count>\d+) steps that each (?P<kind>.+)$'))
def folder_of_steps(world, tmp_path, name, units, count, kind, independent=None):
    """One unit, or a chain of them (each after the one before), or units
    that need none of the others, of `count` steps each; steps are numbered
    across the units."""
    units, count = 1 if units == "one" else int(units), int(count)
    rows = [["unit", "depends_on", "commands"]]
    for u in range(units):
        first = u * count + 1
        commands = "; ".join(STEP_KINDS[kind](n) for n in range(first, first + count))
        rows.append([f"part-{u + 1}", f"part-{u}" if u and not independent else "", commands])
    world.marks["steps"] = units * count
    tasks_folder(world, tmp_path, name, rows)


@given(parsers.parse('a job on "{folder}" that has completed, watched from 1 to its end'))
def finished_job_watched(target, world, tmp_path, folder):
    jobs = _jobs(world, tmp_path)
    _start(target, world, tmp_path, folder, repo=jobs.new_repository())
    job_id = _last_job(world)
    wait_for_progress(target, job_id, "completed")
    world.watches["default"] = world.watches["first"] = watch = target.watch(job_id, 1)
    _ended_ok(watch)
    _contiguous_from_1(watch)
    world.marks["job_events"] = _fields(watch)


# -- When -------------------------------------------------------------------


@when(parsers.re(r'a client starts a job on "(?P<folder>[^"]+)"(?: with parallelism (?P<parallelism>\d+))? '
                 r'behind a gate$'))
def start_behind_gate(target, world, tmp_path, folder, parallelism=None):
    """The folder's units wait for a first unit that holds until released."""
    _jobs(world, tmp_path)
    source = tmp_path / "tasks" / folder
    gated = tmp_path / "tasks" / f"{folder}-gated"
    tasks_folder(world, tmp_path, f"{folder}-gated",
                 [["unit", "depends_on", "commands"], ["gate", "", 'wait for "gate"']])
    for unit in source.iterdir():
        copy = gated / unit.name
        copy.mkdir()
        for entry in unit.iterdir():
            text = entry.read_text()
            if entry.name == "IMPLEMENTATION_PLAN.md":
                text = text.replace("depends_on: []", "depends_on: [gate]")
            (copy / entry.name).write_text(text)
    _start(target, world, tmp_path, f"{folder}-gated", parallelism=int(parallelism or 0))
    _last_job(world)  # blocked, not failed, if StartJob refused it


@when("the gate is released")
def gate_released(target, world):
    _released(target, world, "gate")


@when(parsers.parse("a client watches that job from sequence {position}"))
def watch_that_job(target, world, position):
    world.watches["default"] = target.watch(_last_job(world), _sequence(world, position))


def _sequence(world, position: str) -> int:
    if position.lstrip("-").isdigit():
        return int(position)
    last = world.marks["job_events"][-1][0]
    return {"the last": last, "the last + 1": last + 1}[position]


@when(parsers.parse('client "{name}" watches that job from sequence {n:d}'))
def named_watches_that_job(target, world, name, n):
    world.watches[name] = target.watch(_last_job(world), n)


@when(parsers.parse("{count:d} clients watch that job from sequence {n:d}"))
def many_watch_that_job(target, world, count, n):
    for i in range(count):
        world.watches[f"client-{i}"] = target.watch(_last_job(world), n)


@when(parsers.parse('a second client watches that job from sequence {n:d}'))
def second_watches_that_job(target, world, n):
    world.watches["second"] = target.watch(_last_job(world), n)


@when(parsers.parse('the command "{name}" is running'))
def command_running(target, world, name):
    _wait_started(target, world, name)


@when(parsers.re(r'the commands? (?P<names>"[^"]+"(?:(?:, | and )"[^"]+")*) (?:is|are) released'
                 r'(?: one after another)?$'))
def commands_released(target, world, names):
    for name in names.strip('"').replace('" and "', '", "').split('", "'):
        _released(target, world, name)


@when(parsers.parse('client "{name}" cancels its watch'))
def named_cancels(world, name):
    world.watch(name).cancel()


@when("the client has received at least 1 event")
def received_one(world):
    assert world.watch().wait_for_events(1, EVENTUALLY), (
        "no event arrived while the job's first command ran")


@when("a client resumes that job from the last sequence it saw plus 1")
def resumes_that_job(target, world):
    seen = world.watch().received()
    world.marks["resumed_from"] = resume = seen[-1].sequence + 1
    world.watches["resumed"] = target.watch(_last_job(world), resume)


@when(parsers.parse("the steps are released one after another, {count:d} clients joining from 1 after each"))
def released_with_joins(target, world, count):
    """Each release makes the job record events; watchers joining right
    then hand over from replay to live while events arrive."""
    job_id = _last_job(world)
    joined = world.marks["joined"] = []
    for step in range(1, world.marks["steps"] + 1):
        _released(target, world, f"step-{step}")
        # From 1: a joiner that comes after the job's end replays it (from 0
        # it would rightly get nothing, W8).
        joined += [target.watch(job_id, 1) for _ in range(count)]


# -- Then -------------------------------------------------------------------


@then("the watch ends OK with sequences from 1 to the job's last, contiguous")
def ends_ok_contiguous(world):
    watch = world.watch()
    _ended_ok(watch)
    _contiguous_from_1(watch)


@then("a replay of the job from 1 is exactly what the watch received, every field identical")
def replay_matches(target, world):
    live = _fields(world.watch())
    replay = target.watch(_last_job(world), 1)
    _ended_ok(replay, len(live))
    assert _fields(replay) == live, _first_difference(_fields(replay), live)


def _first_difference(got: list[tuple], want: list[tuple]) -> str:
    """Where what a watch received parts from what it should have."""
    for g, w in zip(got, want):
        if g != w:
            return f"event {w[0]}: received {g!r:.300}, expected {w!r:.300}"
    return f"received {len(got)} events, expected {len(want)}"


@then("replays from 2, from the middle and from the last sequence return exactly what the watch "
      "received from there, every field identical")
def replays_from_several(target, world):
    live = _fields(world.watch())
    last = live[-1][0]
    for start in sorted({2, max(2, last // 2), last}):
        replay = target.watch(_last_job(world), start)
        _ended_ok(replay, len(live))
        want = [e for e in live if e[0] >= start]
        assert _fields(replay) == want, f"from {start}: {_first_difference(_fields(replay), want)}"


@then(parsers.parse("the client receives the sequences {expected} of that first watch, "
                    "and the watch ends OK"))
def receives_part_of_first(world, expected):
    events = world.marks["job_events"]
    last = events[-1][0]
    start = {"1 to the last": 1, "2 to the last": 2, "the last": last, "none": last + 1}[expected]
    watch = world.watch()
    _ended_ok(watch, len(events))
    want = [e for e in events if e[0] >= start]
    assert _fields(watch) == want, _first_difference(_fields(watch), want)


@then(parsers.parse('the watch of client "{name}" ends CANCELLED within {seconds:g} second'))
def cancelled_within(world, name, seconds):
    status = world.watch(name).wait_for_status(seconds)
    assert status is not None, f"the cancelled watch had not ended after {seconds} s"
    assert status.code == grpc.StatusCode.CANCELLED, f"the cancelled watch ended {status}"


@then(parsers.parse('client "{name}" receives every event of the job, and its watch ends OK'))
def named_receives_every_event(target, world, name):
    watch = world.watch(name)
    job_events = _job_events(target, world)
    _ended_ok(watch, len(job_events))
    assert _fields(watch) == job_events, _first_difference(_fields(watch), job_events)


@then("the resumed watch receives exactly the rest of the job's events, and ends OK")
def resumed_gets_rest(target, world):
    start = world.marks["resumed_from"]
    want = [e for e in _job_events(target, world) if e[0] >= start]
    watch = world.watch("resumed")
    _ended_ok(watch, len(want))
    assert _fields(watch) == want, _first_difference(_fields(watch), want)


@then("every client that joined receives every event of the job once, in order, and ends OK")
def joined_receive_all(target, world):
    job_events = _job_events(target, world)
    for number, watch in enumerate(world.marks["joined"], start=1):
        _ended_ok(watch, len(job_events))
        got = _fields(watch)
        assert got == job_events, f"joiner {number}: {_first_difference(got, job_events)}"


@then(parsers.parse("every one of the {count:d} clients receives every event of the job, identical in "
                    "every field, and ends OK"))
def all_receive_every_event(target, world, count):
    job_events = _job_events(target, world)
    watches = [w for name, w in world.watches.items() if name.startswith("client-")]
    assert len(watches) == count
    for watch in watches:
        _ended_ok(watch, len(job_events))
        assert _fields(watch) == job_events, _first_difference(_fields(watch), job_events)


__all__ = ["PROMPTLY"]


@then(parsers.parse('client "{name}" has received fewer events than client "{other}"'))
def fewer_than(world, name, other):
    # The stalled transport held something back: without that, the scenario
    # would not have stalled anything.
    held, live = len(world.watch(name).received()), len(world.watch(other).received())
    assert held < live, f"client {name} received {held} events while stalled, client {other} {live}"
