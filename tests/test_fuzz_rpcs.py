"""R10: whatever a request holds, every RPC answers OK or a code the contract
names, never UNKNOWN or INTERNAL, and the daemon keeps answering Health."""

from __future__ import annotations

import sys

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from choo.v1 import daemon_pb2, daemon_pb2_grpc
from choo_conformance.contract import CONTRACT_CODES
from choo_conformance.in_process import InProcessDaemon
from choo_conformance.process import DaemonProcess
from choo_reference import in_process

INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
# Text that stresses paths and encoders: control characters, surrogate-free
# Unicode, path-like pieces, and now and then something very long.
TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", ".", "..", "/", "/no/such/dir", "/etc", "~", "../../..", "-rf", "\x00",
                     "running", "completed", "RUNNING", "ünï/cödé ✓", "a" * 5000]),
    st.builds(lambda s, n: s * n, st.text(min_size=1, max_size=3), st.integers(1, 20000)),
)

REQUESTS = {
    "StartJob": st.builds(daemon_pb2.StartJobRequest, tasks_dir=TEXT, target_branch=TEXT,
                          feature_branch=TEXT, parallelism=INT32, repo_path=TEXT),
    "StopJob": st.builds(daemon_pb2.StopJobRequest, job_id=TEXT, force=st.booleans()),
    "GetJobStatus": st.builds(daemon_pb2.GetJobStatusRequest, job_id=TEXT),
    "ListJobs": st.builds(daemon_pb2.ListJobsRequest, status_filter=st.lists(TEXT, max_size=5)),
    "Health": st.just(daemon_pb2.HealthRequest()),
    "Shutdown": st.builds(daemon_pb2.ShutdownRequest, wait_for_jobs=st.just(False),
                          timeout_seconds=INT32),
}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    daemon = InProcessDaemon(in_process, tmp_path_factory.mktemp("fuzz"))
    yield daemon
    assert not daemon.close()


def _assert_contract_status(status, what) -> None:
    assert status is not None, f"{what}: no answer"
    assert status.code in CONTRACT_CODES, f"{what}: answered {status}"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_unary_rpcs_answer_contract_codes(daemon, data):
    method = data.draw(st.sampled_from(sorted(set(REQUESTS) - {"Shutdown"})))
    request = data.draw(REQUESTS[method])
    _, status = daemon.call(method, request).result(10)
    _assert_contract_status(status, f"{method}({request!r:.200})")


@settings(max_examples=60, deadline=None)
@given(job_id=TEXT, from_sequence=INT32)
def test_watch_answers_contract_codes(daemon, job_id, from_sequence):
    watch = daemon.watch(job_id, from_sequence)
    _assert_contract_status(watch.wait_for_status(10), f"WatchJob({job_id!r:.100}, {from_sequence})")


@settings(max_examples=30, deadline=None)
@given(request=REQUESTS["Shutdown"])
def test_shutdown_answers_contract_codes_and_health_still_answers(tmp_path_factory, request):
    daemon = InProcessDaemon(in_process, tmp_path_factory.mktemp("shutdown"))
    try:
        _, status = daemon.call("Shutdown", request).result(10)
        _assert_contract_status(status, f"Shutdown({request!r})")
        _, health = daemon.call("Health", daemon_pb2.HealthRequest()).result(10)
        # A Shutdown that answered OK leaves a daemon on its way out (R11);
        # a refused one, a daemon that serves on.
        after = grpc.StatusCode.UNAVAILABLE if status.code == grpc.StatusCode.OK else grpc.StatusCode.OK
        assert health.code == after, f"Health after Shutdown({request!r}) answered {health}"
    finally:
        assert not daemon.close()


def test_health_still_answers_after_the_fuzzing(daemon):
    response, status = daemon.call("Health", daemon_pb2.HealthRequest()).result(10)
    assert status.code == grpc.StatusCode.OK and response.healthy


# -- the same over a real socket, against the daemon process -------------------

REFERENCE_DAEMON = (f"{sys.executable} -m choo_reference.cli daemon "
                    "--socket {socket} --db {db}")


@pytest.fixture(scope="module")
def daemon_process():
    process = DaemonProcess(REFERENCE_DAEMON)
    process.start()
    yield process
    process.close()


@pytest.mark.slow
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_daemon_process_answers_contract_codes(daemon_process, data):
    method = data.draw(st.sampled_from(sorted(set(REQUESTS) - {"Shutdown"}) + ["WatchJob"]))
    with grpc.insecure_channel(daemon_process.address) as channel:
        stub = daemon_pb2_grpc.DaemonServiceStub(channel)
        if method == "WatchJob":
            request = daemon_pb2.WatchJobRequest(job_id=data.draw(TEXT),
                                                 from_sequence=data.draw(INT32))
            call = lambda: list(stub.WatchJob(request, timeout=10))  # noqa: E731
        else:
            request = data.draw(REQUESTS[method])
            call = lambda: getattr(stub, method)(request, timeout=10)  # noqa: E731
        try:
            call()
            code, details = grpc.StatusCode.OK, ""
        except grpc.RpcError as error:
            code, details = error.code(), error.details()
        assert code in CONTRACT_CODES, f"{method}({request!r:.200}) answered {code} {details!r}"
        health = stub.Health(daemon_pb2.HealthRequest(), timeout=10)
        assert health.healthy


@pytest.mark.slow
@pytest.mark.parametrize("request_", [
    # Found by fuzzing: quoted back in full, these overflowed the status trailer.
    # (Within the 4096-byte limit on paths: a longer one is refused unquoted.)
    daemon_pb2.StartJobRequest(tasks_dir="t", target_branch="main", repo_path="\x8c" * 2000),
    daemon_pb2.GetJobStatusRequest(job_id="%s%n" * 20000),
], ids=["long non-ASCII repo_path", "long job id"])
def test_long_client_input_is_quoted_short_enough_to_travel(daemon_process, request_):
    method = "StartJob" if isinstance(request_, daemon_pb2.StartJobRequest) else "GetJobStatus"
    with grpc.insecure_channel(daemon_process.address) as channel:
        with pytest.raises(grpc.RpcError) as raised:
            getattr(daemon_pb2_grpc.DaemonServiceStub(channel), method)(request_, timeout=10)
    assert raised.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
    assert "characters)" in raised.value.details()
