"""The foreign daemon's own parts that the feature files do not reach: its
tasks folder reader, its ledger, how it schedules a job's units, running
without the control service, and SIGTERM. (Whether it keeps the contract is
tests/test_foreign_daemon.py's question, asked through the suite.)"""

from __future__ import annotations

import asyncio
import collections
import errno
import json
import os
import random
import signal
import sys
import tempfile
from pathlib import Path

import grpc
import pytest

from choo.conformance.v1 import control_pb2, control_pb2_grpc
from choo.v1 import daemon_pb2, daemon_pb2_grpc
from choo_conformance.process import DaemonProcess
from tests.foreign_daemon import service
from tests.foreign_daemon.awkward import COLLECT_AT_MB, Awkward, Ballast
from tests.foreign_daemon.ledger import Ledger, LedgerError
from tests.foreign_daemon.model import Job, Refusal
from tests.foreign_daemon.plan import PlanError, front_matter, read_plan
from tests.foreign_daemon.service import Daemon as ForeignDaemon
from tests.foreign_daemon.state import State

SERVER = Path(__file__).resolve().parent / "foreign_daemon" / "server.py"
DEADLINE_S = 20


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def unit(root: Path, folder: str, plan: str, steps: dict[str, str]) -> None:
    write(root / folder / "IMPLEMENTATION_PLAN.md", f"---\n{plan}\n---\n\n# {folder}\n")
    for name, fields in steps.items():
        write(root / folder / name, f"---\n{fields}\n---\n\n# {name}\n")


# -- the tasks folder reader --------------------------------------------------------


def test_front_matter_reads_the_yaml_these_files_use():
    fields = front_matter(
        "---\n"
        "task: 2   # a comment\n"
        'backpressure: "touch \\"/tmp/a b\\"; echo \\\\n done"\n'
        "title: 'it''s'\n"
        "depends_on: [1, 3]\n"
        "needs:\n  - alpha\n  - \"beta\"\n"
        "empty: []\n"
        "---\n# body\n")
    assert fields == {"task": 2, "backpressure": 'touch "/tmp/a b"; echo \\n done',
                      "title": "it's", "depends_on": [1, 3], "needs": ["alpha", "beta"],
                      "empty": []}


@pytest.mark.parametrize("text, why", [
    ("task: 1\n", "does not start with a --- line"),
    ("---\ntask: 1\n", "no closing --- line"),
    ('---\nbackpressure: "unterminated\n---\n', "no closing \""),
    ('---\nbackpressure: "\\q"\n---\n', "unknown escape"),
    ("---\ndepends_on: [1, 2\n---\n", "no closing ]"),
    ("---\ntask: 1\ntask: 2\n---\n", "task is given twice"),
    ("---\njust words\n---\n", "expected `key: value`"),
])
def test_front_matter_says_what_it_cannot_read(text, why):
    with pytest.raises(ValueError, match=why):
        front_matter(text)


def test_units_come_in_dependency_order_and_steps_in_theirs(tmp_path):
    unit(tmp_path, "b-build", "unit: build\ndepends_on: [setup]",
         {"01-compile.md": 'task: 1\nbackpressure: "true"',
          "02-test.md": 'task: 2\nbackpressure: "true"\ndepends_on: [3]',
          "03-prepare.md": 'task: 3\nbackpressure: "true"'})
    unit(tmp_path, "a-setup", "unit: setup", {"01-go.md": 'task: 1\nbackpressure: "true"'})
    write(tmp_path / "README.md", "not a unit\n")
    write(tmp_path / "notes" / "ideas.md", "not a unit either\n")

    units = read_plan(str(tmp_path))
    assert [u.unit_id for u in units] == ["setup", "build"]
    assert [s.number for s in units[1].steps] == [1, 3, 2]
    assert units[1].steps[0].title == "01-compile.md"


