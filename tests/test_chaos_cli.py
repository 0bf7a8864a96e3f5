"""Chaos: choo-ref given what a person mistypes. One clear line each, no
traceback, and nothing created by a start that fails."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_fake_daemon import FakeDaemon
from pipe_lines import PipeLines
from rich.console import Console
from test_daemon_process import DEADLINE_S, short_dir, wait_until

from choo.v1 import daemon_pb2
from choo_reference.live_view import JobProgress, render

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "choo_reference.cli"]


def choo_ref(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + list(args), cwd=ROOT, capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL, check=False)


def error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode not in (0, None), result
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("args, expected", [
    (["watch", "J", "--from", "99999999999"], "argument --from: must be at most 2147483647"),
    (["run", "t", "--parallelism", "x"], "argument --parallelism: not a whole number: 'x'"),
    (["shutdown", "--timeout", "-1"], "argument --timeout: must be 0 or more"),
    (["daemon", "--command-timeout", "abc"],
     "argument --command-timeout: not a number of seconds: 'abc'"),
    (["daemon", "--command-timeout", "nan"],
     "argument --command-timeout: not a number of seconds: 'nan'"),
    (["daemon", "--max-watches", "0"], "argument --max-watches: must be 1 or more, got 0"),
    (["daemon", "--max-watches", "x"], "argument --max-watches: not a whole number: 'x'"),
])
def test_bad_arguments_get_one_clear_line(args, expected):
    assert expected in error_line(choo_ref(*args))


def test_the_daemon_help_names_the_cap_on_open_watches_and_its_default():
    result = choo_ref("daemon", "--help")
    assert result.returncode == 0, result
    assert "--max-watches N" in result.stdout and "default: 4096" in result.stdout, result.stdout


def test_a_socket_path_too_long_for_unix_sockets_is_refused_and_nothing_is_created():
    with short_dir() as folder:
        socket = folder / ("s" * 120) / "d.sock"
        expected = (f"the socket path {socket} is {len(str(socket))} bytes long; "
                    "Unix socket paths can be at most 107 bytes")
        line = error_line(choo_ref("daemon", "--socket", str(socket),
                                   "--db", str(folder / "d" / "d.db")))
        assert expected in line
        assert sorted(folder.iterdir()) == []
        assert expected in error_line(choo_ref("health", "--socket", str(socket)))


def test_a_database_where_none_can_be_made_is_named_and_nothing_is_created():
    with short_dir() as folder:
        line = error_line(choo_ref("daemon", "--socket", str(folder / "run" / "d.sock"),
                                   "--db", "/proc/x.db"))
        assert "cannot use the database /proc/x.db" in line
        assert ".lock" not in line
        assert sorted(folder.iterdir()) == []


# -- the client against a daemon that misbehaves, or a terminal that is attacked ----

# The CLI's own deadline for a call, shortened so that a daemon that never
# answers is given up on soon.
SHORT_DEADLINE = {"CHOO_REF_CALL_TIMEOUT": "1"}
ESCAPE = "\x1b]0;pwned\x07\x1b[2J"
NOBODY = 65534


@contextlib.contextmanager
def fake_daemon() -> Iterator[FakeDaemon]:
    with short_dir() as folder, FakeDaemon(folder / "d.sock") as fake:
        yield fake


def choo_ref_env(*args: str, env: dict[str, str] | None = None,
                 stdout=subprocess.PIPE, preexec=None) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + list(args), cwd=ROOT, stdout=stdout, stderr=subprocess.PIPE,
                          timeout=30, stdin=subprocess.DEVNULL, check=False,
                          env={**os.environ, **(env or {})}, preexec_fn=preexec)


def one_line(result: subprocess.CompletedProcess, exit_code: int) -> str:
    """The one line a failing command writes to stderr (bytes: it may not be UTF-8)."""
    stderr = os.fsdecode(result.stderr) if isinstance(result.stderr, bytes) else result.stderr
    assert "Traceback" not in stderr, stderr
    assert result.returncode == exit_code, (result.returncode, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def test_ctrl_c_while_start_job_is_answered_names_the_job_and_how_to_stop_it(tmp_path):
    with fake_daemon() as fake:
        fake.hold_start_job = True
        run = subprocess.Popen(
            CLI + ["run", str(tmp_path), "--plain", "--socket", str(fake.socket_path)],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        try:
            out, err = PipeLines(run.stdout), PipeLines(run.stderr)
            assert fake.start_job_received.wait(DEADLINE_S), "StartJob never arrived"
            run.send_signal(signal.SIGINT)
            # Until the client says it waits for the answer (or has given up).
            wait_until(lambda: run.poll() is not None or err.lines,
                       what="the client to take the Ctrl-C")
            fake.release_start_job.set()
            assert run.wait(DEADLINE_S) == 130
            out.join(DEADLINE_S)
            err.join(DEADLINE_S)
        finally:
            if run.poll() is None:
                run.kill()
    said = "\n".join(out.lines + err.lines)
    assert "Traceback" not in said, said
    assert "job-1" in "\n".join(out.lines), said
    assert "choo-ref stop job-1" in said, said


# A wrapper that holds the command while it imports MODULE until a SIGINT
# comes: the moment a Ctrl-C in its first fraction of a second lands.
_HOLD_AT_IMPORT = """
import pathlib, runpy, signal, sys
module, ready = sys.argv[1], pathlib.Path(sys.argv[2])
class Hold:
    def find_spec(self, name, path=None, target=None):
        if name == module:
            ready.touch()
            signal.pause()
        return None
