"""Steps of features/event_stream.feature: the real job manager's stream."""

from __future__ import annotations

import functools
import json
import random
import re
import threading
import time

import grpc
from pytest_bdd import given, parsers, then, when

from .contract import COMPLETED, RUNNING
from .daemon_target import timestamp_ns
from .fixtures import EVENTUALLY, proto_event_fields
from .process import group_members
from .wait import ASKS_THE_DAEMON, wait_until

NOTE = "héllo ✓ \"quoted\""


def event_specs(start: int, count: int, size: int = 0) -> list[tuple[str, str, str]]:
    """Recognisable events: the payload names its own position, carries text
    that a careless encoder would mangle, and is padded to `size` bytes."""
    specs = []
    for n in range(start, start + count):
        payload = _PAYLOAD % n
        if size > len(payload) + 10:
            payload = payload[:-1] + ', "pad": "' + "p" * (size - len(payload) - 10) + '"}'
        specs.append(("task.backpressure", _UNITS[n % 3], payload))
    return specs


# What json.dumps({"n": n, "note": NOTE}) gives, without encoding the note
# again for each of thousands of events.
_PAYLOAD = '{"n": %d, "note": ' + json.dumps(NOTE).replace("%", "%%") + "}"
_UNITS = ("unit-0", "unit-1", "unit-2")


def parse_range(text: str) -> list[int]:
    if text == "none":
        return []
    first, _, last = text.partition("-")
    return list(range(int(first), int(last) + 1))


def time_for(count: int) -> float:
    """How long to wait for `count` events to travel: the usual deadline,
    plus a second per thousand."""
    return EVENTUALLY + count / 1000


def record(target, world, job: str, count: int, batch: int | None = None, size: int = 0) -> None:
    done = world.recorded.get(job, 0)
    batch = batch or count or 1
    for start in range(0, count, batch):
        n = min(batch, count - start)
        sequences = target.append_events(job, event_specs(done + start + 1, n, size))
        assert sequences == list(range(done + start + 1, done + start + n + 1)), (
            f"AppendEvents numbered events {done + start + 1}-{done + start + n} as {sequences[:5]}...")
    world.recorded[job] = done + count
    if count:
        world.sizes.setdefault(target.job_id(job), []).append((done + 1, done + count, size))


def recorded_spec(world, job_id: str, sequence: int) -> tuple[str, str, str]:
    """The (type, unit, payload) event `sequence` of a job was recorded with."""
    size = next((size for first, last, size in world.sizes.get(job_id, ())
                 if first <= sequence <= last), 0)
    return event_specs(sequence, 1, size)[0]


def _sequences(watch) -> list[int]:
    return [e.sequence for e in watch.received()]


def assert_receives_then_ok(watch, expected: list[int]) -> None:
    deadline = time_for(len(expected))
    status = watch.wait_for_status(deadline)
    assert status is not None, (
        f"the watch had not ended after {deadline:g} s; it had {len(watch.received())} events"
    )
    got = _sequences(watch)
    assert got == expected, _describe_difference(got, expected)
    assert status.code == grpc.StatusCode.OK, f"the watch ended {status}"


def _describe_difference(got: list[int], expected: list[int]) -> str:
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    dupes = len(got) - len(set(got))
    return (f"got {len(got)} events, expected {len(expected)}: missing {missing[:10]}, "
            f"unexpected {extra[:10]}, duplicates {dupes}, first {got[:5]} last {got[-5:]}")


# -- Given ------------------------------------------------------------------


@given("the daemon keeps its events in a fresh database")
def fresh_database(target, world):
    world.recorded = {}


RECORDING = (r'(?P<count>\d+) (?:more )?events?(?: of (?P<size>\d+) bytes)?'
             r'(?: in batches of (?P<batch>\d+))?(?P<one>, one at a time)?')


def _int(text: str | None) -> int:
    return int(text) if text else 0


@given(parsers.re(r'a running job "(?P<job_id>[^"]+)" that has recorded ' + RECORDING + "$"))
def running_job_with_events(target, world, job_id, count, size, batch, one):
    target.create_job(job_id, RUNNING)
    record(target, world, job_id, int(count), 1 if one else _int(batch), _int(size))