@pytest.mark.parametrize("folder, why", [
    ({"u/IMPLEMENTATION_PLAN.md": "---\nunit: u\n---\n", "u/01-a.md": "---\ntask: 1\n---\n"},
     r"u/01-a\.md: it has no backpressure command"),
    ({"u/IMPLEMENTATION_PLAN.md": "---\nunit: u\ndepends_on: [ghost]\n---\n",
      "u/01-a.md": '---\ntask: 1\nbackpressure: "true"\n---\n'},
     r"depends on unit 'ghost'"),
    ({"u/01-a.md": '---\ntask: 1\nbackpressure: "true"\n---\n'},
     r"u: it has task files but no IMPLEMENTATION_PLAN\.md"),
    ({"u/IMPLEMENTATION_PLAN.md": "---\nunit: u\n---\n",
      "u/01-a.md": '---\ntask: 1\nbackpressure: "true"\ndepends_on: [2]\n---\n',
      "u/02-b.md": '---\ntask: 2\nbackpressure: "true"\ndepends_on: [1]\n---\n'},
     r"the tasks depend on each other in a cycle: 1, 2"),
    ({"README.md": "nothing here\n"}, r"no unit folders"),
])
def test_a_folder_it_cannot_use_is_refused_naming_the_file(tmp_path, folder, why):
    for path, text in folder.items():
        write(tmp_path / path, text)
    with pytest.raises(PlanError, match=why):
        read_plan(str(tmp_path))


def test_a_fifo_in_place_of_a_task_file_is_refused_without_blocking(tmp_path):
    unit(tmp_path, "u", "unit: u", {})
    os.mkfifo(tmp_path / "u" / "01-a.md")
    with pytest.raises(PlanError, match=r"01-a\.md: not a regular file"):
        read_plan(str(tmp_path))


# -- the ledger ----------------------------------------------------------------------


def _ledger_with_a_job(path: Path) -> None:
    ledger = Ledger(str(path))
    job = Job(job_id="j", status="running", order=1, created_ns=1)
    ledger.job_created(job)
    ledger.events_recorded("j", 1, [("a", "u", '{"n": 1}', 10), ("b", "", "{}", 20)])
    ledger.close()


def test_the_ledger_drops_a_record_cut_short_at_its_end(tmp_path):
    path = tmp_path / "ledger.jsonl"
    _ledger_with_a_job(path)
    whole = path.read_bytes()
    with open(path, "ab") as file:
        file.write(b'{"rec":"events","id":"j","first":3,"items":[["c"')

    ledger = Ledger(str(path))
    (job,) = ledger.load()
    assert len(job.log) == 2 and job.status == "running"
    assert path.read_bytes() == whole  # cut off, so the next record starts clean
    ledger.close()


def test_the_ledger_refuses_a_damaged_record_in_its_middle(tmp_path):
    path = tmp_path / "ledger.jsonl"
    _ledger_with_a_job(path)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"garbage\n" + b"".join(lines))
    ledger = Ledger(str(path))
    with pytest.raises(LedgerError, match="unreadable record at byte 0"):
        ledger.load()
    ledger.close()


def test_one_ledger_serves_one_daemon(tmp_path):
    first = Ledger(str(tmp_path / "ledger.jsonl"))
    with pytest.raises(LedgerError, match="another daemon is using"):
        Ledger(str(tmp_path / "ledger.jsonl"))
    first.close()
    Ledger(str(tmp_path / "ledger.jsonl")).close()


def test_the_ledger_is_a_regular_file_or_nothing():
    with pytest.raises(LedgerError, match="/dev/null is not a regular file"):
        Ledger("/dev/null")


def test_a_job_the_ledger_cannot_record_is_refused_unavailable(tmp_path, monkeypatch):
    ledger = Ledger(str(tmp_path / "ledger.jsonl"))

    def disk_full(*records):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ledger, "_write", disk_full)
    daemon = ForeignDaemon(State(ledger), bugs=set())
    request = daemon_pb2.StartJobRequest(tasks_dir=str(tmp_path), target_branch="main",
                                         repo_path=str(tmp_path))
    with pytest.raises(Refusal) as refused:
        asyncio.run(daemon.StartJob(request, context=None))
    assert refused.value.code == grpc.StatusCode.UNAVAILABLE
    assert refused.value.details == "cannot record the job: No space left on device"
    assert daemon.state.jobs == {}
    ledger.close()


# -- the daemon process --------------------------------------------------------------


class Daemon:
    """The foreign daemon in `folder`, started by the project's one
    daemon-process class, with a channel to it."""

    def __init__(self, folder: Path, *flags: str) -> None:
        self.socket = folder / "d.sock"
        self.process = DaemonProcess(
            [sys.executable, str(SERVER), "--socket", "{socket}", "--db", "{db}", *flags],
            socket=str(self.socket), db=str(folder / "d.db"), folder=str(folder)).start()
        self.proc = self.process.proc
        self.channel = grpc.insecure_channel(self.process.address)
        self.stub = daemon_pb2_grpc.DaemonServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()
        self.process.kill()


