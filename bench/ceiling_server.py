"""The ceiling: a plain grpcio servicer that streams pre-built JobEvent
messages over the same kind of socket as the reference daemon, on either of
grpcio's two server APIs: grpc.server on a ThreadPoolExecutor (a thread per
open stream) or, with --aio, grpc.aio (a coroutine per open stream). The
benchmark runs both and counts the better one as the ceiling, whichever API
the daemon uses.

It answers the same calls the benchmark drives the daemon with
(DaemonService.WatchJob and ConformanceControl's CreateJob, AppendEvents,
FinishJob, ListSubscriptions), so the clients and the driver are byte for
byte the same against both. What it leaves out is everything the daemon does
beyond moving bytes: no SQLite, no sequence bookkeeping beyond a list index,
no per-watcher conversion. Each event becomes one JobEvent message when it
is appended and that same message object is streamed to every watcher.

    python -m bench.ceiling_server --socket /tmp/x.sock --max-workers 1100
    python -m bench.ceiling_server --socket /tmp/x.sock --aio
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from choo.conformance.v1 import control_pb2, control_pb2_grpc
from choo.v1 import daemon_pb2, daemon_pb2_grpc


class _Job:
    __slots__ = ("cond", "done", "events", "subscriptions")

    def __init__(self) -> None:
        self.events: list[daemon_pb2.JobEvent] = []
        self.done = False
        self.cond = threading.Condition()
        self.subscriptions: list[list] = []  # [from_sequence, open]


class CeilingServicer(daemon_pb2_grpc.DaemonServiceServicer,
                      control_pb2_grpc.ConformanceControlServicer):
    def __init__(self) -> None:
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()
        self._next = 0

    def _job(self, job_id: str, context) -> _Job:
        job = self._jobs.get(job_id)
        if job is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"job not found: {job_id}")
        return job

    # -- streaming ----------------------------------------------------------

    def WatchJob(self, request, context):
        job = self._job(request.job_id, context)
        sub = [request.from_sequence, True]
        with job.cond:
            job.subscriptions.append(sub)

        def over() -> None:
            with job.cond:
                sub[1] = False
                job.cond.notify_all()

        context.add_callback(over)
        i = max(request.from_sequence, 1) - 1
        try:
            while True:
                with job.cond:
                    while i >= len(job.events) and not job.done and sub[1]:
                        job.cond.wait()
                    if not sub[1]:
                        return
                    batch = job.events[i:]
                    done = job.done
                if not batch and done:
                    return
                i += len(batch)
                yield from batch
        finally:
            sub[1] = False

    # -- the control calls the driver uses ------------------------------------

    def CreateJob(self, request, context):
        with self._lock:
            self._next += 1
            job_id = request.job_id or f"ceiling-{self._next}"
            self._jobs[job_id] = _Job()
        return control_pb2.CreateJobResponse(job_id=job_id)

    def AppendEvents(self, request, context):
        job = self._job(request.job_id, context)
        with job.cond:
            built = _built(request, len(job.events) + 1)
            job.events.extend(built)
            job.cond.notify_all()
        return control_pb2.AppendEventsResponse(sequences=[e.sequence for e in built])

    def FinishJob(self, request, context):
        job = self._job(request.job_id, context)
        with job.cond:
            job.done = True
            job.cond.notify_all()
        return control_pb2.FinishJobResponse()

    def ListSubscriptions(self, request, context):
        job = self._job(request.job_id, context)
        with job.cond:
            subs = [control_pb2.Subscription(from_sequence=f, open=o)
                    for f, o in job.subscriptions]
        return control_pb2.ListSubscriptionsResponse(subscriptions=subs)

    def Health(self, request, context):
        return daemon_pb2.HealthResponse(healthy=True, version="ceiling")


def _built(request, first: int) -> list[daemon_pb2.JobEvent]:
    now = time.time_ns()
    stamp = Timestamp(seconds=now // 1_000_000_000, nanos=now % 1_000_000_000)
    return [daemon_pb2.JobEvent(sequence=first + k, event_type=e.event_type, unit_id=e.unit_id,
                                payload_json=e.payload_json, timestamp=stamp)
            for k, e in enumerate(request.events)]


class _AioJob:
    __slots__ = ("changed", "done", "events", "subscriptions")

    def __init__(self) -> None:
        self.events: list[daemon_pb2.JobEvent] = []
        self.done = False
        self.changed = asyncio.Condition()
        self.subscriptions: list[list] = []  # [from_sequence, open]


class AioCeilingServicer(daemon_pb2_grpc.DaemonServiceServicer,
                         control_pb2_grpc.ConformanceControlServicer):
    """The same calls on grpc.aio. Everything runs on the event loop's one
    thread, so the job state needs no lock beyond the condition to wait on."""

    def __init__(self) -> None:
        self._jobs: dict[str, _AioJob] = {}
        self._next = 0

    async def _job(self, job_id: str, context) -> _AioJob:
        job = self._jobs.get(job_id)
        if job is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"job not found: {job_id}")
        return job

    async def WatchJob(self, request, context):
        job = await self._job(request.job_id, context)
        sub = [request.from_sequence, True]
        job.subscriptions.append(sub)
        i = max(request.from_sequence, 1) - 1
        try:
            while True:
                async with job.changed:
                    await job.changed.wait_for(lambda: i < len(job.events) or job.done)
                batch = job.events[i:]
                if not batch and job.done:
                    return
                i += len(batch)
                # Written, not yielded: grpc.aio sends a written message for
                # less CPU than one an async generator yields (over five
                # alternating rounds of one watcher, 82-112 µs an event
                # against 108-127), and the ceiling is the cheaper of the two.
                for event in batch:
                    await context.write(event)
        finally:
            sub[1] = False  # also when a client that went away cancels this

    async def CreateJob(self, request, context):
        self._next += 1
        job_id = request.job_id or f"ceiling-{self._next}"
        self._jobs[job_id] = _AioJob()
        return control_pb2.CreateJobResponse(job_id=job_id)

    async def AppendEvents(self, request, context):
        job = await self._job(request.job_id, context)
        built = _built(request, len(job.events) + 1)
        job.events.extend(built)
        async with job.changed:
            job.changed.notify_all()
        return control_pb2.AppendEventsResponse(sequences=[e.sequence for e in built])

    async def FinishJob(self, request, context):
        job = await self._job(request.job_id, context)
        job.done = True
        async with job.changed:
            job.changed.notify_all()
        return control_pb2.FinishJobResponse()

    async def ListSubscriptions(self, request, context):
        job = await self._job(request.job_id, context)
        return control_pb2.ListSubscriptionsResponse(subscriptions=[
            control_pb2.Subscription(from_sequence=f, open=o) for f, o in job.subscriptions])

    async def Health(self, request, context):
        return daemon_pb2.HealthResponse(healthy=True, version="ceiling")


async def _serve_aio(socket_path: str) -> None:
    server = grpc.aio.server()
    servicer = AioCeilingServicer()
    daemon_pb2_grpc.add_DaemonServiceServicer_to_server(servicer, server)
    control_pb2_grpc.add_ConformanceControlServicer_to_server(servicer, server)
    server.add_insecure_port(f"unix://{socket_path}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0)


def serve(socket_path: str, max_workers: int) -> int:
    server = grpc.server(ThreadPoolExecutor(max_workers=max_workers))
    servicer = CeilingServicer()
    daemon_pb2_grpc.add_DaemonServiceServicer_to_server(servicer, server)
    control_pb2_grpc.add_ConformanceControlServicer_to_server(servicer, server)
    server.add_insecure_port(f"unix://{socket_path}")
    server.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    server.stop(0).wait()
    _unlink(socket_path)
    return 0


def _unlink(socket_path: str) -> None:
    try:
        os.unlink(socket_path)
    except FileNotFoundError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True)
    parser.add_argument("--max-workers", type=int, default=64,
                        help="the thread pool of the grpc.server variant")
    parser.add_argument("--aio", action="store_true", help="serve on grpc.aio instead")
    args = parser.parse_args(argv)
    if args.aio:
        asyncio.run(_serve_aio(args.socket))
        _unlink(args.socket)
        return 0
    return serve(args.socket, args.max_workers)


if __name__ == "__main__":
    sys.exit(main())
