"""Chaos: calls whose client gave up while they were served. No job is
created for a StartJob whose deadline has passed, so a client that retries
never gets two (row 13 of the hardening issue); a watch whose deadline
passes while its events wait to be sent ends without an error in the log."""

from __future__ import annotations

import threading
import time

import grpc
import grpc_testing
import pytest
from chaos_support import DEADLINE_S, log_of, start_daemon, stubs
from test_daemon_process import wait_until, write_tasks

from choo.conformance.v1 import control_pb2
from choo.v1 import daemon_pb2, daemon_pb2_grpc
from choo_reference.job_store import JobStore
from choo_reference.orchestrator import Orchestrator
from choo_reference.servicer import DaemonServicer

SERVICE = daemon_pb2.DESCRIPTOR.services_by_name["DaemonService"]


class _SlowStore(JobStore):
    """Holds the first look-up of a feature branch until the test lets it go,
    as a busy daemon holds a call."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.entered = threading.Event()
        self.go = threading.Event()

    def find_active(self, repo_path, feature_branch):
        self.entered.set()
        self.go.wait(20)
        return super().find_active(repo_path, feature_branch)


class _Probe(DaemonServicer):
    """Says when StartJob's handler has returned (grpc_testing may end the
    call at its deadline before the handler does)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.returned = threading.Event()

    def StartJob(self, request, context):
        try:
            return super().StartJob(request, context)
        finally:
            self.returned.set()


def _start_job(store, clock, request: daemon_pb2.StartJobRequest):
    """StartJob with a 1 s deadline on the fake clock, through a servicer that
    says when its handler has returned: (orchestrator, servicer, the call)."""
    orchestrator = Orchestrator(store)
    servicer = _Probe(orchestrator)
    server = grpc_testing.server_from_dictionary({SERVICE: servicer}, clock)
    rpc = server.invoke_unary_unary(SERVICE.methods_by_name["StartJob"], (), request, 1.0)
    return orchestrator, servicer, rpc


def test_no_job_is_created_for_a_call_whose_deadline_passed(tmp_path):
    tasks = write_tasks(tmp_path / "tasks", {"a": ([], ["true"])})
    clock = grpc_testing.strict_fake_time(time.time())
    with _SlowStore(tmp_path / "d.db") as store:
        orchestrator, servicer, rpc = _start_job(store, clock, daemon_pb2.StartJobRequest(
            tasks_dir=str(tasks), target_branch="main", feature_branch="feat", repo_path=str(tmp_path)))
        assert store.entered.wait(20)
        clock.sleep_for(2.0)  # the client's deadline passes while the call waits
        store.go.set()
        try:
            assert servicer.returned.wait(20)
            _, _, code, _ = rpc.termination()
            assert code != grpc.StatusCode.OK
            assert store.list_jobs() == []
        finally:
            orchestrator.shutdown(False, 0)


def test_a_watch_whose_deadline_passes_mid_send_ends_without_an_error(tmp_path):
    # More than HTTP/2 flow control lets the daemon send to a client that does
    # not read: the daemon is waiting to write when the deadline passes.
    payload = '"' + "p" * 4000 + '"'
    daemon = start_daemon("--conformance-control")
    try:
        with grpc.insecure_channel(daemon.address) as channel:
            service, control = stubs(channel)
            job_id = control.CreateJob(control_pb2.CreateJobRequest(job_id="backlog",
                                                                    status="running"),
                                       timeout=DEADLINE_S).job_id
            for _ in range(10):
                control.AppendEvents(control_pb2.AppendEventsRequest(
                    job_id=job_id, events=[control_pb2.EventSpec(event_type="x",
                                                                 payload_json=payload)] * 500),
                    timeout=DEADLINE_S)
            with grpc.insecure_channel(daemon.address) as watcher:
                watch = daemon_pb2_grpc.DaemonServiceStub(watcher).WatchJob(
                    daemon_pb2.WatchJobRequest(job_id=job_id), timeout=1.0)
                next(watch)
                assert watch.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # waits for the end

            def released() -> bool:
                subscriptions = control.ListSubscriptions(
                    control_pb2.ListSubscriptionsRequest(job_id=job_id), timeout=DEADLINE_S)
                return not any(s.open for s in subscriptions.subscriptions)

            wait_until(released, DEADLINE_S, what="the watch's subscription to be released")
            service.Shutdown(daemon_pb2.ShutdownRequest(wait_for_jobs=False), timeout=DEADLINE_S)
        assert daemon.wait_exit(DEADLINE_S) == 0
        # Only now is everything the daemon would log about that watch written.
        assert "Traceback" not in log_of(daemon), log_of(daemon)[-3000:]
    finally:
        daemon.close()


class _Freeze:
    """Holds the first call of a function, as a frozen filesystem holds the
    read or the write it is in, until the test thaws it."""

    def __init__(self, function) -> None:
        self.function = function
        self.entered = threading.Event()
        self.thaw = threading.Event()

    def __call__(self, *args, **kwargs):
        if not self.entered.is_set():
            self.entered.set()
            self.thaw.wait(20)
        return self.function(*args, **kwargs)


@pytest.mark.parametrize("stage", ["reading the tasks", "committing the job"])
def test_no_job_is_left_when_the_deadline_passes_at_any_stage(tmp_path, monkeypatch, stage):
    from choo_reference import orchestrator as orchestrator_module
    from choo_reference.sqlite_log import SqliteLog

    tasks = write_tasks(tmp_path / "tasks", {"a": ([], ["true"]), "b": (["a"], ["true"])})
    if stage == "reading the tasks":
        freeze = _Freeze(orchestrator_module.load_plan)
        monkeypatch.setattr(orchestrator_module, "load_plan", freeze)
    else:
        freeze = _Freeze(SqliteLog.insert_job)
        monkeypatch.setattr(SqliteLog, "insert_job",
                            lambda log, *args, **kwargs: freeze(log, *args, **kwargs))
    clock = grpc_testing.strict_fake_time(time.time())
    with JobStore(tmp_path / "d.db") as store:
        orchestrator, servicer, rpc = _start_job(store, clock, daemon_pb2.StartJobRequest(
            tasks_dir=str(tasks), target_branch="main", repo_path=str(tmp_path)))
        try:
            assert freeze.entered.wait(20)
            clock.sleep_for(8.0)  # frozen past the client's deadline
            freeze.thaw.set()
            assert servicer.returned.wait(20)
            _, _, code, _ = rpc.termination()
            assert code != grpc.StatusCode.OK
            assert store.list_jobs() == []
        finally:
            freeze.thaw.set()
            orchestrator.shutdown(False, 0)
    with JobStore(tmp_path / "d.db") as store:  # nor in the database
        assert store.list_jobs() == []
