"""The suite as a pytest plugin: the step modules, the options that pick the
implementation under test and the profile, which scenarios apply where, the
time limit of every scenario, and the progress stream the runner reads.

Loaded by the repository's conftest.py and by the `choo-conformance` runner
(`-p choo_conformance.plugin`).
"""

from __future__ import annotations

import fnmatch
import re
import signal
import time
from pathlib import Path

import grpc
import pytest

from . import environment, journal, process
from .daemon_target import SetupError
from .limits import DEFAULT_SCENARIO_TIMEOUT_S, scenario_limit, teardown_grace
from .profiles import PROFILES
from .progress import ProgressWriter
from .results import NOT_APPLICABLE, NOT_APPLICABLE_MARK
from .rules import FEATURES
from .scenario_info import ScenarioInfo, scenario_info
from .seam import DEFAULT_IMPLEMENTATION

pytest_plugins = [
    "choo_conformance.fixtures",
    "choo_conformance.watch_job_steps",
    "choo_conformance.event_stream_steps",
    "choo_conformance.lifecycle_steps",
    "choo_conformance.black_box_steps",
    "choo_conformance.fidelity_steps",
    "choo_conformance.handover_steps",
]


def pytest_addoption(parser):
    group = parser.getgroup("choo conformance")
    group.addoption(
        "--implementation", default=None, metavar="MODULE[:OBJECT]",
        help="in process: the implementation whose servicers the scenarios drive "
        f"(default {DEFAULT_IMPLEMENTATION}); see choo_conformance.seam")
    group.addoption(
        "--target", default=None, metavar="ADDRESS",
        help="run the scenarios against a daemon already serving at ADDRESS "
        "(for example unix:///tmp/choo.sock)")
    group.addoption(
        "--server-cmd", default=None, metavar="COMMAND",
        help="start the daemon under test with COMMAND, in which {socket} (and "
        "optionally {db}) stand for paths the suite chooses")
    group.addoption(
        "--profile", default=None, choices=PROFILES,
        help="which rules and scenarios apply: control (the daemon serves "
        "ConformanceControl), black-box (DaemonService only), reference (control, "
        "plus the reference daemon's own behaviour); default: reference in process "
        "with the default implementation, control otherwise")
    group.addoption(
        "--repo-origin", default=None, type=environment.repo_origin, metavar="URL",
        help="give each repository the suite makes for StartJob an `origin` remote with this "
        "URL (never fetched), for a daemon that insists on one")
    group.addoption(
        "--server-env", action="append", default=[], type=environment.server_env_item,
        metavar="KEY=VALUE", help="add KEY=VALUE to the environment of the daemon --server-cmd "
        "starts (repeatable)")
    group.addoption(
        "--scenario-timeout", type=float, default=DEFAULT_SCENARIO_TIMEOUT_S, metavar="S",
        help="fail a scenario that runs longer than S seconds (default %(default)s)")
    group.addoption("--choo-progress", default=None, metavar="PATH",
                    help="write the progress stream the runner reads here")
    group.addoption("--choo-scenario", action="append", default=[], metavar="PATTERN",
                    help="only the scenarios whose id matches PATTERN (fnmatch; repeatable)")
    group.addoption("--choo-skip-done", default=None, metavar="PATH",
                    help="deselect the node ids listed in PATH (a resumed run)")


def remote_mode(config) -> bool:
    return bool(config.getoption("target") or config.getoption("server_cmd"))


def profile_of(config) -> str:
    profile = config.getoption("profile")
    if profile:
        return profile
    if not remote_mode(config) and not config.getoption("implementation"):
        return "reference"
    return "control"


