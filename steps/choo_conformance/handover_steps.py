"""Steps of the W13 scenarios tagged @checkpoints: events recorded at each
point of a new watch's hand-over from recorded history to live events, in
the watch's own thread, so that the race a gap or a duplicate needs is made
certain instead of likely (seam.py: the points; features/event_stream.feature)."""

from __future__ import annotations

import threading

import pytest
from pytest_bdd import given, parsers, when

from .event_stream_steps import record, time_for
from .fidelity_steps import PROMPT_DELIVERY_S
from .fixtures import EVENTUALLY
from .results import NOT_APPLICABLE_MARK
from .seam import CHECKPOINTS
from .wait import Patience


@given(parsers.parse('the job "{job_id}" will record {count:d} more events when a new watch of it '
                     'is at "{point}"'))
def records_at_checkpoint(target, world, job_id, count, point):
    assert point in CHECKPOINTS, f"{point!r} is not a checkpoint; they are {', '.join(CHECKPOINTS)}"
    # Checkpoints are optional, and a point an implementation's watch does
    # not pass is no fault of it: the example does not apply there.
    checkpoints = target.checkpoints()
    if checkpoints is None:
        pytest.skip(NOT_APPLICABLE_MARK + "the implementation offers no checkpoints, the points "
                    "of a watch's hand-over where the suite can act (choo_conformance.seam)")
    if point not in checkpoints.points:
        pytest.skip(NOT_APPLICABLE_MARK + f"the implementation's watches do not pass the "
                    f"checkpoint {point!r} (it offers "
                    f"{', '.join(sorted(checkpoints.points)) or 'none'})")
    ran = threading.Event()
    errors: list[BaseException] = []

    def action() -> None:
        try:
            record(target, world, job_id, count)
        except BaseException as error:  # reported by the step that waits for it
            errors.append(error)
        finally:
            ran.set()

    checkpoints.at(point, action)
    world.marks["checkpoint"] = (point, count, ran, errors)


# Once a watch has not passed a checkpoint its implementation lists, the
# next ones in the run are given 2 s: the first wait said enough.
_checkpoint = Patience(after_a_miss=2.0)


@when(parsers.parse('the watch has passed "{point}" with those events recorded'))
def passed_checkpoint(world, point):
    at, count, ran, errors = world.marks["checkpoint"]
    assert at == point, f"the scenario set up the checkpoint {at!r}, not {point!r}"
    patience = _checkpoint.timeout(EVENTUALLY)
    if not ran.wait(patience):
        _checkpoint.ran_out()
        received = len(world.watch().received())
        # The implementation says its watches pass this point: one that did
        # not leaves the example undecided, which is never a pass.
        pytest.skip(f"the watch did not pass the checkpoint {point!r} within {patience:g} s "
                    f"(it had {received} events), although the implementation lists it: "
                    "the example checked nothing")
    assert not errors, (f"recording {count} events at the checkpoint {point!r} failed: "
                        f"{errors[0]}")


@when(parsers.parse("the client has received {count:d} events, those recorded at the checkpoint "
                    "within {seconds:d} seconds"))
def received_checkpoint_events(world, count, seconds):
    """What was there before arrives at the pace of a replay; what the
    checkpoint recorded is new, and an open, reading watch gets each new
    event within 2 s of its recording (SPEC W14), here counted from the
    moment both had happened."""
    point, recorded, _, _ = world.marks["checkpoint"]
    assert seconds == PROMPT_DELIVERY_S, f"SPEC W14 says {PROMPT_DELIVERY_S:g} s, not {seconds}"
    watch = world.watch()
    before = count - recorded
    assert watch.wait_for_events(before, time_for(before)), (
        f"the watch received {len(watch.received())} events, expected at least the {before} "
        "recorded before it began")
    assert watch.wait_for_events(count, PROMPT_DELIVERY_S), (
        f"the watch had {len(watch.received())} events {PROMPT_DELIVERY_S:g} s after receiving "
        f"the first {before}, expected {count}: the {recorded} recorded at the checkpoint "
        f"{point!r} had not all reached it, and nothing else was recorded that could wake it")