@pytest.fixture
def folder():
    # Short: a Unix socket's path must fit in 108 bytes.
    with tempfile.TemporaryDirectory(prefix="fd-", dir="/tmp") as name:
        yield Path(name)


@pytest.mark.slow
def test_without_control_only_the_daemon_service_is_served_and_sigterm_ends_it(folder):
    daemon = Daemon(folder, "--no-control")
    try:
        control = control_pb2_grpc.ConformanceControlStub(daemon.channel)
        with pytest.raises(grpc.RpcError) as refused:
            control.CreateJob(control_pb2.CreateJobRequest(status="running"), timeout=DEADLINE_S)
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert daemon.stub.Health(daemon_pb2.HealthRequest(), timeout=DEADLINE_S).healthy

        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(DEADLINE_S) == 0
        assert not daemon.socket.exists()
    finally:
        daemon.close()


@pytest.mark.slow
def test_a_job_runs_its_units_in_order_one_at_a_time_and_skips_what_a_failure_blocks(folder):
    tasks = folder / "tasks"
    unit(tasks, "first", "unit: first", {"01-a.md": 'task: 1\nbackpressure: "echo oops; exit 3"'})
    unit(tasks, "second", "unit: second\ndepends_on: [first]",
         {"01-a.md": 'task: 1\nbackpressure: "true"'})
    unit(tasks, "third", "unit: third",
         {"01-a.md": 'task: 1\nbackpressure: "pwd > where"',
          "02-b.md": 'task: 2\nbackpressure: "true"\ndepends_on: [1]'})
    repo = folder / "repo"
    repo.mkdir()
    daemon = Daemon(folder)
    try:
        job_id = daemon.stub.StartJob(daemon_pb2.StartJobRequest(
            tasks_dir=str(tasks), target_branch="main", repo_path=str(repo), parallelism=1),
            timeout=DEADLINE_S).job_id
        # From 1: the job may end before the watch reaches the daemon, and
        # a job watched from 0 after its end rightly gives nothing (W8).
        events = list(daemon.stub.WatchJob(
            daemon_pb2.WatchJobRequest(job_id=job_id, from_sequence=1), timeout=DEADLINE_S))
        status = daemon.stub.GetJobStatus(daemon_pb2.GetJobStatusRequest(job_id=job_id),
                                          timeout=DEADLINE_S)
    finally:
        daemon.close()

    assert status.status == "failed"
    assert status.error == "unit first failed at step 1 (01-a.md): exit status 3"
    assert [(u.unit_id, u.status, u.tasks_complete, u.tasks_total) for u in status.units] == [
        ("first", "failed", 0, 1), ("second", "skipped", 0, 1), ("third", "passed", 2, 2)]
    assert (repo / "where").read_text().strip() == str(repo)

    # parallelism 1: each unit ends before the next begins.
    units = [(e.event_type, e.unit_id) for e in events if e.event_type.startswith("unit/")]
    assert units == [("unit/begin", "first"), ("unit/end", "first"), ("unit/skip", "second"),
                     ("unit/begin", "third"), ("unit/end", "third")]
    failed = next(json.loads(e.payload_json) for e in events if e.event_type == "step/fail")
    assert (failed["step"], failed["exit"], failed["tail"]) == (1, 3, "oops\n")
    assert [e.event_type for e in events][-1] == "job/end"


@pytest.mark.slow
def test_a_shutdown_whose_caller_gives_up_still_waits_for_the_jobs(folder):
    """Once Shutdown(wait_for_jobs) has begun, the daemon sees it through:
    the caller going away must not make it exit with a job still running."""
    tasks = folder / "tasks"
    release = folder / "release"
    # Bounded (a minute at most), so that a failing run leaves nothing behind for long.
    command = f"i=0; while [ ! -e {release} ] && [ $i -lt 6000 ]; do sleep 0.01; i=$((i+1)); done"
    unit(tasks, "u", "unit: u", {"01-a.md": f'task: 1\nbackpressure: "{command}"'})
    daemon = Daemon(folder)
    try:
        job_id = daemon.stub.StartJob(daemon_pb2.StartJobRequest(
            tasks_dir=str(tasks), target_branch="main", repo_path=str(folder)),
            timeout=DEADLINE_S).job_id
        waiting = daemon.stub.Shutdown.future(
            daemon_pb2.ShutdownRequest(wait_for_jobs=True, timeout_seconds=60), timeout=DEADLINE_S)
        health = daemon.stub.Health(daemon_pb2.HealthRequest(), timeout=DEADLINE_S)
        while health.healthy:  # each Health call is an answer, not a sleep
            health = daemon.stub.Health(daemon_pb2.HealthRequest(), timeout=DEADLINE_S)
        waiting.cancel()

        # Still there, still waiting for the job.
        health = daemon.stub.Health(daemon_pb2.HealthRequest(), timeout=DEADLINE_S)
        assert (health.healthy, health.active_jobs) == (False, 1)
        release.touch()
        assert daemon.proc.wait(DEADLINE_S) == 0
    finally:
        daemon.close()
    restarted = Daemon(folder)
    try:
        status = restarted.stub.GetJobStatus(daemon_pb2.GetJobStatusRequest(job_id=job_id),
                                             timeout=DEADLINE_S)
        assert status.status == "completed"
    finally:
        restarted.close()


