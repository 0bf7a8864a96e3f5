"""Suite verdict time: how long `choo-conformance` takes to give its whole
verdict, from its start to its exit, against

- the reference implementation in process (target <= 10 s),
- the reference daemon over a socket, with the control service (<= 40 s),
- the reference daemon black-box, DaemonService alone (<= 30 s),
- a daemon that fails nearly every rule: the foreign daemon whose jobs never
  start a command (`--bug no-unit-starts`), over a socket, black-box (24 of
  29 rules red) and with control (<= 60 s each).

Every scenario the runner selects by default runs; the best of `runs` counts
(other load on the machine only ever adds to it). Each run's results.json
says where the time went: the scenarios by verdict, the longest ones, and
the waits for a precondition that never came (the whole wait once, then
2 s each).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .processes import ROOT, Processes, wait_all
from .report import Row

PYTHON = sys.executable
REFERENCE = f"{PYTHON} -m choo_reference.cli daemon --socket {{socket}} --db {{db}}"
FOREIGN = f"{PYTHON} {ROOT / 'tests' / 'foreign_daemon' / 'server.py'} --socket {{socket}} --db {{db}}"
RUN_LIMIT_S = 600


@dataclass(frozen=True)
class Figure:
    key: str
    figure: str
    args: tuple[str, ...]
    target_s: float
    runs: int


FIGURES = (
    Figure("in_process", "suite verdict time, the reference in process", (), 10, 3),
    Figure("control", "suite verdict time, the reference over a socket with control",
           ("--server-cmd", f"{REFERENCE} --conformance-control"), 40, 1),
    Figure("black_box", "suite verdict time, the reference black-box",
           ("--server-cmd", REFERENCE), 30, 1),
    Figure("failing_black_box", "suite verdict time, a daemon whose jobs never run, black-box",
           ("--server-cmd", f"{FOREIGN} --bug no-unit-starts --no-control"), 60, 1),
    Figure("failing_control", "suite verdict time, a daemon whose jobs never run, with control",
           ("--server-cmd", f"{FOREIGN} --bug no-unit-starts"), 60, 1),
)


def where_the_time_went(results: dict, wall_s: float) -> dict:
    """From a run's results.json: seconds by scenario verdict, the longest
    scenarios, the waits for preconditions that never came, and the rest
    (starting the runner and pytest, collecting, the daemons' starts)."""
    scenarios = [s for s in results.get("scenarios", []) if s["verdict"] != "N/A"]
    by_verdict: dict[str, float] = {}
    for s in scenarios:
        by_verdict[s["verdict"]] = by_verdict.get(s["verdict"], 0.0) + s["duration_s"]
    details = [s["detail"] for s in scenarios]
    longest = sorted(scenarios, key=lambda s: -s["duration_s"])[:5]
    in_scenarios = sum(s["duration_s"] for s in scenarios)
    return {
        "scenarios": len(scenarios),
        "in_scenarios_s": round(in_scenarios, 2),
        "outside_scenarios_s": round(wall_s - in_scenarios, 2),
        "by_verdict_s": {k: round(v, 2) for k, v in sorted(by_verdict.items())},
        "full_waits": sum("waited 30 s" in d for d in details),
        "short_waits": sum("waited 2 s" in d for d in details),
        "longest": [{"id": s["ids"][0], "verdict": s["verdict"], "s": round(s["duration_s"], 2)}
                    for s in longest],
        "rules": {r["verdict"]: [x["id"] for x in results.get("rules", [])
                                 if x["verdict"] == r["verdict"]]
                  for r in results.get("rules", [])},
    }


def measure_one(processes: Processes, work: Path, figure: Figure) -> dict:
    walls: list[float] = []
    best: dict = {}
    for i in range(figure.runs):
        report = work / f"verdict-{figure.key}-{i}"
        log = work / f"verdict-{figure.key}-{i}.log"
        started = time.perf_counter()
        proc = processes.spawn([PYTHON, "-m", "choo_conformance.cli", "--report", str(report),
                                *figure.args], log=log)
        finished = wait_all([proc], RUN_LIMIT_S)
        wall = time.perf_counter() - started
        processes.stop(proc)
        walls.append(wall)
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        summary = next((line for line in lines if line.startswith("rules: ")), "")
        results_path = report / "results.json"
        results = json.loads(results_path.read_text()) if results_path.exists() else {}
        if not best or wall < best["seconds"]:
            best = {"seconds": wall, "returncode": proc.returncode if finished else None,
                    "summary": summary, "breakdown": where_the_time_went(results, wall)}
    return {**best, "runs_s": walls, "target_s": figure.target_s}


def measure(processes: Processes, work: Path, in_process: dict | None = None,
            over_sockets: bool = True) -> dict:
    """Every figure (over_sockets False: the in-process one alone, for
    --quick); in_process: the in-process suite's runs already measured
    (bench.scenarios.suite), which then count for the first figure."""
    out = {}
    for figure in FIGURES if over_sockets else FIGURES[:1]:
        if figure.key == "in_process" and in_process is not None:
            out[figure.key] = {**in_process, "target_s": figure.target_s}
            continue
        print(f"  {figure.figure} ...", flush=True)
        out[figure.key] = measure_one(processes, work, figure)
        print(f"    {line(figure, out[figure.key])}", flush=True)
    return out


def line(figure: Figure, r: dict) -> str:
    runs = ", ".join(f"{x:.1f}" for x in r["runs_s"])
    text = (f"{r['seconds']:.1f} s (runs {runs} s), {r['seconds'] / figure.target_s:.2f} x "
            f"the {figure.target_s:g} s target; {r['summary']}")
    b = r.get("breakdown")
    if b:
        text += (f"; {b['in_scenarios_s']:.1f} s in {b['scenarios']} scenarios "
                 f"({', '.join(f'{k} {v:.1f}' for k, v in b['by_verdict_s'].items())}), "
                 f"{b['outside_scenarios_s']:.1f} s outside them; waits that never came true: "
                 f"{b['full_waits']} x 30 s, {b['short_waits']} x 2 s")
    return text


def rows(results: dict) -> list[Row]:
    out = []
    for figure in FIGURES:
        r = results.get(figure.key)
        if r is None:
            continue
        s = r["seconds"]
        # The reference must pass; the failing daemon must end with a verdict (1).
        ends = r["returncode"] == (1 if figure.key.startswith("failing") else 0)
        ratio = s / figure.target_s
        note = f"{s:.1f} s, {ratio:.2f} x the target ({s - figure.target_s:+.1f} s)"
        if not ends:
            note = f"exit code {r['returncode']}: {r['summary']}. " + note
        out.append(Row(figure.figure, s, None, "s", f"<= {figure.target_s:g} s",
                       ends and s <= figure.target_s, note,
                       shown=f"{s:.1f} s ({ratio:.2f} x target)"))
    return out


def breakdown_lines(results: dict) -> list[str]:
    """Where the time of each run over a socket went, for the closing notes."""
    lines = []
    for figure in FIGURES:
        b = results.get(figure.key, {}).get("breakdown")
        if not b:
            continue
        longest = "; ".join(f"{x['id'][:70]} {x['verdict']} {x['s']:.1f} s" for x in b["longest"][:3])
        lines.append(f"{figure.figure}: {line(figure, results[figure.key])}. Longest: {longest}.")
    return lines
