"""The runner behind `choo-conformance`: runs the scenarios against an
implementation in a pytest process of its own, follows its progress stream,
prints a line per rule as each finishes, and writes the reports.

With no target the scenarios run in process (choo_conformance.seam); with
--server-cmd the runner starts the implementation under test as a process (a
fresh one for scenarios that end or restart it); with --target it uses a
daemon that is already running.

It fails closed. A run that checked nothing, could not collect its
scenarios, or could not reach the daemon exits 2, as does one where a
selected rule was skipped (unless skips are allowed). It never hangs: every
scenario has a time limit inside the pytest process, and should that process
itself stop answering, the runner stops it (and every daemon it started),
counts the scenario it was in as failed, and goes on with the next.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from choo.v1 import daemon_pb2, daemon_pb2_grpc

from . import profiles, report
from .environment import Settings
from .known_lists import ListError, PatternList
from .limits import DEFAULT_SCENARIO_TIMEOUT_S, teardown_grace
from .process import DaemonNeverHealthy, DaemonProcess, exit_on_sigterm, kill_group, remove_folder
from .progress import ProgressReader, remove
from .results import (
    EXIT_NO_VERDICT,
    FAILED,
    NOT_APPLICABLE,
    NOT_RUN,
    ScenarioResult,
    by_rule,
    exit_code,
    mark_known,
)
from .rules import RuleBlockError, contract_rules
from .scenario_info import ScenarioInfo
from .seam import ImplementationMissing, load_implementation

PACKAGE = Path(__file__).resolve().parent
DEFAULT_RUN_TIMEOUT_S = 3600.0
DEFAULT_FLAKY_RETRIES = 2
# How much longer than its own clock (and its clean-up's) the runner lets a
# scenario run before it stops the pytest process, whose clock did not ring.
_HARD_MARGIN_S = 10.0
_POLL_S = 0.2


class NoVerdict(Exception):
    """The run cannot give a verdict; the message says why."""


@dataclass
class Options:
    report: Path
    server_cmd: str | None = None
    target: str | None = None
    implementation: str | None = None
    profile: str | None = None
    rules: list[str] | None = None
    tags: str | None = None
    known_failing: str | None = None
    known_flaky: str | None = None
    allow_skips: bool = False
    scenario_timeout: float = DEFAULT_SCENARIO_TIMEOUT_S
    timeout: float = DEFAULT_RUN_TIMEOUT_S
    flaky_retries: int = DEFAULT_FLAKY_RETRIES
    repo_origin: str | None = None
    server_env: dict[str, str] = field(default_factory=dict)
    scenarios: list[str] = field(default_factory=list)  # --scenario patterns
    argv: list[str] = field(default_factory=list)  # the command line, for rerun lines
    extra_pytest_args: list[str] = field(default_factory=list)

    def rerun(self, scenario: ScenarioResult) -> str:
        """The command that runs this one scenario again, as this run ran."""
        kept, skip = [], False
        for arg in self.argv:
            if skip:
                skip = False
                continue
            name = arg.split("=", 1)[0]
            if name in ("--rules", "--tags", "--scenario", "--known-flaky", "--known-failing"):
                skip = "=" not in arg
                continue
            kept.append(arg)
        return shlex.join(["choo-conformance", *kept, "--scenario", glob_literal(scenario.info.ids[0])])

    @property
    def mode(self) -> str:
        if self.server_cmd:
            return "--server-cmd"
        return "--target" if self.target else "in process"

    def title(self) -> str:
        if self.server_cmd:
            return f"against `{self.server_cmd}`"
        if self.target:
            return f"against {self.target}"
        return f"in process ({self.implementation or 'the reference implementation'})"

    def effective_profile(self) -> str:
        if self.profile:
            return self.profile
        if self.mode == "in process" and not self.implementation:
            return "reference"
        return "control"


def _say(text: str) -> None:
    print(text, flush=True)


def _error(text: str) -> None:
    print(f"error: {text}", file=sys.stderr, flush=True)


# -- before the run -----------------------------------------------------------------


def _preflight(options: Options) -> None:
    """Make sure there is something to test, and settle the profile; raises
    NoVerdict otherwise."""
    if options.mode == "in process":
        # Only loaded: an implementation's daemon is made in the pytest
        # process, where a scenario's clock bounds it. One without the
        # control service is run with --profile black-box.
        try:
            load_implementation(options.implementation)
        except ImplementationMissing as error:
            raise NoVerdict(str(error)) from None
        return
    if options.target:
        try:
            with grpc.insecure_channel(options.target) as channel:
                daemon_pb2_grpc.DaemonServiceStub(channel).Health(
                    daemon_pb2.HealthRequest(), timeout=10, wait_for_ready=True)
        except grpc.RpcError as error:
            raise NoVerdict(
                f"no daemon answers Health at {options.target} ({error.code().name}: "
                f"{error.details()}); start it first, or give --server-cmd to let the "
                "runner start one") from None
        _settle_profile(options, lambda: profiles.serves_control(options.target))
        return
    assert options.server_cmd is not None
    daemon = DaemonProcess(options.server_cmd,
                           env=Settings(server_env=options.server_env).daemon_env())
    try:
        daemon.start()
        _settle_profile(options, lambda: profiles.serves_control(daemon.address))
    except DaemonNeverHealthy as error:
        raise NoVerdict(str(error)) from None
    except OSError as error:
        raise NoVerdict(f"cannot start {options.server_cmd!r}: {error.strerror or error}") from None
    finally:
        daemon.close()


def _settle_profile(options: Options, serves_control) -> None:
    """Black-box when the implementation does not serve the control service;
    a profile that needs it, asked for explicitly, is refused."""
    has_control = serves_control()
    if options.profile is None:
        options.profile = options.effective_profile() if has_control else "black-box"
    elif options.profile != "black-box" and not has_control:
        raise NoVerdict(
            f"the {options.profile} profile needs the daemon to serve "
            "choo.conformance.v1.ConformanceControl, and it does not; run the black-box "
            "profile (--profile black-box, or no --profile)")


def pytest_environment() -> dict[str, str]:
    """The pytest process's environment: the runner's, with pytest's plugin
    autoloading off, so that only the suite's own plugins (named in
    pytest_command) run, whatever else is installed beside it (pytest-randomly
    reordering scenarios, an implementer's own plugin); it also spares each
    run importing them."""
    return {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}


def pytest_command(options: Options, progress: Path, skip_done: Path | None,
                   nodeids: list[str] | None = None) -> list[str]:
    command = [
        sys.executable, "-P", "-m", "pytest",
        *([_absolute(n) for n in nodeids] if nodeids
          else [str(PACKAGE / "scenarios" / "test_features.py")]),
        "-c", str(PACKAGE / "pytest.ini"), "-q",
        "-p", "pytest_bdd.plugin", "-p", "choo_conformance.plugin",
        f"--choo-progress={progress}", f"--scenario-timeout={options.scenario_timeout:g}",
        f"--profile={options.effective_profile()}",
    ]
    if skip_done is not None:
        command.append(f"--choo-skip-done={skip_done}")
    if options.server_cmd:
        command.append(f"--server-cmd={options.server_cmd}")
    if options.target:
        command.append(f"--target={options.target}")
    if options.implementation:
        command.append(f"--implementation={options.implementation}")
    if options.repo_origin is not None:
        command.append(f"--repo-origin={options.repo_origin}")
    command += [f"--server-env={key}={value}" for key, value in options.server_env.items()]
    command += [f"--choo-scenario={pattern}" for pattern in options.scenarios]
    markers = []
    if options.rules:
        markers.append("(" + " or ".join(options.rules) + ")")
    if options.tags:
        markers.append(f"({options.tags})")
    if markers and not nodeids:
        command += ["-m", " and ".join(markers)]
    return command + options.extra_pytest_args


def glob_literal(text: str) -> str:
    """A pattern (--scenario, the known lists: fnmatch) that matches text alone."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def _absolute(nodeid: str) -> str:
    """A node id (relative to the suite's rootdir) as an argument that works
    from any directory."""
    path, sep, rest = nodeid.partition("::")
    return str(PACKAGE / path) + sep + rest


# -- the pytest process -------------------------------------------------------------


class _Run:
    """The scenarios of one run, across however many pytest processes it takes."""

    def __init__(self, options: Options, report_dir: Path, rules_printed) -> None:
        self.options = options
        self.report_dir = report_dir
        self.infos: dict[str, ScenarioInfo] = {}
        self.order: list[str] = []
        self.not_applicable: dict[str, str] = {}
        self.results: dict[str, ScenarioResult] = {}
        self.collect_errors: list[str] = []
        self.daemon_groups: set[int] = set()
        self.daemon_folders: set[str] = set()
        self.deadline = time.monotonic() + options.timeout
        self.on_finished = rules_printed
        self.log_path = report_dir / "pytest.log"
        self.target_gone: str | None = None  # --target stopped answering after this scenario
        self.log_path.unlink(missing_ok=True)

    # The records of the progress stream.
    def _handle(self, record: dict, state: dict) -> None:
        kind = record["type"]
        if kind == "collected":
            if not self.infos:  # a resumed process lists only what is left
                for data in record["scenarios"]:
                    reason = data.pop("not_applicable")
                    info = ScenarioInfo.from_json(data)
                    self.infos[info.nodeid] = info
                    self.order.append(info.nodeid)
                    if reason:
                        self.results[info.nodeid] = ScenarioResult(info, NOT_APPLICABLE, reason)
                state["collected"] = True
        elif kind == "collect_error":
            self.collect_errors.append(f"{record['nodeid'] or 'collection'}: {record['detail']}")
        elif kind == "started":
            limit = record.get("limit_s", self.options.scenario_timeout)
            state.update(current=record["nodeid"], since=time.monotonic(), step="(setting up)",
                         hard_limit=limit + teardown_grace(limit) + _HARD_MARGIN_S)
        elif kind == "step":
            state["step"] = record["step"]
        elif kind == "daemon":
            self.daemon_groups.add(int(record["pgid"]))
            if record.get("folder"):
                self.daemon_folders.add(record["folder"])
        elif kind == "finished":
            nodeid = record["nodeid"]
            previous = self.results.get(nodeid)
            attempts = previous.attempts + 1 if previous else 1
            self.results[nodeid] = ScenarioResult(
                self.infos[nodeid], record["outcome"], record["detail"], record["duration_s"]
                + (previous.duration_s if previous else 0.0), attempts, story=record.get("story", []),
                cause=record.get("cause", ""))
            state["current"] = None
            self.on_finished(self, nodeid)
        elif kind == "target_gone":
            self.target_gone = record["nodeid"]
        elif kind == "done":
            state["done"] = True

    def run_process(self, nodeids: list[str] | None = None) -> None:
        """One pytest process, until it ends or has to be stopped."""
        progress = self.report_dir / "progress.jsonl"
        remove(str(progress))
        skip_done = None
        if self.results and nodeids is None:
            skip_done = self.report_dir / "done.txt"
            skip_done.write_text("\n".join(self.results) + "\n")
        command = pytest_command(self.options, progress, skip_done, nodeids)
        state: dict = {"current": None, "done": False, "collected": False}
        with open(self.log_path, "ab") as log:
            log.write(f"$ {shlex.join(command)}\n".encode())
            log.flush()
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    env=pytest_environment())
        reader = ProgressReader(str(progress))
        stopped_for = None
        try:
            while True:
                exited = proc.poll() is not None
                for record in reader.read():
                    self._handle(record, state)
                if exited:
                    break
                now = time.monotonic()
                if now > self.deadline:
                    stopped_for = f"the run's time limit of {self.options.timeout:g} s ran out"
                elif state["current"] and now - state["since"] > state["hard_limit"]:
                    stopped_for = (f"timed out after {state['hard_limit'] - _HARD_MARGIN_S:g} s "
                                   "(the suite had to be stopped)")
                if stopped_for:
                    break
                # Wakes at once when pytest exits; otherwise reads progress again.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(_POLL_S)
        finally:
            if proc.poll() is None:
                kill_group(proc.pid)
            proc.wait()
            for record in reader.read():
                self._handle(record, state)
        current = state["current"]
        if current is not None:
            why = stopped_for or f"the pytest process ended (exit code {proc.returncode}) in it"
            self.results[current] = ScenarioResult(
                self.infos[current], FAILED, f"{why}, in step {state['step']!r}",
                time.monotonic() - state["since"], 1)
            self.on_finished(self, current)
        self.last_exit = proc.returncode
        self.stopped_for = stopped_for
        self.out_of_time = now_past(self.deadline)
        self.collected = state["collected"]
        self.finished_cleanly = state["done"]

    def remaining(self) -> list[str]:
        return [n for n in self.order if n not in self.results]

    def stop_daemons(self) -> None:
        """What a pytest process stopped mid-scenario could not end itself."""
        for group in self.daemon_groups:
            kill_group(group)
        for folder in self.daemon_folders:
            remove_folder(folder)