@given(parsers.re(r'a completed job "(?P<job_id>[^"]+)" that recorded ' + RECORDING + "$"))
def completed_job_with_events(target, world, job_id, count, size, batch, one):
    running_job_with_events(target, world, job_id, count, size, batch, one)
    target.finish_job(job_id, COMPLETED)


@given(parsers.parse('a client has watched job "{job_id}" from sequence {n:d} to the end'))
def watched_to_the_end(target, world, job_id, n):
    world.watches["default"] = watch = target.watch(job_id, n)
    assert_receives_then_ok(watch, list(range(max(n, 1), world.recorded[job_id] + 1)))


# -- When -------------------------------------------------------------------


@when(parsers.re(r'the job "(?P<job_id>[^"]+)" records ' + RECORDING + "(?P<completes> and completes)?$"))
def records(target, world, job_id, count, size, batch, one, completes):
    # One at a time, after a watcher has caught up: each event is a hand-over
    # from "nothing to read" to a live event.
    record(target, world, job_id, int(count), 1 if one else _int(batch), _int(size))
    world.marks["last_recording"] = (int(count), _int(size))
    if completes:
        target.finish_job(job_id, COMPLETED)


@when(parsers.parse('the job "{job_id}" starts recording {count:d} more events, one at a time'))
def starts_recording(target, world, job_id, count):
    errors = []

    def run():
        try:
            record(target, world, job_id, count, 1)
        except BaseException as error:  # reported by the step that joins
            errors.append(error)

    thread = threading.Thread(target=run, name=f"record-{job_id}")
    world.background[job_id] = (thread, errors)
    thread.start()


@when(parsers.parse('the job "{job_id}" has recorded all of them and completes'))
def recorded_all(target, world, job_id):
    thread, errors = world.background.pop(job_id)
    thread.join(EVENTUALLY)
    assert not thread.is_alive(), "recording did not finish"
    assert not errors, errors
    target.finish_job(job_id, COMPLETED)


@when(parsers.parse('a second client watches job "{job_id}" from sequence {n:d}'))
def second_client_watches(target, world, job_id, n):
    world.watches["second"] = target.watch(job_id, n)


@when(parsers.parse("the client has received {count:d} events"))
def client_has_received(world, count):
    assert world.watch().wait_for_events(count, EVENTUALLY), (
        f"the client received {len(world.watch().received())} events, expected {count}"
    )


@when(parsers.parse('a client resumes job "{job_id}" from the last sequence it saw plus 1'))
def client_resumes(target, world, job_id):
    seen = world.watch().received()
    resume_from = (seen[-1].sequence if seen else 0) + 1
    world.watches["first"] = world.watches["default"]
    world.watches["default"] = target.watch(job_id, resume_from)


@when(parsers.parse('the transport of client "{name}" stops accepting messages'))
def transport_stalls(target, world, name):
    target.stall(world.watch(name))


@when(parsers.parse('the transport of client "{name}" accepts messages again'))
def transport_resumes(target, world, name):
    target.unstall(world.watch(name))


@when(parsers.parse('{count:d} clients watch job "{job_id}" from sequence {n:d}'))
def many_clients_watch(target, world, count, job_id, n):
    for i, watch in enumerate(target.watch_many(job_id, [n] * count)):
        world.watches[f"client-{i}"] = watch


@when("the daemon crashes and restarts on the same database")
def daemon_restarts(target):
    problems = target.restart()
    assert not problems, problems


# -- Then -------------------------------------------------------------------


@then(parsers.parse("the client receives sequences {expected} and the watch ends OK"))
def client_receives(world, expected):
    assert_receives_then_ok(world.watch(), parse_range(expected))


@then(parsers.parse("the second client receives sequences {expected} and the watch ends OK"))
def second_client_receives(world, expected):
    assert_receives_then_ok(world.watch("second"), parse_range(expected))


@then(parsers.parse('client "{name}" receives sequences {expected} and its watch ends OK'))
def named_client_receives(world, name, expected):
    assert_receives_then_ok(world.watch(name), parse_range(expected))