# Scenarios that cannot apply in a mode or profile, and why. They are not
# run, and the report lists them as not applicable; they neither pass nor
# fail their rule.
def not_applicable(info: ScenarioInfo, config) -> str | None:
    tags = set(info.tags)
    remote = remote_mode(config)
    profile = profile_of(config)
    if "scripted" in tags and remote:
        return ("in process only: it drives the servicer with the suite's scripted job "
                "manager, which exists only in process")
    if "checkpoints" in tags and remote:
        return ("in process only: it records events at points inside the implementation's "
                "watch (the seam's checkpoints), which no channel reaches")
    if "daemon_capacity" in tags and not remote:
        return ("over a channel only: it checks a daemon process's capacity; grpc_testing "
                "gives every call a thread of its own, so in process it would measure the harness")
    if "daemon_process" in tags and not remote:
        return "over a channel only: it measures the daemon's process, which in process is the suite's own"
    if "wire" in tags and not remote:
        return ("over a channel only: it sends what only a real channel carries (bytes that do not "
                "decode as the request)")
    if "reference" in tags and profile != "reference":
        return ("the reference daemon's own behaviour, not part of the contract every "
                "implementation serves (profile reference)")
    if "control" in tags and profile == "black-box":
        return ("needs the control service (ConformanceControl) to set up or observe what "
                "it checks")
    if "black_box" in tags and profile != "black-box":
        return "a black-box scenario: the control profile checks the same rule through the control service"
    return None


# Scenarios that apply but cannot run against a daemon the suite did not start.
def cannot_run(info: ScenarioInfo, config) -> str | None:
    if not config.getoption("target"):
        return None
    reasons = {
        "ends_daemon": "it ends the daemon",
        "restarts_daemon": "it restarts the daemon",
        "fresh_daemon": "it counts the daemon's jobs, so it needs a daemon of its own",
        "daemon_process": "it measures the daemon's process, which only a daemon the suite started has",
    }
    for tag, why in reasons.items():
        if tag in info.tags:
            return f"not against --target: {why}; give --server-cmd so the suite can start one"
    return None


