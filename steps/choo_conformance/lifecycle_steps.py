"""Steps of features/job_lifecycle.feature and features/daemon_lifecycle.feature."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import grpc
from pytest_bdd import given, parsers, then, when

from choo.v1 import daemon_pb2

from . import environment
from .contract import CONTRACT_CODES, TERMINAL, names_field
from .daemon_target import SetupError
from .fixtures import EVENTUALLY, PROMPTLY, status_code
from .process import stat_fields
from .wait import ASKS_THE_DAEMON, Patience, wait_until

# A command that says it started, then holds until the scenario releases it
# (or a minute passes, so that nothing a failed run leaves behind lives on).
WAIT_FOR_RELEASE = "wait for the release"


def _wait_until_released(started: str, release: str) -> str:
    # Polls for the release file: a command cannot be woken otherwise.
    return (f'touch "{started}"; i=0; while [ ! -e "{release}" ] && [ $i -lt 3000 ]; '
            f'do sleep 0.02; i=$((i+1)); done')


def _lever(text: str, workdir) -> str:
    if text == WAIT_FOR_RELEASE:
        return _wait_until_released(f"{workdir}/started", f"{workdir}/release")
    named = re.fullmatch(r'wait for "([\w.-]+)"', text)
    if named:
        name = named.group(1)
        return _wait_until_released(f"{workdir}/started-{name}", f"{workdir}/release-{name}")
    return text


def marks(workdir):
    """Where each command notes its pid, its start and its end."""
    return workdir / "ran"


def mark(workdir, folder: str, unit: str, number: int):
    return marks(workdir) / f"{folder}.{unit}-{number}"


def shell_command(text: str, workdir, folder: str, unit: str, number: int) -> str:
    """The task's command, noting its pid and start first and its end last
    (an end only if it was not killed), so a scenario can tell which commands
    ran and which ran to completion."""
    mark_path = mark(workdir, folder, unit, number)
    return (f'echo $$ > "{mark_path}.pid"; touch "{mark_path}.started"; '
            f'( {_lever(text, workdir)} ); rc=$?; touch "{mark_path}.ended"; exit $rc')


# docs/SPEC.md section 7: task files are `NN-name.md`, two digits, so a unit
# has at most 99 tasks; a daemon that reads only `[0-9][0-9]-*.md` must see
# every task the suite writes (more tasks take more units, not longer names).
MOST_TASKS_IN_A_UNIT = 99


def write_tasks_folder(root, rows, workdir) -> None:
    header, *rows = rows
    marks(workdir).mkdir(exist_ok=True)
    for row in rows:
        cell = dict(zip(header, row))
        unit_dir = root / cell["unit"]
        unit_dir.mkdir(parents=True)
        deps = [d.strip() for d in cell["depends_on"].split(",") if d.strip()]
        (unit_dir / "IMPLEMENTATION_PLAN.md").write_text(
            f"---\nunit: {cell['unit']}\ndepends_on: [{', '.join(deps)}]\n---\n\n# {cell['unit']}\n")
        commands = cell["commands"].split("; ")
        if len(commands) > MOST_TASKS_IN_A_UNIT:
            raise ValueError(f"unit {cell['unit']} has {len(commands)} tasks: task files are numbered "
                             f"01 to {MOST_TASKS_IN_A_UNIT} (docs/SPEC.md section 7)")
        for number, command in enumerate(commands, start=1):
            depends = f"[{number - 1}]" if number > 1 else "[]"
            quoted = shell_command(command, workdir, root.name, cell["unit"], number)
            quoted = quoted.replace("\\", "\\\\").replace('"', '\\"')
            (unit_dir / f"{number:02d}-step.md").write_text(
                f'---\ntask: {number}\nbackpressure: "{quoted}"\ndepends_on: {depends}\n---\n\n'
                f"# Step {number} of {cell['unit']}\n")


def make_repository(path: Path) -> None:
    """A git repository at path with one empty commit on `main` and a git
    identity in its own config (for a daemon that commits after each task),
    and an `origin` remote when the run names one (--repo-origin), which an
    implementation may insist on; a plain folder where git is missing."""
    git = shutil.which("git")
    if git is None:
        return
    origin = environment.settings.repo_origin
    for argv in ([git, "init", "-q", "-b", "main"],
                 *([git, "config", key, value] for key, value in environment.IDENTITY),
                 # Whatever the user's own config asks of commits.
                 [git, "-c", "commit.gpgsign=false", "commit", "-q", "--no-verify", "--allow-empty",
                  "-m", "The scenario's repository"],
                 *([[git, "remote", "add", "origin", origin]] if origin is not None else [])):
        subprocess.run(argv, cwd=path, check=True, capture_output=True, timeout=30)


class Jobs:
    """The scenario's tasks folders, repository and started jobs."""

    def __init__(self, tmp_path) -> None:
        self.root = tmp_path
        self.repo = tmp_path / "repo"
        self.repo.mkdir()
        make_repository(self.repo)
        self.folders: dict[str, str] = {}
        self.ids: dict[str, str] = {}  # label -> job id
        self.started: list[str] = []
        self.folder_of: dict[str, str] = {}  # job id -> the tasks folder's name
        self.refused: str | None = None  # the last StartJob's answer, if not OK
        self._repositories = 0

    def new_repository(self) -> Path:
        """A repository of its own, for a job that must outlive the next
        StartJob: a daemon may forget a finished job once another job starts
        on its repo_path (docs/SPEC.md, R7)."""
        self._repositories += 1
        path = self.root / f"repo-{self._repositories}"
        path.mkdir()
        make_repository(path)
        return path


