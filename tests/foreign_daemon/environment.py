"""`--like-choo`: what choo's own daemon needs of its surroundings, asked of
every job, so that the suite's options for such daemons (`--repo-origin`,
`--server-env`, the git identity in its repositories) are proved against a
daemon that works only with them:

- StartJob refuses (FAILED_PRECONDITION) a repo_path whose `origin` remote
  is not a GitHub URL;
- before each step's command it runs the coding agent: the command in
  CHOO_AGENT_CMD, with /bin/sh in repo_path, in a process group of its own
  (a forced stop kills it); without one the step fails, saying the agent is
  not configured;
- after each step that passes it commits in the repository (`git commit
  --allow-empty`), with the identity of the repository's own config alone
  (not the user's, not the environment's, not one guessed from the host):
  without one the commit fails, and so does the step, and the job.

Off, each hook does nothing. server.py switches it on; service.py and
conductor.py call the hooks.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import tempfile

import grpc

from .model import Refusal, quote

log = logging.getLogger("foreign")

AGENT_VARIABLE = "CHOO_AGENT_CMD"
OUTPUT_TAIL_BYTES = 1024
GIT_TIMEOUT_S = 30.0
# https://github.com/OWNER/REPO(.git), git@github.com:OWNER/REPO(.git), ssh://git@github.com/...
_GITHUB = re.compile(
    r"(?:https://(?:[^@/]+@)?github\.com/|git@github\.com:|ssh://git@github\.com/)"
    r"[\w.-]+/[\w.-]+?(?:\.git)?/?")

like_choo = False


def switch_on() -> None:
    global like_choo
    like_choo = True


def _git_env() -> dict[str, str]:
    """The environment git runs in: the repository's own config alone."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("GIT_AUTHOR_", "GIT_COMMITTER_")) and key != "EMAIL"}
    env.update(GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0")
    return env


async def _git(repo_path: str, *args: str) -> tuple[int, str]:
    """git's exit status and output; 127 when git cannot be started."""
    try:
        proc = await asyncio.create_subprocess_exec(
            "git", "-c", "user.useConfigOnly=true", *args, cwd=repo_path, env=_git_env(),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except OSError as exc:
        return 127, f"cannot start git: {exc.strerror or exc}"
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), GIT_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, f"git {args[0]} took more than {GIT_TIMEOUT_S:g} s"
    return proc.returncode or 0, output.decode("utf-8", "replace").strip()


async def check_repository(repo_path: str) -> None:
    """StartJob's hook: refuses a repository whose origin is not on GitHub."""
    if not like_choo:
        return
    code, output = await _git(repo_path, "remote", "get-url", "origin")
    if code != 0:
        raise Refusal(grpc.StatusCode.FAILED_PRECONDITION,
                      f"repo_path {quote(repo_path)} has no origin remote ({output[-200:]}); "
                      "this daemon works on repositories whose origin is on GitHub")
    if not _GITHUB.fullmatch(output):
        raise Refusal(grpc.StatusCode.FAILED_PRECONDITION,
                      f"the origin of {quote(repo_path)} is {quote(output)}, not a GitHub URL "
                      "(https://github.com/OWNER/REPO or git@github.com:OWNER/REPO)")


async def before_step(conductor, unit, step) -> str | None:
    """The conductor's hook before a step's command: runs the coding agent.
    None when it succeeded; 'killed' by a forced stop; else why it failed."""
    if not like_choo:
        return None
    command = os.environ.get(AGENT_VARIABLE)
    if not command:
        return (f"the coding agent is not configured: set {AGENT_VARIABLE} to the command that "
                "runs it")
    with tempfile.TemporaryFile(prefix="foreign-agent-") as output:
        try:
            proc = await asyncio.create_subprocess_exec(
                "/bin/sh", "-c", command, cwd=conductor.job.repo_path,
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                process_group=0)
        except OSError as exc:
            return f"cannot start the coding agent: {exc.strerror or exc}"
        # Among the conductor's process groups, so that a forced stop kills it.
        conductor._groups.add(proc.pid)
        if conductor.forced:
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            code = await proc.wait()
        finally:
            conductor._groups.discard(proc.pid)
        output.seek(max(0, output.seek(0, os.SEEK_END) - OUTPUT_TAIL_BYTES))
        tail = output.read().decode("utf-8", "replace").strip()
    if conductor.forced and code < 0:
        return "killed"
    if code != 0:
        return f"the coding agent ({AGENT_VARIABLE}) exited with status {code}: {tail}"
    return None


async def after_step(conductor, unit, step) -> str | None:
    """The conductor's hook after a step passed: commits its work. None when
    the commit was made; else why it was not."""
    if not like_choo:
        return None
    message = f"{conductor.job.job_id}: unit {unit.unit_id}, step {step.number} ({step.file})"
    code, output = await _git(conductor.job.repo_path, "-c", "commit.gpgsign=false", "commit",
                              "-q", "--no-verify", "--allow-empty", "-m", message)
    if code != 0:
        log.warning("job %s: cannot commit after step %d of unit %s: %s",
                    conductor.job.job_id, step.number, unit.unit_id, output)
        return f"cannot commit the step's work in {conductor.job.repo_path}: {output[-300:]}"
    return None
