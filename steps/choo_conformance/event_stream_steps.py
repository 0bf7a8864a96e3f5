"""Steps of features/event_stream.feature: the real job manager's stream."""

from __future__ import annotations

import json
import threading

import grpc
from pytest_bdd import given, parsers, then, when

from .contract import COMPLETED, RUNNING
from .daemon_target import timestamp_ns
from .fixtures import EVENTUALLY, proto_event_fields, status_code
from .wait import wait_until


def event_specs(start: int, count: int) -> list[tuple[str, str, str]]:
    """Recognisable events: the payload names its own position, and carries
    text that a careless encoder would mangle."""
    return [
        ("task.backpressure", f"unit-{n % 3}", json.dumps({"n": n, "note": "héllo ✓ \"quoted\""}))
        for n in range(start, start + count)
    ]


def parse_range(text: str) -> list[int]:
    if text == "none":
        return []
    first, _, last = text.partition("-")
    return list(range(int(first), int(last) + 1))


def record(target, world, job_id: str, count: int, batch: int | None = None) -> None:
    done = world.recorded.get(job_id, 0)
    batch = batch or count or 1
    for start in range(0, count, batch):
        n = min(batch, count - start)
        sequences = target.append_events(job_id, event_specs(done + start + 1, n))
        assert sequences == list(range(done + start + 1, done + start + n + 1)), sequences
    world.recorded[job_id] = done + count


def _sequences(watch) -> list[int]:
    return [e.sequence for e in watch.received()]


def assert_receives_then_ok(watch, expected: list[int]) -> None:
    status = watch.wait_for_status(EVENTUALLY)
    assert status is not None, (
        f"the watch had not ended after {EVENTUALLY} s; it had {len(watch.received())} events"
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


@given(parsers.parse('a running job "{job_id}" that has recorded {count:d} events'))
def running_job_with_events(target, world, job_id, count):
    target.create_job(job_id, RUNNING)
    record(target, world, job_id, count)


@given(parsers.parse('a completed job "{job_id}" that recorded {count:d} events'))
def completed_job_with_events(target, world, job_id, count):
    running_job_with_events(target, world, job_id, count)
    target.finish_job(job_id, COMPLETED)


@given(parsers.parse('a client has watched job "{job_id}" from sequence {n:d} to the end'))
def watched_to_the_end(target, world, job_id, n):
    world.watches["default"] = watch = target.watch(job_id, n)
    assert_receives_then_ok(watch, list(range(max(n, 1), world.recorded[job_id] + 1)))


# -- When -------------------------------------------------------------------


@when(parsers.re(r'the job "(?P<job_id>[^"]+)" records (?P<count>\d+) more events? and completes'),
      converters={"count": int})
def records_and_completes(target, world, job_id, count):
    record(target, world, job_id, count)
    target.finish_job(job_id, COMPLETED)


@when(parsers.parse('the job "{job_id}" records {count:d} more events in batches of {batch:d} and completes'))
def records_batches_and_completes(target, world, job_id, count, batch):
    record(target, world, job_id, count, batch)
    target.finish_job(job_id, COMPLETED)


@when(parsers.parse('the job "{job_id}" records {count:d} more events, one at a time'))
def records_one_at_a_time(target, world, job_id, count):
    # The watcher has caught up, so each of these is a hand-over from
    # "nothing to read" to a live event.
    record(target, world, job_id, count, 1)


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
    for i in range(count):
        world.watches[f"client-{i}"] = target.watch(job_id, n)


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
    for watch in watches:
        assert_receives_then_ok(watch, parse_range(expected))
    reference = [proto_event_fields(e) for e in watches[0].received()]
    for watch in watches[1:]:
        assert [proto_event_fields(e) for e in watch.received()] == reference


@then(parsers.parse('the watch ends with status {code} and details mentioning "{text}"'))
def watch_ends_mentioning(world, code, text):
    status = world.watch().wait_for_status(EVENTUALLY)
    assert status is not None, "the watch did not end"
    assert status.code == status_code(code), f"expected {code}, got {status}"
    assert text in status.details, f"details {status.details!r} do not mention {text!r}"


@then(parsers.parse('the job "{job_id}" is failed with the error "{error}"'))
def job_failed_with(target, job_id, error):
    job = target.job(job_id)
    assert (job.status, job.error) == ("failed", error)


@then(parsers.re(
    r"every event the (?P<who>client|second client) received carries the type, unit, "
    r"payload and timestamp it was recorded with"
))
def carries_recorded_fields(target, world, who):
    watch = world.watch("second" if who == "second client" else "default")
    recorded = target.recorded_times.get(watch.job_id, {})
    for event in watch.received():
        (want,) = event_specs(event.sequence, 1)
        assert (event.event_type, event.unit_id, event.payload_json) == want, (
            f"event {event.sequence} came back as {event}")
        sent = timestamp_ns(event.timestamp)
        assert sent, f"event {event.sequence} came without a timestamp"
        if event.sequence in recorded:
            assert sent == recorded[event.sequence], (
                f"event {event.sequence} carries timestamp {sent} ns, but AppendEvents "
                f"recorded it at {recorded[event.sequence]} ns")


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

    assert wait_until(lambda: open_count() == count, seconds), (
        f"{open_count()} open subscriptions after {seconds} s, expected {count}")


@when(parsers.parse("every one of them has received {count:d} events"))
def all_have_received(world, count):
    for name, watch in world.watches.items():
        assert watch.wait_for_events(count, EVENTUALLY), (
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