def _jobs(world, tmp_path) -> Jobs:
    if not hasattr(world, "jobs"):
        world.jobs = Jobs(tmp_path)
    return world.jobs


def _answer(world):
    response, status = world.last_call.result(EVENTUALLY)
    assert status is not None, f"no answer after {EVENTUALLY} s"
    return response, status


def _start(target, world, tmp_path, folder, repo: Path | None = None, **fields):
    jobs = _jobs(world, tmp_path)
    request = daemon_pb2.StartJobRequest(
        tasks_dir=jobs.folders.get(folder, folder), target_branch=fields.pop("target_branch", "main"),
        repo_path=str(repo or jobs.repo), **fields)
    world.last_call = target.call("StartJob", request)
    response, status = world.last_call.result(EVENTUALLY)
    if status is not None and status.code == grpc.StatusCode.OK:
        jobs.started.append(response.job_id)
        jobs.folder_of.setdefault(response.job_id, folder)
    else:
        jobs.refused = f"StartJob answered {status or f'nothing within {EVENTUALLY:g} s'}"
    return response


def _last_job(world) -> str:
    jobs = getattr(world, "jobs", None)
    if jobs is None or not jobs.started:
        why = getattr(jobs, "refused", None) or "StartJob was not called"
        raise SetupError(f"the scenario has no job to go on with: {why}", cause=f"no job: {why}")
    return jobs.started[-1]


# The one precondition the suite's set-ups share: a job StartJob accepted
# makes progress (runs its commands, ends). Once a daemon has failed it in
# this run (its jobs never run a command, say), the scenarios after are
# blocked by the same cause, and each waits only half a second for it.
NO_PROGRESS = ("a job StartJob accepted made no progress: its command never started, or it never "
               "reached the status the scenario needs")
_progress = Patience(after_a_miss=0.5)


def patience(timeout: float = EVENTUALLY) -> float:
    return _progress.timeout(timeout)


def waited(timeout: float) -> str:
    """Notes a wait for progress that ran out; says how long it was and why."""
    _progress.ran_out()
    return (f"waited {timeout:g} s" + (", as a started job to make progress had not come in time "
                                       "before in this run" if timeout <= _progress.after_a_miss else ""))


# What a job's wait allows for each command it runs, beyond EVENTUALLY.
SECONDS_PER_COMMAND = 0.05


def _wait_for_status(target, job_id, status, timeout=EVENTUALLY) -> None:
    """Until the job reads `status`; at once when it has ended in another
    (a terminal job never changes status again)."""
    timeout = patience(timeout=timeout)
    seen: list[str] = []

    def settled() -> bool:
        seen.append(target.job(job_id).status)
        return seen[-1] == status or seen[-1] in TERMINAL

    wait_until(settled, timeout, ASKS_THE_DAEMON)
    now = seen[-1] if seen else target.job(job_id).status
    if now in TERMINAL and now != status:
        raise AssertionError(f"job {job_id} ended {now!r}, expected {status!r} (terminal: it never changes)")
    if now != status:
        raise AssertionError(f"job {job_id} is still {now!r}, expected {status!r} ({waited(timeout)})")


# -- Given ------------------------------------------------------------------


@given(parsers.parse('a tasks folder "{name}" whose units are:'))
def tasks_folder(world, tmp_path, name, datatable):
    jobs = _jobs(world, tmp_path)
    folder = tmp_path / "tasks" / name
    write_tasks_folder(folder, datatable, tmp_path)
    jobs.folders[name] = str(folder)


@given(parsers.parse('a tasks folder "{name}" whose task file "{path}" has no backpressure command'))
def broken_tasks_folder(world, tmp_path, name, path):
    jobs = _jobs(world, tmp_path)
    folder = tmp_path / "tasks" / name
    write_tasks_folder(folder, [["unit", "depends_on", "commands"], ["setup", "", "true"]], tmp_path)
    (folder / path).write_text("---\ntask: 1\n---\n\n# First\n")
    jobs.folders[name] = str(folder)


