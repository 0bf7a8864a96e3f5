"""What the suite gives a daemon besides its tasks folders: the git repository
each StartJob names (`repo_path`), and the environment of the daemon process
the suite starts.

Some daemons need more of both than the specification asks: choo's own
refuses a repository whose `origin` remote is not on GitHub, commits after
each task, and runs a coding agent configured through its environment. So
every repository the suite makes has a git identity in its own config, gets
an `origin` remote when the run names one (`--repo-origin`; nothing ever
fetches from it), and `--server-env KEY=VALUE` adds to the daemon's
environment.

The runner process imports this module too: nothing of pytest here.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field

# The identity in each repository's own config, for a daemon that commits.
IDENTITY = (("user.name", "choo conformance"), ("user.email", "suite@invalid"))
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def server_env_item(text: str) -> tuple[str, str]:
    """KEY=VALUE, as argparse's type for --server-env."""
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"wants KEY=VALUE, got {text!r} (no '=')")
    if not _NAME.fullmatch(key):
        raise argparse.ArgumentTypeError(
            f"wants KEY=VALUE with KEY a variable name (letters, digits, _), got {key!r}")
    if "\0" in value:
        raise argparse.ArgumentTypeError(f"the value of {key} contains a NUL character")
    return key, value


def repo_origin(text: str) -> str:
    """A URL for `git remote add`, as argparse's type for --repo-origin."""
    if not text.strip() or any(c in text for c in "\0\n\r"):
        raise argparse.ArgumentTypeError(f"not a remote URL: {text!r}")
    if text.startswith("-"):  # git would read it as an option
        raise argparse.ArgumentTypeError(f"a remote URL cannot start with '-': {text!r}")
    return text


@dataclass
class Settings:
    repo_origin: str | None = None
    server_env: dict[str, str] = field(default_factory=dict)

    def daemon_env(self) -> dict[str, str] | None:
        """The environment of a daemon the suite starts: its own, plus
        --server-env; None (inherit) when there is nothing to add."""
        return {**os.environ, **self.server_env} if self.server_env else None


# The pytest process's settings, from its options (plugin.py sets them):
# the steps make repositories where no fixture reaches.
settings = Settings()


def configure(origin: str | None, server_env: list[tuple[str, str]] | None) -> None:
    settings.repo_origin = origin
    settings.server_env = dict(server_env or ())