@pytest.mark.slow
def test_after_shutdown_answers_every_call_is_unavailable_until_it_exits(folder):
    daemon = Daemon(folder)
    try:
        answer = daemon.stub.Shutdown(daemon_pb2.ShutdownRequest(), timeout=DEADLINE_S)
        assert (answer.success, answer.jobs_stopped) == (True, 0)
        with pytest.raises(grpc.RpcError) as refused:
            daemon.stub.Health(daemon_pb2.HealthRequest(), timeout=DEADLINE_S)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert daemon.proc.wait(DEADLINE_S) == 0
        assert not daemon.socket.exists()
    finally:
        daemon.close()


# -- awkward in time (--awkward) -------------------------------------------------------
# Each switch is driven in process, with a gate in place of its delays, so
# that a test sees the daemon parked at the moment the switch moves, and a
# switch that does nothing fails here rather than pass the suite unnoticed.


class Gate:
    """Stands in for Awkward.wait: every delay waits until the test opens
    the gate, and the test can see which switch is waiting."""

    def __init__(self) -> None:
        self.waiting: collections.Counter[str] = collections.Counter()
        self._open = asyncio.Event()

    async def wait(self, switch: str, seconds: float) -> None:
        self.waiting[switch] += 1
        try:
            await self._open.wait()
        finally:
            self.waiting[switch] -= 1

    def open(self) -> None:
        self._open.set()


class Context:
    """What the handlers use of a gRPC call's context."""

    def add_done_callback(self, callback) -> None:
        pass


async def until(condition, deadline_s: float = DEADLINE_S) -> bool:
    """Whether condition() came true within deadline_s, looking every few ms."""
    deadline = asyncio.get_running_loop().time() + deadline_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


def awkward_daemon(folder: Path, *switches: str) -> tuple[ForeignDaemon, Gate]:
    """A daemon in process (call from a coroutine) with these switches, and
    the gate its delays wait at."""
    state = State(Ledger(str(folder / "ledger.jsonl")))
    state.awkward = Awkward(set(switches), seed=7)
    gate = Gate()
    state.awkward.wait = gate.wait
    return ForeignDaemon(state, bugs=set()), gate


def waiting_job_folder(folder: Path) -> tuple[Path, Path]:
    """A tasks folder whose one command says it started, waits for a release
    file, says it ended; and the folder of those three files."""
    marks = folder / "marks"
    marks.mkdir()
    command = (f"touch {marks}/started; i=0; while [ ! -e {marks}/release ] && [ $i -lt 3000 ]; "
               f"do sleep 0.01; i=$((i+1)); done; touch {marks}/ended")
    unit(folder / "tasks", "u", "unit: u", {"01-a.md": f'task: 1\nbackpressure: "{command}"',
                                            "02-b.md": 'task: 2\nbackpressure: "true"\ndepends_on: [1]'})
    return folder / "tasks", marks


async def start(daemon: ForeignDaemon, tasks: Path, repo: Path) -> str:
    answer = await daemon.StartJob(daemon_pb2.StartJobRequest(
        tasks_dir=str(tasks), target_branch="main", repo_path=str(repo)), None)
    return answer.job_id


def event_types(daemon: ForeignDaemon, job_id: str) -> list[str]:
    return [daemon_pb2.JobEvent.FromString(data).event_type for data in daemon.state.jobs[job_id].log]


