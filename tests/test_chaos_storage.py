"""Chaos: the daemon's files. Links planted in their place, a full disk, the
database deleted under a running daemon, and a job manager that fails
mid-job (docs/OPERATIONS.md)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from chaos_support import (
    CHAOS_DAEMON,
    DEADLINE_S,
    code_of,
    job_status,
    log_of,
    restart,
    start_daemon,
    start_job,
    stubs,
)
from test_daemon_process import gate_command, release, short_dir, wait_until, write_tasks

from choo.conformance.v1 import control_pb2
from choo.v1 import daemon_pb2
from choo_reference.job_store import JobStore
from choo_reference.orchestrator import Orchestrator

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def daemon_argv(folder: Path) -> list[str]:
    return [sys.executable, "-m", "choo_reference.cli", "daemon",
            "--socket", str(folder / "d.sock"), "--db", str(folder / "d.db")]


def test_every_file_of_the_daemon_is_private():
    daemon = start_daemon("--conformance-control")
    try:
        with grpc.insecure_channel(daemon.address) as channel:
            control = stubs(channel)[1]
            job = control.CreateJob(control_pb2.CreateJobRequest(), timeout=DEADLINE_S).job_id
            control.AppendEvents(control_pb2.AppendEventsRequest(
                job_id=job, events=[control_pb2.EventSpec(event_type="e")]), timeout=DEADLINE_S)
            files = [daemon.db, daemon.db + "-wal", daemon.db + "-shm",
                     daemon.db + ".lock", daemon.socket + ".lock", daemon.socket]
            modes = {f: stat.S_IMODE(os.lstat(f).st_mode) for f in files}
        assert modes == {f: 0o600 for f in files}
    finally:
        daemon.close()


@pytest.mark.parametrize("planted", ["d.sock.lock", "d.db.lock", "d.db", "d.db-wal"])
def test_a_link_planted_in_place_of_a_file_is_never_followed(planted):
    with short_dir() as folder:
        victim = folder / "victim.txt"
        victim.write_text("precious\n")
        (folder / planted).symlink_to(victim)
        result = subprocess.run(daemon_argv(folder), capture_output=True, text=True,
                                timeout=DEADLINE_S, stdin=subprocess.DEVNULL, check=False)
        assert result.returncode != 0, result.stderr
        assert victim.read_text() == "precious\n"
        assert os.stat(victim).st_mode & 0o777 == 0o644
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "symbolic link" in lines[0], result.stderr
        assert not (folder / "d.sock").exists()


def fill(control, job: str) -> list[int]:
    """Append events, smaller and smaller, until not even a tiny one fits.
    Returns the sequences the daemon acknowledged."""
    acknowledged: list[int] = []
    for size in (256 * 1024, 16 * 1024, 1024, 64, 1):
        while True:
            request = control_pb2.AppendEventsRequest(job_id=job, events=[
                control_pb2.EventSpec(event_type="fill", payload_json='"' + "x" * size + '"')])
            try:
                acknowledged += control.AppendEvents(request, timeout=DEADLINE_S).sequences
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
                assert "disk is full" in error.details()
                break
    return acknowledged


def test_a_full_disk_fails_the_job_it_stops_and_loses_nothing_acknowledged(tmp_path):
    tasks = write_tasks(tmp_path / "tasks", {"g": ([], [gate_command(tmp_path, "g"), "true"])})
    daemon = start_daemon("--conformance-control", "--db-max-bytes", str(2 << 20),
                          command=CHAOS_DAEMON)
    try:
        with grpc.insecure_channel(daemon.address) as channel:
            stub, control = stubs(channel)
            job_id = start_job(stub, tasks, tmp_path)
            wait_until((tmp_path / "g.started").exists, what="the job's command to start")
            filler = control.CreateJob(control_pb2.CreateJobRequest(), timeout=DEADLINE_S).job_id
            acknowledged = fill(control, filler)
            assert acknowledged

            release(tmp_path, "g")  # the job's next events cannot be written
            wait_until(lambda: job_status(stub, job_id).status != "running",
                       what="the job to end")
            status = job_status(stub, job_id)
            assert status.status == "failed" and "disk is full" in status.error, status
            health = stub.Health(daemon_pb2.HealthRequest(), timeout=DEADLINE_S)
            assert health.active_jobs == 1  # the filler job only
            code, details = code_of(stub.StopJob, daemon_pb2.StopJobRequest(job_id=job_id,
                                                                            force=True))
            assert (code, details) == (grpc.StatusCode.FAILED_PRECONDITION,
                                       "job already stopped: failed")
            # A new job is refused, or (if its row still fits) fails the same way.
            try:
                later = start_job(stub, tasks, tmp_path)
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
                assert "disk is full" in error.details()
            else:
                wait_until(lambda: job_status(stub, later).status != "running",
                           what="the later job to end")
                assert "disk is full" in job_status(stub, later).error
        assert "Traceback" not in log_of(daemon)

        daemon.stop()
        restart(daemon)
        with grpc.insecure_channel(daemon.address) as channel:
            stub = stubs(channel)[0]
            status = job_status(stub, job_id)
            assert status.status == "failed" and "disk is full" in status.error
            replay = list(stub.WatchJob(daemon_pb2.WatchJobRequest(job_id=filler, from_sequence=1),
                                        timeout=DEADLINE_S))
        assert [e.sequence for e in replay] == acknowledged
    finally:
        daemon.close()


def test_a_deleted_database_stops_the_daemon_acknowledging_writes():
    daemon = start_daemon("--conformance-control")
    try:
        with grpc.insecure_channel(daemon.address) as channel:
            control = stubs(channel)[1]
            job = control.CreateJob(control_pb2.CreateJobRequest(), timeout=DEADLINE_S).job_id
            os.unlink(daemon.db)
            append = control_pb2.AppendEventsRequest(
                job_id=job, events=[control_pb2.EventSpec(event_type="e")])
            for _ in range(2):
                code, details = code_of(control.AppendEvents, append)
                assert code == grpc.StatusCode.UNAVAILABLE, (code, details)
                assert daemon.db in details and "deleted" in details, details
            code, details = code_of(control.CreateJob, control_pb2.CreateJobRequest())
            assert code == grpc.StatusCode.UNAVAILABLE and "deleted" in details
        assert "deleted" in log_of(daemon)
    finally:
        daemon.close()


def test_a_job_end_the_disk_cannot_take_is_kept_and_written_later(tmp_path, monkeypatch):
    from choo_reference.jobs import StorageError

    with JobStore(tmp_path / "d.db") as store:
        store.create_job("j")
        real_end_job = store._log.end_job

        def full(job, units):
            raise StorageError("the disk is full", full=True)

        monkeypatch.setattr(store._log, "end_job", full)
        with pytest.raises(StorageError):
            store.set_status("j", "failed", "boom")  # by default nothing unsaved is kept
        assert store.get_job("j").status == "running"
        store.set_status("j", "failed", "disk is full", keep_if_unsaved=True)
        assert store.get_job("j").status == "failed"  # at once, in memory
        monkeypatch.setattr(store._log, "end_job", real_end_job)
        store.create_job("next")  # the next write that succeeds writes it first
    with JobStore(tmp_path / "d.db") as store:
        job = store.get_job("j")
        assert (job.status, job.error) == ("failed", "disk is full")


class _FailingStore(JobStore):
    """Recording one event type fails as a bug or a broken disk would."""

    fail_on = "unit.started"

    def record_many(self, job_id, specs):
        if any(spec[0] == self.fail_on for spec in specs):
            raise RuntimeError("the store broke")
        return super().record_many(job_id, specs)


def test_units_end_consistent_with_a_job_that_failed_mid_way(tmp_path):
    tasks = write_tasks(tmp_path / "tasks", {"a": ([], ["true"]), "b": (["a"], ["true"])})
    with _FailingStore(tmp_path / "d.db") as store:
        orchestrator = Orchestrator(store)
        job_id, _ = orchestrator.start_job(tasks_dir=str(tasks), target_branch="main",
                                           feature_branch="", parallelism=1,
                                           repo_path=str(tmp_path))
        wait_until(lambda: store.get_job(job_id).status != "running", what="the job to end")
        job = store.get_job(job_id)
        assert job.status == "failed" and "the store broke" in job.error
        assert {u.unit_id: u.status for u in job.units} == {"a": "failed", "b": "cancelled"}


def test_a_replay_the_disk_cannot_read_is_unavailable_and_the_next_one_reads(tmp_path):
    switch = tmp_path / "eio"
    daemon = start_daemon("--conformance-control", "--fail-reads-while", str(switch),
                          command=CHAOS_DAEMON)
    try:
        with grpc.insecure_channel(daemon.address) as channel:
            stub, control = stubs(channel)
            job = control.CreateJob(control_pb2.CreateJobRequest(), timeout=DEADLINE_S).job_id
            control.AppendEvents(control_pb2.AppendEventsRequest(
                job_id=job, events=[control_pb2.EventSpec(event_type="e")] * 3),
                timeout=DEADLINE_S)
            # An ended job with nobody watching keeps no events in memory:
            # its replay reads the database.
            control.FinishJob(control_pb2.FinishJobRequest(job_id=job, status="completed"),
                              timeout=DEADLINE_S)
            replay = daemon_pb2.WatchJobRequest(job_id=job, from_sequence=1)
            switch.touch()
            code, details = code_of(lambda r, **kw: list(stub.WatchJob(r, **kw)), replay)
            assert code == grpc.StatusCode.UNAVAILABLE, (code, details)
            assert "disk I/O error" in details and daemon.db in details, details
            switch.unlink()
            events = list(stub.WatchJob(replay, timeout=DEADLINE_S))
            assert [e.sequence for e in events] == [1, 2, 3]
        assert "Traceback" not in log_of(daemon), log_of(daemon)[-3000:]
    finally:
        daemon.close()


@pytest.mark.parametrize("content", [b"x", b"my notes, not a database\n" * 40],
                         ids=["1 byte", "a text file"])
def test_a_db_that_is_not_a_database_is_refused_untouched(content):
    with short_dir() as folder:
        db = folder / "d.db"
        db.write_bytes(content)
        os.chmod(db, 0o644)
        before = os.stat(db)
        result = subprocess.run(daemon_argv(folder), capture_output=True, text=True,
                                timeout=DEADLINE_S, stdin=subprocess.DEVNULL, check=False)
        assert result.returncode == 1, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and str(db) in lines[0] and "not a" in lines[0], result.stderr
        after = os.stat(db)
        assert db.read_bytes() == content
        assert (after.st_mode, after.st_mtime_ns) == (before.st_mode, before.st_mtime_ns)
        assert sorted(p.name for p in folder.iterdir()) == ["d.db"]
