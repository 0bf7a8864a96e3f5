"""Chaos: what an unlucky user or a local attacker sends the daemon process.

Bad files in a tasks folder (a FIFO, /dev/zero behind a link, files and
fields past the limits), request bytes that do not decode, and oversized
input to the control service. Each gets INVALID_ARGUMENT at once, naming the
file or field and the limit; nothing waits on anything else; every response
and status stays within gRPC's default limits (R10; docs/OPERATIONS.md).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from chaos_support import DEADLINE_S, code_of, log_of, start_daemon, start_job, stubs
from test_daemon_process import wait_until, write_tasks

from choo.conformance.v1 import control_pb2
from choo.v1 import daemon_pb2

pytestmark = pytest.mark.slow

INVALID = grpc.StatusCode.INVALID_ARGUMENT
# What a status message may take: clients refuse trailers past 8 KiB, and
# each byte of a message may take three there.
MAX_DETAILS_BYTES = 2 * 1024


@pytest.fixture(scope="module")
def daemon():
    process = start_daemon("--conformance-control")
    yield process
    process.close()


@pytest.fixture(scope="module")
def channel(daemon):
    with grpc.insecure_channel(daemon.address) as channel:
        yield channel


@pytest.fixture
def stub(channel):
    return stubs(channel)[0]


@pytest.fixture
def control(channel):
    return stubs(channel)[1]


def start_code(stub, tasks: Path, repo: Path, **fields) -> tuple[grpc.StatusCode, str]:
    request = daemon_pb2.StartJobRequest(
        tasks_dir=str(tasks), target_branch="main", repo_path=str(repo), **fields)
    return code_of(stub.StartJob, request, timeout=5)


def unit_with_plan(root: Path, unit: str = "u") -> Path:
    """A unit folder with one valid task; the caller supplies the plan file."""
    folder = root / unit
    folder.mkdir(parents=True)
    (folder / "01-one.md").write_text("---\ntask: 1\nbackpressure: \"true\"\n---\n# One\n")
    return folder / "IMPLEMENTATION_PLAN.md"


# -- files ----------------------------------------------------------------------------


def test_a_fifo_as_the_plan_is_refused_at_once_and_holds_up_no_other_call(stub, tmp_path):
    plan = unit_with_plan(tmp_path / "tasks")
    os.mkfifo(plan)
    good = write_tasks(tmp_path / "good", {"g": ([], ["true"])})
    try:
        # More calls than the daemon has RPC threads, all at once.
        with ThreadPoolExecutor(max_workers=20) as pool:
            answers = list(pool.map(lambda _: start_code(stub, tmp_path / "tasks", tmp_path),
                                    range(20)))
            health = code_of(stub.Health, daemon_pb2.HealthRequest(), timeout=5)
        assert health[0] == grpc.StatusCode.OK
        for code, details in answers:
            assert code == INVALID, details
            assert str(plan) in details and "not a regular file" in details, details
        assert start_job(stub, good, tmp_path)  # and the next job starts
    finally:
        # Let a reader blocked on the FIFO (a daemon without the fix) go.
        try:
            os.close(os.open(plan, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass


def test_a_plan_that_is_a_link_to_dev_zero_is_refused(stub, tmp_path):
    plan = unit_with_plan(tmp_path / "tasks")
    plan.symlink_to("/dev/zero")
    code, details = start_code(stub, tmp_path / "tasks", tmp_path)
    assert code == INVALID, details
    assert str(plan) in details and "not a regular file" in details


def test_a_task_file_that_is_not_a_regular_file_is_refused(stub, tmp_path):
    plan = unit_with_plan(tmp_path / "tasks")
    plan.write_text("---\nunit: u\n---\n")
    task = plan.parent / "02-two.md"
    os.mkfifo(task)
    code, details = start_code(stub, tmp_path / "tasks", tmp_path)
    assert code == INVALID, details
    assert str(task) in details and "not a regular file" in details


def _plan_over_1_mib(root: Path) -> str:
    plan = unit_with_plan(root)
    plan.write_text("---\nunit: u\n---\n" + "x" * (1 << 20))
    return str(plan)


def _units_over_1000(root: Path) -> str:
    for i in range(1001):
        folder = root / f"u{i:04d}"
        folder.mkdir(parents=True)
        (folder / "IMPLEMENTATION_PLAN.md").write_text(f"---\nunit: u{i}\n---\n")
        (folder / "01-a.md").write_text("---\ntask: 1\nbackpressure: \"true\"\n---\n")
    return str(root)


def _task(root: Path, *, command: str = "true", title: str = "T") -> str:
    plan = unit_with_plan(root)
    plan.write_text("---\nunit: u\n---\n")
    task = plan.parent / "01-one.md"
    task.write_text(f"---\ntask: 1\nbackpressure: \"{command}\"\n---\n# {title}\n")
    return str(task)


def _long_unit_id(root: Path) -> str:
    plan = unit_with_plan(root)
    plan.write_text(f"---\nunit: {'u' * 300}\n---\n")
    return str(plan)


@pytest.mark.parametrize("make, limit", [
    (_plan_over_1_mib, "1 MiB"),
    (_units_over_1000, "1000"),
    (lambda root: _task(root, command="echo " + "x" * (64 * 1024)), "64 KiB"),
    (lambda root: _task(root, title="T" * 2000), "1 KiB"),
    (_long_unit_id, "256 bytes"),
], ids=["plan over 1 MiB", "1001 units", "command over 64 KiB", "title over 1 KiB",
        "unit id over 256 bytes"])
def test_a_tasks_folder_past_a_limit_is_refused_naming_it(stub, tmp_path, make, limit):
    where = make(tmp_path / "tasks")
    code, details = start_code(stub, tmp_path / "tasks", tmp_path)
    assert code == INVALID, details
    assert where in details and limit in details, details


# -- names and values the tasks folder's reader cannot take as they are -------------


def _unit_folder_not_utf8(root: Path) -> tuple[str, str]:
    unit_with_plan(root).write_text("---\nunit: u\n---\n")
    os.mkdir(os.fsencode(root) + b"/v\xff")
    return str(root), "v\\xff"


def _task_file_not_utf8(root: Path) -> tuple[str, str]:
    plan = unit_with_plan(root)
    plan.write_text("---\nunit: u\n---\n")
    with open(os.fsencode(plan.parent) + b"/02-\xfe.md", "w") as task:
        task.write("---\ntask: 2\nbackpressure: \"true\"\n---\n")
    return str(plan.parent), "02-\\xfe.md"


@pytest.mark.parametrize("make", [_unit_folder_not_utf8, _task_file_not_utf8],
                         ids=["unit folder", "task file"])
def test_an_entry_whose_name_is_not_utf8_is_refused_naming_it_escaped(stub, tmp_path, make):
    folder, escaped = make(tmp_path / "tasks")
    code, details = start_code(stub, tmp_path / "tasks", tmp_path)
    assert code == INVALID, details
    assert folder in details and escaped in details and "UTF-8" in details, details


@pytest.mark.parametrize("front_matter", [
    "unit: u\ndepends_on: 2001-13-45\n",
    "unit: u\ndepends_on: [" + "9" * 5000 + "]\n",
], ids=["a date that is none", "an integer of 5000 digits"])
def test_a_value_yaml_cannot_build_is_refused_naming_the_file(stub, tmp_path, front_matter):
    plan = unit_with_plan(tmp_path / "tasks")
    plan.write_text(f"---\n{front_matter}---\n")
    code, details = start_code(stub, tmp_path / "tasks", tmp_path)
    assert code == INVALID, details[:300]
    assert str(plan) in details and "front matter" in details, details[:300]


# -- StartJob's fields --------------------------------------------------------------


@pytest.mark.parametrize("field, value, limit", [
    ("feature_branch", "f" * (3 << 20), "1 KiB"),
    ("target_branch", "t" * 2000, "1 KiB"),
    ("parallelism", 2**31 - 1, "64"),
], ids=["3 MB feature_branch", "long target_branch", "parallelism 2^31-1"])
def test_start_job_fields_past_a_limit_are_refused_naming_it(stub, tmp_path, field, value, limit):
    tasks = write_tasks(tmp_path / "tasks", {"a": ([], ["true"])})
    fields = {"tasks_dir": str(tasks), "target_branch": "main", "repo_path": str(tmp_path),
              field: value}
    for _ in range(2):  # two such jobs broke ListJobs for good
        code, details = code_of(stub.StartJob, daemon_pb2.StartJobRequest(**fields))
        assert code == INVALID, details[:300]
        assert field in details and limit in details, details[:300]
        assert len(details.encode()) <= MAX_DETAILS_BYTES
    assert code_of(stub.ListJobs, daemon_pb2.ListJobsRequest())[0] == grpc.StatusCode.OK


# -- request bytes that do not decode ------------------------------------------------

METHODS = [f"/choo.v1.DaemonService/{name}" for name in (
    "StartJob", "StopJob", "GetJobStatus", "ListJobs", "WatchJob", "Shutdown", "Health")] + [
    f"/choo.conformance.v1.ConformanceControl/{name}" for name in (
        "CreateJob", "AppendEvents", "FinishJob", "ListSubscriptions")]
# Field 1 says 5 bytes follow, and only 2 do.
TRUNCATED = b"\x0a\x05ab"
# Field 1 as a string that is not UTF-8 (every request's field 1 is a string
# but Shutdown's and Health's; for those it is a truncated message again).
BAD_UTF8 = b"\x0a\x02\xff\xfe"


@pytest.mark.parametrize("payload", [TRUNCATED, BAD_UTF8], ids=["truncated", "bad UTF-8"])
def test_request_bytes_that_do_not_decode_get_a_clear_status_and_one_log_line(
        daemon, channel, payload):
    for method in METHODS:
        if payload is BAD_UTF8 and method.endswith(("/Shutdown", "/Health")):
            continue  # no string field: these bytes would decode
        before = len(log_of(daemon).splitlines())
        if method.endswith("/WatchJob"):
            call = channel.unary_stream(method, request_serializer=None,
                                        response_deserializer=None)
            code, details = code_of(lambda timeout: list(call(payload, timeout=timeout)))
        else:
            call = channel.unary_unary(method, request_serializer=None,
                                       response_deserializer=None)
            code, details = code_of(call, payload)
        assert code in (INVALID, grpc.StatusCode.INTERNAL), f"{method}: {code} {details}"
        assert "decode" in details or "parse" in details, f"{method}: {details}"
        wait_until(lambda: method in "\n".join(log_of(daemon).splitlines()[before:]),
                   what=f"the log line of {method}")
        new = log_of(daemon).splitlines()[before:]
        assert "Traceback" not in "\n".join(new), "\n".join(new)
        assert len([line for line in new if method in line]) == 1, "\n".join(new)
    stub = stubs(channel)[0]
    assert stub.Health(daemon_pb2.HealthRequest(), timeout=5).healthy


# -- the control service -------------------------------------------------------------


def test_control_messages_stay_short_and_an_empty_job_id_is_invalid(control):
    huge = "s" * 100_000
    calls = [
        (control.CreateJob, control_pb2.CreateJobRequest(status=huge)),
        (control.FinishJob, control_pb2.FinishJobRequest(job_id="x", status=huge)),
        (control.FinishJob, control_pb2.FinishJobRequest(job_id=huge, status="failed")),
        (control.AppendEvents, control_pb2.AppendEventsRequest(job_id=huge)),
        (control.ListSubscriptions, control_pb2.ListSubscriptionsRequest(job_id=huge)),
    ]
    for call, request in calls:
        code, details = code_of(call, request)
        assert code in (INVALID, grpc.StatusCode.NOT_FOUND), f"{call}: {code} {details[:200]}"
        assert len(details.encode()) <= MAX_DETAILS_BYTES
    for call, request in [
        (control.AppendEvents, control_pb2.AppendEventsRequest()),
        (control.FinishJob, control_pb2.FinishJobRequest(status="failed")),
        (control.ListSubscriptions, control_pb2.ListSubscriptionsRequest()),
    ]:
        assert code_of(call, request) == (INVALID, "job_id is required"), call


@pytest.mark.parametrize("make, field, limit", [
    (lambda job: control_pb2.CreateJobRequest(job_id="j" * 300), "job_id", "256 bytes"),
    (lambda job: control_pb2.AppendEventsRequest(job_id=job, events=[
        control_pb2.EventSpec(event_type="e", payload_json="x" * ((1 << 20) + 1))]),
     "payload_json", "1 MiB"),
    (lambda job: control_pb2.AppendEventsRequest(job_id=job, events=[
        control_pb2.EventSpec(event_type="e" * 300)]), "event_type", "256 bytes"),
    (lambda job: control_pb2.AppendEventsRequest(job_id=job, events=[
        control_pb2.EventSpec(unit_id="u" * 300)]), "unit_id", "256 bytes"),
    (lambda job: control_pb2.AppendEventsRequest(
        job_id=job, events=[control_pb2.EventSpec(event_type="e")] * 10_001),
     "events", "10000"),
    (lambda job: control_pb2.FinishJobRequest(job_id=job, status="failed", error="e" * 70_000),
     "error", "64 KiB"),
], ids=["job id", "payload", "event type", "unit id", "events per call", "error"])
def test_control_input_past_a_limit_is_refused_naming_it(control, make, field, limit):
    job = control.CreateJob(control_pb2.CreateJobRequest(), timeout=DEADLINE_S).job_id
    code, details = code_of(getattr(control, type(make(job)).__name__[:-len("Request")]),
                            make(job))
    assert code == INVALID, details[:300]
    assert field in details and limit in details, details


# -- responses ----------------------------------------------------------------------


def test_list_jobs_lists_the_newest_jobs_that_fit_in_one_response(tmp_path, monkeypatch):
    from choo_reference import servicer as servicer_module
    from choo_reference.job_store import JobStore
    from choo_reference.orchestrator import Orchestrator

    limit = 16 * 1024  # as MAX_RESPONSE_BYTES, 4 MiB less 64 KiB, is to real clients
    monkeypatch.setattr(servicer_module, "MAX_RESPONSE_BYTES", limit)
    with JobStore(tmp_path / "d.db") as store:
        ids = [store.create_job(f"job-{i:02d}", "completed", feature_branch="f" * 1024).job_id
               for i in range(40)]
        servicer = servicer_module.DaemonServicer(Orchestrator(store))
        response = servicer.ListJobs(daemon_pb2.ListJobsRequest(), None)
    listed = [job.job_id for job in response.jobs]
    assert response.ByteSize() <= limit
    assert 1 < len(listed) < 40
    assert listed == ids[::-1][:len(listed)]  # the newest, newest first
