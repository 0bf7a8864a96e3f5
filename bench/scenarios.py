"""One function per measurement. Each takes a fresh server (the daemon or the
ceiling), drives it exactly the same way and returns plain numbers.

Events always enter through ConformanceControl.AppendEvents, which on the
daemon is JobStore.record_many: sequence numbers, the SQLite commit, the
in-memory window and the watchers' wake-ups, the path a real job's events take.
Watchers are client processes (bench.clients); they are all subscribed before
the first event is appended, so every figure measures live delivery.
"""

from __future__ import annotations

import array
import json
import math
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from choo.v1 import daemon_pb2

from . import workload
from .processes import ROOT, Processes, wait_all
from .servers import Server

APPEND_BATCH = 1000
SUBSCRIBE_S = 90.0


def client_procs(processes: Processes) -> int:
    """Client processes per run: one per client core (at least 2), so that the
    clients are not the bottleneck of one core while the server has another."""
    return max(2, processes.placement.client_core_count())


@dataclass
class Watchers:
    """Client processes watching one job, split as evenly as possible."""

    procs: list[subprocess.Popen]
    outs: list[str]
    cpu_s: float = 0.0  # CPU time all client processes used, once finished

    @classmethod
    def start(cls, processes: Processes, server: Server, job_id: str, watchers: int,
              expect: int, work_dir: Path, *, latency: bool = False, stall: bool = False,
              from_sequence: int = 1, timeout_s: float = 300.0) -> Watchers:
        n_procs = min(client_procs(processes), watchers)
        procs, outs = [], []
        for i in range(n_procs):
            share = watchers // n_procs + (1 if i < watchers % n_procs else 0)
            out = str(work_dir / f"client-{i}.json")
            args = ["--socket", server.socket, "--job", job_id, "--watchers", str(share),
                    "--expect", str(expect), "--timeout", str(timeout_s), "--out", out,
                    "--from-sequence", str(from_sequence)]
            if latency:
                args.append("--latency")
            if stall:
                args.append("--stall")
            procs.append(processes.python("bench.clients", *args))
            outs.append(out)
        return cls(procs, outs)

    def finish(self, processes: Processes, timeout_s: float) -> list[dict]:
        """Waits for the clients (killing what is left at the deadline) and
        returns every watch's result; a client that wrote nothing counts its
        watches as failed."""
        wait_all(self.procs, timeout_s)
        for proc in self.procs:
            processes.stop(proc)
        watches: list[dict] = []
        for out in self.outs:
            try:
                with open(out) as f:
                    result = json.load(f)
                watches.extend(result["watches"])
                self.cpu_s += result["cpu_s"]
            except (OSError, ValueError):
                pass
        return watches

    def latencies_ns(self) -> list[int]:
        samples = array.array("q")
        for out in self.outs:
            try:
                with open(out + ".lat", "rb") as f:
                    samples.frombytes(f.read())
            except OSError:
                pass
        return sorted(samples)


def percentile(sorted_values: list, q: float) -> float:
    """Nearest rank: the smallest value with at least q % of values at or below it."""
    if not sorted_values:
        return float("nan")
    rank = math.ceil(round(q * len(sorted_values) / 100, 9))  # round: 0.99 * 100 > 99
    return sorted_values[min(len(sorted_values), max(rank, 1)) - 1]


def _complete(watches: list[dict], watchers: int) -> int:
    return sum(1 for w in watches if w["status"] == "OK" and w["in_order"]) \
        if len(watches) == watchers else 0


# -- events/s to N watchers ---------------------------------------------------------


