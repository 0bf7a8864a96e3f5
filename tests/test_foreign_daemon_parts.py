"""The foreign daemon's own parts that the feature files do not reach: its
tasks folder reader, its ledger, how it schedules a job's units, running
without the control service, and SIGTERM. (Whether it keeps the contract is
tests/test_foreign_daemon.py's question, asked through the suite.)"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import sys
import tempfile
from pathlib import Path

import grpc
import pytest

from choo.conformance.v1 import control_pb2, control_pb2_grpc
from choo.v1 import daemon_pb2, daemon_pb2_grpc
from choo_conformance.process import DaemonProcess
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
