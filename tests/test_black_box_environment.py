"""Daemons that need more from their surroundings than the specification
asks, as choo's own does: a GitHub `origin` (--repo-origin), a git identity
in the repository to commit with (always there), a coding agent configured
through the environment (--server-env).

The foreign daemon's --like-choo mode (tests/foreign_daemon/environment.py)
needs exactly these: the README's worked example must pass against it, and
a run without each option must fail."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc
import pytest
from conformance_run import Verdict, conformance

from choo.v1 import daemon_pb2, daemon_pb2_grpc
from choo_conformance import cli, environment
from choo_conformance.lifecycle_steps import make_repository
from choo_conformance.process import DaemonProcess
from choo_conformance.wait import wait_until

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "tests" / "foreign_daemon" / "server.py"
EXAMPLE = ROOT / "examples" / "agent-stub-daemon.sh"
SECTION = "### How to run an agent-driven daemon black-box"
ORIGIN = "https://github.com/example/repo.git"
DEADLINE_S = 20
# Cheap rules that start jobs: a job's events to their end, a new job, a
# failed job's units.
RULES = "W3,R3,R6"


def _readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    assert SECTION in text, f"README.md has no section {SECTION!r}"
    return re.split(r"\n##+ ", text.split(SECTION, 1)[1], maxsplit=1)[0]


def _readme_command() -> list[str]:
    """The README's choo-conformance command line, its arguments as the
    shell would pass them from the repository's root."""
    blocks = re.findall(r"```sh\n(.*?)```", _readme_section(), re.S)
    (command,) = [b for b in blocks if "choo-conformance" in b]
    argv = shlex.split(command.replace("\\\n", " ").replace("$PWD", str(ROOT)))
    assert argv[0] == ".venv/bin/choo-conformance", argv
    return argv[1:]


def _without(argv: list[str], option: str) -> list[str]:
    at = argv.index(option)
    return argv[:at] + argv[at + 2:]


def _run(report: Path, argv: list[str], *extra: str) -> Verdict:
    verdict = conformance(report, *argv, *extra, timeout=300)
    assert verdict.results is not None, verdict.output()
    return verdict


def _failures(verdict: Verdict) -> str:
    return " | ".join(s["detail"] for s in verdict.results["scenarios"] if s["outcome"] == "failed")


# -- the README's example ----------------------------------------------------------


def test_the_readme_shows_the_example_wrapper_as_it_is():
    assert EXAMPLE.read_text() in _readme_section(), (
        "the README's copy of examples/agent-stub-daemon.sh differs from the file")
    assert os.access(EXAMPLE, os.X_OK)


@pytest.mark.slow
def test_the_readme_example_passes_black_box(tmp_path):
    argv = _readme_command()
    assert "--repo-origin" in argv and "--server-env" in argv
    verdict = _run(tmp_path / "report", argv, "--rules", RULES)
    assert verdict.code == 0, verdict.output()
    assert verdict.results["profile"] == "black-box"
    assert verdict.rules == dict.fromkeys(RULES.split(","), "PASS")


@pytest.mark.slow
def test_without_repo_origin_startjob_is_refused_and_the_rules_fail(tmp_path):
    verdict = _run(tmp_path / "report", _without(_readme_command(), "--repo-origin"),
                   "--rules", "R3")
    assert verdict.code == 1, verdict.output()
    assert verdict.rules == {"R3": "FAIL"}
    assert "FAILED_PRECONDITION" in _failures(verdict) and "origin" in _failures(verdict)


@pytest.mark.slow
def test_without_the_agent_in_server_env_the_jobs_fail(tmp_path):
    verdict = _run(tmp_path / "report", _without(_readme_command(), "--server-env"),
                   "--rules", "R6")
    assert verdict.code == 1, verdict.output()
    assert verdict.rules["R6"] == "FAIL"


@pytest.mark.slow
def test_server_env_reaches_every_daemon_the_runner_starts_in_the_control_profile(tmp_path):
    """The control profile's R rules start real jobs too: both options work
    there, and each daemon (the runner's probe, the scenarios') gets the
    extra environment, values with spaces and '=' intact."""
    record = tmp_path / "environments"
    daemon = f"{sys.executable} {SERVER} --socket {{socket}} --db {{db}} --like-choo"
    wrapper = f"sh -c 'printf \"%s\\n\" \"$PROBE\" >> {record}; exec \"$@\"' probe {daemon}"
    verdict = _run(tmp_path / "report", ["--server-cmd", wrapper, "--repo-origin", ORIGIN,
                                         "--server-env", "CHOO_AGENT_CMD=true",
                                         "--server-env", "PROBE=two words=x", "--rules", "R6"])
    assert verdict.code == 0, verdict.output()
    assert verdict.results["profile"] == "control"
    seen = record.read_text().splitlines()
    assert len(seen) >= 2 and set(seen) == {"two words=x"}, seen


@pytest.mark.parametrize(("argv", "says"), [
    (["--server-cmd", "x", "--server-env", "NO_EQUALS"], "wants KEY=VALUE"),
    (["--server-cmd", "x", "--server-env", "1X=y"], "variable name"),
    (["--server-env", "A=b"], "give --server-cmd too"),
    (["--server-cmd", "x", "--repo-origin="], "not a remote URL"),
    (["--server-cmd", "x", "--repo-origin=--upload-pack=x"], "cannot start with '-'"),
])
def test_a_bad_option_is_a_usage_error(argv, says, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    assert says in capsys.readouterr().err


# -- the repository the suite makes ------------------------------------------------


def _git(repo: Path, *args: str) -> str:
    # The repository's own config alone: not the user's, not the machine's.
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=30).stdout.strip()


