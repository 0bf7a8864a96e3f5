"""WatchJob: one watch of one job, from a sequence, until the job ends.

This handler is a generator, so it runs under grpc's thread-pool server and
under grpc_testing; the daemon serves the coroutine twin in async_watch.py,
which holds no thread while it waits. Both admit a request with admit().

It never waits on the feed alone: one `wake` event is set by the
feed (new events or the end), by the RPC ending (client cancelled or the
transport failed) and by the daemon shutting down, so each of those ends or
advances the watch at once (W5, W6, W7).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import grpc

from choo.v1 import daemon_pb2

from .convert import event_to_proto
from .jobs import JobManager, StorageError, is_terminal, shorten
from .shutdown import ShutdownSignal

# Events taken from the feed per read: large enough to amortise the feed's
# locking, small enough that a cancelled watch notices within one batch.
READ_BATCH = 256

SHUTTING_DOWN = "daemon is shutting down"

log = logging.getLogger("choo-ref")


class Refused(Exception):
    """A WatchJob request that gets a status instead of a stream."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def admit(jobs: JobManager, shutdown: ShutdownSignal, request: daemon_pb2.WatchJobRequest) -> bool:
    """Checks a request in the contract's order (W1, W11, W18, W2); raises
    Refused. False means the job is over and no replay was asked for, so
    the watch ends OK at once (W8)."""
    job_id = request.job_id
    if not job_id:
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "job_id is required")
    if request.from_sequence < 0:
        raise Refused(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"from_sequence must be 0 or more (got {request.from_sequence}); "
            "0 and 1 both start at the first event",
        )
    if shutdown.is_set():
        raise Refused(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
    try:
        job = jobs.get_job(job_id)
    except LookupError:  # the JobManager protocol's "no such job" (JobNotFound)
        raise Refused(grpc.StatusCode.NOT_FOUND, f"job not found: {shorten(job_id)}") from None
    return not (is_terminal(job.status) and request.from_sequence == 0)


def unreadable(job_id: str, error: StorageError) -> str:
    """The status message of a watch whose events the database could not
    give (a failing disk): UNAVAILABLE, as a write it cannot take is."""
    log.warning("watch of job %s ended: %s; answered UNAVAILABLE", shorten(job_id), error)
    return shorten(f"{error} (the watch can be resumed from its last sequence)", 1024)


def client_gone(job_id: str, sent: int, last: int | None) -> str:
    return (f"watch of job {shorten(job_id)} ended: the client stopped receiving "
            f"after {sent} events (last sequence {last or 'none'})")


def watch_job(
    jobs: JobManager,
    shutdown: ShutdownSignal,
    request: daemon_pb2.WatchJobRequest,
    context: grpc.ServicerContext,
) -> Iterator[daemon_pb2.JobEvent]:
    try:
        if not admit(jobs, shutdown, request):
            return
    except Refused as refused:
        context.abort(refused.code, refused.details)
    yield from _stream(jobs, shutdown, request.job_id, request.from_sequence, context)


class _Watch:
    """The state one watch shares with the callbacks that can end it."""

    def __init__(self) -> None:
        self.wake = threading.Event()
        self.rpc_over = False  # the client went away or the transport failed
        self._unsubscribe = None
        self._lock = threading.Lock()

    def attach(self, unsubscribe) -> None:
        self._unsubscribe = unsubscribe

    def release(self) -> None:
        """Give the subscription back; safe to call from any thread, twice."""
        with self._lock:
            unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()

    def end_rpc(self) -> None:
        # Runs on grpc's callback thread when the RPC terminates. Releasing
        # here, not only in the generator's finally, matters: a real server
        # stops pulling a generator whose client is gone, so its finally may
        # run late (at garbage collection).
        self.rpc_over = True
        self.release()
        self.wake.set()


def _stream(jobs, shutdown, job_id, from_sequence, context) -> Iterator[daemon_pb2.JobEvent]:
    watch = _Watch()
    feed, unsubscribe = jobs.subscribe(job_id, from_sequence, watch.wake.set)
    watch.attach(unsubscribe)
    stop_listening = shutdown.add_listener(watch.wake.set)
    if not context.add_callback(watch.end_rpc):
        watch.end_rpc()  # the RPC had already terminated
    sent = 0
    last = None
    try:
        while True:
            if shutdown.is_set():
                context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
            if watch.rpc_over or not context.is_active():
                # The Go server returns the failed Send's error here; a
                # Python handler only learns that the RPC is over. End with
                # a non-OK status: the watch did not complete (W5, W7).
                context.abort(grpc.StatusCode.CANCELLED, client_gone(job_id, sent, last))
            watch.wake.clear()
            try:
                events = feed.read(READ_BATCH)
            except StorageError as error:
                context.abort(grpc.StatusCode.UNAVAILABLE, unreadable(job_id, error))
            if events is None:
                if watch.rpc_over:
                    # Released as the RPC ended, a feed may read as ended:
                    # that end is the client's, not the job's (W7).
                    continue
                return  # the job ended and every event was delivered (W3, W14)
            if not events:
                watch.wake.wait()
                continue
            for event in events:
                if watch.rpc_over:
                    break
                yield event_to_proto(event)
                sent += 1
                last = event.sequence
    finally:
        stop_listening()
        watch.release()
