"""WatchJob: replay a job's log from a cursor, then follow it live.

A watch is a coroutine holding an index into the job's log (a list of
encoded events that only grows): it sends what lies past its index, then
waits for the job's next change. Replay and live delivery are the same loop,
so there is no hand-over to get wrong (W13); a watcher that falls behind
costs nothing but its index (W15); and waiting holds no thread, so a thousand
open watches cost a thousand suspended coroutines (W16).

Checks, in this daemon's order: job_id (W1), from_sequence (W11), the job
exists (W2), not shutting down (W18), a finished job watched from 0 ends at
once without a subscription (W8).

The defects that --bug switches on live here too (see server.py).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc

from choo.v1 import daemon_pb2

from .model import Job, Refusal, Watch, invalid
from .state import State, check_job_id, unavailable

log = logging.getLogger("foreign")

# Events sent per look at the log: how long a watcher goes without checking
# for shutdown.
BATCH = 64
# drops-slow-watcher-events: how far behind a watcher may fall.
SLOW_LAG = 1000
# thread-per-watch: the worker threads that watches hold.
WATCH_THREADS = 128


class Watcher:
    def __init__(self, state: State, bugs: set[str]) -> None:
        self.state = state
        self.bugs = bugs
        self._pool = (ThreadPoolExecutor(WATCH_THREADS, thread_name_prefix="watch")
                      if "thread-per-watch" in bugs else None)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _admit(self, request) -> Job | None:
        """The job to watch, or None when the watch ends at once, OK."""
        check_job_id(request.job_id)
        if request.from_sequence < 0 and "negative-from-clamped" not in self.bugs:
            raise invalid(f"from_sequence must be 0 or more, got {request.from_sequence}")
        try:
            job = self.state.job(request.job_id)
        except Refusal as refusal:
            if refusal.code == grpc.StatusCode.NOT_FOUND and "not-found-internal" in self.bugs:
                raise Refusal(grpc.StatusCode.INTERNAL,
                              f"lookup failed: {request.job_id}") from None
            raise
        if self.state.shutting_down:
            raise unavailable()
        if (job.finished and request.from_sequence == 0
                and "replay-terminal-from-zero" not in self.bugs):
            return None  # a finished job from 0: nothing to follow (W8)
        return job

    async def watch(self, request, context) -> None:
        job = self._admit(request)
        if job is None:
            return
        subscription = Watch(request.from_sequence)
        job.watches.append(subscription)
        start = max(request.from_sequence, 1)
        # Index in the log of the next event to send (event n is log[n - 1]).
        cursor = request.from_sequence if "exclusive-from" in self.bugs else start - 1
        try:
            if self._pool is not None:
                await self._watch_on_a_thread(job, cursor, context)
                return
            replay_end = len(job.log)
            caught_up = True  # for --awkward jitter: nothing sent since the watch waited
            while True:
                if self.state.shutting_down:
                    raise unavailable()
                if cursor < len(job.log):
                    if caught_up:
                        await self.state.awkward.jitter()
                        caught_up = False
                    behind = len(job.log) - cursor
                    if "drops-slow-watcher-events" in self.bugs and behind > SLOW_LAG:
                        log.info("watch of %s is %d events behind: skipping ahead",
                                 job.job_id, behind)
                        cursor = len(job.log) - SLOW_LAG
                    for data in job.log[cursor:cursor + BATCH]:
                        cursor += 1
                        if cursor <= replay_end:
                            data = self._replayed(data, cursor - start + 1)
                        await context.write(data)
                    continue
                if job.finished:
                    return  # every event up to the job's last was sent (W14)
                await job.next_change()
                caught_up = True
        finally:
            # Also when the client cancels or goes away: the coroutine is
            # cancelled at its await and lets go here (W5, W7).
            subscription.open = False

    def _replayed(self, data: bytes, position: int) -> bytes:
        """An event sent from the history the job had when the watch began,
        as the replay defects mangle it."""
        if "renumbered-replay" not in self.bugs and "replay-drops-payload" not in self.bugs:
            return data
        event = daemon_pb2.JobEvent.FromString(data)
        if "renumbered-replay" in self.bugs:
            event.sequence = position  # counts the replay, not the job's log
        if "replay-drops-payload" in self.bugs:
            event.payload_json = ""
        return event.SerializeToString()

    # -- the thread-per-watch defect -------------------------------------------

    async def _watch_on_a_thread(self, job: Job, cursor: int, context) -> None:
        """The whole watch runs on one of WATCH_THREADS worker threads and
        holds it until the watch ends: the classic thread-per-stream design.
        Watches past the pool's size wait for a thread and get nothing."""
        loop = asyncio.get_running_loop()
        wake = threading.Condition()
        over = threading.Event()

        def notify() -> None:
            with wake:
                wake.notify_all()

        def deliver(data: bytes) -> None:
            asyncio.run_coroutine_threadsafe(context.write(data), loop).result()

        def follow() -> bool:
            """True: the job ended and everything was sent; False: shutdown."""
            nonlocal cursor
            while not over.is_set():
                if self.state.shutting_down:
                    return False
                if cursor < len(job.log):
                    for data in job.log[cursor:cursor + BATCH]:
                        deliver(data)
                        cursor += 1
                    continue
                if job.finished:
                    return True
                with wake:
                    if cursor >= len(job.log) and not job.finished and not over.is_set() \
                            and not self.state.shutting_down:
                        wake.wait()
            return True

        job.listeners.append(notify)
        try:
            if not await loop.run_in_executor(self._pool, follow):
                raise unavailable()
        finally:
            over.set()
            job.listeners.remove(notify)
            notify()
