"""The conformance suite judged against a daemon it has never seen.

tests/foreign_daemon/ is a second implementation of the service, written
apart from the reference daemon and choosing differently wherever the
specification leaves a choice open. Checks:

- Run as it is, it is correct: the suite must fail no scenario, in the
  control profile and in the black-box one (`--no-control`): no false
  failures.
- Run with one defect switched on (`--bug NAME`), the suite must fail the
  rule that defect breaks, black-box too where a client can see it: no
  false passes.

Each run is the suite's own runner (`choo-conformance --server-cmd ...`),
a few at a time (the machine has two cores), and its verdict is read from
the results.json it writes.

`make test` runs the correct daemon in both profiles, every scenario but
the volume ones (tens of thousands of events, a job of 1,200 commands), and
three of the defects: 6 runs, a quarter of the CPU of all of them.
`make foreign` (CHOO_FOREIGN_RUNS=all), which CI runs too, runs everything:
the volume scenarios in both profiles and every defect in each profile
that must catch it, 18 runs.

The awkward daemon (`--awkward`, tests/foreign_daemon/awkward.py) is the
correct one made late or early wherever the contract leaves the moment
open; the suite must pass it too. make foreign runs it, in each profile:

- every switch at once (`--awkward all`) ten times, on every scenario but
  the heavy ones (volume and scale): about 50 s a run in the control
  profile, 25 s black-box, where the plain daemon takes 20 and 15;
- the heavy scenarios with every switch twice, in the heavy lane: the
  volume scenarios are where bursts and the collected heap meet tens of
  thousands of events, but ten runs of them would take longer than the
  rest together;
- each switch alone, once, on the scenarios whose moments it moves (and
  gc-memory on W15, heavy).

58 runs in all, 40 of them awkward, in three lanes: on two cores make
foreign took 6.6 minutes (7 CPU-minutes), where the 18 runs before the
awkward ones took about 3 CPU-minutes. Ten runs of the heavy scenarios in
each profile, one after another as heavy runs must go, would add some 5
minutes to the heavy lane alone. Each awkward run has a seed of its own, CHOO_AWKWARD_SEED (a random
one when unset) plus its place in the plan; a failure shows the server
command, seed included. make test runs `--awkward all` once per profile,
on the lifecycle scenarios and those that end the daemon (about 20 s
each, side by side with the other runs: the module takes 33 s instead of
14 on an idle machine).

Three defects break what the scenarios set up, upstream of many rules
(SETUP_BREAKS): StartJob answering INTERNAL, a job that never starts a
command, a daemon that exits in StopJob. Their runs check the verdict of
every rule (BLOCKED where the set-up never came about, FAIL where the rule
itself is what broke), that the console names the one cause first with
the rules it blocked, and that the cause named is the right one. make
foreign runs each on every scenario in both profiles; make test runs each
once on a few R rules, in one profile.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import random
import re
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conformance_run import Verdict, conformance

from choo_conformance.known_lists import PatternList
from choo_conformance.rules import contract_rules

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "tests" / "foreign_daemon" / "server.py"
RUN_TIMEOUT_S = 900
PARALLEL_RUNS = 3
# Set in the environment of the daemons a run starts, to find any it leaves.
RUN_MARKER = "FOREIGN_DAEMON_RUN"
# Every run, the volume scenarios too (make foreign); else make test's runs.
ALL_RUNS = os.environ.get("CHOO_FOREIGN_RUNS") == "all"

# Each defect the daemon can switch on, and the rule the suite must fail.
BUG_BREAKS = {
    "not-found-internal": "W2",
    "replay-terminal-from-zero": "W8",
    "negative-from-clamped": "W11",
    "exclusive-from": "W10",
    "renumbered-replay": "W10",
    "replay-drops-payload": "W9",
    "drops-slow-watcher-events": "W15",
    "thread-per-watch": "W16",
}
# The defects that must be caught black-box too (the daemon without its
# control service), and the rule that catches them there.
BLACK_BOX_BREAKS = {
    "renumbered-replay": "W10",
    "exclusive-from": "W10",
    "replay-drops-payload": "W9",
    "drops-slow-watcher-events": "W15",
}
# The rules whose every black-box scenario is a volume one (in the control
# profile every rule has others too).
VOLUME_ONLY_BLACK_BOX_RULES = {"W15"}
# The defects upstream of many rules (tests/foreign_daemon/server.py), and in
# each profile the rules that fail on their own and those blocked: every other
# rule passes. Their runs are named 'setup/<bug>/<profile>'.
_ALL_W = {f"W{n}" for n in range(3, 19)}
SETUP_BREAKS: dict[str, dict[str, tuple[set[str], set[str]]]] = {
    # R3, R4: StartJob's own answer; R10: the answer about a job too big for
    # gRPC; W15, W16 (control): StartJob under 1000 open watches.
    "start-job-internal": {
        "control": ({"W15", "W16", "R3", "R4", "R10"},
                    {"W18", "R2", "R5", "R6", "R7", "R8", "R9", "R11"}),
        "black-box": ({"R3", "R4", "R10"},
                      _ALL_W | {"R2", "R5", "R6", "R7", "R8", "R9", "R11"}),
    },
    # R6: its job never ends "failed", which is what R6 checks.
    "no-unit-starts": {
        "control": ({"R6"}, {"W18", "R2", "R5", "R7", "R8", "R9", "R11"}),
        "black-box": ({"R6"}, _ALL_W | {"R2", "R5", "R7", "R8", "R9", "R11"}),
    },
    "exits-during-stop": {"control": ({"R5"}, set()), "black-box": ({"R5"}, set())},
}
# What each names as the cause, in the console's BLOCKED lines (or, for the
# daemon that exits, in R5's story).
SETUP_CAUSES = {
    "start-job-internal": ('StartJob answered INTERNAL "cannot create the job\'s worktree',),
    "no-unit-starts": ("a job StartJob accepted made no progress",),
    "exits-during-stop": ("the daemon exited with code 3", "foreign: fatal: StopJob"),
}
# make test's runs of them: a few R rules, one profile each, and the cause
# every blocked rule there shares. no-unit-starts waits out its 30 s once
# (idle: a lane's other runs go on meanwhile).
QUICK_SETUP = {
    "start-job-internal": ("control", "R1,R3,R5,R7"),
    "no-unit-starts": ("control", "R2,R3,W18"),
    "exits-during-stop": ("black-box", "R3,R5"),
}
QUICK_SETUP_CAUSE = {"start-job-internal": SETUP_CAUSES["start-job-internal"][0],
                     "no-unit-starts": "a job StartJob accepted made no progress"}
if ALL_RUNS:
    SETUP_PLANS = {f"setup/{bug}/{profile}": (bug, profile, "")
                   for bug in SETUP_BREAKS for profile in ("control", "black-box")}
else:
    SETUP_PLANS = {f"setup/{bug}/{profile}": (bug, profile, rules)
                   for bug, (profile, rules) in QUICK_SETUP.items()}

# The scenarios each defect's run selects: its rule's, less the 1000-watcher
# scenario (tagged W15 too), which only thread-per-watch needs.
BUG_SELECTION = {bug: rule if bug == "thread-per-watch" else f"{rule} and not daemon_capacity"
                 for bug, rule in BUG_BREAKS.items()}

# The defects the runner's own tests start the daemon with
# (tests/test_conformance_runner.py); known-failing.txt lists what they break.
USUAL_BUGS = ("not-found-internal", "replay-terminal-from-zero")

# make foreign's runs. The correct daemon's, split by feature (their tags)
# so that the slow ones run side by side; every scenario runs in exactly
# one part.
CORRECT_PARTS = {
    "job_lifecycle": "job_lifecycle",
    "daemon_lifecycle": "daemon_lifecycle",
    "scale": "scale",
    "volume": "volume and not job_lifecycle and not daemon_lifecycle and not scale",
    "rest": "not job_lifecycle and not daemon_lifecycle and not scale and not volume",
}
# The runs that keep a core busy (tens of thousands of events, a thousand
# watchers): one after another, never two at once, or the suite's deadlines
# measure the contention. (thread-per-watch's thousand watchers mostly wait:
# its daemon serves as many as it has threads.)
HEAVY_RUNS: tuple[str, ...] = ("correct/volume", "correct/scale")
# The other runs that take longest (10 to 60 s), handed out first so that the
# lanes end together; the rest take a few seconds each.
LONG_RUNS: tuple[str, ...] = (
    "black-box/correct", "bug/thread-per-watch", "correct/rest", "correct/daemon_lifecycle",
    "black-box/drops-slow-watcher-events", "setup/no-unit-starts/black-box",
    "setup/no-unit-starts/control")

# make test's runs, like the mutants' (tests/test_mutants.py): the correct
# daemon in both profiles, every scenario but the volume ones, and a few
# cheap defects, both profiles between them.
QUICK_PARTS = {
    "lifecycle": "job_lifecycle or daemon_lifecycle",
    "rest": "not job_lifecycle and not daemon_lifecycle and not volume",
}
QUICK_BUGS = ("not-found-internal", "exclusive-from")
QUICK_BLACK_BOX_BUGS = ("renumbered-replay",)

if ALL_RUNS:
    RUN_PARTS, RUN_BUGS, RUN_BLACK_BOX_BUGS = CORRECT_PARTS, tuple(BUG_BREAKS), tuple(BLACK_BOX_BREAKS)
    BLACK_BOX_CORRECT = "black_box or watch_job_daemon"
else:
    RUN_PARTS, RUN_BUGS, RUN_BLACK_BOX_BUGS = QUICK_PARTS, QUICK_BUGS, QUICK_BLACK_BOX_BUGS
    BLACK_BOX_CORRECT = "(black_box or watch_job_daemon) and not volume"
    HEAVY_RUNS, LONG_RUNS = (), ("setup/no-unit-starts/control", "correct/rest",
                                 "black-box/correct")

# The awkward daemon (--awkward): correct, but late or early wherever the
# contract leaves the moment open (tests/foreign_daemon/awkward.py). Each
# profile: AWKWARD_REPEATS runs of every switch at once, on every scenario
# but the heavy ones (tens of thousands of events, a thousand watchers),
# which AWKWARD_HEAVY_REPEATS of them run too, in the heavy lane; and each
# switch alone, once, on the scenarios whose moments it moves.
AWKWARD_PROFILES = ("control", "black-box")
AWKWARD_REPEATS = 10
AWKWARD_HEAVY_REPEATS = 2
AWKWARD_LIGHT = "not volume and not scale"
AWKWARD_HEAVY = "volume or scale"
AWKWARD_ALONE = {
    "late-status": "(job_lifecycle or daemon_lifecycle or black_box or watch_job_daemon) and not volume",
    "stop-waits": "R5 or R8",
    "cancel-early": "R5 or R8",
    "late-shutdown": "ends_daemon or R9",
    "late-unhealthy": "ends_daemon or R9",
    "bursty": "(event_stream or watch_job_daemon or black_box or job_lifecycle) and not volume",
    "gc-memory": "W15",  # its memory scenario is a volume one: heavy
    "jitter": AWKWARD_LIGHT,
}
# make test's: one run per profile, every switch, on the scenarios of the
# moments they move that take a few seconds.
AWKWARD_QUICK = "(job_lifecycle or ends_daemon) and not volume"
# Each run's seed is this plus the run's place in the plan; a failure names
# its seed, and its server command repeats it.
AWKWARD_SEED = int(os.environ.get("CHOO_AWKWARD_SEED") or random.SystemRandom().randrange(10**6))


def _awkward_plans() -> dict[str, tuple[str, tuple[str, ...], bool]]:
    """name -> (tags, switches, control)."""
    plans: dict[str, tuple[str, tuple[str, ...], bool]] = {}
    for profile in AWKWARD_PROFILES:
        control = profile == "control"
        if not ALL_RUNS:
            plans[f"awkward/{profile}/all"] = (AWKWARD_QUICK, ("all",), control)
            continue
        for n in range(1, AWKWARD_REPEATS + 1):
            plans[f"awkward/{profile}/all-{n}"] = (AWKWARD_LIGHT, ("all",), control)
        for n in range(1, AWKWARD_HEAVY_REPEATS + 1):
            plans[f"awkward/{profile}/all-{n}-heavy"] = (AWKWARD_HEAVY, ("all",), control)
        for switch, tags in AWKWARD_ALONE.items():
            plans[f"awkward/{profile}/{switch}"] = (tags, (switch,), control)
    return plans


AWKWARD_PLANS = _awkward_plans()
if ALL_RUNS:
    HEAVY_RUNS += tuple(name for name in AWKWARD_PLANS
                        if name.endswith("-heavy") or name.endswith("/gc-memory"))
    LONG_RUNS += tuple(name for name in AWKWARD_PLANS if name.startswith("awkward/control/all-")
                       and name not in HEAVY_RUNS)


def _server_cmd(bugs=(), control: bool = True, awkward=(), seed: int | None = None) -> str:
    flags = "".join(f" --bug {bug}" for bug in bugs) + ("" if control else " --no-control")
    flags += "".join(f" --awkward {switch}" for switch in awkward)
    flags += "" if seed is None else f" --seed {seed}"
    return f"{sys.executable} {SERVER} --socket {{socket}} --db {{db}}{flags}"


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return "(gone)"


def _leftover_processes(marker: str) -> list[int]:
    """Pids of the processes whose environment carries this marker: the
    daemons a run started and the commands of their jobs."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"{RUN_MARKER}={marker}".encode() in environ:
            pids.append(int(entry.name))
    return pids