@given(parsers.re(r"a job that (has|is) (?P<status>completed|failed|running)"))
def job_in_status(target, world, tmp_path, status):
    jobs = _jobs(world, tmp_path)
    if not jobs.folders.get("passing"):
        tasks_folder(world, tmp_path, "passing", [["unit", "depends_on", "commands"], ["u", "", "true"]])
        tasks_folder(world, tmp_path, "failing", [["unit", "depends_on", "commands"], ["u", "", "exit 1"]])
    if "waiting" not in jobs.folders:
        tasks_folder(world, tmp_path, "waiting",
                     [["unit", "depends_on", "commands"], ["u", "", WAIT_FOR_RELEASE]])
    folder = {"completed": "passing", "failed": "failing", "running": "waiting"}[status]
    # Each on a repository of its own: the scenario goes on to start others,
    # and looks at this one again (R7, W18, R11).
    _start(target, world, tmp_path, folder, repo=jobs.new_repository())
    job_id = jobs.ids[status] = _last_job(world)
    if status != "running":
        wait_for_progress(target, job_id, status)


def wait_for_progress(target, job_id: str, status: str) -> None:
    """_wait_for_status for a scenario's set-up: a job that never gets there
    blocks the scenario (its rule is never reached), with the cause every
    such scenario shares."""
    try:
        _wait_for_status(target, job_id, status)
    except AssertionError as error:
        raise SetupError(str(error), cause=NO_PROGRESS) from None


@given("the daemon is shutting down, waiting for a running job")
def shutting_down_waiting(target, world, tmp_path):
    # Shutdown(wait_for_jobs) keeps the daemon serving until the job ends:
    # the window in which new work must be refused.
    job_in_status(target, world, tmp_path, "running")
    first_command_running(target, world)
    world.shutdown_call = target.call("Shutdown", daemon_pb2.ShutdownRequest(
        wait_for_jobs=True, timeout_seconds=60))
    _turns_unhealthy(target)


# -- When -------------------------------------------------------------------


@when(parsers.re(r'a client starts a job with tasks_dir "(?P<tasks_dir>[^"]*)", target_branch '
                 r'"(?P<target_branch>[^"]*)" and repo_path "(?P<repo_path>[^"]*)"'))
def start_with_fields(target, world, tmp_path, tasks_dir, target_branch, repo_path):
    jobs = _jobs(world, tmp_path)
    world.last_call = target.call("StartJob", daemon_pb2.StartJobRequest(
        tasks_dir=jobs.folders.get(tasks_dir, tasks_dir), target_branch=target_branch,
        repo_path=repo_path))


@when(parsers.parse('a client starts a job on "{folder}" with parallelism {n:d}'))
def start_with_parallelism(target, world, tmp_path, folder, n):
    _start(target, world, tmp_path, folder, parallelism=n)


@when(parsers.re(r'a client starts (a|another) job on "(?P<folder>[^"]+)"$'))
def start_job(target, world, tmp_path, folder):
    _start(target, world, tmp_path, folder)


@when(parsers.re(r'a client starts a job on "(?P<folder>[^"]+)" for feature branch "(?P<branch>[^"]+)"'
                 r'( with target_branch "(?P<target_branch>[^"]+)")?$'))
def start_on_branch(target, world, tmp_path, folder, branch, target_branch):
    world.previous_call = getattr(world, "last_call", None)
    _start(target, world, tmp_path, folder, feature_branch=branch,
           target_branch=target_branch or "main")


@when(parsers.parse('a client starts a job on "{folder}" for feature branch "{branch}" in another '
                    'repository'))
def start_on_branch_elsewhere(target, world, tmp_path, folder, branch):
    world.previous_call = getattr(world, "last_call", None)
    _start(target, world, tmp_path, folder, repo=_jobs(world, tmp_path).new_repository(),
           feature_branch=branch)


@when(parsers.parse('{count:d} clients start a job on "{folder}" at once, each on a repository of its own'))
def many_start_at_once(target, world, tmp_path, count, folder):
    """Sent together, answered in any order: ids made from a clock or a
    counter read outside a lock come out the same."""
    jobs = _jobs(world, tmp_path)
    requests = [daemon_pb2.StartJobRequest(tasks_dir=jobs.folders[folder], target_branch="main",
                                           repo_path=str(jobs.new_repository())) for _ in range(count)]
    calls = [target.call("StartJob", request) for request in requests]
    world.marks["many_started"] = answers = [call.result(EVENTUALLY) for call in calls]
    jobs.started += [response.job_id for response, status in answers
                     if status is not None and status.code == grpc.StatusCode.OK]


