"""Chaos: signals at random moments, and calls in the last moments of a daemon.

Every SIGTERM starts the shutdown, whatever the daemon is doing when it
arrives (docs/OPERATIONS.md); after Shutdown has answered, every new call
is UNAVAILABLE until the process is gone (R11).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess

import grpc
import pytest
from chaos_support import (
    CHAOS_DAEMON,
    DEADLINE_S,
    code_of,
    log_of,
    start_daemon,
    start_job,
    stubs,
)
from test_daemon_process import wait_until, write_tasks

from choo.v1 import daemon_pb2

pytestmark = pytest.mark.slow

TRIALS = 8
# Calls on their way as the server stops.
BURST = 300


@pytest.mark.long
def test_every_sigterm_starts_the_shutdown_at_random_moments(tmp_path):
    """Jobs start and finish units while the signal comes: threads of every
    kind are busy, and the signal may be taken by any of them."""
    rng = random.Random(4)
    tasks = write_tasks(tmp_path / "tasks", {
        f"u{i}": ([], ["true", "echo done"]) for i in range(4)})
    for trial in range(TRIALS):
        daemon = start_daemon()
        try:
            with grpc.insecure_channel(daemon.address) as channel:
                stub = stubs(channel)[0]
                job_ids = [start_job(stub, tasks, tmp_path) for _ in range(3)]
                # A random moment in the life of the jobs: after the k-th event.
                moment = rng.randrange(1, 60)
                watch = stub.WatchJob(daemon_pb2.WatchJobRequest(job_id=job_ids[-1]),
                                      timeout=DEADLINE_S)
                try:
                    for seen, _ in enumerate(watch, start=1):
                        if seen == moment:
                            break
                finally:
                    watch.cancel()
                os.kill(daemon.proc.pid, signal.SIGTERM)
                try:
                    code = daemon.proc.wait(DEADLINE_S)
                except subprocess.TimeoutExpired:
                    raise AssertionError(
                        f"trial {trial}: SIGTERM after event {moment} did not stop the "
                        f"daemon:\n{log_of(daemon)[-2000:]}") from None
            assert code == 0, log_of(daemon)
            assert "SIGTERM: shutting down" in log_of(daemon)
        finally:
            daemon.close()


def test_a_second_sigterm_stops_the_jobs_by_force(tmp_path):
    tasks = write_tasks(tmp_path / "tasks", {"h": ([], ["sleep 1000"])})
    daemon = start_daemon()
    try:
        with grpc.insecure_channel(daemon.address) as channel:
            stub = stubs(channel)[0]
            job_id = start_job(stub, tasks, tmp_path)
            for event in stub.WatchJob(daemon_pb2.WatchJobRequest(job_id=job_id),
                                       timeout=DEADLINE_S):
                if event.event_type == "task.backpressure":
                    break
            os.kill(daemon.proc.pid, signal.SIGTERM)
            wait_until(lambda: "SIGTERM: shutting down" in log_of(daemon),
                       what="the shutdown to begin")
            os.kill(daemon.proc.pid, signal.SIGTERM)
            assert daemon.proc.wait(DEADLINE_S) == 0
        log = log_of(daemon)
        assert "SIGTERM again: force-stopping running jobs" in log
    finally:
        daemon.close()


@pytest.mark.long
def test_every_call_after_shutdown_answered_is_unavailable(tmp_path):
    tasks = write_tasks(tmp_path / "tasks", {"a": ([], ["true"])})
    start = daemon_pb2.StartJobRequest(tasks_dir=str(tasks), target_branch="main",
                                       repo_path=str(tmp_path))
    for trial in range(TRIALS):
        daemon = start_daemon()
        try:
            with grpc.insecure_channel(daemon.address) as channel:
                stub = stubs(channel)[0]
                answer = stub.Shutdown(daemon_pb2.ShutdownRequest(wait_for_jobs=True),
                                       timeout=DEADLINE_S)
                assert answer.success
                calls = [("StartJob", stub.StartJob, start),
                         ("Health", stub.Health, daemon_pb2.HealthRequest()),
                         ("ListJobs", stub.ListJobs, daemon_pb2.ListJobsRequest())]
                answers = []
                while daemon.proc.poll() is None or len(answers) < len(calls):
                    name, call, request = calls[len(answers) % len(calls)]
                    answers.append((name, *code_of(call, request, timeout=5)))
                    if len(answers) > 10_000:
                        break
            wrong = [i for i, answer in enumerate(answers)
                     if answer[1] != grpc.StatusCode.UNAVAILABLE]
            # The answers around the first wrong one say at which step of the stop it came.
            around = [f"{i}: {answers[i]}" for i in range(max(0, wrong[0] - 2),
                                                          min(len(answers), wrong[0] + 3))
                      ] if wrong else []
            assert not wrong, (f"trial {trial}: {len(wrong)} of {len(answers)} calls not "
                               f"UNAVAILABLE; around the first:\n" + "\n".join(around))
            assert daemon.proc.wait(DEADLINE_S) == 0
        finally:
            daemon.close()


def test_calls_that_arrive_as_the_server_stops_are_unavailable_never_cancelled(tmp_path):
    """The moment grpc's server stops: calls that reached it but no handler
    yet. The daemon is held, its event loop blocked, just after it starts
    refusing calls, while a burst of calls arrives; then let go."""
    gate = tmp_path / "stop"
    os.mkfifo(gate)
    gate_fd = os.open(gate, os.O_RDWR | os.O_NONBLOCK)  # the daemon's open never blocks
    daemon = start_daemon("--hold-stop", str(gate), command=CHAOS_DAEMON)
    try:
        with grpc.insecure_channel(daemon.address) as channel:
            stub = stubs(channel)[0]
            assert code_of(stub.Health, daemon_pb2.HealthRequest())[0] == grpc.StatusCode.OK
            daemon.signal(signal.SIGTERM)  # a Shutdown call's answer would be held too
            wait_until(lambda: os.path.exists(f"{gate}.held"), what="the stop to be held")
            burst = [stub.Health.future(daemon_pb2.HealthRequest(), timeout=DEADLINE_S)
                     for _ in range(BURST)]
            os.write(gate_fd, b"go\n")
            codes = [code_of(lambda **_: call.result())[0] for call in burst]
        wrong = [code for code in codes if code != grpc.StatusCode.UNAVAILABLE]
        assert not wrong, f"{len(wrong)} of {BURST}: {sorted(set(map(str, wrong)))}"
        assert daemon.proc.wait(DEADLINE_S) == 0
    finally:
        os.close(gate_fd)
        daemon.close()
