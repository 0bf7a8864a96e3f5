"""Steps of features/watch_job.feature: the seed's eight rows."""

from __future__ import annotations

import grpc
from pytest_bdd import given, parsers, then, when

from .contract import COMPLETED, RUNNING, names_field
from .fixtures import (
    EVENTUALLY,
    PROMPTLY,
    event_fields,
    events_from_table,
    proto_event_fields,
    status_code,
)
from .scripted_jobs import Blocking, Firehose, Scripted
from .wait import wait_until

# -- Given ------------------------------------------------------------------


@given("the job manager knows no jobs")
def no_jobs(jobs_double):
    """The double starts empty; nothing to script."""


@given(parsers.parse('a {status} job "{job_id}" whose feed yields these events and then closes:'))
def job_with_feed(jobs_double, world, status, job_id, datatable):
    assert status in (RUNNING, COMPLETED), status
    world.feed_events = events_from_table(datatable)
    jobs_double.add_job(job_id, status, Scripted(world.feed_events))


@given(parsers.parse('a running job "{job_id}" whose feed blocks without events'))
def job_blocking(jobs_double, job_id):
    jobs_double.add_job(job_id, RUNNING, Blocking())


@given(parsers.parse('a running job "{job_id}" whose feed always has more events pending'))
def job_firehose(jobs_double, job_id):
    jobs_double.add_job(job_id, RUNNING, Firehose())


# -- When -------------------------------------------------------------------


@when(
    parsers.re(r'a client watches job "(?P<job_id>[^"]*)" from sequence (?P<from_sequence>-?\d+)'),
    converters={"from_sequence": int},
)
def client_watches(target, world, job_id, from_sequence):
    world.watches["default"] = target.watch(job_id, from_sequence)


@when(parsers.parse("a client watches an unknown job whose id is {length:d} bytes long"))
def client_watches_long_unknown_id(target, world, length):
    # Printable ASCII, unlike any id a daemon makes: unknown to it.
    world.marks["unknown_id"] = job_id = ("no-such-job-" + "x" * length)[:length]
    world.watches["default"] = target.watch(job_id, 0)


@then("the watch ends with status NOT_FOUND and details naming all of that id")
def watch_not_found_naming_id(world):
    _assert_status(world.watch(), "NOT_FOUND", None, EVENTUALLY, world.marks["unknown_id"])


@when(parsers.parse('client "{name}" watches job "{job_id}" from sequence {from_sequence:d}'))
def named_client_watches(target, world, name, job_id, from_sequence):
    world.watches[name] = target.watch(job_id, from_sequence)


@when(parsers.parse('the servicer has subscribed to "{job_id}"'))
def servicer_subscribed(jobs_double, job_id):
    assert wait_until(
        lambda: any(r.job_id == job_id for r in jobs_double.subscriptions), PROMPTLY
    ), f"the servicer never subscribed to {job_id!r}"


@when("the client cancels the watch")
def client_cancels(world):
    world.watch().cancel()


@when("the daemon starts shutting down")
def daemon_shuts_down(target):
    target.begin_shutdown()


@when(parsers.parse('client "{name}" has received at least {count:d} events'))
def client_has_received(world, name, count):
    assert world.watch(name).wait_for_events(count, PROMPTLY), (
        f"client {name} received {len(world.watch(name).received())} events, expected {count}"
    )


@when(parsers.parse('the connection of client "{name}" fails while events are pending'))
def connection_fails(world, name):
    # The feed always has more events, so the server is mid-delivery when the
    # client goes away: the transport refuses the next message.
    world.marks["others_at_failure"] = {
        other: len(watch.received()) for other, watch in world.watches.items() if other != name
    }
    world.watch(name).drop_connection()


# -- Then -------------------------------------------------------------------


def _assert_status(watch, code: str, details: str | None, timeout: float, text: str | None = None):
    status = watch.wait_for_status(timeout)
    assert status is not None, f"the watch had not ended after {timeout} s"
    expected = status_code(code)
    assert status.code == expected, f"expected {expected.name}, got {status}"
    if details is not None:
        assert status.details == details, f"expected details {details!r}, got {status.details!r}"
    if text is not None:
        assert text in status.details, f"details {status.details!r} do not name {text!r}"


@then(parsers.parse('the watch ends with status {code} and details "{details}"'))
def watch_ends_with_details(world, code, details):
    _assert_status(world.watch(), code, details, EVENTUALLY)


@then(parsers.parse('the watch ends with status {code} and details naming "{text}"'))
def watch_ends_naming(world, code, text):
    _assert_status(world.watch(), code, None, EVENTUALLY, text)


@then(parsers.re(r"the watch ends with status (?P<code>[A-Z_]+)$"))
def watch_ends(world, code):
    _assert_status(world.watch(), code, None, EVENTUALLY)


@then(
    parsers.parse(
        'within {seconds:g} second the watch ends with status {code} and details "{details}"'
    )
)
def watch_ends_within(world, seconds, code, details):
    _assert_status(world.watch(), code, details, seconds)


