"""Steps of the scenarios that look for what a fixed list of events does
not show: payloads that a careless store would rewrite, several callers
recording on one job at once, and watchers that must keep receiving
promptly after others of the same job have gone (features/event_stream.feature)."""

from __future__ import annotations

import random
import threading
import time

import grpc
from pytest_bdd import given, parsers, then, when

from choo.v1 import daemon_pb2

from .contract import COMPLETED, RUNNING, TERMINAL
from .daemon_target import timestamp_ns
from .fixtures import EVENTUALLY
from .wait import ASKS_THE_DAEMON, wait_until

# Payloads a store that parses, re-encodes or transcodes them would change;
# the specification asks for them back as they were recorded (W3, W9, W17).
PAYLOADS = {
    "non-ASCII text": '{"note": "héllo wörld ✓ 日本語 🚀", "line": "a\u2028b"}',
    "non-canonical JSON": '{ "b" : 1,\n  "a": [1, 2.50, 1e3],  "c": {"z":null,"y":true} }',
    "JSON escapes": '{"s": "tab\\there \\u00e9 \\"q\\" \\/ back\\\\slash"}',
    "not JSON": "plain text, not JSON at all: {[",
    # SPEC section 5: AppendEvents takes payloads of up to 64 KiB.
    # 6 bytes of UTF-8 a unit, up to 64 KiB in all.
    "64 KiB": '{"pad": "' + "é✓x" * 10920 + 'xxxxx"}',
}


def _payloads(datatable) -> list[str]:
    header, *rows = datatable
    assert header == ["payload"], header
    return [PAYLOADS[row[0]] for row in rows]


@given(parsers.parse('the job "{job_id}" records one event with each of these payloads, and completes:'))
@when(parsers.parse('the job "{job_id}" records one event with each of these payloads, and completes:'))
def records_payloads(target, world, job_id, datatable):
    payloads = _payloads(datatable)
    first = world.recorded.get(job_id, 0) + 1
    sequences = target.append_events(job_id, [("payload.check", "unit-p", p) for p in payloads])
    assert sequences == list(range(first, first + len(payloads))), (
        f"AppendEvents numbered the events {sequences}, expected {first}-{first + len(payloads) - 1}")
    world.recorded[job_id] = first + len(payloads) - 1
    world.marks["payloads"] = (first, payloads)
    target.finish_job(job_id, COMPLETED)


def _payload_differences(events, first: int, payloads: list[str]) -> list[str]:
    got = {e.sequence: e.payload_json for e in events}
    wrong = []
    for offset, payload in enumerate(payloads):
        sequence = first + offset
        back = got.get(sequence)
        if back != payload:
            shown = "missing" if back is None else f"{len(back.encode())} bytes starting {back[:40]!r}"
            wrong.append(f"event {sequence} was recorded with {len(payload.encode())} bytes starting "
                         f"{payload[:40]!r}, came back {shown}")
    return wrong


@then("the client receives those payloads byte for byte, in order, and the watch ends OK")
def receives_payloads(world):
    first, payloads = world.marks["payloads"]
    watch = world.watch()
    status = watch.wait_for_status(EVENTUALLY)
    assert status is not None and status.code == grpc.StatusCode.OK, f"the watch ended {status}"
    wrong = _payload_differences(watch.received(), first, payloads)
    assert not wrong, "payloads were not delivered as recorded: " + "; ".join(wrong)


@then(parsers.parse('a watch of job "{job_id}" from sequence 1 returns those payloads byte for byte'))
def replay_returns_payloads(target, world, job_id):
    first, payloads = world.marks["payloads"]
    wrong = _payload_differences(target.events(job_id), first, payloads)
    assert not wrong, "payloads were not replayed as recorded: " + "; ".join(wrong)


# -- several callers at once (W9) ----------------------------------------------------------


@when(parsers.parse('{callers:d} callers each record {count:d} events on job "{job_id}" at once, in '
                    'batches of 1 to {most:d}'))