@pytest.mark.parametrize("switch", ["stop-waits", None])
def test_stop_waits_answers_a_graceful_stop_once_the_command_has_ended(tmp_path, switch):
    async def scenario():
        daemon, _ = awkward_daemon(tmp_path, *[switch] if switch else [])
        tasks, marks = waiting_job_folder(tmp_path)
        job_id = await start(daemon, tasks, tmp_path)
        assert await until((marks / "started").exists)
        stopping = asyncio.create_task(daemon.StopJob(daemon_pb2.StopJobRequest(job_id=job_id), None))
        assert await until(lambda: daemon.runs[job_id].stopping)  # the stop has reached the job
        before_release = (stopping.done(), daemon.state.jobs[job_id].status)
        (marks / "release").touch()
        answer = await asyncio.wait_for(stopping, DEADLINE_S)
        at_answer = ((marks / "ended").exists(), daemon.state.jobs[job_id].status)
        await asyncio.wait_for(daemon.runs[job_id].task, DEADLINE_S)
        daemon.state.ledger.close()
        return answer, before_release, at_answer

    answer, before_release, at_answer = asyncio.run(scenario())
    assert (answer.success, answer.message) == (True, "job stopped gracefully")
    if switch:
        assert before_release == (False, "running")
        assert at_answer == (True, "cancelled")
    else:
        assert before_release == (True, "running")


@pytest.mark.parametrize("switch", ["cancel-early", None])
def test_cancel_early_ends_the_job_at_once_and_the_command_finishes_after(tmp_path, switch):
    async def scenario():
        daemon, _ = awkward_daemon(tmp_path, *[switch] if switch else [])
        tasks, marks = waiting_job_folder(tmp_path)
        job_id = await start(daemon, tasks, tmp_path)
        assert await until((marks / "started").exists)
        await daemon.StopJob(daemon_pb2.StopJobRequest(job_id=job_id), None)
        at_answer = (daemon.state.jobs[job_id].status, event_types(daemon, job_id))
        (marks / "release").touch()
        await asyncio.wait_for(daemon.runs[job_id].task, DEADLINE_S)
        daemon.state.ledger.close()
        return at_answer, (daemon.state.jobs[job_id].status, event_types(daemon, job_id))

    (status_then, events_then), (status, events) = asyncio.run(scenario())
    assert status == "cancelled" and events[-1] == "job/end"
    assert (tmp_path / "marks" / "ended").exists()
    if switch:
        assert status_then == "cancelled" and events_then[-1] == "job/end"
        assert events == events_then  # the command's end recorded nothing: the job was over
    else:
        assert status_then == "running" and "job/end" not in events_then


def test_late_status_turns_a_job_terminal_after_its_last_event(tmp_path):
    async def scenario():
        daemon, gate = awkward_daemon(tmp_path, "late-status")
        unit(tmp_path / "tasks", "u", "unit: u", {"01-a.md": 'task: 1\nbackpressure: "true"'})
        job_id = await start(daemon, tmp_path / "tasks", tmp_path)
        job = daemon.state.jobs[job_id]
        # A watcher of the job, from 1, following it to its end.
        sent: list[bytes] = []

        class Stream(Context):
            async def write(self, data: bytes) -> None:
                sent.append(data)

        watching = asyncio.create_task(daemon.WatchJob(
            daemon_pb2.WatchJobRequest(job_id=job_id, from_sequence=1), Stream()))
        assert await until(lambda: gate.waiting["late-status"])
        parked = (job.status, event_types(daemon, job_id)[-1], len(sent) == len(job.log),
                  watching.done())
        gate.open()
        await asyncio.wait_for(watching, DEADLINE_S)
        daemon.state.ledger.close()
        return parked, job.status

    parked, status = asyncio.run(scenario())
    # Its last event recorded and sent, the job still running, its watch open.
    assert parked == ("running", "job/end", True, False)
    assert status == "completed"


def test_late_unhealthy_begins_an_accepted_shutdown_a_little_later(tmp_path):
    async def scenario():
        daemon, gate = awkward_daemon(tmp_path, "late-unhealthy")
        shutting_down = asyncio.create_task(daemon.shut_down(False, 30))
        assert await until(lambda: gate.waiting["late-unhealthy"])
        health = await daemon.Health(daemon_pb2.HealthRequest(), None)
        with pytest.raises(Refusal) as second:
            await daemon.Shutdown(daemon_pb2.ShutdownRequest(), Context())
        gate.open()
        await asyncio.wait_for(shutting_down, DEADLINE_S)
        after = await daemon.Health(daemon_pb2.HealthRequest(), None)
        daemon.state.ledger.close()
        return health.healthy, second.value.code, after.healthy

    # Healthy until the shutdown begins; a second Shutdown is refused meanwhile.
    assert asyncio.run(scenario()) == (True, grpc.StatusCode.FAILED_PRECONDITION, False)


