"""The ceiling: a plain grpcio servicer that streams pre-built JobEvent
messages, on the same kind of server (grpc.server on a ThreadPoolExecutor)
and the same kind of socket as the reference daemon.

It answers the same calls the benchmark drives the daemon with
(DaemonService.WatchJob and ConformanceControl's CreateJob, AppendEvents,
FinishJob, ListSubscriptions), so the clients and the driver are byte for
byte the same against both. What it leaves out is everything the daemon does
beyond moving bytes: no SQLite, no sequence bookkeeping beyond a list index,
no per-watcher conversion. Each event becomes one JobEvent message when it
is appended and that same message object is streamed to every watcher.

    python -m bench.ceiling_server --socket /tmp/x.sock --max-workers 1100
"""

from __future__ import annotations

import argparse
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
    __slots__ = ("events", "done", "cond", "subscriptions")

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
        now = time.time_ns()
        stamp = Timestamp(seconds=now // 1_000_000_000, nanos=now % 1_000_000_000)
        with job.cond:
            first = len(job.events) + 1
            built = [
                daemon_pb2.JobEvent(sequence=first + k, event_type=e.event_type,
                                    unit_id=e.unit_id, payload_json=e.payload_json,
                                    timestamp=stamp)
                for k, e in enumerate(request.events)
            ]
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
    try:
        os.unlink(socket_path)
    except FileNotFoundError:
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True)
    parser.add_argument("--max-workers", type=int, default=64)
    args = parser.parse_args(argv)
    return serve(args.socket, args.max_workers)


if __name__ == "__main__":
    sys.exit(main())