def _run_suite(name: str, folder: Path, tags: str, server_cmd: str, rules: str = "") -> Verdict:
    # Neither: every scenario.
    selection = (("--tags", tags) if tags else ()) + (("--rules", rules) if rules else ())
    verdict = conformance(folder / name, "--server-cmd", server_cmd, *selection,
                          timeout=RUN_TIMEOUT_S, env={RUN_MARKER: f"{folder}/{name}"})
    assert verdict.results is not None, f"the {name} run wrote no results:\n{verdict.output()}"
    return verdict


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every run's verdict, by name: 'correct/<part>', 'black-box/correct',
    'bug/<name>' and 'black-box/<name>'."""
    folder = tmp_path_factory.mktemp("foreign")
    plans: dict[str, tuple[str, ...]] = {f"correct/{part}": (tags, _server_cmd())
                                         for part, tags in RUN_PARTS.items()}
    # The lifecycle scenarios never use the control service, so they run
    # alike in either profile: the control runs above carry them (and
    # make conformance runs them black-box against the reference daemon).
    plans["black-box/correct"] = (BLACK_BOX_CORRECT, _server_cmd(control=False))
    plans.update({f"bug/{bug}": (BUG_SELECTION[bug], _server_cmd([bug])) for bug in RUN_BUGS})
    plans.update({f"black-box/{bug}": (f"black_box and {BLACK_BOX_BREAKS[bug]}",
                                       _server_cmd([bug], control=False))
                  for bug in RUN_BLACK_BOX_BUGS})
    plans.update({name: (tags, _server_cmd(control=control, awkward=switches, seed=AWKWARD_SEED + i))
                  for i, (name, (tags, switches, control)) in enumerate(AWKWARD_PLANS.items())})
    plans.update({name: ("", _server_cmd([bug], control=profile == "control"), rules)
                  for name, (bug, profile, rules) in SETUP_PLANS.items()})

    def run(name: str) -> Verdict:
        return _run_suite(name.replace("/", "-"), folder, *plans[name])

    # The heavy runs take turns at the head of the first lane; the others go
    # to whichever lane is free, the long ones first.
    others: queue.SimpleQueue[str] = queue.SimpleQueue()
    for name in [*LONG_RUNS, *(name for name in plans if name not in LONG_RUNS)]:
        if name not in HEAVY_RUNS:
            others.put(name)
    results: dict[str, Verdict] = {}

    def lane(first: tuple[str, ...]) -> None:
        for name in first:
            results[name] = run(name)
        while True:
            try:
                name = others.get_nowait()
            except queue.Empty:
                return
            results[name] = run(name)

    try:
        with ThreadPoolExecutor(PARALLEL_RUNS) as pool:
            lanes = [pool.submit(lane, HEAVY_RUNS if i == 0 else ()) for i in range(PARALLEL_RUNS)]
            for each in lanes:
                each.result()
    finally:
        leftovers = {pid: _command_line(pid) for name in plans for pid in
                     _leftover_processes(f"{folder}/{name.replace('/', '-')}")}
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert not leftovers, f"processes outlived their runs: {leftovers}"
    return results


def _why(scenario: dict) -> str:
    detail = scenario["detail"].strip().splitlines() or ["(no detail)"]
    return f"{scenario['ids'][0]}: {detail[0]}"


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["control", "black-box"])
def test_the_correct_daemon_fails_no_scenario(runs, profile):
    names = ([n for n in runs if n.startswith("correct/")] if profile == "control"
             else ["black-box/correct"])
    scenarios = [s for name in names for s in runs[name].results["scenarios"]]
    assert scenarios, "the correct daemon's runs found no scenario"
    assert {runs[name].results["profile"] for name in names} == {profile}

    failed = [_why(s) for s in scenarios if s["verdict"] not in ("PASS", "N/A")]
    assert not failed, "the suite does not pass a correct daemon:\n" + "\n".join(failed)
    # Every rule of the contract was checked by a scenario that passed (the
    # black-box run leaves the R rules' scenarios to the control runs).
    passed = {rule for s in scenarios if s["verdict"] == "PASS" for rule in s["rules"]}
    expected = {r for r in contract_rules() if profile == "control" or r.startswith("W")}
    if not ALL_RUNS and profile == "black-box":
        expected -= VOLUME_ONLY_BLACK_BOX_RULES
    unchecked = sorted(expected - passed)
    assert not unchecked, f"no passing scenario for {unchecked}"
    assert all(runs[name].code == 0 for name in names)


@pytest.mark.slow
@pytest.mark.parametrize("bug", sorted(RUN_BUGS))
def test_each_defect_fails_the_rule_it_breaks(runs, bug):
    verdict, rule = runs[f"bug/{bug}"], BUG_BREAKS[bug]
    assert verdict.rules.get(rule) == "FAIL", f"--bug {bug}: {verdict.rules}\n{verdict.output()}"
    assert verdict.code == 1


@pytest.mark.slow
@pytest.mark.parametrize("bug", sorted(RUN_BLACK_BOX_BUGS))
def test_each_defect_is_caught_black_box(runs, bug):
    verdict, rule = runs[f"black-box/{bug}"], BLACK_BOX_BREAKS[bug]
    assert verdict.results["profile"] == "black-box"
    assert verdict.rules.get(rule) == "FAIL", (
        f"--bug {bug} --no-control: {verdict.rules}\n{verdict.output()}")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(AWKWARD_PLANS))
def test_the_awkward_daemon_fails_no_scenario(runs, name):
    """Late or early where the contract allows it is no defect: the suite
    must pass the awkward daemon as it passes the plain one."""
    verdict, (tags, _, control) = runs[name], AWKWARD_PLANS[name]
    assert verdict.results["profile"] == ("control" if control else "black-box")
    scenarios = verdict.results["scenarios"]
    assert any(s["verdict"] == "PASS" for s in scenarios), f"{name}: no scenario passed"
    failed = [_why(s) for s in scenarios if s["verdict"] not in ("PASS", "N/A")]
    assert not failed and verdict.code == 0, (
        f"the suite does not pass the awkward daemon ({name}, --tags {tags!r}):\n"
        + "\n".join(failed) + f"\nits command: {verdict.results.get('title', '')}\n"
        + verdict.output())


@pytest.mark.slow
@pytest.mark.skipif(not ALL_RUNS, reason="make test's awkward runs take a few rules")
@pytest.mark.parametrize("profile", AWKWARD_PROFILES)
def test_the_awkward_daemon_is_checked_on_every_rule(runs, profile):
    names = [n for n in AWKWARD_PLANS if n.startswith(f"awkward/{profile}/all-")]
    passed = {rule for name in names for s in runs[name].results["scenarios"]
              if s["verdict"] == "PASS" for rule in s["rules"]}
    expected = {r for r in contract_rules() if profile == "control" or r.startswith("W")}
    assert not sorted(expected - passed), f"no passing scenario for {sorted(expected - passed)}"


def test_every_awkward_switch_runs_alone():
    help_text = subprocess.run([sys.executable, str(SERVER), "--help"], capture_output=True,
                               check=True, text=True, timeout=30).stdout
    choices = help_text.split("--awkward {", 1)[1].split("}", 1)[0].split(",")
    assert set(choices) == {*AWKWARD_ALONE, "all"}


def test_the_runs_named_for_their_order_exist(runs):
    assert set(HEAVY_RUNS) | set(LONG_RUNS) <= set(runs)


def test_every_defect_of_the_daemon_is_checked():
    help_text = subprocess.run([sys.executable, str(SERVER), "--help"], capture_output=True,
                               check=True, text=True, timeout=30).stdout
    choices = help_text.split("--bug {", 1)[1].split("}", 1)[0].split(",")
    assert set(choices) == set(BUG_BREAKS) | set(SETUP_BREAKS)


def test_the_shipped_known_failing_list_matches_the_usual_defects():
    listed = PatternList.read("known-failing", str(SERVER.parent / "known-failing.txt"),
                              set(contract_rules()))
    assert {e.pattern for e in listed.entries} == {f"{BUG_BREAKS[bug]}/*" for bug in USUAL_BUGS}


def _blocked_lines(verdict: Verdict) -> list[str]:
    """The console's groups of blocked rules, after the rule lines."""
    return [line for line in verdict.stdout.splitlines() if re.match(r"BLOCKED \d+ rules? \(", line)]


