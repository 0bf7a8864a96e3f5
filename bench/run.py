"""`make bench`: every performance target (docs/PERFORMANCE.md), measured against the
reference daemon and, in the same run, against the plain-grpcio ceiling.

    python -m bench.run            # the full run (under 10 minutes on 2 cores)
    python -m bench.run --quick    # smaller sizes, to check the harness

Prints the machine facts, one line per measurement as it goes, then the table
(figure, measured, ceiling, ratio, target, met?) and a closing note on the
figures that miss. Writes bench/results/results.json and the plots
bench/results/{watchers,events,latency}.png.

The ceiling is measured on both of grpcio's server APIs (grpc.server with a
thread per stream, grpc.aio with a coroutine per stream); the better of the
two is the ceiling of each figure, so the ratio does not depend on which API
the daemon happens to use.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from choo_reference.daemon import DEFAULT_MAX_WORKERS
from choo_reference.job_store import DEFAULT_EVENT_WINDOW

from . import plots, report, scenarios
from .processes import ROOT, Processes
from .report import Row
from .servers import CEILING_AIO, CEILING_SYNC, CEILINGS, POOLED, SHIPPED, Server

RESULTS = ROOT / "bench" / "results"
DAEMON = "daemon"
ROLES = (DAEMON, CEILING_SYNC, CEILING_AIO)


@dataclass
class Plan:
    one_watcher_events: int = 15000
    repeats: int = 5  # of the one-watcher figure; the best of each server counts
    many_watchers: int = 1000
    many_events: int = 100
    many_repeats: int = 3  # the best of each server counts
    # (watchers, events per job): 50k-100k deliveries per point.
    watcher_sweep: list = field(default_factory=lambda: [(10, 5000), (100, 1000)])
    event_sweep: list = field(default_factory=lambda: [2000, 50000])
    replay_sweep: list = field(default_factory=lambda: [5000, 50000])
    latency_watchers: int = 100
    latency_rate: int = 500
    latency_sweep: list = field(default_factory=lambda: [50, 150])
    latency_s: float = 2.0
    rpc_watchers: int = 1000
    rpc_rounds: int = 200
    start_every: int = 4  # one StartJob per this many Health/GetJobStatus rounds
    pool_watchers: int = 1000

    @property
    def max_workers(self) -> int:
        return max(self.many_watchers, self.rpc_watchers, self.latency_watchers) + 100


QUICK = Plan(one_watcher_events=5000, repeats=1, many_watchers=200, many_events=100,
             many_repeats=1, watcher_sweep=[(10, 1000)], event_sweep=[1000],
             replay_sweep=[1000, 5000], latency_sweep=[50], latency_s=1.0,
             rpc_watchers=200, rpc_rounds=40, pool_watchers=100)


class Bench:
    def __init__(self, plan: Plan, processes: Processes, work: Path) -> None:
        self.plan = plan
        self.processes = processes
        self.work = work
        self.logs = work / "logs"
        self.logs.mkdir()
        # `choo-ref daemon` itself unless its pool cannot take the watchers
        # of the figures (see pool_check).
        self.daemon_kind = SHIPPED

    def run_dir(self) -> Path:
        return Path(tempfile.mkdtemp(dir=self.work))

    def each(self, label: str, measure: Callable[[Server, Path], dict],
             describe: Callable[[dict], str]) -> dict[str, dict]:
        """Runs one measurement on a fresh server of each role."""
        out = {}
        for role in ROLES:
            kind = self.daemon_kind if role == DAEMON else role
            t = time.monotonic()
            with Server(self.processes, kind, self.plan.max_workers, self.logs) as server:
                out[role] = measure(server, self.run_dir())
            print(f"  {role:12} {label}: {describe(out[role])} "
                  f"({time.monotonic() - t:.1f} s)", flush=True)
        return out


def _stream_line(r: dict) -> str:
    return (f"{r['events_per_s']:,.0f} events/s, {r['complete']}/{r['watchers']} complete, "
            f"server {r['cpu_us_per_event']:.0f} µs CPU/event, "
            f"RSS {r['rss_per_watcher_kb']:.0f} KB/watcher, {r['threads_open']} threads")


def _replay_line(r: dict) -> str:
    return (f"{r['events_per_s']:,.0f} events/s, {r['complete']}/1 complete, "
            f"server {r['cpu_us_per_event']:.0f} µs CPU/event")


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


def _by_role(runs: list[dict[str, dict]]) -> dict[str, list]:
    return {role: [run[role] for run in runs] for role in ROLES}


def measure(bench: Bench) -> dict:
    plan, procs = bench.plan, bench.processes
    results: dict = {}

    print("in-process conformance suite", flush=True)
    results["suite"] = scenarios.suite(procs, bench.work)
    runs = ", ".join(f"{x:.2f}" for x in results["suite"]["runs_s"])
    print(f"  {results['suite']['seconds']:.2f} s wall (best of {runs} s): "
          f"{results['suite']['summary']}", flush=True)

    print(f"`choo-ref daemon` as installed with {plan.pool_watchers} open watchers", flush=True)
    with Server(procs, SHIPPED, 0, bench.logs) as shipped:
        pc = scenarios.pool_check(procs, shipped, plan.pool_watchers, bench.run_dir())
    results["pool_check"] = pc
    opened = "unknown (ListSubscriptions not answered)" if pc["subscribed"] < 0 \
        else str(pc["subscribed"])
    print(f"  open watches {opened}, {pc['threads']} threads, Health: {pc['health']} after "
          f"{pc['health_ms']:.1f} ms", flush=True)
    if pc["health"] != "OK" or pc["subscribed"] < plan.pool_watchers:
        bench.daemon_kind = POOLED
        print(f"  so the daemon's figures run it with a pool of {plan.max_workers} threads "
              "(bench/reference_daemon.py)", flush=True)
    results["daemon_kind"] = bench.daemon_kind

    print(f"events/s to one watcher, {plan.one_watcher_events} events, "
          f"best of {plan.repeats}", flush=True)
    one = _by_role([bench.each("1 watcher", lambda s, d: scenarios.stream(
        procs, s, 1, plan.one_watcher_events, d), _stream_line) for _ in range(plan.repeats)])
    results["one_watcher"] = one
    best_one = {role: max(one[role], key=lambda r: r["events_per_s"]) for role in ROLES}

    print("events per job, one watcher, live", flush=True)
    sweep = _by_role([bench.each(f"{n} events", lambda s, d, n=n: scenarios.stream(
        procs, s, 1, n, d), _stream_line) for n in plan.event_sweep])
    results["events_sweep"] = {role: [best_one[role]] + sweep[role] for role in ROLES}

    print("events per job, one watcher, replay of an ended job", flush=True)
    results["replay_sweep"] = _by_role([bench.each(f"{n} events", lambda s, d, n=n:
                                                    scenarios.replay(procs, s, n, d),
                                                    _replay_line) for n in plan.replay_sweep])

    print("number of watchers", flush=True)
    points = plan.watcher_sweep + [(plan.many_watchers, plan.many_events)] * plan.many_repeats
    sweep = _by_role([bench.each(f"{w} watchers x {n} events", lambda s, d, w=w, n=n:
                                 scenarios.stream(procs, s, w, n, d), _stream_line)
                      for w, n in points])
    many = {role: [r for r in sweep[role] if r["watchers"] == plan.many_watchers]
            for role in ROLES}
    results["many_watchers_runs"] = many
    results["many_watchers"] = {
        role: max(many[role], key=lambda r: (r["complete"], r["events_per_s"])) for role in ROLES}
    # One point per watcher count in the plot: the best run.
    results["watchers_sweep"] = {
        role: [best_one[role]] + [r for r in sweep[role] if r["watchers"] != plan.many_watchers]
        + [results["many_watchers"][role]] for role in ROLES}

    print(f"append-to-client latency, {plan.latency_watchers} watchers, "
          f"{plan.latency_s:g} s per rate", flush=True)
    results["latency_sweep"] = _by_role([bench.each(
        f"{rate} events/s", lambda s, d, rate=rate: scenarios.latency(
            procs, s, plan.latency_watchers, rate, plan.latency_s, d), _latency_line)
        for rate in plan.latency_sweep + [plan.latency_rate]])
    results["latency"] = {role: results["latency_sweep"][role][-1] for role in ROLES}

    print(f"unary calls with {plan.rpc_watchers} open watchers", flush=True)
    results["rpc"] = bench.each(f"{plan.rpc_watchers} watchers", lambda s, d: scenarios.rpc_latency(
        procs, s, plan.rpc_watchers, plan.rpc_rounds, plan.start_every, d,
        ceiling=s.kind in CEILINGS), _rpc_line)
    return results


# -- the table ---------------------------------------------------------------------------


def _best(by_role: dict[str, dict], value: Callable[[dict], float],
          higher: bool = True) -> tuple[float, str]:
    """The better ceiling for one figure, and which API it came from."""
    pick = max if higher else min
    role = pick(CEILINGS, key=lambda r: value(by_role[r]))
    return value(by_role[role]), role.removeprefix("ceiling-")


def _watchers(n: int) -> str:
    return f"{n} watcher{'s' if n != 1 else ''}"


def _capacity(results: dict, role: str) -> tuple[float, int]:
    """The most delivered events/s any watcher count reached, and at how many."""
    best = max(results["watchers_sweep"][role], key=lambda r: r["events_per_s"])
    return best["events_per_s"], best["watchers"]


def rows(plan: Plan, results: dict) -> list[Row]:
    out: list[Row] = []
    one = {role: max(results["one_watcher"][role], key=lambda r: r["events_per_s"])
           for role in ROLES}
    d1 = one[DAEMON]
    c1, api = _best(one, lambda r: r["events_per_s"])
    ratio = d1["events_per_s"] / c1
    out.append(Row(
        "events/s to one watcher", d1["events_per_s"], c1, "events/s", ">= 0.8 x ceiling",
        ratio >= 0.8 and d1["complete"] == 1,
        f"{ratio:.2f} x the ceiling ({0.8 - ratio:.2f} short); server CPU per event "
        f"{d1['cpu_us_per_event']:.0f} µs vs {one['ceiling-' + api]['cpu_us_per_event']:.0f} µs",
        ceiling_api=api))

    many = results["many_watchers"]
    dm, n = many[DAEMON], plan.many_watchers
    cm, api = _best(many, lambda r: r["events_per_s"])
    ratio = dm["events_per_s"] / cm
    complete = dm["complete"] == n
    note = (f"{ratio:.2f} x the ceiling ({0.8 - ratio:.2f} short); server CPU per delivered "
            f"event {dm['cpu_us_per_event']:.0f} µs vs "
            f"{many['ceiling-' + api]['cpu_us_per_event']:.0f} µs" if ratio < 0.8 else "")
    if not complete:
        note = f"only {dm['complete']} of {n} watchers completed with every event. " + note
    out.append(Row(
        f"{n} concurrent watchers of one job ({dm['complete']}/{n} complete, "
        f"{plan.many_events} events each), aggregate", dm["events_per_s"], cm, "events/s",
        "all complete, >= 0.8 x ceiling", complete and ratio >= 0.8, note, ceiling_api=api))

    kb = dm["rss_per_watcher_kb"]
    ckb, api = _best(many, lambda r: r["rss_per_watcher_kb"], higher=False)
    out.append(Row(f"memory per open watcher (RSS delta / {n})", kb, ckb, "KB", "<= 200 KB",
                   kb <= 200, f"{kb:.0f} KB, {kb - 200:.0f} KB over", ceiling_api=api))

    lat = results["latency"]
    dl = lat[DAEMON]
    cl, api = _best(lat, lambda r: r["p99_ms"], higher=False)
    need = plan.latency_watchers * plan.latency_rate
    cap_d, at_d = _capacity(results, DAEMON)
    cap_c, at_c = max(_capacity(results, role) for role in CEILINGS)
    client_us = dl["client_cpu_s"] / max(dl["samples"], 1) * 1e6
    out.append(Row(
        f"append-to-client latency p99, {plan.latency_watchers} watchers at "
        f"{plan.latency_rate} events/s", dl["p99_ms"], cl, "ms", "<= 20 ms",
        dl["p99_ms"] <= 20 and dl["complete"] == plan.latency_watchers,
        f"{dl['p99_ms']:,.0f} ms, {dl['p99_ms'] / 20:,.0f} x the target (ceiling "
        f"{cl:,.0f} ms). {plan.latency_watchers} watchers x {plan.latency_rate} events/s is "
        f"{need:,} deliveries/s; the most this run delivered was {cap_d:,.0f}/s from the "
        f"daemon ({_watchers(at_d)}) and {cap_c:,.0f}/s from a ceiling ({_watchers(at_c)}), "
        f"so both fall behind and the latency is the backlog. The watcher processes alone "
        f"used {client_us:.0f} µs of CPU per event received: "
        f"{need * client_us / 1e6:.1f} cores at {need:,} deliveries/s", ceiling_api=api))

    rpc = results["rpc"]
    rd = rpc[DAEMON]
    ch, api = _best(rpc, lambda r: r["Health"]["p99_ms"], higher=False)
    for name, limit in (("StartJob", 50), ("GetJobStatus", 10), ("Health", 10)):
        p99 = rd[name]["p99_ms"]
        failed = rd["failures"].get(name)
        met = not failed and p99 <= limit and rd[name]["calls"] > 0
        note = f"p99 {p99:.1f} ms vs {limit} ms"
        if failed:
            note += f"; some calls failed with {failed}"
        out.append(Row(f"{name} p99 with {plan.rpc_watchers} open watchers", p99, ch, "ms",
                       f"<= {limit} ms", met, note, ceiling_api=api))

    pc = results["pool_check"]
    shipped_ok = pc["health"] == "OK" and pc["health_ms"] <= 10
    out.append(Row(
        f"Health with {pc['watchers']} open watchers, `choo-ref daemon` as installed",
        pc["health_ms"], ch, "ms", "<= 10 ms", shipped_ok,
        "" if shipped_ok else
        f"Health ended {pc['health']} after {pc['health_ms']:,.0f} ms with "
        f"{pc['threads']} threads in the daemon: the open watches hold its RPC pool "
        f"(choo_reference/daemon.py DEFAULT_MAX_WORKERS = {DEFAULT_MAX_WORKERS}), and every "
        "later call queues behind them, Shutdown and the control calls included. The other "
        f"rows ran the same daemon with a pool of {plan.max_workers}",
        shown="" if pc["health"] == "OK" else f"> {pc['health_ms']:,.0f} ms ({pc['health']})",
        ceiling_api=api))

    s = results["suite"]["seconds"]
    ok = results["suite"]["returncode"] == 0
    out.append(Row("in-process conformance suite (pytest steps -q), best wall", s, None, "s",
                   "<= 5 s", ok and s <= 5,
                   f"{s:.2f} s, {s - 5:.2f} s over" if ok else
                   f"the suite did not pass: {results['suite']['summary']}"))
    return out


def notes(plan: Plan, results: dict) -> list[str]:
    lines = [
        "Ceiling: the same calls against bench/ceiling_server.py, a plain grpcio servicer "
        "streaming pre-built JobEvent messages over the same kind of socket, run on "
        "grpc.server (sync) and on grpc.aio (aio); the better one counts, and is named. For "
        "the unary calls it is that server's Health p99 next to as many open watchers. "
        "Ratio = measured / ceiling.",
    ]
    if results["daemon_kind"] == POOLED:
        lines.append(
            f"`choo-ref daemon` as installed could not serve {plan.pool_watchers} open watchers "
            f"(last row), so every other row ran the same daemon with a pool of "
            f"{plan.max_workers} threads (bench/reference_daemon.py).")
    else:
        lines.append("Every row ran `choo-ref daemon --conformance-control` as installed.")
    return lines


def _source() -> dict:
    """Which choo_reference the run measured (read-only git queries)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                                  timeout=10).stdout.rstrip("\n")
        except (OSError, subprocess.SubprocessError):
            return ""
    changed = git("status", "--porcelain", "--", "choo_reference")
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "reference_server_uncommitted": [line[3:] for line in changed.splitlines()]}


def write_results(plan: Plan, facts: dict, results: dict, table_rows: list[Row],
                  elapsed_s: float, command: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {"command": command, "machine": facts, "plan": dataclasses.asdict(plan),
            "elapsed_s": elapsed_s, "rows": report.as_dicts(table_rows),
            "notes": notes(plan, results), "results": results}
    (RESULTS / "results.json").write_text(json.dumps(data, indent=1) + "\n")
    try:
        plots.watchers(results["watchers_sweep"], RESULTS / "watchers.png")
        plots.events(results["events_sweep"], results["replay_sweep"], DEFAULT_EVENT_WINDOW,
                     RESULTS / "events.png")
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
    facts = dict(report.machine(), **_source())
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
