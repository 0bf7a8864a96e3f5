"""`choo-ref conformance`: run the feature files and report per rule.

The scenarios run under pytest in a child process (so a hung implementation
cannot take the runner down with it); results come back through pytest-bdd's
cucumber JSON and are summarised on the terminal and in the report folder.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .cucumber import ScenarioResult, read_results

ROOT = Path(__file__).resolve().parent.parent

_MARK = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP"}


def _label(result: ScenarioResult) -> str:
    rules = ",".join(result.rules) or "-"
    others = " ".join(f"@{t}" for t in result.tags if t not in result.rules)
    return f"{rules:<4} {result.name}  [{others}]"


def write_summary(results: list[ScenarioResult], path: Path, title: str) -> None:
    lines = [f"# Conformance: {title}", "", "| rule | scenario | result | time | detail |",
             "|---|---|---|---|---|"]
    for r in results:
        detail = r.message.strip().splitlines()[-1] if r.message.strip() else ""
        detail = detail.replace("|", "\\|")[:200]
        lines.append(f"| {','.join(r.rules) or '-'} | {r.name} | {r.status} "
                     f"| {r.duration_s:.3f} s | {detail} |")
    passed = sum(r.status == "passed" for r in results)
    failed = sum(r.status == "failed" for r in results)
    lines += ["", f"{passed} passed, {failed} failed"]
    path.write_text("\n".join(lines) + "\n")


def run(report_dir: Path, pytest_args: list[str] = (), title: str = "in process") -> int:
    report_dir.mkdir(parents=True, exist_ok=True)
    cucumber = report_dir / "cucumber.json"
    cucumber.unlink(missing_ok=True)
    command = [
        sys.executable, "-m", "pytest", str(ROOT / "steps"), "-q", "-p", "no:cacheprovider",
        f"--rootdir={ROOT}", f"--cucumberjson={cucumber}",
        f"--junitxml={report_dir / 'junit.xml'}", *pytest_args,
    ]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    (report_dir / "pytest.log").write_text(proc.stdout + proc.stderr)
    if not cucumber.exists():
        print(proc.stdout + proc.stderr, file=sys.stderr)
        print("the suite did not run; see the output above", file=sys.stderr)
        return 2
    results = read_results(cucumber)
    print(f"== choo.v1 conformance: {title}")
    for result in results:
        print(f"{_MARK[result.status]}  {_label(result)}  {result.duration_s:.2f} s")
    write_summary(results, report_dir / "summary.md", title)
    passed = sum(r.status == "passed" for r in results)
    failed = sum(r.status == "failed" for r in results)
    skipped = sum(r.status == "skipped" for r in results)
    print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    print(f"report: {report_dir}/summary.md")
    return 0 if failed == 0 and proc.returncode in (0, 5) else 1