class _Suite:
    """Per session: scenario infos, the progress stream, the scenario clock."""

    def __init__(self, config) -> None:
        self.config = config
        self.timeout = float(config.getoption("scenario_timeout"))
        path = config.getoption("choo_progress")
        self.progress = ProgressWriter(path) if path else None
        self.infos: dict[str, ScenarioInfo] = {}
        self.outcomes: dict[str, dict] = {}
        self.step = ""
        self.limit = self.timeout
        self.passed_steps: list[str] = []
        self.failure: tuple[str, BaseException | None, bool] | None = None  # step, error, blocked
        self.stories: dict[str, dict] = {}
        self.target_gone: str | None = None  # --target: the scenario after which it stopped answering
        if self.progress is not None:
            process.on_start.append(lambda daemon: self.emit(
                "daemon", pgid=daemon.pid, folder=daemon.folder if daemon.owns_folder else None))

    def emit(self, type: str, **fields) -> None:
        if self.progress is not None:
            self.progress.write(type, **fields)

    # -- collection ------------------------------------------------------------

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, session, config, items):
        done = set()
        skip_done = config.getoption("choo_skip_done")
        if skip_done:
            done = set(Path(skip_done).read_text().split("\n")) - {""}
        keep, dropped, records = [], [], []
        chosen = config.getoption("choo_scenario")
        for item in items:
            info = scenario_info(item)
            if info is None:
                keep.append(item)
                continue
            if item.nodeid in done or (chosen and not any(
                    fnmatch.fnmatchcase(scenario_id, pattern)
                    for pattern in chosen for scenario_id in (*info.ids, info.key))):
                dropped.append(item)
                continue
            self.infos[item.nodeid] = info
            reason = not_applicable(info, config)
            records.append({**info.to_json(), "not_applicable": reason})
            if reason:
                dropped.append(item)
                continue
            why_not = cannot_run(info, config)
            if why_not:
                item.add_marker(pytest.mark.skip(reason=why_not))
            for rule in info.rules:
                item.user_properties.append(("rule", rule))
            item.user_properties.append(("scenario_id", info.key))
            keep.append(item)
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = keep
        self.emit("collected", scenarios=records)

    def pytest_collectreport(self, report):
        if report.failed:
            self.emit("collect_error", nodeid=report.nodeid, detail=str(report.longrepr)[-4000:])

    # -- the scenario clock ------------------------------------------------------

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        info = self.infos.get(item.nodeid)
        if info is None:
            yield
            return
        self.step = "(setting up)"
        self.limit = scenario_limit(self.timeout, info.tags)
        self.passed_steps, self.failure = [], None
        journal.reset()
        self.emit("started", nodeid=item.nodeid, at=time.time(), limit_s=self.limit)
        previous = signal.signal(signal.SIGALRM, self._time_is_up)
        signal.setitimer(signal.ITIMER_REAL, self.limit)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

    def _time_is_up(self, signum, frame):
        # The clean-up that follows gets a bounded time of its own.
        signal.setitimer(signal.ITIMER_REAL, teardown_grace(self.limit))
        timeout = ScenarioTimeout(f"timed out after {self.limit:g} s in step {self.step!r}")
        if self.failure is None:  # no step_error hook for a BaseException: note the step here
            self.failure = (self.step, timeout, False)
        raise timeout

    def pytest_bdd_before_step(self, request, feature, scenario, step, step_func):
        self.step = f"{step.keyword} {step.name}".strip()
        self.emit("step", nodeid=request.node.nodeid, step=self.step)

    def pytest_bdd_after_step(self, request, feature, scenario, step, step_func, step_func_args):
        self.passed_steps.append(self.step)

    def pytest_bdd_step_error(self, request, feature, scenario, step, step_func, step_func_args,
                              exception):
        # A Given that cannot build its state, or a step whose precondition
        # the daemon never met (SetupError): the scenario is blocked, its
        # rule's own behaviour never reached.
        blocked = step.type == "given" or isinstance(exception, SetupError)
        self.failure = (self.step, exception, blocked)

    def pytest_bdd_after_scenario(self, request, feature, scenario):
        self.step = "(cleaning up)"

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        if item.nodeid not in self.infos or not report.failed or report.when != "call":
            return
        step, error, blocked = self.failure or (self.step, call.excinfo.value if call.excinfo else None,
                                                False)
        target = journal.target()
        story = self.stories[item.nodeid] = story_of(step, error, self.passed_steps,
                                                     getattr(target, "address", ""), blocked)
        died = _daemon_died(item, target)
        if died:
            # Whatever the step saw (UNAVAILABLE, a closed stream) follows from this.
            story["detail"] = f"{step}: the daemon {died[0]} during this scenario"
            story["story"] += died[1]
            story["outcome"] = "failed"
        elif self.config.getoption("target") and not _answers_health(target):
            story["detail"] += " (and the daemon has stopped answering)"
            self.target_gone = item.nodeid

    # -- outcomes ------------------------------------------------------------------

    def pytest_runtest_logreport(self, report):
        if report.nodeid not in self.infos:
            return
        record = self.outcomes.setdefault(
            report.nodeid, {"outcome": "passed", "detail": "", "duration_s": 0.0})
        record["duration_s"] += report.duration
        if report.skipped and record["outcome"] == "passed":
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            reason = reason.removeprefix("Skipped: ")
            if reason.startswith(NOT_APPLICABLE_MARK):
                record["outcome"] = NOT_APPLICABLE
                record["detail"] = reason.removeprefix(NOT_APPLICABLE_MARK)
            else:
                record["outcome"] = "skipped"
                record["detail"] = reason
        elif report.failed and record["outcome"] not in ("failed", "blocked"):
            story = self.stories.pop(report.nodeid, None)
            if story is not None:
                record.update(story)
            else:
                record["outcome"] = "failed"
                record["detail"] = ("in clean-up: " if report.when == "teardown" else "") + _failure(report)
        if report.when == "teardown":
            self.emit("finished", nodeid=report.nodeid, **self.outcomes.pop(report.nodeid))
            if self.target_gone == report.nodeid:
                # Nothing more can be checked against a daemon that is gone,
                # and nobody here can start it again.
                self.emit("target_gone", nodeid=report.nodeid)
                pytest.exit(f"the daemon at {self.config.getoption('target')} stopped answering", 1)

    def pytest_sessionfinish(self, session, exitstatus):
        self.emit("done", exitstatus=int(exitstatus))
        if self.progress is not None:
            self.progress.close()


