"""Chaos: many clients that open watches and read slowly. Open watches are
capped (`choo-ref daemon --max-watches N`, 4096 by default): one past the cap is
RESOURCE_EXHAUSTED (R10) and holds nothing; a released watch makes room
(docs/OPERATIONS.md, "Limits")."""

from __future__ import annotations

import grpc
import pytest
from chaos_support import DEADLINE_S, code_of, log_of, start_daemon, stubs
from test_daemon_process import wait_until

from choo.conformance.v1 import control_pb2
from choo.v1 import daemon_pb2

pytestmark = pytest.mark.slow


def test_a_watch_past_the_cap_is_resource_exhausted_and_a_released_one_makes_room():
    daemon = start_daemon("--conformance-control", "--max-watches", "2")
    try:
        with grpc.insecure_channel(daemon.address) as channel:
            stub, control = stubs(channel)
            job = control.CreateJob(control_pb2.CreateJobRequest(), timeout=DEADLINE_S).job_id
            control.AppendEvents(control_pb2.AppendEventsRequest(
                job_id=job, events=[control_pb2.EventSpec(event_type="e")]), timeout=DEADLINE_S)
            watch = daemon_pb2.WatchJobRequest(job_id=job, from_sequence=1)
            first, second = (stub.WatchJob(watch, timeout=DEADLINE_S) for _ in range(2))
            assert next(first).sequence == 1 and next(second).sequence == 1

            code, details = code_of(lambda r, **kw: next(stub.WatchJob(r, **kw)), watch)
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (code, details)
            assert "open watches" in details and "2" in details, details

            first.cancel()

            def open_watches() -> int:
                listed = control.ListSubscriptions(
                    control_pb2.ListSubscriptionsRequest(job_id=job), timeout=DEADLINE_S)
                return sum(s.open for s in listed.subscriptions)

            wait_until(lambda: open_watches() == 1, what="the cancelled watch to be released")
            third = stub.WatchJob(watch, timeout=DEADLINE_S)
            assert next(third).sequence == 1
            third.cancel()
            second.cancel()
        assert "Traceback" not in log_of(daemon)
    finally:
        daemon.close()
