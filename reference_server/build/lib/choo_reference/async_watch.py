"""WatchJob for grpc.aio: the same watch as watch.py, as a coroutine.

A watch waiting for events holds no thread, only a suspended coroutine, so a
thousand open watches cost neither a thousand threads nor the daemon's worker
pool (which the other RPCs need). A slow client suspends its own coroutine at
`context.write` (HTTP/2 flow control) and nothing else.
"""

from __future__ import annotations

import asyncio
import threading

import grpc

from .convert import event_to_proto
from .jobs import JobManager
from .shutdown import ShutdownSignal
from .watch import READ_BATCH, SHUTTING_DOWN, Refused, admit, client_gone


class LoopWaker:
    """Sets asyncio events from any thread with at most one call into the loop
    per burst: the job's recording thread wakes its watchers at the cost of
    a set insertion each, not a loop call each."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._pending: set[asyncio.Event] = set()
        self._scheduled = False

    def waker(self, event: asyncio.Event):
        return lambda: self._wake(event)

    def _wake(self, event: asyncio.Event) -> None:
        with self._lock:
            self._pending.add(event)
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:
            pass  # the loop is closed: the daemon is exiting

    def _drain(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, set()
            self._scheduled = False
        for event in pending:
            event.set()


async def watch_job_async(jobs: JobManager, shutdown: ShutdownSignal, waker: LoopWaker,
                          request, context: grpc.aio.ServicerContext) -> None:
    try:
        if not admit(jobs, shutdown, request):
            return
    except Refused as refused:
        await context.abort(refused.code, refused.details)
    job_id = request.job_id
    wake = asyncio.Event()
    set_wake = waker.waker(wake)
    feed, unsubscribe = jobs.subscribe(job_id, request.from_sequence, set_wake)
    stop_listening = shutdown.add_listener(set_wake)
    sent, last = 0, None
    try:
        while True:
            if shutdown.is_set():
                await context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
            if context.done():
                await context.abort(grpc.StatusCode.CANCELLED, client_gone(job_id, sent, last))
            wake.clear()
            events = feed.read(READ_BATCH)
            if events is None:
                return  # the job ended and every event was delivered (W3, W14)
            if not events:
                await wake.wait()
                continue
            for event in events:
                await context.write(event_to_proto(event))
                sent += 1
                last = event.sequence
    finally:
        # Also on cancellation: a client that goes away cancels this
        # coroutine at its await, and the subscription is released here (W5, W7).
        stop_listening()
        unsubscribe()