sys.meta_path.insert(0, Hold())
sys.argv = ["choo-ref"] + sys.argv[3:]
runpy.run_module("choo_reference.cli", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("module", ["argparse", "grpc"])
def test_ctrl_c_while_the_command_starts_is_one_line(module, tmp_path):
    ready = tmp_path / "ready"
    command = subprocess.Popen(
        [sys.executable, "-c", _HOLD_AT_IMPORT, module, str(ready), "jobs",
         "--socket", str(tmp_path / "d.sock")],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        wait_until(lambda: ready.exists() or command.poll() is not None,
                   what=f"the command to import {module}")
        assert ready.exists(), command.communicate()
        command.send_signal(signal.SIGINT)
        stdout, stderr = command.communicate(timeout=DEADLINE_S)
    finally:
        if command.poll() is None:
            command.kill()
    result = subprocess.CompletedProcess(command.args, command.returncode, stdout, stderr)
    assert one_line(result, 130) == "interrupted"


@pytest.mark.parametrize("args, says", [
    (["status", b"\xff-job"], "argument JOB: not valid UTF-8: '\\xff-job'"),
    (["run", b"/tmp/\xfe"], "argument TASKS_DIR: not valid UTF-8: '/tmp/\\xfe'"),
    (["health", "--socket", b"/tmp/\xff.sock"],
     "the socket path '/tmp/\\xff.sock' is not valid UTF-8"),
    (["daemon", "--socket", b"/tmp/\xff.sock"],
     "the socket path '/tmp/\\xff.sock' is not valid UTF-8"),
])
def test_text_that_is_not_utf8_is_one_line(args, says):
    argv = [os.fsdecode(arg) if isinstance(arg, bytes) else arg for arg in args]
    result = subprocess.run(CLI + argv, cwd=ROOT, capture_output=True, timeout=30,
                            stdin=subprocess.DEVNULL, check=False)
    if args[0] in ("status", "run"):  # a usage error: the usage, then one error line
        stderr = os.fsdecode(result.stderr)
        assert result.returncode == 2 and "Traceback" not in stderr, stderr
        assert [line for line in stderr.splitlines() if "error" in line] == [
            f"choo-ref {args[0]}: error: {says}"]
    else:
        assert says in one_line(result, 1)


def test_stdout_on_a_full_device_is_one_line():
    with fake_daemon() as fake, open("/dev/full", "w") as full:
        fake.jobs = [daemon_pb2.JobSummary(job_id=f"job-{n}", status="completed")
                     for n in range(3)]
        result = choo_ref_env("jobs", "--socket", str(fake.socket_path), stdout=full)
    assert one_line(result, 1) == "error: cannot write the output: No space left on device"


def test_a_daemon_that_never_answers_is_given_up_on_at_the_deadline(tmp_path):
    with short_dir() as folder:
        # A stopped daemon: the kernel queues the connection, nobody answers.
        silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        silent.bind(str(folder / "d.sock"))
        silent.listen(64)
        try:
            commands = [["jobs"], ["status", "j"], ["stop", "j"], ["watch", "j", "--plain"],
                        ["run", str(tmp_path), "--plain"], ["health"]]
            running = [subprocess.Popen(
                CLI + args + ["--socket", str(folder / "d.sock")], cwd=ROOT,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, env={**os.environ, **SHORT_DEADLINE}) for args in commands]
            results = []
            for process in running:
                try:
                    stdout, stderr = process.communicate(timeout=DEADLINE_S)
                except subprocess.TimeoutExpired:
                    stdout, stderr = process.communicate()  # after the kill below
                finally:
                    process.kill()
                results.append(subprocess.CompletedProcess(process.args, process.returncode,
                                                           stdout, stderr))
        finally:
            silent.close()
    expected = f"error: the daemon on {folder / 'd.sock'} did not answer within 1 s"
    for args, result in zip(commands, results):
        assert one_line(result, 1).startswith(expected), (args, result)


def _hostile_job(fake: FakeDaemon) -> None:
    unit = f"unit{ESCAPE}"
    fake.status = daemon_pb2.GetJobStatusResponse(
        job_id="job-1", status="failed", error=f"boom{ESCAPE}",
        units=[daemon_pb2.UnitStatus(unit_id=unit, status="failed", tasks_total=1)])
    fake.jobs = [daemon_pb2.JobSummary(job_id=f"job{ESCAPE}", status="failed",
                                       feature_branch=f"b{ESCAPE}")]
    payloads = [
        ("orch.started", "", {"units": 1, "tasks_total": 1, "parallelism": 1}),
        ("unit.started", unit, {"tasks_total": 1}),
        ("task.started", unit, {"task": 1, "title": f"t{ESCAPE}", "command": f"c{ESCAPE}"}),
        ("task.validation.fail", unit, {"task": 1, "output_tail": f"out{ESCAPE}\nline2"}),
        ("task.failed", unit, {"task": 1, "error": f"e{ESCAPE}", "duration_ms": 5}),
        ("unit.failed", unit, {"error": f"u{ESCAPE}"}),
        ("orch.failed", "", {"error": f"o{ESCAPE}"}),
    ]
    fake.events = [daemon_pb2.JobEvent(sequence=n, event_type=kind, unit_id=unit_id,
                                       payload_json=json.dumps(payload))
                   for n, (kind, unit_id, payload) in enumerate(payloads, start=1)]
    # Not JSON at all: printed as it came.
    fake.events[-2].payload_json = f'{{"error": "u{ESCAPE}"}}'


@pytest.mark.parametrize("args", [["watch", "job-1", "--plain"], ["status", "job-1"], ["jobs"],
                                  ["run", ".", "--plain"]])
def test_escape_sequences_from_the_daemon_are_shown_not_obeyed(args):
    with fake_daemon() as fake:
        _hostile_job(fake)
        result = choo_ref(*args, "--socket", str(fake.socket_path))
    assert "Traceback" not in result.stderr, result.stderr
    printed = result.stdout + result.stderr
    assert "\x1b" not in printed and "\x07" not in printed, repr(printed)
    assert "\\x1b]0;pwned\\x07" in result.stdout, result.stdout


def test_escape_sequences_in_the_live_view_are_shown_not_obeyed():
    with fake_daemon() as fake:
        _hostile_job(fake)
        progress = JobProgress("job-1")
        progress.seed(fake.status, with_progress=False)
        for event in fake.events:
            progress.apply(event)
    out = io.StringIO()
    Console(file=out, width=200, force_terminal=True, color_system="standard").print(
        render(progress, 0))
    assert "pwned\x07" not in out.getvalue() and "\x1b]0;" not in out.getvalue()
    assert "\\x1b]0;pwned\\x07" in out.getvalue(), out.getvalue()


def test_a_unit_id_is_not_read_as_rich_markup():
    progress = JobProgress("job-1")
    progress.unit("[bold]x[/bold]")
    out = io.StringIO()
    Console(file=out, width=100, color_system=None).print(render(progress, 0))
    assert "[bold]x[/bold]" in out.getvalue()


# -- other users ---------------------------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")


@needs_root
def test_a_socket_owned_by_another_user_is_refused_before_anything_is_sent():
    with fake_daemon() as fake:
        os.chown(fake.socket_path, NOBODY, NOBODY)
        result = choo_ref("jobs", "--socket", str(fake.socket_path))
        sent = list(fake.requests)
    assert one_line(result, 1) == (
        f"error: the socket {fake.socket_path} belongs to another user (uid {NOBODY}); "
        "choo-ref talks only to a daemon run by you or by root")
    assert sent == []


@needs_root
def test_a_lock_file_another_user_made_first_is_one_clear_error():
    with short_dir() as folder:
        shared = folder / "shared"
        shared.mkdir()
        shared.chmod(0o1777)  # like /tmp
        lock = shared / "d.sock.lock"
        lock.write_text("not a pid, \x1b[2J\n")
        os.chown(lock, NOBODY, NOBODY)
        lock.chmod(0o666)
        result = choo_ref("daemon", "--socket", str(shared / "d.sock"),
                          "--db", str(folder / "d.db"))
        assert lock.read_text() == "not a pid, \x1b[2J\n"
        assert not (shared / "d.sock").exists()
    assert one_line(result, 1) == (
        f"error: {lock} belongs to another user (uid {NOBODY}); remove it or choose "
        "another --socket")


@needs_root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv to drop privileges")
def test_a_socket_the_user_may_not_open_is_permission_denied_not_no_daemon():
    with fake_daemon() as fake:
        folder = fake.socket_path.parent
        folder.chmod(0o000)
        try:
            # Root without its capabilities is held to the folder's mode like anyone.
            result = subprocess.run(
                ["setpriv", "--bounding-set=-all", "--", *CLI, "jobs",
                 "--socket", str(fake.socket_path)],
                cwd=ROOT, capture_output=True, text=True, timeout=30,
                stdin=subprocess.DEVNULL, check=False)
        finally:
            folder.chmod(0o700)
    assert one_line(result, 1) == (
        f"error: permission denied: cannot enter {folder}, the folder of the socket "
        f"{fake.socket_path}")