@then(parsers.parse('client "{name}" has received at most {count:d} events'))
def received_at_most(world, name, count):
    got = len(world.watch(name).received())
    assert got <= count, f"client {name} received {got} events while its transport was stalled"


@then("the second client receives exactly the events the first client received, every field identical")
def second_matches_first(world):
    first = world.watch()
    second = world.watch("second")
    status = second.wait_for_status(EVENTUALLY)
    assert status is not None and status.code == grpc.StatusCode.OK, status
    want = [proto_event_fields(e) for e in first.received()]
    got = [proto_event_fields(e) for e in second.received()]
    assert want, "the first client received nothing to compare with"
    assert got == want


@then(parsers.parse(
    "every one of the {count:d} clients receives sequences {expected}, identical in every field, and ends OK"
))
def all_clients_identical(world, count, expected):
    watches = [w for name, w in world.watches.items() if name.startswith("client-")]
    assert len(watches) == count
    want = parse_range(expected)
    # One deadline for all: the deliveries to every watcher take time together.
    deadline = time.monotonic() + time_for(count * len(want))
    for watch in watches:
        watch.wait_for_status(max(0.0, deadline - time.monotonic()))
    for watch in watches:
        assert_receives_then_ok(watch, want)
    reference = [proto_event_fields(e) for e in watches[0].received()]
    for watch in watches[1:]:
        assert [proto_event_fields(e) for e in watch.received()] == reference


@then(parsers.parse('the job "{job_id}" is failed with the error "{error}"'))
def job_failed_with(target, job_id, error):
    job = target.job(job_id)
    assert (job.status, job.error) == ("failed", error)


def assert_carries_recorded(target, world, watch) -> None:
    """Every event the watch received is the one recorded: type, unit,
    payload, and the timestamp AppendEvents reported (when it reports one;
    a timestamp in any case)."""
    recorded = target.recorded_times.get(watch.job_id, {})
    for event in watch.received():
        want = recorded_spec(world, watch.job_id, event.sequence)
        got = (event.event_type, event.unit_id, event.payload_json)
        assert got == want, f"event {event.sequence} came back as {got!r:.300}, recorded as {want!r:.300}"
        sent = timestamp_ns(event.timestamp)
        assert sent, f"event {event.sequence} came without a timestamp"
        if event.sequence in recorded:
            assert sent == recorded[event.sequence], (
                f"event {event.sequence} carries timestamp {sent} ns, but AppendEvents "
                f"recorded it at {recorded[event.sequence]} ns")


@then(parsers.re(
    r"every event the (?P<who>client|second client) received carries the type, unit, "
    r"payload and timestamp it was recorded with"
))
def carries_recorded_fields(target, world, who):
    assert_carries_recorded(target, world, world.watch("second" if who == "second client" else "default"))


@when(parsers.re(r'clients watch job "(?P<job_id>[^"]+)" from sequences (?P<starts>[\d, and]+)$'))
def clients_watch_from(target, world, job_id, starts):
    world.group = target.watch_many(job_id, [int(n) for n in re.split(r",\s*|\s+and\s+", starts)])


@then(parsers.re(r"they receive sequences (?P<ranges>[\d\-, and]+), and every watch ends OK$"))
def they_receive(world, ranges):
    expected = [parse_range(r) for r in re.split(r",\s*|\s+and\s+", ranges)]
    assert len(expected) == len(world.group)
    for watch, want in zip(world.group, expected):
        assert_receives_then_ok(watch, want)


@then("every event they received carries the type, unit, payload and timestamp it was recorded with")
def they_carry_recorded_fields(target, world):
    for watch in world.group:
        assert_carries_recorded(target, world, watch)


@then(parsers.parse("the second client receives exactly the events the first client received from "
                    "sequence {k:d}, every field identical"))
def second_matches_first_from(world, k):
    first, second = world.watch(), world.watch("second")
    want = [proto_event_fields(e) for e in first.received() if e.sequence >= k]
    assert_receives_then_ok(second, [fields[0] for fields in want])
    got = [proto_event_fields(e) for e in second.received()]
    assert got == want, next(f"event {w[0]}: replayed as {g!r:.300}, delivered live as {w!r:.300}"
                             for g, w in zip(got, want) if g != w)


