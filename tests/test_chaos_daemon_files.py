"""Chaos: the files that say which daemon owns what. A second daemon on a
database whose lock file (or socket) was deleted under the first, and the
pid file and log choo's own CLI looks for beside the default socket
(docs/OPERATIONS.md)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from chaos_support import DEADLINE_S, REFERENCE_DAEMON, job_status, start_daemon, start_job, stubs
from test_daemon_process import gate_command, release, short_dir, wait_until, write_tasks

from choo.v1 import daemon_pb2
from choo_conformance.process import DaemonProcess

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("deleted", [("db.lock",), ("db.lock", "sock.lock", "sock")])
def test_a_second_daemon_on_the_database_is_refused_whatever_was_deleted(deleted, tmp_path):
    import grpc

    first = start_daemon()
    try:
        with grpc.insecure_channel(first.address) as channel:
            stub = stubs(channel)[0]
            tasks = write_tasks(tmp_path / "tasks", {"g": ([], [gate_command(tmp_path, "g")])})
            job = start_job(stub, tasks, tmp_path)
            wait_until((tmp_path / "g.started").exists, what="the job's command to start")
            files = {"db.lock": first.db + ".lock", "sock.lock": first.socket + ".lock",
                     "sock": first.socket}
            for name in deleted:
                os.unlink(files[name])
            # On the same socket when it was deleted, else on one of its own.
            socket_path = first.socket if "sock" in deleted else first.socket + "2"
            second = subprocess.run(
                [sys.executable, "-m", "choo_reference.cli", "daemon", "--socket", socket_path,
                 "--db", first.db], cwd=ROOT, capture_output=True, text=True,
                timeout=DEADLINE_S, stdin=subprocess.DEVNULL, check=False)
            assert second.returncode == 1, second.stderr
            assert second.stderr.strip() == (
                f"error: another daemon (pid {first.pid}) is using the database {first.db}")
            if "sock" not in deleted:
                # The first daemon serves on, its job untouched.
                assert job_status(stub, job).status == "running"
                release(tmp_path, "g")
                wait_until(lambda: job_status(stub, job).status == "completed",
                           what="the job to complete")
    finally:
        release(tmp_path, "g")
        first.close()


def _home_daemon(home: Path, output: Path) -> DaemonProcess:
    """`choo-ref daemon` with its defaults, under a HOME of the test's own."""
    command = REFERENCE_DAEMON.split(" daemon ")[0] + " daemon"
    return DaemonProcess(command, socket=str(home / ".choo" / "daemon.sock"),
                         db=str(home / ".choo" / "daemon.db"), folder=str(output),
                         env={**os.environ, "HOME": str(home)}, cwd=str(ROOT))


def test_with_its_defaults_it_keeps_the_pid_file_and_log_chooss_cli_reads():
    with short_dir() as home, short_dir() as output:
        choo = home / ".choo"
        choo.mkdir(mode=0o700)
        # A crashed daemon's pid file: a pid that no process has now.
        ended = subprocess.Popen(["true"])
        ended.wait()
        (choo / "daemon.pid").write_text(f"{ended.pid}\n")

        daemon = _home_daemon(home, output).start()
        try:
            pid_file = choo / "daemon.pid"
            wait_until(lambda: pid_file.read_text() == f"{daemon.pid}\n",
                       what="the pid file to name the daemon")
            assert oct(pid_file.stat().st_mode & 0o777) == oct(0o600)
            log = choo / "daemon.log"
            wait_until(lambda: f"(pid {daemon.pid}) serving" in log.read_text(),
                       what="the log to say it serves")
            assert oct(log.stat().st_mode & 0o777) == oct(0o600)

            daemon.signal(signal.SIGTERM)
            assert daemon.wait_exit(DEADLINE_S) == 0
            assert not pid_file.exists()
            assert not (choo / "daemon.sock").exists()
            assert "daemon stopped" in log.read_text()
        finally:
            daemon.stop()


def test_on_another_socket_it_writes_no_pid_file(tmp_path):
    daemon = start_daemon()
    try:
        import grpc

        with grpc.insecure_channel(daemon.address) as channel:
            assert stubs(channel)[0].Health(daemon_pb2.HealthRequest(), timeout=DEADLINE_S)
        names = sorted(os.listdir(daemon.folder))
        assert "daemon.pid" not in names and "d.pid" not in names
    finally:
        daemon.close()
