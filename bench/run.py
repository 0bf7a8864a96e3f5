"""`make bench`: every figure of CONTRACT.md section 6, measured against the
reference daemon and, in the same run, against the plain-grpcio ceiling.

    python -m bench.run            # the full run (under 10 minutes on 2 cores)
    python -m bench.run --quick    # smaller sizes, to check the harness

Prints the machine facts, one line per measurement as it goes, then the table
(figure, measured, ceiling, ratio, target, met?) and a closing note on the
figures that miss. Writes bench/results/results.json and the plots
bench/results/{watchers,events,latency}.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from reference_server.daemon import DEFAULT_MAX_WORKERS
from reference_server.job_store import DEFAULT_EVENT_WINDOW

from . import plots, report, scenarios
from .processes import ROOT, Processes
from .report import Row
from .servers import CEILING, DAEMON, SHIPPED, Server

RESULTS = ROOT / "bench" / "results"
KINDS = (DAEMON, CEILING)


@dataclass
class Plan:
    one_watcher_events: int = 20000
    repeats: int = 3  # of the one-watcher figure; the best of each server counts
    many_watchers: int = 1000
    many_events: int = 200
    # (watchers, events per job): about 100k deliveries per point.
    watcher_sweep: list = field(default_factory=lambda: [(10, 10000), (100, 1000)])
    event_sweep: list = field(default_factory=lambda: [2000, 50000, 100000])
    latency_watchers: int = 100
    latency_rate: int = 500
    latency_sweep: list = field(default_factory=lambda: [50, 100, 200])
    latency_s: float = 3.0
    rpc_watchers: int = 1000
    rpc_rounds: int = 200
    start_every: int = 4  # one StartJob per this many Health/GetJobStatus rounds
    pool_watchers: int = 1000

    @property
    def max_workers(self) -> int:
        return max(self.many_watchers, self.rpc_watchers, self.latency_watchers) + 100


QUICK = Plan(one_watcher_events=5000, repeats=1, many_watchers=200, many_events=100,
             watcher_sweep=[(10, 1000)], event_sweep=[1000], latency_sweep=[50],
             latency_s=1.0, rpc_watchers=200, rpc_rounds=40, pool_watchers=100)


class Bench:
    def __init__(self, plan: Plan, processes: Processes, work: Path) -> None:
        self.plan = plan
        self.processes = processes
        self.work = work
        self.logs = work / "logs"
        self.logs.mkdir()

    def on(self, kind: str, measure: Callable[[Server, Path], dict]) -> dict:
        """Runs one measurement on a fresh server of `kind`, in a fresh directory."""
        run_dir = Path(tempfile.mkdtemp(dir=self.work))
        with Server(self.processes, kind, self.plan.max_workers, self.logs) as server:
            return measure(server, run_dir)

    def both(self, label: str, measure: Callable[[Server, Path], dict],
             describe: Callable[[dict], str]) -> dict[str, dict]:
        out = {}
        for kind in KINDS:
            t = time.monotonic()
            out[kind] = self.on(kind, measure)
            print(f"  {kind:8} {label}: {describe(out[kind])} ({time.monotonic() - t:.1f} s)",
                  flush=True)
        return out


def _stream_line(r: dict) -> str:
    return (f"{r['events_per_s']:,.0f} events/s, {r['complete']}/{r['watchers']} complete, "
            f"server {r['cpu_us_per_event']:.0f} µs CPU/event, "
            f"RSS {r['rss_per_watcher_kb']:.0f} KB/watcher")


def _latency_line(r: dict) -> str:
    return (f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
            f"{r['complete']}/{r['watchers']} complete, "
            f"appended at {r['achieved_rate']:.0f}/s, drained after {r['drained_s']:.1f} s")


def _rpc_line(r: dict) -> str:
    parts = [f"{name} p99 {r[name]['p99_ms']:.1f} ms ({r[name]['calls']} calls)"
             for name in ("StartJob", "GetJobStatus", "Health") if r[name]["calls"]]
    if r["failures"]:
        parts.append(f"failed: {r['failures']}")
    return ", ".join(parts)


def measure(bench: Bench) -> dict:
    plan, procs = bench.plan, bench.processes
    results: dict = {}

    print("in-process conformance suite", flush=True)
    results["suite"] = scenarios.suite(procs, bench.work)
    print(f"  {results['suite']['seconds']:.2f} s wall: {results['suite']['summary']}", flush=True)

    print(f"`choo-ref daemon` as installed (pool of {DEFAULT_MAX_WORKERS}) "
          f"with {plan.pool_watchers} watchers", flush=True)
    run_dir = Path(tempfile.mkdtemp(dir=bench.work))
    with Server(procs, SHIPPED, 0, bench.logs) as shipped:
        results["pool_check"] = scenarios.pool_check(procs, shipped, plan.pool_watchers, run_dir)
    pc = results["pool_check"]
    print(f"  open watches {'unknown (ListSubscriptions not answered)' if pc['subscribed'] < 0 else pc['subscribed']}, "
          f"{pc['threads']} threads, Health: {pc['health']} after {pc['health_ms']:.0f} ms",
          flush=True)
    print(f"the other figures run the same daemon with --max-workers {plan.max_workers} "
          "(bench.reference_daemon)", flush=True)

    print(f"events/s to one watcher, {plan.one_watcher_events} events, "
          f"best of {plan.repeats}", flush=True)
    one: dict[str, list] = {k: [] for k in KINDS}
    for _ in range(plan.repeats):
        for kind, r in bench.both("1 watcher", lambda s, d: scenarios.stream(
                procs, s, 1, plan.one_watcher_events, d), _stream_line).items():
            one[kind].append(r)
    results["one_watcher"] = one

    print("events per job, one watcher", flush=True)
    events_sweep: dict[str, list] = {k: [max(one[k], key=lambda r: r["events_per_s"])]
                                     for k in KINDS}
    for n in plan.event_sweep:
        for kind, r in bench.both(f"{n} events", lambda s, d, n=n: scenarios.stream(
                procs, s, 1, n, d), _stream_line).items():
            events_sweep[kind].append(r)
    results["events_sweep"] = events_sweep

    print("number of watchers", flush=True)
    watchers_sweep: dict[str, list] = {k: [events_sweep[k][0]] for k in KINDS}
    for w, n in plan.watcher_sweep + [(plan.many_watchers, plan.many_events)]:
        for kind, r in bench.both(f"{w} watchers x {n} events", lambda s, d, w=w, n=n:
                                  scenarios.stream(procs, s, w, n, d), _stream_line).items():
            watchers_sweep[kind].append(r)
    results["watchers_sweep"] = watchers_sweep
    results["many_watchers"] = {k: watchers_sweep[k][-1] for k in KINDS}

    print(f"append-to-client latency, {plan.latency_watchers} watchers, "
          f"{plan.latency_s:g} s per rate", flush=True)
    latency_sweep: dict[str, list] = {k: [] for k in KINDS}
    for rate in plan.latency_sweep + [plan.latency_rate]:
        for kind, r in bench.both(f"{rate} events/s", lambda s, d, rate=rate: scenarios.latency(
                procs, s, plan.latency_watchers, rate, plan.latency_s, d),
                _latency_line).items():
            latency_sweep[kind].append(r)
    results["latency_sweep"] = latency_sweep
    results["latency"] = {k: latency_sweep[k][-1] for k in KINDS}

    print(f"unary calls with {plan.rpc_watchers} open watchers", flush=True)
    results["rpc"] = bench.both(f"{plan.rpc_watchers} watchers", lambda s, d: scenarios.rpc_latency(
        procs, s, plan.rpc_watchers, plan.rpc_rounds, plan.start_every, d,
        ceiling=s.kind == CEILING), _rpc_line)
    return results


# -- the table ---------------------------------------------------------------------------


def _capacity(results: dict, kind: str) -> tuple[float, int]:
    """The most delivered events/s any watcher count reached, and at how many."""
    best = max(results["watchers_sweep"][kind], key=lambda r: r["events_per_s"])
    return best["events_per_s"], best["watchers"]


def rows(plan: Plan, results: dict) -> list[Row]:
    out: list[Row] = []
    d1 = max(results["one_watcher"][DAEMON], key=lambda r: r["events_per_s"])
    c1 = max(results["one_watcher"][CEILING], key=lambda r: r["events_per_s"])
    ratio = d1["events_per_s"] / c1["events_per_s"]
    out.append(Row(
        "events/s to one watcher", d1["events_per_s"], c1["events_per_s"], "events/s",
        ">= 0.8 x ceiling", ratio >= 0.8 and d1["complete"] == 1,
        f"{ratio:.2f} x the ceiling ({0.8 - ratio:.2f} short); server CPU per event "
        f"{d1['cpu_us_per_event']:.0f} µs vs {c1['cpu_us_per_event']:.0f} µs"))

    dm, cm = results["many_watchers"][DAEMON], results["many_watchers"][CEILING]
    n = plan.many_watchers
    ratio = dm["events_per_s"] / cm["events_per_s"]
    complete = dm["complete"] == n
    note = (f"{ratio:.2f} x the ceiling ({0.8 - ratio:.2f} short); server CPU per event "
            f"{dm['cpu_us_per_event']:.0f} µs vs {cm['cpu_us_per_event']:.0f} µs"
            if ratio < 0.8 else "")
    if not complete:
        note = f"only {dm['complete']} of {n} watchers completed with every event. " + note
    out.append(Row(
        f"{n} concurrent watchers of one job ({dm['complete']}/{n} complete, "
        f"{plan.many_events} events each), aggregate", dm["events_per_s"], cm["events_per_s"],
        "events/s", "all complete, >= 0.8 x ceiling", complete and ratio >= 0.8, note))

    kb = dm["rss_per_watcher_kb"]
    out.append(Row(f"memory per open watcher (RSS delta / {n})", kb, cm["rss_per_watcher_kb"],
                   "KB", "<= 200 KB", kb <= 200, f"{kb:.0f} KB, {kb - 200:.0f} KB over"))

    dl, cl = results["latency"][DAEMON], results["latency"][CEILING]
    need = plan.latency_watchers * plan.latency_rate
    cap_c, at_c = _capacity(results, CEILING)
    cap_d, at_d = _capacity(results, DAEMON)
    out.append(Row(
        f"append-to-client latency p99, {plan.latency_watchers} watchers at "
        f"{plan.latency_rate} events/s", dl["p99_ms"], cl["p99_ms"], "ms", "<= 20 ms",
        dl["p99_ms"] <= 20 and dl["complete"] == plan.latency_watchers,
        f"{dl['p99_ms']:.0f} ms, {dl['p99_ms'] / 20:.0f} x the target (ceiling "
        f"{cl['p99_ms']:.0f} ms). {plan.latency_watchers} watchers x {plan.latency_rate} "
        f"events/s is {need:,} deliveries/s; the most this run delivered was "
        f"{cap_d:,.0f}/s from the daemon ({at_d} watchers) and {cap_c:,.0f}/s from the "
        f"ceiling ({at_c} watchers), so both fall behind and the latency is the backlog"))

    rd, rc = results["rpc"][DAEMON], results["rpc"][CEILING]
    for name, limit in (("StartJob", 50), ("GetJobStatus", 10), ("Health", 10)):
        p99 = rd[name]["p99_ms"]
        failed = rd["failures"].get(name)
        met = not failed and p99 <= limit and rd[name]["calls"] > 0
        note = f"p99 {p99:.1f} ms vs {limit} ms"
        if failed:
            note += f"; some calls failed with {failed}"
        out.append(Row(f"{name} p99 with {plan.rpc_watchers} open watchers", p99,
                       rc["Health"]["p99_ms"], "ms", f"<= {limit} ms", met, note))

    s = results["suite"]["seconds"]
    ok = results["suite"]["returncode"] == 0
    out.append(Row("in-process conformance suite (pytest steps -q), wall", s, None, "s",
                   "<= 5 s", ok and s <= 5,
                   f"{s:.2f} s, {s - 5:.2f} s over" if ok else
                   f"the suite did not pass: {results['suite']['summary']}"))
    return out


def notes(plan: Plan, results: dict) -> list[str]:
    pc = results["pool_check"]
    exhausted = pc["health"] != "OK"
    lines = [
        "Ceiling column: the same calls against bench/ceiling_server.py, a plain grpcio "
        "servicer streaming pre-built JobEvent messages on the same kind of server and "
        "socket. For StartJob/GetJobStatus/Health it is the plain server's Health p99 "
        "with as many open watchers (a bare unary round trip).",
        f"`choo-ref daemon` as installed has a pool of {DEFAULT_MAX_WORKERS} threads and each "
        f"open WatchJob holds one: with {pc['watchers']} watchers "
        + ("the pool is exhausted; Health got "
           f"{pc['health']} after {pc['health_ms']:.0f} ms (every other call, Shutdown "
           "included, waits behind the open watches)." if exhausted else
           f"Health still answered in {pc['health_ms']:.0f} ms.")
        + f" The figures above ran the same daemon with a pool of {plan.max_workers} "
        "(bench/reference_daemon.py).",
    ]
    return lines


def write_results(plan: Plan, facts: dict, results: dict, table_rows: list[Row],
                  elapsed_s: float, command: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {"command": command, "machine": facts, "plan": dataclasses.asdict(plan),
            "elapsed_s": elapsed_s, "rows": report.as_dicts(table_rows),
            "notes": notes(plan, results), "results": results}
    (RESULTS / "results.json").write_text(json.dumps(data, indent=1) + "\n")
    try:
        plots.watchers(results["watchers_sweep"], RESULTS / "watchers.png")
        plots.events(results["events_sweep"], DEFAULT_EVENT_WINDOW, RESULTS / "events.png")
        plots.latency(results["latency_sweep"], plan.latency_watchers, RESULTS / "latency.png")
        print(f"results and plots in {RESULTS.relative_to(ROOT)}/")
    except ImportError:
        print(f"results in {RESULTS.relative_to(ROOT)}/results.json; no plots: matplotlib "
              "is missing (pip install -e '.[bench]')")


def _terminate(signum, frame) -> None:
    # Raising here unwinds through the finally blocks that stop every process.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the harness")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else Plan()
    command = "make bench" if not args.quick else "python -m bench.run --quick"
    facts = report.machine()
    print(f"machine: {report.machine_line(facts)}", flush=True)
    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    processes = Processes()
    work = Path(tempfile.mkdtemp(prefix="cb-run-", dir="/tmp"))
    ok = False
    try:
        results = measure(Bench(plan, processes, work))
        ok = True
    finally:
        processes.stop_all()
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"the run failed; server logs and client output kept in {work}",
                  file=sys.stderr)
    elapsed = time.monotonic() - started
    table_rows = rows(plan, results)
    print()
    print(report.table(table_rows))
    print()
    for line in notes(plan, results):
        print(line)
    print()
    print(report.closing_note(table_rows))
    print(f"\n{command} took {elapsed:.0f} s")
    write_results(plan, facts, results, table_rows, elapsed, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