@then(parsers.parse('all {count:d} answer status "{status}", with {distinct:d} different job ids'))
def all_answer_distinct(world, count, status, distinct):
    answers = world.marks["many_started"]
    wrong = [str(call_status) for _, call_status in answers
             if call_status is None or call_status.code != grpc.StatusCode.OK]
    assert not wrong, f"{len(wrong)} of {count} StartJobs sent at once failed: {wrong[:3]}"
    assert all(response.status == status for response, _ in answers), [r.status for r, _ in answers]
    ids = [response.job_id for response, _ in answers]
    assert len(set(ids)) == distinct, (
        f"{count} StartJobs sent at once were answered {len(set(ids))} different job ids: "
        f"{sorted(i for i in set(ids) if ids.count(i) > 1)[:3]} were given twice (R3: a new job each time)")


def wait_held_command_started(target, world, started: Path, what: str) -> None:
    """Until a held command has noted its start (the file `started`); at
    once when the job has ended without it. Either way it never started: the
    scenario cannot go on (blocked, not failed: what it checks comes later)."""
    job_id = _last_job(world)

    def started_or_over() -> bool:
        return started.exists() or target.job(job_id).status in TERMINAL

    timeout = patience()
    if not wait_until(started_or_over, timeout, ASKS_THE_DAEMON) or not started.exists():
        raise SetupError(f"{what} never started (job {job_id} is {target.job(job_id).status!r}; "
                         f"{waited(timeout)}); the scenario needs it running", cause=NO_PROGRESS)


@when("the job's first command is running")
def first_command_running(target, world):
    wait_held_command_started(target, world, world.jobs.root / "started", "the job's first command")


@when("the running command is released")
def release(world):
    (world.jobs.root / "release").touch()


@when(parsers.re(r"a client stops the job (?P<how>gracefully|by force)"))
def stop_job(target, world, how):
    world.last_call = target.call("StopJob", daemon_pb2.StopJobRequest(
        job_id=_last_job(world), force=how == "by force"))


# How long a graceful stop is given to be under way, when the daemon shows it
# neither by answering nor by the job's status, before its running command
# is released (see stop_gracefully_releasing).
STOP_UNDER_WAY_S = 2.0


@when("a client stops the job gracefully, and the running command is released once the stop is "
      "under way")
def stop_gracefully_releasing(target, world):
    """A graceful StopJob may answer at once or only once the running commands
    have ended (R5 leaves it open), so the command is released without
    waiting for the answer: as soon as the stop shows (StopJob answered, or
    the job reads cancelled), or, for a daemon that shows neither until its
    commands end, once the stop has had STOP_UNDER_WAY_S to reach it."""
    job_id = _last_job(world)
    world.last_call = call = target.call("StopJob", daemon_pb2.StopJobRequest(job_id=job_id, force=False))

    def under_way() -> str | None:
        if call.result(0)[1] is not None:
            return "StopJob had answered"
        if target.job(job_id).status == "cancelled":
            return "the job read cancelled"
        return None

    shown = wait_until(under_way, STOP_UNDER_WAY_S, ASKS_THE_DAEMON)
    world.marks["released"] = (under_way() if shown else None) or (
        f"StopJob had not answered after {STOP_UNDER_WAY_S:g} s, the job still read "
        f"{target.job(job_id).status!r}")
    world.marks["released_at"] = time.monotonic()
    (world.jobs.root / "release").touch()


@when(parsers.re(r'a client stops job "(?P<job>[^"]*)"'))
def stop_named_job(target, world, job):
    job_id = world.jobs.ids["completed"] if job == "the completed" else job
    world.last_call = target.call("StopJob", daemon_pb2.StopJobRequest(job_id=job_id))


@when(parsers.re(r'a client asks for the status of job "(?P<job>[^"]*)"'))
def status_of(target, world, job):
    world.last_call = target.call("GetJobStatus", daemon_pb2.GetJobStatusRequest(job_id=job))


@when(parsers.parse('a client lists jobs with status "{status}"'))
def list_with_status(target, world, status):
    world.last_call = target.call("ListJobs", daemon_pb2.ListJobsRequest(status_filter=[status]))


@when("a client asks the daemon to shut down without waiting")
def shutdown_now(target, world):
    world.last_call = target.call("Shutdown", daemon_pb2.ShutdownRequest(wait_for_jobs=False))
    _answer(world)


@when(parsers.parse("a client asks the daemon to shut down waiting up to {seconds:d} seconds"))
def shutdown_waiting(target, world, seconds):
    # Answered only once the jobs have finished: the answer is awaited later.
    world.last_call = target.call("Shutdown", daemon_pb2.ShutdownRequest(
        wait_for_jobs=True, timeout_seconds=seconds))