@then(parsers.parse('the job "{job_id}" has had exactly one subscription, from sequence {n:d}'))
def one_subscription_from(target, job_id, n):
    assert [from_sequence for from_sequence, _ in target.subscriptions(job_id)] == [n]


@then(parsers.parse('the job "{job_id}" has had no subscription'))
def no_subscription(target, job_id):
    assert target.subscriptions(job_id) == []


@then(parsers.parse('within {seconds:g} second the job "{job_id}" has {count:d} open subscriptions'))
def open_subscriptions_within(target, seconds, job_id, count):
    def open_count():
        return sum(1 for _, is_open in target.subscriptions(job_id) if is_open)

    assert wait_until(lambda: open_count() == count, seconds, ASKS_THE_DAEMON), (
        f"{open_count()} open subscriptions after {seconds} s, expected {count}")


@when(parsers.parse("every one of them has received {count:d} events"))
def all_have_received(world, count):
    deadline = time.monotonic() + time_for(count * len(world.watches))
    for name, watch in world.watches.items():
        assert watch.wait_for_events(count, max(0.0, deadline - time.monotonic())), (
            f"{name} received {len(watch.received())} events, expected {count}")


@given(parsers.parse('a client has received the first {count:d} events of job "{job_id}"'))
def received_first_events(target, world, job_id, count):
    world.watches["default"] = watch = target.watch(job_id, 1)
    assert watch.wait_for_events(count, EVENTUALLY), (
        f"the client received {len(watch.received())} events of job {job_id}, expected {count}")


@then(parsers.parse("the second client's first {count:d} events are exactly those the first "
                    "client received, every field identical"))
def second_starts_like_first(world, count):
    first, second = world.watch(), world.watch("second")
    assert second.wait_for_events(count, EVENTUALLY), (
        f"the second client received {len(second.received())} events, expected at least {count}; "
        f"its status: {second.status}")
    want = [proto_event_fields(e) for e in first.received()[:count]]
    got = [proto_event_fields(e) for e in second.received()[:count]]
    assert got == want


# -- the hand-over race (W13) -------------------------------------------------------

# Seeded, so that a failure can be replayed; the seed is in the failure message.
RACE_SEED = 20261128


@when(parsers.parse('the job "{job_id}" starts recording {count:d} more events in batches of 1 to {most:d}'))
def starts_recording_random_batches(target, world, job_id, count, most):
    rng = random.Random(RACE_SEED)
    errors: list[BaseException] = []

    def run():
        try:
            left = count
            while left:
                n = min(left, rng.randint(1, most))
                record(target, world, job_id, n, n)
                left -= n
        except BaseException as error:  # reported by the step that joins
            errors.append(error)

    thread = threading.Thread(target=run, name=f"record-{job_id}", daemon=True)
    world.background[job_id] = (thread, errors)
    thread.start()


@when(parsers.parse('{clients:d} clients join job "{job_id}" while it records, each from up to '
                    '{back:d} events back, and take {take:d} events'))
def clients_join_during_recording(target, world, clients, job_id, back, take):
    """Joins spread over the stream: the i-th waits until the job has
    recorded its share, then watches from a few events back, so that its
    replay hands over to live delivery while events keep arriving. A watch
    is cancelled once it has its `take` events, so that the race, not the
    delivery of whole streams, is what is measured."""
    rng = random.Random(RACE_SEED + 1)
    thread, _ = world.background[job_id]
    first = world.recorded.get(job_id, 0)
    world.joins = joins = []
    def recorded_at_least(count: int) -> bool:
        return world.recorded.get(job_id, 0) >= count or not thread.is_alive()

    for i in range(clients):
        threshold = first + i * 10
        assert wait_until(functools.partial(recorded_at_least, threshold), EVENTUALLY), (
            f"the job recorded {world.recorded.get(job_id)} events, not {threshold}")
        last = world.recorded.get(job_id, 0)
        start = max(1, last - rng.randint(0, back))
        joins.append((start, target.watch(job_id, start)))
        for _, watch in joins:
            if not watch.is_over() and len(watch.events) >= take:
                watch.cancel()
    world.marks["take"] = take


