"""Chaos: a StartJob whose client gave up while it waited. No job is created
for a call whose deadline has passed, so a client that retries never gets
two (row 13 of the hardening issue)."""

from __future__ import annotations

import threading
import time

import grpc
import grpc_testing
from test_daemon_process import write_tasks

from choo.v1 import daemon_pb2
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


def test_no_job_is_created_for_a_call_whose_deadline_passed(tmp_path):
    tasks = write_tasks(tmp_path / "tasks", {"a": ([], ["true"])})
    clock = grpc_testing.strict_fake_time(time.time())
    with _SlowStore(tmp_path / "d.db") as store:
        orchestrator = Orchestrator(store)
        servicer = _Probe(orchestrator)
        server = grpc_testing.server_from_dictionary({SERVICE: servicer}, clock)
        rpc = server.invoke_unary_unary(
            SERVICE.methods_by_name["StartJob"], (),
            daemon_pb2.StartJobRequest(tasks_dir=str(tasks), target_branch="main",
                                       feature_branch="feat", repo_path=str(tmp_path)),
            1.0)
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