@when(parsers.parse('a client calls {rpc} with odd values "{value}"'))
def odd_call(target, world, rpc, value):
    if rpc == "WatchJob":
        world.watches["default"] = target.watch(value, -(2**31))
        world.last_call = None
        return
    requests = {
        "StartJob": daemon_pb2.StartJobRequest(
            tasks_dir=value, target_branch=value * 1000, feature_branch=value,
            parallelism=2**31 - 1, repo_path=value),
        "StopJob": daemon_pb2.StopJobRequest(job_id=value, force=True),
        "GetJobStatus": daemon_pb2.GetJobStatusRequest(job_id=value * 10000),
        "ListJobs": daemon_pb2.ListJobsRequest(status_filter=[value, "", value * 100]),
    }
    world.last_call = target.call(rpc, requests[rpc])


# -- Then -------------------------------------------------------------------


@then(parsers.parse('the call fails with status {code} and details "{details}"'))
def call_fails(world, code, details):
    _, status = _answer(world)
    assert (status.code, status.details) == (status_code(code), details), f"got {status}"


@then(parsers.parse('the call fails with status {code} and details naming the field "{field}"'))
def call_fails_naming_field(world, code, field):
    _, status = _answer(world)
    assert status.code == status_code(code), f"got {status}"
    assert names_field(status.details, field), f"details {status.details!r} do not name the field {field}"


@then(parsers.re(r'the call fails with status (?P<code>[A-Z_]+) and details '
                 r'(?P<how>mentioning|naming|mentioning each of) "(?P<text>[^"]*)"$'))
def call_fails_mentioning(world, code, how, text):
    _, status = _answer(world)
    assert status.code == status_code(code), f"got {status}"
    parts = [p.strip() for p in text.split(",")] if how == "mentioning each of" else [text]
    missing = [p for p in parts if p not in status.details]
    assert not missing, f"details {status.details!r} do not mention {missing}"


@then(parsers.parse('the call answers status "{status}" and a job id'))
def answers_status(world, status):
    response, call_status = _answer(world)
    assert call_status.code == grpc.StatusCode.OK, f"got {call_status}"
    assert response.status == status and response.job_id


@then(parsers.parse('GetJobStatus of that job answers status "{status}"'))
def get_status_answers(target, world, status):
    response, call_status = target.call("GetJobStatus", daemon_pb2.GetJobStatusRequest(
        job_id=_last_job(world))).result(EVENTUALLY)
    assert call_status.code == grpc.StatusCode.OK, f"got {call_status}"
    assert (response.job_id, response.status) == (_last_job(world), status)


def _list_jobs(target, *statuses):
    response, status = target.call("ListJobs", daemon_pb2.ListJobsRequest(
        status_filter=list(statuses))).result(EVENTUALLY)
    assert status.code == grpc.StatusCode.OK, f"got {status}"
    return list(response.jobs)


def _list(target, *statuses) -> list[str]:
    return [job.job_id for job in _list_jobs(target, *statuses)]


@then("ListJobs lists that job")
def lists_that_job(target, world):
    assert _last_job(world) in _list(target)


@then("the two job ids differ")
def ids_differ(world):
    assert len(world.jobs.started) == 2, f"{len(world.jobs.started)} jobs were started, expected 2"
    assert len(set(world.jobs.started)) == 2, (
        f"both StartJobs answered job {world.jobs.started[0]}: the second must be a new job")


@then(parsers.parse('the second call answers the first job\'s id with status "{status}"'))
def second_call_attached(world, status):
    response, call_status = _answer(world)
    assert call_status.code == grpc.StatusCode.OK, f"got {call_status}"
    first, _ = world.previous_call.result(EVENTUALLY)
    assert (response.job_id, response.status) == (first.job_id, status)


@then(parsers.parse('the call answers success with message "{message}"'))
def answers_success_message(world, message):
    response, status = _answer(world)
    assert status.code == grpc.StatusCode.OK, f"got {status}"
    assert (response.success, response.message) == (True, message)


@then(parsers.re(r"the call answers success with (?P<count>\d+) jobs? stopped"),
      converters={"count": int})
def answers_jobs_stopped(world, count):
    response, status = _answer(world)
    assert status.code == grpc.StatusCode.OK, f"got {status}"
    assert (response.success, response.jobs_stopped) == (True, count)


@when(parsers.parse('the job ends "{status}"'))
@then(parsers.parse('the job ends "{status}"'))
def job_ends(target, world, status):
    # A job of many commands (a folder of N steps) gets time for each on top
    # of the usual deadline: starting a process is slow on a loaded machine.
    _wait_for_status(target, _last_job(world), status,
                     EVENTUALLY + SECONDS_PER_COMMAND * world.marks.get("steps", 0))


def _mark(world, unit: str, task: int, suffix: str) -> Path:
    folder = world.jobs.folder_of[_last_job(world)]
    base = mark(world.jobs.root, folder, unit, task)
    return base.with_name(base.name + suffix)