@pytest.fixture
def origin():
    """Sets the run's --repo-origin as the plugin would, for one test."""
    before = environment.settings.repo_origin

    def set_to(url):
        environment.settings.repo_origin = url

    yield set_to
    environment.settings.repo_origin = before


def test_the_repository_has_one_commit_on_main_an_identity_and_the_origin_asked_for(
        tmp_path, origin):
    origin(ORIGIN)
    make_repository(tmp_path)
    assert _git(tmp_path, "remote", "get-url", "origin") == ORIGIN
    assert _git(tmp_path, "config", "--local", "user.name")
    assert "@" in _git(tmp_path, "config", "--local", "user.email")
    assert _git(tmp_path, "rev-list", "--count", "main") == "1"
    assert _git(tmp_path, "symbolic-ref", "--short", "HEAD") == "main"
    # The identity is there for a daemon's own commits.
    assert subprocess.run(
        ["git", "-c", "user.useConfigOnly=true", "commit", "-q", "--allow-empty", "-m", "m"],
        cwd=tmp_path, capture_output=True, timeout=30,
        env={**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"},
    ).returncode == 0


def test_the_repository_has_no_remote_unless_asked(tmp_path, origin):
    origin(None)
    make_repository(tmp_path)
    assert _git(tmp_path, "remote") == ""
    assert _git(tmp_path, "config", "--local", "user.name")


# -- the foreign daemon's --like-choo mode ------------------------------------------


def _tasks(root: Path) -> Path:
    tasks = root / "tasks"
    (tasks / "u").mkdir(parents=True)
    (tasks / "u" / "IMPLEMENTATION_PLAN.md").write_text("---\nunit: u\n---\n\n# u\n")
    (tasks / "u" / "01-a.md").write_text('---\ntask: 1\nbackpressure: "true"\n---\n\n# a\n')
    return tasks


def _repository(root: Path, name: str, *setup: list[str]) -> Path:
    repo = root / name
    repo.mkdir()
    for argv in (["git", "init", "-q", "-b", "main"], *setup):
        subprocess.run(argv, cwd=repo, check=True, capture_output=True, timeout=30)
    return repo


@pytest.fixture
def folder():
    # Short: a Unix socket's path must fit in 108 bytes.
    with tempfile.TemporaryDirectory(prefix="fe-", dir="/tmp") as name:
        yield Path(name)


def _finished(stub, job_id: str):
    def ended():
        status = stub.GetJobStatus(daemon_pb2.GetJobStatusRequest(job_id=job_id), timeout=DEADLINE_S)
        return status if status.status in ("completed", "failed", "cancelled") else None

    status = wait_until(ended, DEADLINE_S)
    assert status, f"job {job_id} did not end within {DEADLINE_S} s"
    return ended()


@pytest.mark.slow
@pytest.mark.parametrize("agent", [None, "true"])
def test_like_choo_needs_a_github_origin_an_identity_and_an_agent(folder, agent):
    tasks = _tasks(folder)
    identity = [["git", "config", "user.name", "n"], ["git", "config", "user.email", "n@invalid"]]
    github = ["git", "remote", "add", "origin", "git@github.com:example/repo.git"]
    repos = {
        "none": _repository(folder, "none"),
        "gitlab": _repository(folder, "gitlab", ["git", "remote", "add", "origin",
                                                 "https://gitlab.com/example/repo.git"]),
        "anonymous": _repository(folder, "anonymous", github),
        "ready": _repository(folder, "ready", github, *identity),
    }
    env = {key: value for key, value in os.environ.items() if key != "CHOO_AGENT_CMD"}
    env.update({"CHOO_AGENT_CMD": agent} if agent else {})
    daemon = DaemonProcess([sys.executable, str(SERVER), "--socket", "{socket}", "--db", "{db}",
                            "--no-control", "--like-choo"], env=env).start()
    try:
        with grpc.insecure_channel(daemon.address) as channel:
            stub = daemon_pb2_grpc.DaemonServiceStub(channel)

            def start(repo: str):
                return stub.StartJob(daemon_pb2.StartJobRequest(
                    tasks_dir=str(tasks), target_branch="main", repo_path=str(repos[repo])),
                    timeout=DEADLINE_S)

            for refused, says in (("none", "no origin remote"), ("gitlab", "not a GitHub URL")):
                with pytest.raises(grpc.RpcError) as error:
                    start(refused)
                assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert says in error.value.details()
            anonymous = _finished(stub, start("anonymous").job_id)
            ready = _finished(stub, start("ready").job_id)
    finally:
        daemon.close()
    if agent is None:
        assert (anonymous.status, ready.status) == ("failed", "failed")
        assert "coding agent is not configured" in ready.error
    else:
        assert anonymous.status == "failed" and "cannot commit" in anonymous.error
        assert (ready.status, ready.error) == ("completed", "")
        assert _git(repos["ready"], "rev-list", "--count", "HEAD") == "1"  # the step's commit
