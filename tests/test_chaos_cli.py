"""Chaos: choo-ref given what a person mistypes. One clear line each, no
traceback, and nothing created by a start that fails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_daemon_process import short_dir

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
])
def test_bad_arguments_get_one_clear_line(args, expected):
    assert expected in error_line(choo_ref(*args))


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