@then("every one of those clients receives its events from where it joined, each once, in order")
def joins_gap_free(world):
    take = world.marks["take"]
    failures = []
    for start, watch in world.joins:
        if not watch.wait_for_events(take, EVENTUALLY):
            failures.append(f"from {start}: only {len(watch.received())} events, status {watch.status}")
            continue
        watch.cancel()
        got = _sequences(watch)[:take]
        if got != list(range(start, start + take)):
            failures.append(f"from {start}: {_describe_difference(got, list(range(start, start + take)))}")
    assert not failures, (f"{len(failures)} of {len(world.joins)} joins went wrong (seed {RACE_SEED}): "
                          + "; ".join(failures[:5]))


# -- what a stalled watcher costs (W15) ----------------------------------------------


def process_group_rss_kb(pgid: int) -> int:
    """Resident memory of every process in a process group, from /proc."""
    total = 0
    for pid, _ in group_members(pgid):
        try:
            with open(f"/proc/{pid}/status") as status:
                total += next((int(line.split()[1]) for line in status if line.startswith("VmRSS:")), 0)
        except (OSError, ValueError):
            continue
    return total


def _daemon_rss_kb(target) -> int:
    process = getattr(target, "process", None)
    assert process is not None and process.running(), "no daemon process to measure"
    return process_group_rss_kb(process.pid)


@when("the daemon's memory is measured")
def memory_measured(target, world):
    world.marks["rss_kb"] = _daemon_rss_kb(target)


@when("the daemon's memory growth is noted as what recording them costs")
def memory_cost_noted(target, world):
    world.marks["recording_cost_kb"] = max(0, _daemon_rss_kb(target) - world.marks["rss_kb"])


@when(parsers.parse('{count:d} clients watch job "{job_id}" from sequence {n:d} and stop reading'))
def clients_watch_and_stall(target, world, count, job_id, n):
    for i in range(count):
        watch = world.watches[f"stalled-{i}"] = target.watch(job_id, n)
        assert watch.wait_for_events(1, EVENTUALLY), f"stalled client {i} received nothing"
        target.stall(watch)


@then("the daemon's memory has grown by less than what recording them costs, plus half of what "
      "keeping those events for each stalled client would take")
def memory_grew_less_than(target, world):
    """Recording the same events before and after watchers fell behind:
    whatever the daemon keeps per job is in both figures, what it keeps per
    stalled watcher only in the second. The margin is half of a copy of the
    backlog per stalled watcher: wide enough for a garbage-collected heap,
    whose growth over one recording swings with its collector's rhythm by
    about what the job itself holds, whatever the number of watchers; too
    narrow for a daemon that keeps each watcher's backlog, whose growth is
    that copy per watcher, and then some."""
    grown_kb = _daemon_rss_kb(target) - world.marks["rss_kb"]
    cost_kb = world.marks["recording_cost_kb"]
    stalled = sum(1 for name in world.watches if name.startswith("stalled-"))
    events, size = world.marks["last_recording"]
    backlogs_kb = stalled * events * size / 1024
    margin_kb = backlogs_kb / 2
    assert grown_kb < cost_kb + margin_kb, (
        f"the daemon's resident memory grew by {grown_kb / 1024:.1f} MB with {stalled} watchers "
        f"stalled behind, against {cost_kb / 1024:.1f} MB for recording {events} events of {size} "
        f"bytes with none: the stalled watchers added {(grown_kb - cost_kb) / 1024:.1f} MB, more "
        f"than half of the {backlogs_kb / 1024:.1f} MB that a copy of such a backlog per watcher "
        f"takes (W15: a watcher's backlog is read from the job's log a page at a time, not kept "
        f"per watcher)")


@when(parsers.parse('the job "{job_id}" completes'))
def job_completes(target, job_id):
    target.finish_job(job_id, COMPLETED)