@then(parsers.parse('the command "{unit}" task {task:d} runs to its end'))
def command_runs_to_its_end(world, unit, task):
    # A graceful stop lets a running command finish: it ends on its own once
    # released, though it may end after the job already reads cancelled.
    ended = _mark(world, unit, task, ".ended")
    pid = int(_mark(world, unit, task, ".pid").read_text())
    # The shell notes its end before it exits: gone without that note, it
    # was killed, and waiting longer cannot change that.
    wait_until(lambda: ended.exists() or not process_alive(pid), EVENTUALLY)
    if ended.exists():
        world.marks[f"ended {unit} {task}"] = time.monotonic()
        return
    state = "still runs" if process_alive(pid) else "was killed: it is gone without having ended"
    raise AssertionError(
        f"task {task} of unit {unit} (pid {pid}) was released ({world.marks.get('released')}) but "
        f"did not run to its end within {EVENTUALLY:g} s: it {state}; a graceful stop must let a "
        f"running command finish")


@then(parsers.parse("the command \"{unit}\" task {task:d} does not start within half a second of task "
                    "{previous:d}'s end"))
def command_does_not_start(world, unit, task, previous):
    # Nothing says when a daemon that ignored the stop would start the next
    # task: a bounded watch from the end of the one before, which such a
    # daemon follows at once.
    started = _mark(world, unit, task, ".started")
    ended_at = world.marks.get(f"ended {unit} {previous}", time.monotonic())
    remaining = max(0.0, ended_at + 0.5 - time.monotonic())
    assert not wait_until(started.exists, remaining), (
        f"task {task} of unit {unit} started after task {previous} ended, although the job had been "
        f"stopped gracefully (no task that had not started may start)")


@then(parsers.parse('the command "{unit}" task {task:d} never started'))
def command_never_started(world, unit, task):
    started = _mark(world, unit, task, ".started")
    assert not started.exists(), f"task {task} of unit {unit} started after the job was stopped"


@then(parsers.parse('the command "{unit}" task {task:d} is no longer running'))
def command_not_running(world, unit, task):
    pid = int(_mark(world, unit, task, ".pid").read_text())
    assert wait_until(lambda: not process_alive(pid), 5 * PROMPTLY), (
        f"task {task} of unit {unit} (pid {pid}) still runs after a forced stop")