def _daemon_died(item, target) -> tuple[str, list[str]] | None:
    """How the daemon the suite started ended, if it did during a scenario
    that was not ending it on purpose, with the end of its output."""
    process = getattr(target, "process", None)
    if process is None:
        return None
    failed = journal.last_failed_unary()
    if (process.running() and failed is not None and failed.status is not None
            and failed.status.code == grpc.StatusCode.UNAVAILABLE):
        process.wait_exit(1.0)  # the connection closes as the process ends, a moment before
    if process.running():
        return None
    if any(item.get_closest_marker(tag) for tag in ("ends_daemon", "restarts_daemon")):
        return None
    ended = process.how_it_ended()
    return ended, [f"the daemon {ended}; the end of its output:",
                   *[f"  | {line}" for line in process.last_lines(12)]]


def _answers_health(target) -> bool:
    from .remote import answers_health

    return answers_health(getattr(target, "address", ""))


class ScenarioTimeout(BaseException):
    """A scenario ran out of time. A BaseException, so that no step's
    `except Exception` can swallow it."""


def _failure(report) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    message = crash.message if crash is not None else str(report.longrepr)
    # An assertion's message is the explanation; its type is not.
    return _said(message.strip().removeprefix("AssertionError: "))


def _said(message: str) -> str:
    """An assertion's own words, without the expression pytest's rewriting
    appends to them."""
    return message.split("\nassert ", 1)[0].strip()


def explanation(error: BaseException | None) -> tuple[str, str]:
    """Why a step failed, in the service's words, and (for a fault of the
    suite's own code meeting an answer it did not expect) the Python detail,
    which is never the explanation."""
    if isinstance(error, (AssertionError, ScenarioTimeout)):
        return (_said(str(error)) or "an expectation was not met"), ""
    if error is None:
        return "it failed", ""
    where = ""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None:
        where = f" at {Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno}"
    failed = journal.last_failed_unary()
    answer = (f"{failed.method} answered {journal.status_text(failed.status)}"
              if failed is not None and failed.status is not None else "the calls below")
    return (f"the step could not go on after {answer}", f"{type(error).__name__}: {error}{where}")


def story_of(step: str, error: BaseException | None, passed: list[str], address: str,
             blocked: bool) -> dict:
    """What a failed scenario's record says: its outcome, a line for the
    report's tables (the step and why), and the story (the steps that
    passed, the calls and their answers, the same call with grpcurl)."""
    why, internal = explanation(error)
    lines = [f"failed at: {step}"]
    if passed:
        lines.append("after: " + " / ".join(passed))
    calls = journal.story()
    if calls:
        lines.append("calls:")
        lines += [f"  {line}" for line in calls]
    failed_call = journal.last_failed_unary()
    command = failed_call.grpcurl(address) if failed_call is not None and address else None
    if command:
        lines.append(f"same call: {command}")
    if internal:
        lines.append(f"in the suite: {internal}")
    cause = getattr(error, "cause", "") if blocked else ""
    return {"outcome": "blocked" if blocked else "failed", "detail": f"{step}: {why}", "story": lines,
            "cause": cause}


def pytest_configure(config):
    environment.configure(config.getoption("repo_origin"), config.getoption("server_env"))
    # Every Gherkin tag becomes a pytest marker; register them so that `-m W7`
    # selects a rule without warnings.
    tags = set()
    for feature in FEATURES.glob("*.feature"):
        tags.update(re.findall(r"@([\w.-]+)", feature.read_text()))
    for tag in sorted(tags):
        config.addinivalue_line("markers", f"{tag}: Gherkin tag")
    config.pluginmanager.register(_Suite(config), "choo-conformance-suite")