def _rules_in(line: str) -> set[str]:
    return set(line.split("(", 1)[1].split(")", 1)[0].split(", "))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SETUP_PLANS))
def test_a_defect_upstream_blocks_the_rules_it_keeps_from_their_check(runs, name):
    """Every rule whose set-up the defect breaks is BLOCKED, the rules it
    breaks themselves FAIL, and the rest pass."""
    verdict, (bug, profile, rules) = runs[name], SETUP_PLANS[name]
    fails, blocked = SETUP_BREAKS[bug][profile]
    assert verdict.results["profile"] == profile
    expected = {rule: "FAIL" if rule in fails else "BLOCKED" if rule in blocked else "PASS"
                for rule in verdict.rules}
    if bug == "exits-during-stop":
        # A scenario that stops its jobs in its clean-up (R3, R4) meets the
        # exit too; its rule may fail, then only naming the exit.
        for rule, got in verdict.rules.items():
            failed = [s["detail"] for s in verdict.results["scenarios"]
                      if rule in s["rules"] and s["verdict"] == "FAIL"]
            if got == "FAIL" and all(SETUP_CAUSES[bug][0] in d for d in failed):
                expected[rule] = "FAIL"
    assert verdict.rules == expected, f"--bug {bug} ({profile}):\n{verdict.output()}"
    # Every rule selected was judged: all of them, or make test's few.
    assert set(verdict.rules) == (set(rules.split(",")) if rules else set(contract_rules()))
    assert verdict.code == 1


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n, (bug, _, _) in SETUP_PLANS.items()
                                  if SETUP_BREAKS[bug]["control"][1]])
