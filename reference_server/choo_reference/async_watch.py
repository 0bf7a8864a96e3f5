"""WatchJob for grpc.aio: the same watch as watch.py, as a coroutine.

A watch waiting for events holds no thread, only a suspended coroutine, so a
thousand open watches cost neither a thousand threads nor the daemon's worker
pool (which the other RPCs need). A slow client suspends its own coroutine at
`context.write` (HTTP/2 flow control) and nothing else.

Every delivery passes through this loop, so it does little beyond what grpc
itself does per message (docs/PERFORMANCE.md): each event is serialized once
for all its watchers (convert.event_to_wire; WatchJob is registered to send
those bytes as they are, see servicer.add_daemon_service), one future per
wait, and at most one call into the event loop per burst of wakes from the
recording thread.
"""

from __future__ import annotations

import asyncio
import collections
import functools

import grpc

from .convert import event_to_wire
from .jobs import JobManager, StorageError, Wake
from .shutdown import ShutdownSignal
from .watch import READ_BATCH, SHUTTING_DOWN, Refused, admit, client_gone, unreadable


class _Waiting:
    """The future a watch waits on while its feed has nothing new; None
    while the watch is busy (a wake then has nothing to do: the watch reads
    its feed again before it waits)."""

    __slots__ = ("future",)

    def __init__(self) -> None:
        self.future: asyncio.Future[None] | None = None


class LoopWaker:
    """Wakes watches on the event loop from any thread, with at most one
    call into the loop per burst of wakes: the recording thread pays a deque
    append per watcher, not a loop call (and a write to the loop's self-pipe)
    each."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pending: collections.deque[_Waiting] = collections.deque()
        # True while a _drain is scheduled that has not yet cleared it: a
        # wake queued meanwhile is taken by that drain (see _drain).
        self._scheduled = False

    def watch(self) -> tuple[_Waiting, Wake]:
        """A watch's waiting state, and the wake to give its feed."""
        waiting = _Waiting()
        return waiting, functools.partial(self._wake, waiting)

    def _wake(self, waiting: _Waiting) -> None:
        # deque.append is atomic; no lock is needed (see _drain).
        self._pending.append(waiting)
        if self._scheduled:
            return
        self._scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:
            pass  # the loop is closed: the daemon is exiting

    def _drain(self) -> None:
        # Cleared before the queue is emptied: a wake that saw the flag set
        # had queued itself before this point and is taken below; a later
        # one sees it clear and schedules another drain.
        self._scheduled = False
        pending = self._pending
        while pending:
            future = pending.popleft().future
            if future is not None and not future.done():
                future.set_result(None)


async def watch_job_async(jobs: JobManager, shutdown: ShutdownSignal, waker: LoopWaker,
                          request, context: grpc.aio.ServicerContext) -> None:
    try:
        if not admit(jobs, shutdown, request):
            return
    except Refused as refused:
        await context.abort(refused.code, refused.details)
    job_id = request.job_id
    waiting, wake = waker.watch()
    feed, unsubscribe = jobs.subscribe(job_id, request.from_sequence, wake)
    stop_listening = shutdown.add_listener(wake)
    create_future = asyncio.get_running_loop().create_future
    read, write = feed.read, context.write
    sent, last = 0, None
    try:
        while True:
            if shutdown.is_set():
                await context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
            if context.done():
                await context.abort(grpc.StatusCode.CANCELLED, client_gone(job_id, sent, last))
            try:
                events = read(READ_BATCH)
            except StorageError as error:
                await context.abort(grpc.StatusCode.UNAVAILABLE, unreadable(job_id, error))
            if events is None:
                return  # the job ended and every event was delivered (W3, W14)
            if not events:
                # Nothing ran since the read: any event recorded after it
                # wakes this future (the feed joined the job's waiters).
                waiting.future = create_future()
                await waiting.future
                waiting.future = None
                continue
            try:
                for event in events:
                    await write(event_to_wire(event))
            except grpc.aio.InternalError:
                # A send fails only when the call has ended under it: its
                # deadline passed, or the client went away, while the event
                # waited to be sent (gRPC may not have said so to the context
                # yet). Nobody is left to answer; it is no fault of the daemon.
                return
            sent += len(events)
            last = events[-1].sequence
    finally:
        # Also on cancellation: a client that goes away cancels this
        # coroutine at its await, and the subscription is released here (W5, W7).
        stop_listening()
        unsubscribe()
