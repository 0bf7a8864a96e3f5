"""Running `choo-conformance` from the repository's tests, and reading what it
decided from its results.json: the same pipeline an implementer's CI reads."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from choo_conformance.results import load

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_DAEMON = (f"{sys.executable} -m choo_reference.cli daemon "
                    "--socket {socket} --db {db} --conformance-control")


def writing_down_databases(command: str, record: Path) -> str:
    """command, started so that each daemon first appends its {db} to record."""
    return f"sh -c 'echo \"$0\" >> {record}; exec \"$@\"' {{db}} {command}"


def daemon_folders_left(record: Path) -> tuple[list[str], list[str]]:
    """(every database written down in record, those whose folder is still there)."""
    databases = record.read_text().split()
    return databases, [db for db in databases if Path(db).parent.exists()]


@dataclass
class Verdict:
    code: int
    stdout: str
    stderr: str
    results: dict | None

    @property
    def rules(self) -> dict[str, str]:
        """rule id -> verdict (PASS, FAIL, SKIP, XFAIL, XPASS, N/A, NOT RUN)."""
        return {r["id"]: r["verdict"] for r in (self.results or {}).get("rules", [])}

    def output(self) -> str:
        return self.stdout[-4000:] + self.stderr[-4000:]


def conformance(report: Path, *args: str, timeout: float = 600,
                env: dict[str, str] | None = None, cwd: Path = ROOT) -> Verdict:
    """Runs the runner in a process of its own; the repository is on its
    path, so --implementation can name the broken implementations in tests/."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    run = subprocess.run(
        [sys.executable, "-m", "choo_conformance.cli", "--report", str(report), *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout, env=environment)
    results_path = report / "results.json"
    results = load(results_path) if results_path.exists() else None
    return Verdict(run.returncode, run.stdout, run.stderr, results)