def test_the_console_names_the_one_cause_first_with_the_rules_it_blocked(runs, name):
    verdict, bug = runs[name], SETUP_PLANS[name][0]
    groups = _blocked_lines(verdict)
    assert groups, verdict.output()
    # First after the rule lines: the cause to fix before anything else.
    first = verdict.stdout[verdict.stdout.index("\n\n"):].strip().splitlines()[0]
    assert first == groups[0], verdict.output()
    blocked = {rule for rule, v in verdict.rules.items() if v == "BLOCKED"}
    for line in groups:
        assert " by one cause, upstream of what they check: " in line, line
        assert line.startswith(f"BLOCKED {len(_rules_in(line))} rules ("), line
        assert any(cause in line for cause in SETUP_CAUSES[bug]), line
    listed = [rule for line in groups for rule in _rules_in(line)]
    assert sorted(listed) == sorted(blocked), verdict.output()  # each once, and all
    if not ALL_RUNS:  # the few rules chosen share one cause
        assert len(groups) == 1 and QUICK_SETUP_CAUSE[bug] in groups[0], groups
    # Every set-up breaks for the same reason: one cause, however many steps.
    assert len(groups) == 1, groups


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in SETUP_PLANS if "/exits-during-stop/" in n])
def test_a_daemon_that_exits_in_stop_job_is_named_in_the_rule_that_stops_jobs(runs, name):
    verdict = runs[name]
    assert not _blocked_lines(verdict), verdict.output()
    r5 = [s for s in verdict.results["scenarios"] if "R5" in s["rules"] and s["verdict"] == "FAIL"]
    named = [s for s in r5 if all(cause in "\n".join(s["story"])
                                  for cause in SETUP_CAUSES["exits-during-stop"])]
    assert named, "\n\n".join("\n".join(s["story"]) for s in r5)
    # The console tells it under R5's line.
    lines = verdict.stdout.splitlines()
    r5_line = next(i for i, line in enumerate(lines) if line.startswith("FAIL    R5 "))
    story = "\n".join(itertools.takewhile(lambda line: line.startswith(" "), lines[r5_line + 1:]))
    assert SETUP_CAUSES["exits-during-stop"][0] in story, verdict.output()