def now_past(deadline: float) -> bool:
    return time.monotonic() > deadline


def run(options: Options) -> int:
    try:
        return _run(options)
    except NoVerdict as why:
        _error(str(why))
        return EXIT_NO_VERDICT


def _run(options: Options) -> int:
    try:
        rules = contract_rules()
    except RuleBlockError as error:
        raise NoVerdict(f"the feature files do not declare their rules properly: {error}") from None
    unknown = [r for r in options.rules or () if r not in rules]
    if unknown:
        raise NoVerdict(f"not rule ids of the contract: {', '.join(unknown)} "
                        f"(known: {', '.join(rules)})")
    try:
        known_failing = PatternList.read("known-failing", options.known_failing, set(rules))
        known_flaky = PatternList.read("known-flaky", options.known_flaky, set(rules))
    except ListError as error:
        raise NoVerdict(str(error)) from None
    _preflight(options)

    report_dir = options.report
    report_dir.mkdir(parents=True, exist_ok=True)
    _say(f"== choo.v1 conformance {options.title()} (profile {options.effective_profile()})")

    printed: set[str] = set()

    def rule_finished(run: _Run, nodeid: str) -> None:
        for rule_id in run.infos[nodeid].rules:
            if rule_id in printed or (options.rules and rule_id not in options.rules):
                continue
            mine = [n for n in run.order if rule_id in run.infos[n].rules]
            if all(n in run.results for n in mine):
                printed.add(rule_id)
                _print_rule(run, rule_id)

    def _print_rule(run: _Run, rule_id: str) -> None:
        scenarios = [run.results[n] for n in run.order if rule_id in run.infos[n].rules]
        mark_known(scenarios, known_failing, known_flaky)
        (rule,) = [r for r in by_rule(scenarios, rules) if r.rule.id == rule_id]
        _say(report.rule_line(rule, options.rerun))

    run = _Run(options, report_dir, rule_finished)
    previous_signal = signal.signal(signal.SIGTERM, exit_on_sigterm)
    try:
        run.run_process()
        if not run.collected:
            raise NoVerdict("the scenarios could not be collected: " + _log_tail(run.log_path))
        if run.collect_errors:
            raise NoVerdict("collection errors:\n" + "\n".join(run.collect_errors))
        # A process that had to be stopped (or died) leaves scenarios to run.
        restarts = 0
        while (run.remaining() and not run.finished_cleanly and not run.out_of_time
               and run.target_gone is None and restarts < len(run.order)):
            restarts += 1
            run.run_process()
        if run.out_of_time:
            for nodeid in run.remaining():
                run.results[nodeid] = ScenarioResult(
                    run.infos[nodeid], NOT_RUN, f"{run.stopped_for} before it ran")
        if run.target_gone is not None:
            gone = run.infos[run.target_gone].key
            left = run.remaining()
            _say(f"the daemon at {options.target} stopped answering during {gone}: the run stops "
                 f"there, and {len(left)} scenarios were not run (start it again, or use "
                 f"--server-cmd so that the suite starts a fresh one)")
            for nodeid in left:
                run.results[nodeid] = ScenarioResult(
                    run.infos[nodeid], NOT_RUN, f"the daemon stopped answering during {gone}")
        _retry_flaky(run, known_flaky)
    finally:
        run.stop_daemons()
        signal.signal(signal.SIGTERM, previous_signal)

    if not run.order:
        raise NoVerdict("no scenario selected: check --rules, --tags and --scenario")
    scenarios = [run.results.get(n) or ScenarioResult(run.infos[n], NOT_RUN, "never reported")
                 for n in run.order]
    mark_known(scenarios, known_failing, known_flaky)
    rule_results = by_rule(scenarios, rules)
    if options.rules:  # a scenario of a selected rule may check others too: not judged here
        rule_results = [r for r in rule_results if r.rule.id in options.rules]
    for rule in rule_results:  # those not printed yet: all their scenarios were not applicable
        if rule.rule.id not in printed:
            _say(report.rule_line(rule, options.rerun))
    code = exit_code(rule_results, options.allow_skips)
    info = report.RunInfo(options.title(), options.mode, options.effective_profile())
    lists = [known_failing, known_flaky]
    report.write_summary(report_dir / "summary.md", info, rule_results, scenarios, lists, code,
                         options.rerun)
    report.write_junit(report_dir / "junit.xml", info, scenarios)
    report.write_results(report_dir / "results.json", info, rule_results, scenarios, lists, code)
    for patterns in lists:
        for entry in patterns.unmatched():
            _say(f"note: {patterns.name} entry {entry.pattern!r} ({entry.where}) matched no scenario")
    first = report.first_things(rule_results, options.rerun)
    if first:
        _say("")
        for line in first:
            _say(line)
    _say(f"report: {report_dir / 'summary.md'}")
    _say(report.closing_line(rule_results, scenarios))
    _say(f"exit code {code}: {report.EXIT_MEANING[code]}")
    return code


def _retry_flaky(run: _Run, known_flaky: PatternList) -> None:
    for _ in range(run.options.flaky_retries):
        again = [n for n, r in run.results.items()
                 if r.went_wrong and known_flaky.matches(r.info)]
        if not again:
            return
        run.run_process(nodeids=again)


def _log_tail(path: Path, limit: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return "(no output)"