def stream(processes: Processes, server: Server, watchers: int, events: int,
           work_dir: Path) -> dict:
    """N watchers subscribed to a running job; EVENTS events appended in
    batches, then the job finishes. Throughput is every delivered event over
    the time from the first append to the end of the last stream."""
    job_id = server.create_job()
    rss_before = server.rss_kb()
    clients = Watchers.start(processes, server, job_id, watchers, events, work_dir)
    subscribed = server.wait_open_watches(job_id, watchers, SUBSCRIBE_S, clients.procs)
    rss_open = server.rss_kb()
    threads_open = server.threads()
    user0, sys0 = server.cpu_times()
    main0 = server.main_thread_cpu_s()
    t0 = time.time_ns()
    for start in range(0, events, APPEND_BATCH):
        server.append(job_id, workload.specs(min(APPEND_BATCH, events - start)))
    append_s = (time.time_ns() - t0) / 1e9
    server.finish(job_id)
    watches = clients.finish(processes, timeout_s=600)
    user1, sys1 = server.cpu_times()
    main_cpu = server.main_thread_cpu_s() - main0
    cpu = (user1 - user0) + (sys1 - sys0)
    delivered = sum(w["count"] for w in watches)
    end = max((w["last_ns"] for w in watches), default=t0)
    seconds = max(end - t0, 1) / 1e9
    return {
        "watchers": watchers,
        "events": events,
        "subscribed": subscribed,
        "complete": _complete(watches, watchers),
        "delivered": delivered,
        "seconds": seconds,
        "append_s": append_s,
        "events_per_s": delivered / seconds,
        "per_watcher_events_per_s": sorted(
            w["count"] / max((w["last_ns"] - t0) / 1e9, 1e-9) for w in watches)[len(watches) // 2]
        if watches else 0.0,
        "server_cpu_s": cpu,
        "server_kernel_share": (sys1 - sys0) / cpu if cpu else float("nan"),
        "cpu_us_per_event": cpu / delivered * 1e6 if delivered else float("nan"),
        "main_thread_cpu_us_per_event": main_cpu / delivered * 1e6 if delivered else float("nan"),
        "client_cpu_us_per_event": clients.cpu_s / delivered * 1e6 if delivered else float("nan"),
        "rss_before_kb": rss_before,
        "rss_open_kb": rss_open,
        "rss_per_watcher_kb": (rss_open - rss_before) / watchers,
        "threads_open": threads_open,
    }


def replay(processes: Processes, server: Server, events: int, work_dir: Path) -> dict:
    """One watcher from sequence 1 of a job that has already ended: on the
    daemon nobody was reading it live, so its window is gone and every event
    comes from SQLite, a page of READ_BATCH at a time."""
    job_id = server.create_job()
    for start in range(0, events, APPEND_BATCH):
        server.append(job_id, workload.specs(min(APPEND_BATCH, events - start)))
    server.finish(job_id)
    user0, sys0 = server.cpu_times()
    t0 = time.time_ns()
    clients = Watchers.start(processes, server, job_id, 1, events, work_dir)
    watches = clients.finish(processes, timeout_s=600)
    user1, sys1 = server.cpu_times()
    cpu = (user1 - user0) + (sys1 - sys0)
    delivered = sum(w["count"] for w in watches)
    # From the call, not the client's start: a new process takes ~0.3 s to import grpc.
    start = min((w["start_ns"] for w in watches), default=t0)
    end = max((w["last_ns"] for w in watches), default=t0)
    seconds = max(end - start, 1) / 1e9
    return {
        "watchers": 1,
        "events": events,
        "complete": _complete(watches, 1),
        "delivered": delivered,
        "seconds": seconds,
        "events_per_s": delivered / seconds,
        "server_cpu_s": cpu,
        "cpu_us_per_event": cpu / delivered * 1e6 if delivered else float("nan"),
    }


# -- append-to-client latency -------------------------------------------------------


def latency(processes: Processes, server: Server, watchers: int, rate: int,
            duration_s: float, work_dir: Path) -> dict:
    """Appends at a steady `rate` for `duration_s`; each payload carries the
    time just before its AppendEvents call, each client subtracts it from the
    time it received the event. Appends due while a call was in flight go out
    together in the next call, so the rate holds even when calls are slow."""
    total = int(rate * duration_s)
    job_id = server.create_job()
    clients = Watchers.start(processes, server, job_id, watchers, total, work_dir,
                             latency=True)
    subscribed = server.wait_open_watches(job_id, watchers, SUBSCRIBE_S, clients.procs)
    cpu0 = server.cpu_s()
    start = time.monotonic()
    sent = calls = 0
    while sent < total:
        due = min(total, int((time.monotonic() - start) * rate) + 1)
        if due > sent:
            server.append(job_id, workload.specs(due - sent))
            sent, calls = due, calls + 1
        else:
            time.sleep(max(0.0, start + sent / rate - time.monotonic()))
    append_s = time.monotonic() - start
    server.finish(job_id)
    watches = clients.finish(processes, timeout_s=600)
    drained_s = time.monotonic() - start
    samples = clients.latencies_ns()
    ms = 1e6
    return {
        "watchers": watchers,
        "rate": rate,
        "events": total,
        "append_calls": calls,
        "achieved_rate": total / append_s,
        "subscribed": subscribed,
        "complete": _complete(watches, watchers),
        "samples": len(samples),
        "p50_ms": percentile(samples, 50) / ms,
        "p99_ms": percentile(samples, 99) / ms,
        "max_ms": (samples[-1] / ms) if samples else float("nan"),
        "drained_s": drained_s,
        "server_cpu_s": server.cpu_s() - cpu0,
        "client_cpu_s": clients.cpu_s,
    }


# -- stalled watchers ------------------------------------------------------------------


def _append_all(server: Server, job_id: str, events: int) -> int:
    """Appends `events` in batches; returns the last sequence."""
    last = 0
    for start in range(0, events, APPEND_BATCH):
        last = server.append(job_id, workload.specs(min(APPEND_BATCH, events - start)))[-1]
    return last


def stalled(processes: Processes, server: Server, watchers: int, pending: int,
            work_dir: Path) -> dict:
    """What a stalled watcher costs the server, and whether that grows with its
    backlog. `watchers` clients watch a running job from its newest event on,
    and their processes are stopped (SIGSTOP); then pending / 10 events are
    recorded, and then the rest of `pending`.

    Recording alone costs memory too (a server may keep a job's events, or a
    window of them, in memory), so it is measured first, on the same job with
    nobody watching, after as many events again to bring the server's caches
    to their steady size; each reading with watchers is net of it."""
    job_id = server.create_job()
    _append_all(server, job_id, pending)  # caches and in-memory windows to their steady size
    rss_0 = server.rss_kb()
    last = _append_all(server, job_id, pending)
    rss_1 = server.rss_kb()
    recording_kb_per_event = (rss_1 - rss_0) / pending
    clients = Watchers.start(processes, server, job_id, watchers, 0, work_dir, stall=True,
                             from_sequence=last + 1)
    subscribed = server.wait_open_watches(job_id, watchers, SUBSCRIBE_S, clients.procs)
    # Stopped, the client processes read nothing from their connections: the
    # server's writes to them stall once the socket and HTTP/2 windows are full.
    for proc in clients.procs:
        proc.send_signal(signal.SIGSTOP)
    rss_open = server.rss_kb()
    cpu0 = server.cpu_s()
    t = time.monotonic()
    first = pending // 10
    _append_all(server, job_id, first)
    rss_first = server.rss_kb()
    _append_all(server, job_id, pending - first)
    append_s = time.monotonic() - t
    rss_all = server.rss_kb()
    open_now = server.open_watches(job_id)
    for proc in clients.procs:
        proc.send_signal(signal.SIGCONT)
        processes.stop(proc)
    server.finish(job_id)

    def per_watcher(rss: int, events: int) -> float:
        """RSS per stalled watcher, net of recording `events` events."""
        return (rss - rss_1 - recording_kb_per_event * events) / watchers

    at_first, at_all = per_watcher(rss_first, first), per_watcher(rss_all, pending)
    return {
        "watchers": watchers,
        "pending": pending,
        "pending_first": first,
        "subscribed": subscribed,
        "still_open": open_now,
        "recording_kb": rss_1 - rss_0,
        "open_kb_per_watcher": (rss_open - rss_1) / watchers,
        "kb_per_watcher_first": at_first,
        "kb_per_watcher": at_all,
        "growth_kb_per_watcher": at_all - at_first,
        "append_events_per_s": pending / append_s if append_s else float("nan"),
        "server_cpu_s": server.cpu_s() - cpu0,
    }


# -- unary calls with many open watchers ------------------------------------------------


def rpc_latency(processes: Processes, server: Server, watchers: int, rounds: int,
                start_every: int, work_dir: Path, *, ceiling: bool = False) -> dict:
    """Opens `watchers` watches on one running job, then times Health and
    GetJobStatus every round and StartJob (examples/hello-tasks, repo a temp
    dir) every `start_every` rounds, one call at a time. The ceiling serves
    Health only: its p99 is what a plain unary call costs next to as many
    open streams."""
    job_id = server.create_job()
    clients = Watchers.start(processes, server, job_id, watchers, 0, work_dir)
    subscribed = server.wait_open_watches(job_id, watchers, SUBSCRIBE_S, clients.procs)
    repo = tempfile.mkdtemp(prefix="cb-repo-", dir="/tmp")
    tasks_dir = str(ROOT / "examples" / "hello-tasks")
    times: dict[str, list[float]] = {"Health": [], "GetJobStatus": [], "StartJob": []}
    failures: dict[str, str] = {}
    calls = {
        "Health": lambda: server.daemon.Health(daemon_pb2.HealthRequest(), timeout=5),
        "GetJobStatus": lambda: server.daemon.GetJobStatus(
            daemon_pb2.GetJobStatusRequest(job_id=job_id), timeout=5),
        "StartJob": lambda: server.daemon.StartJob(daemon_pb2.StartJobRequest(
            tasks_dir=tasks_dir, target_branch="main", repo_path=repo, parallelism=1),
            timeout=5),
    }
    try:
        for i in range(rounds):
            for name, call in calls.items():
                if ceiling and name != "Health":
                    continue
                if name == "StartJob" and i % start_every:
                    continue
                t = time.perf_counter()
                try:
                    call()
                except grpc.RpcError as error:
                    failures.setdefault(name, error.code().name)
                    continue
                times[name].append((time.perf_counter() - t) * 1e3)
            time.sleep(0.005)
        server.finish(job_id)
        watches = clients.finish(processes, timeout_s=120)
    finally:
        shutil.rmtree(repo, ignore_errors=True)
    out: dict = {"watchers": watchers, "subscribed": subscribed,
                 "complete": _complete(watches, watchers), "failures": failures}
    for name, values in times.items():
        values.sort()
        out[name] = {"calls": len(values), "p50_ms": percentile(values, 50),
                     "p99_ms": percentile(values, 99),
                     "max_ms": values[-1] if values else float("nan")}
    return out


# -- `choo-ref daemon` as installed, with many watchers ------------------------------------


def pool_check(processes: Processes, server: Server, watchers: int, work_dir: Path) -> dict:
    """Opens `watchers` watches on `choo-ref daemon` as installed and asks for
    Health while they are open. Where each open watch holds a thread of the
    daemon's RPC pool, the calls beyond the pool queue behind the watches,
    Health, the control calls and Shutdown included."""
    job_id = server.create_job()
    clients = Watchers.start(processes, server, job_id, watchers, 0, work_dir, timeout_s=60)
    # Where watches beyond the pool never subscribe this waits its full timeout,
    # and ListSubscriptions itself may queue, which is reported as -1.
    subscribed = server.wait_open_watches(job_id, watchers, 8.0, clients.procs)
    health = "OK"
    t = time.perf_counter()
    try:
        server.daemon.Health(daemon_pb2.HealthRequest(), timeout=3)
    except grpc.RpcError as error:
        health = error.code().name
    health_ms = (time.perf_counter() - t) * 1e3
    threads = server.threads()
    # SIGTERM takes the daemon's shutdown path, which ends the open watches and
    # frees the pool; a Shutdown call would only queue behind them.
    server.terminate()
    clients.finish(processes, timeout_s=30)
    return {"watchers": watchers, "subscribed": subscribed, "health": health,
            "health_ms": health_ms, "threads": threads}


# -- the in-process conformance suite ------------------------------------------------------


def suite(processes: Processes, work_dir: Path, runs: int = 3) -> dict:
    """Wall time of `choo-conformance` in process (the reference, every
    scenario that runs in process), the best of `runs`: other load on the
    machine only ever adds to it."""
    walls, last = [], {}
    for i in range(runs):
        log = work_dir / f"suite-{i}.log"
        t = time.perf_counter()
        proc = processes.spawn([sys.executable, "-m", "choo_conformance.cli", "--report",
                                str(work_dir / f"suite-{i}")], log=log)
        finished = wait_all([proc], 300)
        walls.append(time.perf_counter() - t)
        processes.stop(proc)
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
        last = {"returncode": proc.returncode if finished else None,
                "summary": tail[0] if tail else ""}
        if last["returncode"] != 0:
            break
    return {"seconds": min(walls), "runs_s": walls, **last}