def callers_record_at_once(target, world, callers, count, job_id, most):
    """Each caller's events say who recorded them and in which order, so that
    what a watcher receives can be matched to what each caller was told."""
    start = threading.Barrier(callers)
    answered: dict[int, tuple[str, str, str]] = {}
    repeats: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def caller(number: int) -> None:
        batches = random.Random(number)
        try:
            start.wait(EVENTUALLY)
            done = 0
            while done < count:
                n = min(batches.randint(1, most), count - done)
                specs = [("concurrent", f"caller-{number}", f'{{"caller": {number}, "n": {done + i}}}')
                         for i in range(n)]
                sequences = target.append_events(job_id, specs)
                assert len(sequences) == n, f"AppendEvents answered {len(sequences)} sequences for {n} events"
                with lock:
                    for sequence, spec in zip(sequences, specs):
                        if sequence in answered:
                            repeats.append(sequence)
                        answered[sequence] = spec
                done += n
        except BaseException as error:  # reported by the step, after every caller
            errors.append(error)

    threads = [threading.Thread(target=caller, args=(i,), name=f"caller-{i}") for i in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(EVENTUALLY * 2)
    assert not any(t.is_alive() for t in threads), "a caller's AppendEvents did not answer"
    assert not errors, f"{len(errors)} callers failed; the first: {errors[0]}"
    world.marks["answered"], world.marks["repeats"] = answered, repeats
    world.recorded[job_id] = world.recorded.get(job_id, 0) + callers * count


@then(parsers.parse("the sequences AppendEvents answered are {first:d}-{last:d}, each once"))
def answered_each_once(world, first, last):
    answered, repeats = world.marks["answered"], world.marks["repeats"]
    assert not repeats, (f"AppendEvents gave {len(repeats)} sequences to two events at once: "
                         f"{sorted(repeats)[:10]}")
    missing = sorted(set(range(first, last + 1)) - set(answered))
    extra = sorted(set(answered) - set(range(first, last + 1)))
    assert not missing and not extra, f"sequences missing {missing[:10]}, unexpected {extra[:10]}"


@then("every event the client received carries what its caller recorded with that sequence")
def carries_what_its_caller_recorded(world):
    answered = world.marks["answered"]
    wrong = [(e.sequence, e.unit_id, e.payload_json) for e in world.watch().received()
             if (e.event_type, e.unit_id, e.payload_json) != answered.get(e.sequence)]
    assert not wrong, (f"{len(wrong)} events carry another caller's event than AppendEvents "
                       f"answered for their sequence; the first: {wrong[0]}")


# -- the watchers that remain (W14) --------------------------------------------------------

# SPEC W14: how soon an open, reading watcher receives an event once
# AppendEvents has answered, on a daemon the suite does not otherwise load.
PROMPT_DELIVERY_S = 2.0


@when(parsers.parse("every one of them has received {count:d} event"))
def every_one_received(world, count):
    slow = [name for name, watch in world.watches.items() if not watch.wait_for_events(count, EVENTUALLY)]
    assert not slow, f"clients {slow} had not received {count} events"


@when(parsers.parse("clients {a:d} and {b:d} cancel their watches, client {c:d}'s connection fails, "
                    "and the daemon has released them"))
def some_leave(target, world, a, b, c):
    gone = [world.watches[f"client-{i}"] for i in (a, b, c)]
    gone[0].cancel()
    gone[1].cancel()
    gone[2].drop_connection()
    left = len(world.watches) - len(gone)
    job = next(name for name in world.recorded if target.job_id(name) == gone[0].job_id)
    world.marks["left"] = [name for name, watch in world.watches.items() if watch not in gone]
    world.marks["left_job"] = job
    # The next events must find the daemon without those watches (W5, W7:
    # within a second), or what follows would not be about the ones left.
    assert wait_until(lambda: target.open_subscriptions(job) == left, EVENTUALLY, ASKS_THE_DAEMON), (
        f"the daemon still lists {target.open_subscriptions(job)} open subscriptions of job {job}, "
        f"expected {left} once three watches had gone")


@then(parsers.parse("each of the {count:d} clients left receives each of {events:d} events recorded "
                    "one at a time within {seconds:d} seconds of its recording"))
def left_receive_promptly(target, world, count, events, seconds):
    names = world.marks["left"]
    assert len(names) == count, names
    watches = [world.watches[name] for name in names]
    job = world.marks["left_job"]
    for _ in range(events):
        sequence = world.recorded.get(job, 0) + 1
        target.append_events(job, [("liveness", "unit-l", f'{{"n": {sequence}}}')])
        world.recorded[job] = sequence
        answered = time.monotonic()
        late = [name for name, watch in zip(names, watches)
                if not watch.wait_for_events(sequence, max(0.0, answered + seconds - time.monotonic()))]
        assert not late, (f"clients {late} had not received event {sequence} {seconds} s after "
                          f"AppendEvents answered, although they were reading: another watch's end "
                          f"must not take their wake-up with it")


@then(parsers.parse("each of the {count:d} clients left has received sequences {first:d}-{last:d} and "
                    "its watch ends OK"))
def left_end_ok(world, count, first, last):
    for name in world.marks["left"]:
        watch = world.watch(name)
        status = watch.wait_for_status(EVENTUALLY)
        assert status is not None and status.code == grpc.StatusCode.OK, f"{name}'s watch ended {status}"
        got = [e.sequence for e in watch.received()]
        assert got == list(range(first, last + 1)), f"{name} received {got[:10]}...{got[-5:]}"


# -- jobs across a restart (R6, R7, W17) ---------------------------------------------------


@given("jobs set up through the control service, in this order:")
def jobs_set_up(target, world, datatable):
    header, *rows = datatable
    assert header == ["job", "status", "error"], header
    world.marks["restart_jobs"] = names = []
    for name, status, error in rows:
        target.create_job(name, "pending" if status == "pending" else RUNNING)
        if status in TERMINAL:
            target.finish_job(name, status, error)
        names.append(name)


def _about(target, name: str) -> tuple:
    response, status = target.call("GetJobStatus", daemon_pb2.GetJobStatusRequest(
        job_id=target.job_id(name))).result(EVENTUALLY)
    assert status is not None and status.code == grpc.StatusCode.OK, (
        f"GetJobStatus of job {target.job_id(name)} answered {status}")
    completed = timestamp_ns(response.completed_at) if response.HasField("completed_at") else None
    return (response.status, timestamp_ns(response.started_at), completed, response.error)


def _listed(target, names: list[str]) -> list[str]:
    response, status = target.call("ListJobs", daemon_pb2.ListJobsRequest()).result(EVENTUALLY)
    assert status is not None and status.code == grpc.StatusCode.OK, f"ListJobs answered {status}"
    ids = {target.job_id(name): name for name in names}
    return [ids[job.job_id] for job in response.jobs if job.job_id in ids]


@given("what GetJobStatus and ListJobs answer about them is noted")
def noted(target, world):
    names = world.marks["restart_jobs"]
    world.marks["before"] = {name: _about(target, name) for name in names}
    world.marks["listed_before"] = _listed(target, names)


@then("GetJobStatus answers the same status, times and error as before for each job that had ended")
def ended_jobs_unchanged(target, world):
    before = world.marks["before"]
    changed = {name: (was, _about(target, name)) for name, was in before.items() if was[0] in TERMINAL}
    changed = {name: pair for name, pair in changed.items() if pair[0] != pair[1]}
    assert not changed, ("a restart changed ended jobs (status, started_at, completed_at, error): "
                         + "; ".join(f"{name}: {was} -> {now}" for name, (was, now) in changed.items()))


@then("each job that had not ended is as it was, or has ended with a completed_at no earlier than its "
      "started_at")
def unended_jobs_sane(target, world):
    wrong = []
    for name, was in world.marks["before"].items():
        if was[0] in TERMINAL:
            continue
        now = _about(target, name)
        if now[0] in TERMINAL:
            if now[2] is None or now[2] < now[1]:
                wrong.append(f"{name} is now {now[0]!r} with completed_at {now[2]} and started_at {now[1]}")
        elif now != was:
            wrong.append(f"{name} was {was}, is now {now}")
    assert not wrong, "after the restart: " + "; ".join(wrong) + " (R6: a terminal job has a completed_at)"


@then("ListJobs lists the jobs in the same order as before")
def same_order(target, world):
    before = world.marks["listed_before"]
    after = _listed(target, world.marks["restart_jobs"])
    assert after == before, f"ListJobs listed the jobs {before} before the restart and {after} after"


# -- a crash in the middle of a burst (W17) ------------------------------------------------

# How many events a round lets the client receive before the kill: enough
# that recording is in full flow.
EVENTS_BEFORE_THE_KILL = 150


@then(parsers.parse("{rounds:d} times over, the daemon killed while a job records events one at a time and "
                    "a client watches it, every event the client had received is there after the "
                    "restart, identical"))
def killed_mid_burst(target, world, rounds):
    """W17: once a watcher has received an event it survives a crash. A
    daemon that hands events to watchers before they are durable loses the
    ones in flight when it is killed; the kill comes while events are being
    recorded as fast as one caller can, each round a job of its own."""
    for round_ in range(1, rounds + 1):
        job = f"job-17k{round_}"
        target.create_job(job, RUNNING)
        watch = target.watch(job, 0)
        stop = threading.Event()

        def recording(job=job, stop=stop) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    target.append_events(job, [("burst", "unit-k", f'{{"n": {n}, "note": "héllo"}}')])
                except BaseException:  # the daemon is gone: what it acknowledged is what counts
                    return

        recorder = threading.Thread(target=recording, name=f"record-{job}")
        recorder.start()
        try:
            assert watch.wait_for_events(EVENTS_BEFORE_THE_KILL, EVENTUALLY), (
                f"round {round_}: the client received {len(watch.received())} events of a job "
                f"recording as fast as it can")
            seen = [_fields(e) for e in watch.received()]
            target.kill_now()
        finally:
            stop.set()
            recorder.join(EVENTUALLY)
        problems = target.restart()
        assert not problems, problems
        after = {e.sequence: _fields(e) for e in _replay_at_least(target, job, len(seen))}
        lost = [fields for fields in seen if after.get(fields[0]) != fields]
        assert not lost, (
            f"round {round_}: {len(lost)} of the {len(seen)} events the client had received before the "
            f"kill are missing or different after the restart (the first: {lost[0][:4]}; after the "
            f"restart it reads {after.get(lost[0][0], 'nothing')!r}): an event a watcher has received "
            f"must already be durable (W17)")


def _fields(event) -> tuple:
    return (event.sequence, event.event_type, event.unit_id, event.payload_json,
            timestamp_ns(event.timestamp))


def _replay_at_least(target, job: str, count: int) -> list:
    """A job's events from 1, up to `count` or its end: after a crash the job
    may still be running (W17 leaves what becomes of it open)."""
    watch = target.watch(job, 1)
    watch.wait_for_events(count, EVENTUALLY)  # returns early if the watch ends
    if not watch.is_over():
        watch.cancel()
    return watch.received()