def _assert_refused(watch, code: str, details: str | None = None, text: str | None = None):
    """A refusal comes before any event, so the first event settles it: the
    daemon accepted the watch (no waiting out a stream that never ends)."""
    watch.wait_for_events(1, EVENTUALLY)  # returns at the first event or the end
    sent = [e.sequence for e in watch.received()]
    assert not sent, (f"expected the watch to be refused with {code}, but the daemon accepted it "
                      f"and sent sequences {sent[:10]}")
    assert watch.is_over(), f"the watch had neither ended nor received an event after {EVENTUALLY:g} s"
    _assert_status(watch, code, details, 0, text)


@then(parsers.parse('the watch is refused with status {code} and details "{details}"'))
def watch_refused_with_details(world, code, details):
    _assert_refused(world.watch(), code, details=details)


@then(parsers.parse('the watch is refused with status {code} and details naming the field "{field}"'))
def watch_refused_naming_field(world, code, field):
    watch = world.watch()
    _assert_refused(watch, code)
    details = watch.status.details
    assert names_field(details, field), f"details {details!r} do not name the field {field}"


@then("the client received no events")
def no_events(world):
    watch = world.watch()
    assert watch.wait_for_status(EVENTUALLY) is not None
    assert watch.received() == [], f"received {[e.sequence for e in watch.received()]}"


@then("the client received exactly the feed's events, in order, every field intact")
def exactly_feed_events(world):
    got = [proto_event_fields(e) for e in world.watch().received()]
    want = [event_fields(e) for e in world.feed_events]
    assert got == want


@then("the job manager was never asked for a subscription")
def never_subscribed(world, jobs_double):
    assert world.watch().wait_for_status(EVENTUALLY) is not None
    assert jobs_double.subscriptions == [], (
        f"subscribed {[(r.job_id, r.from_sequence) for r in jobs_double.subscriptions]}"
    )


@then(parsers.parse('the job manager was asked to subscribe to "{job_id}" from sequence {n:d}'))
def subscribed_from(jobs_double, job_id, n):
    assert wait_until(lambda: jobs_double.subscriptions, PROMPTLY), "no subscription was made"
    asked = [(r.job_id, r.from_sequence) for r in jobs_double.subscriptions]
    assert asked == [(job_id, n)]


@then("every subscription is released")
def all_released(jobs_double):
    assert wait_until(lambda: not jobs_double.open_subscriptions(), PROMPTLY), (
        f"still open: {[(r.job_id, r.from_sequence) for r in jobs_double.open_subscriptions()]}"
    )


def _handler_ends(target, watch, seconds):
    record = None
    assert wait_until(lambda: target.handler(watch) is not None, seconds)
    record = target.handler(watch)
    assert record.ended.wait(seconds), f"the handler was still running after {seconds} s"
    return record.outcome


@then(parsers.parse("the watch handler returns within {seconds:g} second with status {code}"))
def handler_returns_with(target, world, seconds, code):
    outcome = _handler_ends(target, world.watch(), seconds)
    assert outcome.code == status_code(code), f"the handler ended with {outcome}"


@then(
    parsers.parse(
        'the watch handler of client "{name}" returns within {seconds:g} second with a non-OK status'
    )
)
def handler_returns_non_ok(target, world, name, seconds):
    outcome = _handler_ends(target, world.watch(name), seconds)
    assert outcome.code != grpc.StatusCode.OK, "the handler ended OK although delivery failed"


@then(parsers.parse('the subscription of client "{name}" is released'))
def subscription_of_released(jobs_double, world, name):
    # The double cannot tell which client a subscription serves; every other
    # client is still watching, so exactly one released subscription (and one
    # open one for each other client) means it was this client's. Another
    # client's watch may not have been taken up yet (a daemon serves a call
    # some time after it arrives, later on a loaded machine): its
    # subscription is waited for as long as a take-up may take.
    others = len(world.watches) - 1
    assert wait_until(lambda: len(jobs_double.subscriptions) > others, EVENTUALLY), (
        f"{len(jobs_double.subscriptions)} subscriptions after {EVENTUALLY:g} s, "
        f"for {others + 1} watches of the job")
    assert wait_until(
        lambda: len(jobs_double.subscriptions) - len(jobs_double.open_subscriptions()) == 1,
        PROMPTLY,
    ), "the failed watch's subscription was not released"
    assert len(jobs_double.open_subscriptions()) == others


@then(
    parsers.parse(
        'client "{name}" goes on receiving events: at least {more:d} more, contiguous from sequence 1'
    )
)
def goes_on_receiving(world, name, more):
    watch = world.watch(name)
    start = world.marks["others_at_failure"][name]
    assert watch.wait_for_events(start + more, EVENTUALLY), (
        f"client {name} stopped at {len(watch.received())} events; its status: {watch.status}"
    )
    assert not watch.is_over(), f"client {name}'s watch ended: {watch.status}"
    sequences = [e.sequence for e in watch.received()]
    assert sequences == list(range(1, len(sequences) + 1))
