"""The committed protobuf code must be exactly what proto/ generates
(`make proto`), and the wire contract must keep its field numbers."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

from choo.conformance.v1 import control_pb2
from choo.v1 import daemon_pb2

ROOT = Path(__file__).resolve().parent.parent
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def generated_files(root: Path) -> set[str]:
    """Generated files under root/choo (a wheel build copies them elsewhere)."""
    return {
        str(p.relative_to(root)) for p in (root / "choo").rglob("*")
        if p.is_file() and p.name.endswith(GENERATED_SUFFIXES)
    }


def test_committed_code_matches_proto(tmp_path):
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "genproto.py"), "--out", str(tmp_path)],
        check=True, capture_output=True,
    )
    fresh = generated_files(tmp_path)
    committed = generated_files(ROOT / "proto")
    assert fresh == committed, "generated files differ in name: run `make proto`"
    drifted = [name for name in sorted(fresh)
               if not filecmp.cmp(tmp_path / name, ROOT / "proto" / name, shallow=False)]
    assert not drifted, f"out of date, run `make proto`: {drifted}"


# The wire contract (docs/SPEC.md, section 2): message -> {field: (number, type)}.
CONTRACT = {
    "StartJobRequest": {"tasks_dir": (1, "string"), "target_branch": (2, "string"),
                        "feature_branch": (3, "string"), "parallelism": (4, "int32"),
                        "repo_path": (5, "string")},
    "StartJobResponse": {"job_id": (1, "string"), "status": (2, "string")},
    "StopJobRequest": {"job_id": (1, "string"), "force": (2, "bool")},
    "StopJobResponse": {"success": (1, "bool"), "message": (2, "string")},
    "GetJobStatusRequest": {"job_id": (1, "string")},
    "GetJobStatusResponse": {"job_id": (1, "string"), "status": (2, "string"),
                             "started_at": (3, "Timestamp"), "completed_at": (4, "Timestamp"),
                             "error": (5, "string"), "units": (6, "repeated UnitStatus")},
    "UnitStatus": {"unit_id": (1, "string"), "status": (2, "string"),
                   "tasks_complete": (3, "int32"), "tasks_total": (4, "int32"),
                   "pr_number": (5, "int32")},
    "ListJobsRequest": {"status_filter": (1, "repeated string")},
    "ListJobsResponse": {"jobs": (1, "repeated JobSummary")},
    "JobSummary": {"job_id": (1, "string"), "feature_branch": (2, "string"),
                   "status": (3, "string"), "started_at": (4, "Timestamp"),
                   "units_complete": (5, "int32"), "units_total": (6, "int32")},
    "WatchJobRequest": {"job_id": (1, "string"), "from_sequence": (2, "int32")},
    "JobEvent": {"sequence": (1, "int32"), "event_type": (2, "string"),
                 "unit_id": (3, "string"), "payload_json": (4, "string"),
                 "timestamp": (5, "Timestamp")},
    "ShutdownRequest": {"wait_for_jobs": (1, "bool"), "timeout_seconds": (2, "int32")},
    "ShutdownResponse": {"success": (1, "bool"), "jobs_stopped": (2, "int32")},
    "HealthRequest": {},
    "HealthResponse": {"healthy": (1, "bool"), "active_jobs": (2, "int32"),
                       "version": (3, "string")},
}

CONTROL_CONTRACT = {
    "CreateJobRequest": {"job_id": (1, "string"), "status": (2, "string")},
    "CreateJobResponse": {"job_id": (1, "string")},
    "EventSpec": {"event_type": (1, "string"), "unit_id": (2, "string"),
                  "payload_json": (3, "string")},
    "AppendEventsRequest": {"job_id": (1, "string"), "events": (2, "repeated EventSpec")},
    # timestamps = 2 was added later: wire-compatible (an old client ignores it).
    "AppendEventsResponse": {"sequences": (1, "repeated int32"),
                             "timestamps": (2, "repeated Timestamp")},
    "FinishJobRequest": {"job_id": (1, "string"), "status": (2, "string"), "error": (3, "string")},
    "FinishJobResponse": {},
    "ListSubscriptionsRequest": {"job_id": (1, "string")},
    "Subscription": {"from_sequence": (1, "int32"), "open": (2, "bool")},
    "ListSubscriptionsResponse": {"subscriptions": (1, "repeated Subscription")},
}

_SCALARS = {9: "string", 5: "int32", 8: "bool"}


def describe(field) -> tuple[int, str]:
    kind = field.message_type.name if field.message_type else _SCALARS[field.type]
    repeated = getattr(field, "is_repeated", None)
    if repeated is None:
        repeated = field.label == field.LABEL_REPEATED
    return field.number, f"repeated {kind}" if repeated else kind


def fields_of(file_descriptor) -> dict:
    return {name: {f.name: describe(f) for f in message.fields}
            for name, message in file_descriptor.message_types_by_name.items()}


def test_daemon_proto_matches_the_contract():
    assert daemon_pb2.DESCRIPTOR.package == "choo.v1"
    assert fields_of(daemon_pb2.DESCRIPTOR) == CONTRACT
    service = daemon_pb2.DESCRIPTOR.services_by_name["DaemonService"]
    methods = {m.name: (m.input_type.name, m.output_type.name, m.server_streaming)
               for m in service.methods}
    assert methods == {
        "StartJob": ("StartJobRequest", "StartJobResponse", False),
        "StopJob": ("StopJobRequest", "StopJobResponse", False),
        "GetJobStatus": ("GetJobStatusRequest", "GetJobStatusResponse", False),
        "ListJobs": ("ListJobsRequest", "ListJobsResponse", False),
        "WatchJob": ("WatchJobRequest", "JobEvent", True),
        "Shutdown": ("ShutdownRequest", "ShutdownResponse", False),
        "Health": ("HealthRequest", "HealthResponse", False),
    }
    assert daemon_pb2.DESCRIPTOR.GetOptions().go_package == "github.com/RevCBH/choo/pkg/api/v1;apiv1"


def test_control_proto_matches_the_contract():
    assert control_pb2.DESCRIPTOR.package == "choo.conformance.v1"
    assert fields_of(control_pb2.DESCRIPTOR) == CONTROL_CONTRACT
