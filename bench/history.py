"""A daemon with a long history: its start, its memory, and how fast Health
and ListJobs answer, with 100,000 finished jobs in its database against the
same with 100 (issue 24, row 12). What depends on the history's length shows
as a ratio far above 1.

    python -m bench.history                # 100,000 jobs against 100
    python -m bench.history --jobs 20000   # quicker

Prints one line per figure: the figure with the small history, with the long
one, and their ratio.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from choo.v1 import daemon_pb2, daemon_pb2_grpc
from choo_reference.sqlite_log import _SCHEMA, SCHEMA_VERSION

SMALL = 100
UNITS = 3  # per job
EVENTS = 10  # per job


def write_history(db: Path, jobs: int) -> None:
    """`jobs` finished jobs, each with its units and events, written at once."""
    conn = sqlite3.connect(db)
    conn.executescript(_SCHEMA)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    with conn:
        conn.executemany("INSERT INTO jobs VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", (
            (i, f"{i:032x}", "completed", "/repo/tasks", "main", f"feature-{i}", 4, "/repo",
             "", i, i, i + 1) for i in range(1, jobs + 1)))
        conn.executemany("INSERT INTO units VALUES (?,?,?,?,?,?,?)", (
            (i, f"unit-{u}", u, "completed", 2, 2, 0)
            for i in range(1, jobs + 1) for u in range(UNITS)))
        conn.executemany("INSERT INTO events VALUES (?,?,?,?,?,?)", (
            (i, s, "task.completed", "unit-0", '{"task": 1}', s)
            for i in range(1, jobs + 1) for s in range(1, EVENTS + 1)))
    conn.close()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _p50_ms(call, times: int) -> float:
    samples = []
    for _ in range(times):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def measure(jobs: int, folder: Path) -> dict[str, float]:
    db, socket = folder / f"h{jobs}.db", folder / f"h{jobs}.sock"
    write_history(db, jobs)
    started = time.perf_counter()
    daemon = subprocess.Popen(
        [sys.executable, "-m", "choo_reference.cli", "daemon", "--socket", str(socket),
         "--db", str(db)], stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with grpc.insecure_channel(f"unix://{socket}") as channel:
            stub = daemon_pb2_grpc.DaemonServiceStub(channel)
            while True:
                try:
                    stub.Health(daemon_pb2.HealthRequest(), timeout=1, wait_for_ready=True)
                    break
                except grpc.RpcError:
                    if daemon.poll() is not None:
                        raise RuntimeError(f"the daemon exited ({daemon.returncode})") from None
            start_s = time.perf_counter() - started
            health = _p50_ms(lambda: stub.Health(daemon_pb2.HealthRequest(), timeout=30), 200)
            listed = _p50_ms(lambda: stub.ListJobs(daemon_pb2.ListJobsRequest(), timeout=60), 5)
            running = _p50_ms(lambda: stub.ListJobs(
                daemon_pb2.ListJobsRequest(status_filter=["running"]), timeout=60), 20)
            return {"start (s)": start_s, "RSS (MB)": _rss_mb(daemon.pid),
                    "Health p50 (ms)": health, "ListJobs p50 (ms)": listed,
                    "ListJobs running p50 (ms)": running}
    finally:
        daemon.terminate()
        daemon.wait(60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="choo-history-", dir="/tmp") as tmp:
        small = measure(SMALL, Path(tmp))
        long = measure(args.jobs, Path(tmp))
    print(f"{'figure':<28}{SMALL:>12,} jobs{args.jobs:>12,} jobs{'ratio':>10}")
    for figure, base in small.items():
        print(f"{figure:<28}{base:>17.2f}{long[figure]:>17.2f}{long[figure] / base:>10.1f}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