def test_late_shutdown_answers_after_the_shutdown_is_over(tmp_path):
    async def scenario():
        daemon, gate = awkward_daemon(tmp_path, "late-shutdown")
        answering = asyncio.create_task(daemon.Shutdown(daemon_pb2.ShutdownRequest(), Context()))
        assert await until(lambda: gate.waiting["late-shutdown"])
        over = (daemon.state.shutting_down, answering.done())
        gate.open()
        answer = await asyncio.wait_for(answering, DEADLINE_S)
        daemon.state.ledger.close()
        return over, answer.success

    assert asyncio.run(scenario()) == ((True, False), True)


def test_jitter_holds_back_an_answer(tmp_path):
    async def scenario():
        daemon, gate = awkward_daemon(tmp_path, "jitter")
        answering = asyncio.create_task(service._guarded(
            daemon.state, "Health", daemon.Health, daemon_pb2.HealthRequest(), Context()))
        assert await until(lambda: gate.waiting["jitter"])
        held = answering.done()
        gate.open()
        answer = await asyncio.wait_for(answering, DEADLINE_S)
        daemon.state.ledger.close()
        return held, answer.healthy

    assert asyncio.run(scenario()) == (False, True)


def test_bursty_records_an_append_in_bursts_before_it_answers(tmp_path):
    async def scenario():
        daemon, gate = awkward_daemon(tmp_path, "bursty")
        job_id = (await daemon.CreateJob(control_pb2.CreateJobRequest(status="running"), None)).job_id
        appending = asyncio.create_task(daemon.AppendEvents(control_pb2.AppendEventsRequest(
            job_id=job_id, events=[control_pb2.EventSpec(event_type=f"e{i}") for i in range(40)]),
            None))
        assert await until(lambda: gate.waiting["bursty"])
        between_bursts = (len(daemon.state.jobs[job_id].log), appending.done())
        gate.open()
        answer = await asyncio.wait_for(appending, DEADLINE_S)
        daemon.state.ledger.close()
        return between_bursts, list(answer.sequences), event_types(daemon, job_id)

    (recorded, answered), sequences, types = asyncio.run(scenario())
    assert 0 < recorded < 40 and not answered
    assert sequences == list(range(1, 41)) and types == [f"e{i}" for i in range(40)]


def test_bursty_holds_a_jobs_own_events_and_records_them_before_it_ends(tmp_path):
    async def scenario():
        daemon, gate = awkward_daemon(tmp_path, "bursty")
        unit(tmp_path / "tasks", "u", "unit: u", {"01-a.md": 'task: 1\nbackpressure: "true"'})
        job_id = await start(daemon, tmp_path / "tasks", tmp_path)
        assert await until(lambda: gate.waiting["bursty"])
        held = len(daemon.state.jobs[job_id].log)
        gate.open()
        await asyncio.wait_for(daemon.runs[job_id].task, DEADLINE_S)
        daemon.state.ledger.close()
        return held, daemon.state.jobs[job_id].status, event_types(daemon, job_id)

    held, status, types = asyncio.run(scenario())
    assert held == 0  # job/begin waits in the buffer
    assert status == "completed" and types[0] == "job/begin" and types[-1] == "job/end"


def _resident_kb() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def test_gc_memory_grows_resident_memory_and_hands_it_back():
    ballast = Ballast(random.Random(7))
    before = _resident_kb()
    ballast.grow(ballast.collect_at - 1)
    grown = _resident_kb() - before
    ballast.grow(1)  # the collection
    assert ballast.collections == 1 and ballast.size == 0
    handed_back = before + grown - _resident_kb()
    # At least half of the smallest collection's worth, both ways.
    assert grown > COLLECT_AT_MB[0] * 512 and handed_back > COLLECT_AT_MB[0] * 512, (grown, handed_back)


def test_every_awkward_switch_is_tested_here():
    tested = {"stop-waits", "cancel-early", "late-status", "late-unhealthy", "late-shutdown",
              "jitter", "bursty", "gc-memory"}
    assert set(Awkward({"all"}).switches) == tested

