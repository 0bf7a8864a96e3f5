"""A watcher client process: opens WATCHERS WatchJob streams on one job, each
on its own connection (as separate choo CLIs would), reads them to the end and
writes what each saw as JSON.

    python -m bench.clients --socket S --job J --watchers 250 --expect 2000 --out R.json

With --latency, each event's payload starts with the time it was appended
(see workload.payload) and the receive-minus-append delay of every event is
written as int64 nanoseconds to R.json.lat.

With --stall, each watch is opened and never read, as by a client that has
stopped reading: the process waits until it is stopped (or --timeout).
"""

from __future__ import annotations

import argparse
import array
import asyncio
import json
import sys
import time

import grpc

from choo.v1 import daemon_pb2, daemon_pb2_grpc

from .workload import sent_ns

# Each channel gets its own connection: by default grpc shares one
# connection between channels with the same target and arguments.
CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]


def _watch_call(channel: grpc.aio.Channel, job_id: str, from_sequence: int, deadline: float):
    """WatchJob, started at once, with what is left of the run as its deadline."""
    stub = daemon_pb2_grpc.DaemonServiceStub(channel)
    return stub.WatchJob(daemon_pb2.WatchJobRequest(job_id=job_id, from_sequence=from_sequence),
                         timeout=max(deadline - time.time(), 1.0))


async def _watch(socket_path: str, job_id: str, from_sequence: int, expect: int,
                 latency: array.array | None, deadline: float) -> dict:
    result = {"status": "", "count": 0, "in_order": True, "start_ns": time.time_ns(),
              "first_ns": 0, "last_ns": 0}
    async with grpc.aio.insecure_channel(f"unix://{socket_path}",
                                         options=CHANNEL_OPTIONS) as channel:
        call = _watch_call(channel, job_id, from_sequence, deadline)
        count = 0
        in_order = True
        first = 0
        try:
            async for event in call:
                now = time.time_ns()
                count += 1
                if event.sequence != max(from_sequence, 1) + count - 1:
                    in_order = False
                if latency is not None:
                    latency.append(now - sent_ns(event.payload_json))
                if not first:
                    first = now
            result["status"] = (await call.code()).name
        except grpc.aio.AioRpcError as error:
            result["status"] = error.code().name
        result.update(count=count, in_order=in_order and count == expect,
                      first_ns=first, last_ns=time.time_ns())
    return result


async def _stall(socket_path: str, job_id: str, from_sequence: int, deadline: float) -> dict:
    async with grpc.aio.insecure_channel(f"unix://{socket_path}",
                                         options=CHANNEL_OPTIONS) as channel:
        call = _watch_call(channel, job_id, from_sequence, deadline)  # never read
        await asyncio.sleep(max(deadline - time.time(), 0.0))
        call.cancel()
    return {"status": "STALLED", "count": 0, "in_order": False, "start_ns": 0, "first_ns": 0,
            "last_ns": 0}


async def _main(args: argparse.Namespace) -> list[dict]:
    latency = array.array("q") if args.latency else None
    deadline = time.time() + args.timeout
    if args.stall:
        return await asyncio.gather(*(_stall(args.socket, args.job, args.from_sequence, deadline)
                                      for _ in range(args.watchers)))
    results = await asyncio.gather(*(
        _watch(args.socket, args.job, args.from_sequence, args.expect, latency, deadline)
        for _ in range(args.watchers)
    ))
    if latency is not None:
        with open(args.out + ".lat", "wb") as f:
            latency.tofile(f)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True)
    parser.add_argument("--job", required=True)
    parser.add_argument("--watchers", type=int, required=True)
    parser.add_argument("--expect", type=int, required=True,
                        help="events each watcher must see, in order from --from-sequence")
    parser.add_argument("--from-sequence", type=int, default=1)
    parser.add_argument("--latency", action="store_true")
    parser.add_argument("--stall", action="store_true", help="open the watches, never read them")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    # CPU from here on: the imports before this are the same for any server.
    cpu0 = time.process_time()
    results = asyncio.run(_main(args))
    with open(args.out, "w") as f:
        json.dump({"cpu_s": time.process_time() - cpu0, "watches": results}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
