"""The daemon among real gRPC tools: grpcurl and grpc-health-probe (pinned,
from the Go module proxy) and the grpc-go client of interop/, run against the
reference daemon on a temporary socket, each also run against a daemon that
breaks what it checks, to show that its check can fail.

`make interop-tools` installs the tools into interop/bin/ and builds the Go
client once; later runs find them there. Without `go` on the PATH, or when
the module proxy cannot be reached, these tests skip and say why; under
`make interop` (CHOO_INTEROP_REQUIRED=1) that is a failure instead.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from test_daemon_process import gate_command, release, wait_until, write_tasks

from choo.v1 import daemon_pb2, daemon_pb2_grpc
from choo_conformance.process import DaemonProcess
from choo_reference import __version__

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "interop" / "bin"
REQUIRED = os.environ.get("CHOO_INTEROP_REQUIRED") == "1"
# A first install compiles grpcurl and its dependencies: minutes on 2 cores.
INSTALL_TIMEOUT_S = 1200
TOOL_TIMEOUT_S = 60

REFERENCE = (f"{sys.executable} -m choo_reference.cli daemon --socket {{socket}} --db {{db}} "
             "--conformance-control")
# The foreign daemon with its W2 defect: an unknown job answers INTERNAL.
FOREIGN = (f"{sys.executable} {ROOT / 'tests' / 'foreign_daemon' / 'server.py'} --socket {{socket}} "
           "--db {db} --bug not-found-internal")
HEALTH_STAYS_SERVING = (f"{sys.executable} {ROOT / 'tests' / 'health_stays_serving.py'} "
                        "daemon --socket {socket} --db {db}")

# Without reflection, grpcurl reads the schema from the proto files.
FROM_PROTO_FILES = ("-import-path", str(ROOT / "proto"), "-proto", "choo/v1/daemon.proto")

# What `go install` prints when it cannot reach the module proxy.
_OFFLINE_SIGNS = ("dial tcp", "no such host", "network is unreachable", "i/o timeout",
                  "connection refused", "TLS handshake timeout", "proxyconnect")


def _cannot_run(reason: str) -> None:
    if REQUIRED:
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def interop_bin() -> Path:
    """interop/bin with grpcurl, grpc-health-probe and choo-interop in it."""
    if shutil.which("go") is None:
        _cannot_run("go is not on the PATH: the interop checks need Go 1.26 or later "
                    "(then `make interop`)")
    if shutil.which("make") is None:
        _cannot_run("make is not on the PATH: the interop tools are installed by `make interop-tools`")
    result = subprocess.run(["make", "-s", "--no-print-directory", "interop-tools"], cwd=ROOT,
                            check=False, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S,
                            stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        offline = [line for line in output.splitlines()
                   if any(sign in line for sign in _OFFLINE_SIGNS)]
        if offline:
            _cannot_run(f"the Go module proxy cannot be reached, so grpcurl, grpc-health-probe "
                        f"and the Go client cannot be installed: {offline[0].strip()}")
        pytest.fail(f"make interop-tools failed:\n{output}")
    return BIN


def _daemon(command: str):
    daemon = DaemonProcess(command)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.close()


@pytest.fixture(scope="module")
def reference(interop_bin):
    """The reference daemon in conformance mode, shared by the checks that leave it running."""
    yield from _daemon(REFERENCE)


@pytest.fixture(scope="module")
def foreign(interop_bin):
    """tests/foreign_daemon/server.py with its W2 defect; it serves no
    reflection and no grpc.health.v1."""
    yield from _daemon(FOREIGN)


# -- grpcurl -------------------------------------------------------------------------


def grpcurl(socket: str, *words: str, data: object = None,
            schema: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    argv = [str(BIN / "grpcurl"), "-plaintext", "-unix", "-max-time", "30", *schema]
    if data is not None:
        argv += ["-d", json.dumps(data)]
    return subprocess.run(argv + [socket, *words], check=False, capture_output=True, text=True,
                          timeout=TOOL_TIMEOUT_S, stdin=subprocess.DEVNULL)


def json_messages(text: str) -> list[dict]:
    """grpcurl prints each response message as a JSON object, one after another."""
    decoder, messages, at = json.JSONDecoder(), [], 0
    while text[at:].strip():
        while text[at].isspace():
            at += 1
        message, at = decoder.raw_decode(text, at)
        messages.append(message)
    return messages


def call_json(socket: str, method: str, data: object = None, **kw) -> list[dict]:
    result = grpcurl(socket, f"choo.v1.DaemonService/{method}", data=data or {}, **kw)
    assert result.returncode == 0, f"grpcurl {method} failed:\n{result.stderr}"
    return json_messages(result.stdout)


def check_grpcurl_lists_services(socket: str, **kw) -> set[str]:
    result = grpcurl(socket, "list", **kw)
    assert result.returncode == 0, f"grpcurl list failed:\n{result.stderr}"
    services = set(result.stdout.split())
    assert {"choo.v1.DaemonService", "grpc.health.v1.Health"} <= services, services
    return services


def check_grpcurl_describes_daemon_service(socket: str, **kw) -> None:
    result = grpcurl(socket, "describe", "choo.v1.DaemonService", **kw)
    assert result.returncode == 0, f"grpcurl describe failed:\n{result.stderr}"
    for rpc, request, response in [
        ("StartJob", "StartJobRequest", "StartJobResponse"),
        ("StopJob", "StopJobRequest", "StopJobResponse"),
        ("GetJobStatus", "GetJobStatusRequest", "GetJobStatusResponse"),
        ("ListJobs", "ListJobsRequest", "ListJobsResponse"),
        ("WatchJob", "WatchJobRequest", "stream .choo.v1.JobEvent"),
        ("Shutdown", "ShutdownRequest", "ShutdownResponse"),
        ("Health", "HealthRequest", "HealthResponse"),
    ]:
        if not response.startswith("stream"):
            response = f".choo.v1.{response}"
        line = f"rpc {rpc} ( .choo.v1.{request} ) returns ( {response} );"
        assert line in result.stdout, f"{line!r} not in:\n{result.stdout}"


def check_grpcurl_watch_errors(socket: str, **kw) -> None:
    """W1 and W2 as grpcurl shows them: the code, the message, exit 64 + code."""
    for job_id, code, number, message in [
        ("", "InvalidArgument", 3, "job_id is required"),
        ("no-such-job", "NotFound", 5, "no-such-job"),
    ]:
        result = grpcurl(socket, "choo.v1.DaemonService/WatchJob",
                         data={"job_id": job_id, "from_sequence": 1}, **kw)
        assert result.stdout.strip() == "", f"events streamed: {result.stdout}"
        assert f"Code: {code}" in result.stderr, result.stderr
        assert message in result.stderr, result.stderr
        assert result.returncode == 64 + number, (result.returncode, result.stderr)


def test_grpcurl_lists_the_services_through_reflection(reference):
    services = check_grpcurl_lists_services(reference.socket)
    assert {"choo.conformance.v1.ConformanceControl",
            "grpc.reflection.v1alpha.ServerReflection"} <= services


def test_grpcurl_describes_the_daemon_service(reference):
    check_grpcurl_describes_daemon_service(reference.socket)


def test_grpcurl_calls_health(reference):
    (health,) = call_json(reference.socket, "Health")
    assert health["healthy"] is True
    assert health["version"] == __version__


def test_grpcurl_runs_the_example_job_and_watches_it_from_1(reference, tmp_path):
    tasks_dir = str(ROOT / "examples" / "hello-tasks")
    (started,) = call_json(reference.socket, "StartJob", {
        "tasks_dir": tasks_dir, "target_branch": "main", "repo_path": str(tmp_path)})
    assert started["status"] == "running"
    job_id = started["job_id"]

    # The stream ends OK once the job has ended, so grpcurl exits 0.
    events = call_json(reference.socket, "WatchJob", {"job_id": job_id, "from_sequence": 1})
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["event_type"] == "orch.started"
    assert events[-1]["event_type"] == "orch.completed"
    assert all(isinstance(json.loads(e["payload_json"]), dict) for e in events)
    assert all(e["timestamp"].endswith("Z") for e in events)
    assert {e.get("unit_id") for e in events} == {None, "setup", "build", "docs"}

    (listed,) = call_json(reference.socket, "ListJobs")
    assert job_id in [job["job_id"] for job in listed["jobs"]]
    (status,) = call_json(reference.socket, "GetJobStatus", {"job_id": job_id})
    assert status["status"] == "completed" and "completed_at" in status
    assert {u["unit_id"]: (u["tasks_complete"], u["tasks_total"]) for u in status["units"]} == {
        "setup": (2, 2), "build": (3, 3), "docs": (1, 1)}


def test_grpcurl_shows_the_watch_errors(reference):
    check_grpcurl_watch_errors(reference.socket)


def test_grpcurl_checks_fail_against_a_daemon_that_breaks_them(foreign):
    # No reflection: nothing to list.
    with pytest.raises(AssertionError, match="grpcurl list failed"):
        check_grpcurl_lists_services(foreign.socket)
    # From the proto files, the same calls reach it, and its W2 bug shows.
    check_grpcurl_describes_daemon_service(foreign.socket, schema=FROM_PROTO_FILES)
    with pytest.raises(AssertionError, match="Code: NotFound"):
        check_grpcurl_watch_errors(foreign.socket, schema=FROM_PROTO_FILES)


# -- grpc-health-probe -----------------------------------------------------------------


def probe(socket: str, service: str = "") -> subprocess.CompletedProcess:
    argv = [str(BIN / "grpc-health-probe"), "-addr", f"unix://{socket}",
            "-connect-timeout", "15s", "-rpc-timeout", "15s"]
    if service:
        argv += ["-service", service]
    return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S,
                          stdin=subprocess.DEVNULL)


def check_serving(socket: str) -> None:
    for service in ("", "choo.v1.DaemonService"):
        result = probe(socket, service)
        # It reports on stderr.
        said = (result.stdout + result.stderr).strip()
        assert (result.returncode, said) == (0, "status: SERVING"), (service, result.returncode, said)


def check_not_serving(socket: str, timeout: float) -> None:
    """Shutdown has begun: the probe says NOT_SERVING (exit 4) within timeout."""
    seen: list[subprocess.CompletedProcess] = []

    def not_serving() -> bool:
        seen.append(probe(socket))
        return seen[-1].returncode == 4 and "NOT_SERVING" in seen[-1].stderr + seen[-1].stdout

    try:
        wait_until(not_serving, timeout, "grpc-health-probe to say NOT_SERVING")
    except AssertionError as error:
        last = seen[-1]
        raise AssertionError(f"{error}; last probe: exit {last.returncode}, "
                             f"{(last.stdout + last.stderr).strip()}") from None


def probe_during_shutdown(command: str, work: Path, timeout: float) -> None:
    """Start a daemon, give it a job that holds, SIGTERM it (a shutdown that
    waits for the job) and check the probe says NOT_SERVING meanwhile."""
    tasks = write_tasks(work / "tasks", {"hold": ([], [gate_command(work, "hold")])})
    for daemon in _daemon(command):
        try:
            check_serving(daemon.socket)
            with grpc.insecure_channel(daemon.address) as channel:
                daemon_pb2_grpc.DaemonServiceStub(channel).StartJob(daemon_pb2.StartJobRequest(
                    tasks_dir=str(tasks), target_branch="main", repo_path=str(work)), timeout=10)
            os.kill(daemon.proc.pid, signal.SIGTERM)
            check_not_serving(daemon.socket, timeout)
        finally:
            release(work, "hold")
            daemon.wait_exit(30)


def test_grpc_health_probe_serving_while_up(reference):
    check_serving(reference.socket)


def test_grpc_health_probe_not_serving_once_shutdown_began(interop_bin, tmp_path):
    probe_during_shutdown(REFERENCE, tmp_path, timeout=20)


def test_grpc_health_probe_check_fails_against_a_daemon_that_stays_serving(interop_bin, tmp_path):
    with pytest.raises(AssertionError, match="NOT_SERVING"):
        probe_during_shutdown(HEALTH_STAYS_SERVING, tmp_path, timeout=3)


def test_grpc_health_probe_check_fails_against_a_daemon_without_health(foreign):
    with pytest.raises(AssertionError, match="SERVING"):
        check_serving(foreign.socket)


# -- the grpc-go client ----------------------------------------------------------------

GO_CHECKS = ["W1", "W2", "W3", "W10", "W12", "cancel", "R1", "R5", "R6", "R7"]


def go_client(socket: str) -> tuple[int, dict[str, str], str]:
    """Runs choo-interop; returns its exit code, check id -> PASS/FAIL, and its output."""
    result = subprocess.run([str(BIN / "choo-interop"), "-socket", socket], check=False, capture_output=True,
                            text=True, timeout=120, stdin=subprocess.DEVNULL)
    output = result.stdout + result.stderr
    verdicts = {}
    for line in result.stdout.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("PASS", "FAIL"):
            verdicts[rest.split()[0]] = word
    return result.returncode, verdicts, output


def test_go_client_passes_every_check_against_the_reference_daemon(reference):
    code, verdicts, output = go_client(reference.socket)
    assert verdicts == {check: "PASS" for check in GO_CHECKS}, output
    assert code == 0, output
    assert f"{len(GO_CHECKS)} passed, 0 failed" in output


# What the foreign daemon gets wrong, among the Go client's checks.
FOREIGN_FAILS = {
    "W2": "the defect it runs with: an unknown job answers INTERNAL",
}


def test_go_client_fails_exactly_what_the_foreign_daemon_breaks(foreign):
    code, verdicts, output = go_client(foreign.socket)
    assert verdicts == {check: "FAIL" if check in FOREIGN_FAILS else "PASS"
                        for check in GO_CHECKS}, output
    assert code == 1, output
    assert 'FAIL W2     WatchJob of an unknown job is NOT_FOUND naming it: want NotFound, got Internal' in output


def test_committed_go_code_matches_proto(interop_bin, tmp_path):
    subprocess.run([sys.executable, str(ROOT / "tools" / "gengo.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True, timeout=TOOL_TIMEOUT_S)
    committed = ROOT / "interop" / "gen"
    fresh = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.go"))
    assert fresh == sorted(str(p.relative_to(committed)) for p in committed.rglob("*.go"))
    drifted = [name for name in fresh
               if (tmp_path / name).read_bytes() != (committed / name).read_bytes()]
    assert not drifted, f"out of date, run `make interop-proto`: {drifted}"