def process_alive(pid: int) -> bool:
    """Whether pid is a live process (a zombie has ended)."""
    try:
        return stat_fields(pid)[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:
        return True


def _status_response(target, world):
    response, status = target.call("GetJobStatus", daemon_pb2.GetJobStatusRequest(
        job_id=_last_job(world))).result(EVENTUALLY)
    assert status.code == grpc.StatusCode.OK, f"got {status}"
    return response


@then(parsers.re(r'GetJobStatus of that job has a completed_at and an error'
                 r'( mentioning "(?P<text>[^"]*)")?$'))
def has_completed_at_and_error(target, world, text):
    response = _status_response(target, world)
    assert response.HasField("started_at"), "a finished job has no started_at"
    assert response.HasField("completed_at"), "a finished job has no completed_at"
    assert response.error, "a failed job has no error"
    assert text is None or text in response.error, f"error {response.error!r} does not mention {text!r}"


@then("GetJobStatus of that job has a started_at and no completed_at")
def running_has_no_completed_at(target, world):
    response = _status_response(target, world)
    assert response.HasField("started_at") and not response.HasField("completed_at")
    assert response.status == "running" and response.error == ""


@then(parsers.parse('GetJobStatus of that job lists units "{a}" {a_status} with {a_done:d} of '
                    '{a_total:d} tasks and "{b}" {b_status} with {b_done:d} of {b_total:d} tasks'))
def lists_units_and_statuses(target, world, a, a_status, a_done, a_total, b, b_status, b_done, b_total):
    units = {u.unit_id: (u.status, u.tasks_complete, u.tasks_total)
             for u in _status_response(target, world).units}
    assert units == {a: (a_status, a_done, a_total), b: (b_status, b_done, b_total)}


@then(parsers.parse('GetJobStatus of that job lists units "{a}" with {a_done:d} of {a_total:d} '
                    'tasks and "{b}" with {b_done:d} of {b_total:d} tasks'))
def lists_units(target, world, a, a_done, a_total, b, b_done, b_total):
    units = {u.unit_id: (u.tasks_complete, u.tasks_total)
             for u in _status_response(target, world).units}
    assert units == {a: (a_done, a_total), b: (b_done, b_total)}


def _ours(world, listed: list[str]) -> list[str]:
    """The scenario's own jobs, in the order listed (a shared daemon may hold
    other scenarios' jobs too)."""
    ours = set(world.jobs.ids.values())
    return [job_id for job_id in listed if job_id in ours]


@then("ListJobs lists the running, failed and completed jobs in that order")
def lists_newest_first(target, world):
    ids = world.jobs.ids
    assert _ours(world, _list(target)) == [ids["running"], ids["failed"], ids["completed"]]


@then('ListJobs filtered by "completed" and "failed" lists the failed and completed jobs, '
      'not the running one')
def lists_filtered(target, world):
    ids = world.jobs.ids
    assert _ours(world, _list(target, "completed", "failed")) == [ids["failed"], ids["completed"]]


@then('ListJobs filtered by "cancelled" lists none of them')
def lists_nothing(target, world):
    listed = _list(target, "cancelled")
    assert _ours(world, listed) == []
    assert all(job.status == "cancelled" for job in _list_jobs(target, "cancelled"))


def _health(target):
    response, status = target.call("Health", daemon_pb2.HealthRequest()).result(EVENTUALLY)
    assert status is not None and status.code == grpc.StatusCode.OK, f"Health answered {status}"
    return response


@given(parsers.parse('a pending job "{pending}" and a running job "{running}", set up through the '
                     'control service'))
def pending_and_running(target, pending, running):
    target.create_job(pending, "pending")
    target.create_job(running, "running")


@then(parsers.re(r"Health answers healthy with (?P<count>\d+) active jobs? and a version"),
      converters={"count": int})
def health_active(target, count):
    response = _health(target)
    assert (response.healthy, response.active_jobs) == (True, count), (
        f"Health answered healthy={response.healthy}, active_jobs={response.active_jobs}")
    assert response.version.strip(), "Health answered an empty version"


@then("Health answers not healthy")
def health_not_healthy(target):
    _turns_unhealthy(target)


def _turns_unhealthy(target):
    # Until Shutdown answers, nothing says it has reached the daemon: a
    # Health call sent after it may be served first, so wait for the turn.
    assert wait_until(lambda: not _health(target).healthy, EVENTUALLY, ASKS_THE_DAEMON), (
        f"Health still answers healthy {EVENTUALLY:g} s after Shutdown was called")


@then("Health still answers")
def health_answers(target):
    _health(target)


@then("the call answers OK or fails with one of the contract's codes")
def contract_codes_only(world):
    if world.last_call is None:
        status = world.watch().wait_for_status(EVENTUALLY)
    else:
        _, status = _answer(world)
    assert status is not None, "no answer"
    assert status.code in CONTRACT_CODES, f"answered {status}"


@then("Health answers healthy")
def health_healthy(target):
    assert _health(target).healthy


@then(parsers.parse('GetJobStatus of job "{job_id}" answers "{status}"'))
def get_status_of_named(target, job_id, status):
    response, call_status = target.call("GetJobStatus", daemon_pb2.GetJobStatusRequest(
        job_id=job_id)).result(EVENTUALLY)
    assert call_status is not None and call_status.code == grpc.StatusCode.OK, f"got {call_status}"
    assert response.status == status


@then(parsers.parse('StartJob on "{folder}" answers "{status}"'))
def start_answers(target, world, tmp_path, folder, status):
    response = _start(target, world, tmp_path, folder)
    _, call_status = world.last_call.result(EVENTUALLY)
    assert call_status is not None and call_status.code == grpc.StatusCode.OK, f"got {call_status}"
    assert response.status == status


@when("a client calls every RPC of the service")
def call_every_rpc(target, world):
    job_id = world.jobs.ids["completed"]
    world.every_call = {
        "StartJob": target.call("StartJob", daemon_pb2.StartJobRequest(
            tasks_dir=world.jobs.folders["waiting"], target_branch="main",
            repo_path=str(world.jobs.repo))),
        "StopJob": target.call("StopJob", daemon_pb2.StopJobRequest(job_id=job_id)),
        "GetJobStatus": target.call("GetJobStatus", daemon_pb2.GetJobStatusRequest(job_id=job_id)),
        "ListJobs": target.call("ListJobs", daemon_pb2.ListJobsRequest()),
        "Health": target.call("Health", daemon_pb2.HealthRequest()),
        "Shutdown": target.call("Shutdown", daemon_pb2.ShutdownRequest()),
    }
    world.watches["default"] = target.watch(job_id, 1)


@then(parsers.parse("every one of those calls fails with status {code}"))
def every_call_fails(world, code):
    expected = status_code(code)
    answers = {method: call.result(EVENTUALLY)[1] for method, call in world.every_call.items()}
    answers["WatchJob"] = world.watch().wait_for_status(EVENTUALLY)
    wrong = {method: str(status) for method, status in answers.items()
             if status is None or status.code != expected}
    assert not wrong, f"expected {expected.name} from every call; got {wrong}"


@then(parsers.parse('the command "{unit}" task {task:d} keeps running for half a second'))
def command_keeps_running(world, unit, task):
    # A bounded observation of something that must not happen: the daemon
    # was asked to wait, so the command must not be stopped under it.
    pid = int(_mark(world, unit, task, ".pid").read_text())
    assert not wait_until(lambda: not process_alive(pid), 0.5), (
        f"task {task} of unit {unit} was stopped although Shutdown was asked to wait for jobs")


@then("the daemon process exits and its socket is gone")
def daemon_exits(target):
    process = target.process
    code = process.wait_exit(EVENTUALLY)
    assert code is not None, f"the daemon still runs {EVENTUALLY:g} s after Shutdown answered"
    assert wait_until(lambda: not os.path.exists(process.socket), PROMPTLY), (
        f"the daemon exited (code {code}) but left its socket {process.socket}")


NUL_REQUESTS = {
    "StartJob": lambda jobs, field: daemon_pb2.StartJobRequest(**{
        "tasks_dir": jobs.folders["waiting"], "target_branch": "main", "feature_branch": "",
        "repo_path": str(jobs.repo), field: "with\x00nul"}),
    "StopJob": lambda jobs, field: daemon_pb2.StopJobRequest(job_id="with\x00nul"),
    "GetJobStatus": lambda jobs, field: daemon_pb2.GetJobStatusRequest(job_id="with\x00nul"),
    "ListJobs": lambda jobs, field: daemon_pb2.ListJobsRequest(status_filter=["running\x00"]),
}


@when(parsers.parse("a client sends a {rpc} request whose {field} holds a NUL byte"))
def nul_request(target, world, tmp_path, rpc, field):
    jobs = _jobs(world, tmp_path)
    if rpc == "WatchJob":
        world.watches["default"] = target.watch("with\x00nul", 0)
        world.last_call = None
        return
    world.last_call = target.call(rpc, NUL_REQUESTS[rpc](jobs, field))


@when(parsers.parse('a client starts a job on "{folder}" whose {field} is {megabytes:d} MB long'))
def start_with_huge_field(target, world, tmp_path, folder, field, megabytes):
    jobs = _jobs(world, tmp_path)
    fields = {"target_branch": "main", "feature_branch": "", field: "b" * (megabytes * 1_000_000)}
    world.last_call = target.call("StartJob", daemon_pb2.StartJobRequest(
        tasks_dir=jobs.folders[folder], repo_path=str(jobs.repo), **fields))


@given(parsers.parse('a tasks folder "{name}" whose task file "{path}" has a title of {megabytes:d} MB'))
def tasks_folder_with_huge_title(world, tmp_path, name, path, megabytes):
    jobs = _jobs(world, tmp_path)
    folder = tmp_path / "tasks" / name
    write_tasks_folder(folder, [["unit", "depends_on", "commands"], ["setup", "", "true"]], tmp_path)
    task = folder / path
    text = task.read_text()
    task.write_text(text.replace("# Step 1 of setup", "# " + "T" * (megabytes * 1_000_000)))
    jobs.folders[name] = str(folder)


@then("ListJobs still answers")
def list_jobs_answers(target):
    _list_jobs(target)


# Requests that do not decode: field 1 holding bytes that are not UTF-8 (every
# request named here has a string as field 1), or a length that runs past
# the end of the message.
UNDECODABLE = {
    "a string that is not UTF-8": b"\x0a\x02\xff\xfe",
    "a truncated message": b"\x0a\x05ab",
}
SERVICES = {"DaemonService": "choo.v1.DaemonService",
            "ConformanceControl": "choo.conformance.v1.ConformanceControl"}


@when(parsers.parse("a client sends {service} {rpc} bytes that do not decode: {how}"))
def undecodable_request(target, world, service, rpc, how):
    from .remote import raw_call

    method = f"/{SERVICES[service]}/{rpc}"
    world.raw_status = raw_call(target.address, method, UNDECODABLE[how], streaming=rpc == "WatchJob")


@then("the call fails with status INTERNAL or INVALID_ARGUMENT")
def internal_or_invalid(world):
    status = world.raw_status
    assert status.code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT), (
        f"a request that does not decode was answered {status}")


@then("the call fails with status INVALID_ARGUMENT, or every answer about the job it started stays "
      "within gRPC's limits")
def refused_or_answers_fit(target, world):
    response, status = _answer(world)
    if status.code == grpc.StatusCode.INVALID_ARGUMENT:
        return
    assert status.code == grpc.StatusCode.OK, f"StartJob answered {status}"
    job_id = response.job_id
    assert wait_until(lambda: target.job(job_id).status in TERMINAL, EVENTUALLY, ASKS_THE_DAEMON), (
        f"the job is still {target.job(job_id).status!r}")
    _, about = target.call("GetJobStatus", daemon_pb2.GetJobStatusRequest(job_id=job_id)).result(EVENTUALLY)
    assert about is not None and about.code == grpc.StatusCode.OK, f"GetJobStatus answered {about}"
    watch = target.watch(job_id, 1)
    ended = watch.wait_for_status(EVENTUALLY)
    assert ended is not None and ended.code == grpc.StatusCode.OK, (
        f"a watch of the job from 1 ended {ended} after {len(watch.received())} events")
