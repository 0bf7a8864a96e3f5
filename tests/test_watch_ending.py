"""A watch whose client goes away ends non-OK (W7), even when its
subscription, released as the RPC ended, reads as a feed that has ended:
the seam's job managers may end a released feed (the suite's scripted one
does), and such an end is not the job's. Found as a 1-in-5,850 failure of
the W7 scenario under `make repeat`; here the client leaves at the one
moment that made it."""

from __future__ import annotations

import grpc
import pytest

from choo.v1 import daemon_pb2
from choo_reference.shutdown import ShutdownSignal
from choo_reference.watch import watch_job


class _Aborted(Exception):
    def __init__(self, code, details) -> None:
        super().__init__(details)
        self.code = code


class _Context:
    """A servicer context whose RPC ends when end() is called."""

    def __init__(self) -> None:
        self._callbacks = []
        self.active = True

    def add_callback(self, callback) -> bool:
        self._callbacks.append(callback)
        return True

    def is_active(self) -> bool:
        return self.active

    def end(self) -> None:
        self.active = False
        for callback in self._callbacks:
            callback()

    def abort(self, code, details):
        raise _Aborted(code, details)


class _LeavesDuringRead:
    """A running job; its feed ends once released, and its first read is
    where the client goes away (after the watch last looked)."""

    def __init__(self, context: _Context) -> None:
        self.context = context
        self.released = False

    def get_job(self, job_id):
        return type("Job", (), {"job_id": job_id, "status": "running"})()

    def subscribe(self, job_id, from_sequence, wake):
        manager = self

        class Feed:
            def read(self, limit):
                manager.context.end()  # the RPC's end releases the subscription
                return None if manager.released else []

        def release() -> None:
            manager.released = True

        return Feed(), release


def test_a_client_that_leaves_as_the_feed_is_read_ends_the_watch_cancelled():
    context = _Context()
    jobs = _LeavesDuringRead(context)
    request = daemon_pb2.WatchJobRequest(job_id="job-1")
    with pytest.raises(_Aborted) as aborted:
        list(watch_job(jobs, ShutdownSignal(), request, context))
    assert aborted.value.code == grpc.StatusCode.CANCELLED
    assert jobs.released
