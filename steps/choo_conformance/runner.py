"""`choo-ref conformance`: run the feature files against an implementation
and report per rule.

With no target the scenarios run in process against the reference servicer;
with --server-cmd the runner starts the implementation under test as a
process (a fresh one for scenarios that end or restart it); with --target it
uses a daemon that is already running. The scenarios run under pytest in a
child process, so a hung implementation cannot take the runner down with it.

A rule passes when every scenario tagged with it that ran passed. Rules in
the --known-failing list are reported but do not fail the run; a listed rule
that passes does, so that the list only ever shrinks.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .rules import RULES, is_rule

PACKAGE = Path(__file__).resolve().parent


@dataclass
class RuleResult:
    rule: str
    scenarios: list[dict] = field(default_factory=list)
    known_failing: bool = False

    @property
    def status(self) -> str:
        outcomes = {s["outcome"] for s in self.scenarios}
        if "failed" in outcomes:
            return "failed"
        if "passed" in outcomes:
            return "passed"
        return "skipped"

    @property
    def verdict(self) -> str:
        """What the run makes of it: PASS, FAIL, SKIP, XFAIL (known failing,
        failed) or XPASS (known failing, passed: take it off the list)."""
        if self.known_failing:
            return {"failed": "XFAIL", "passed": "XPASS"}.get(self.status, "SKIP")
        return {"failed": "FAIL", "passed": "PASS", "skipped": "SKIP"}[self.status]

    @property
    def seconds(self) -> float:
        return sum(s["duration_s"] for s in self.scenarios)

    def detail(self) -> str:
        failed = [s for s in self.scenarios if s["outcome"] == "failed"]
        if failed:
            return f"{failed[0]['scenario']}: {failed[0]['detail']}".strip()
        if self.status == "skipped" and self.scenarios:
            return self.scenarios[0]["detail"]
        return ""


def read_known_failing(path: str | None) -> set[str]:
    if not path:
        return set()
    rules = set()
    for line in Path(path).read_text().splitlines():
        rule = line.split("#", 1)[0].strip()
        if rule:
            if not is_rule(rule):
                raise SystemExit(f"{path}: {rule!r} is not a rule id of the contract")
            rules.add(rule)
    return rules


def _answers_health(target: str) -> bool:
    import grpc

    from choo.v1 import daemon_pb2, daemon_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        try:
            daemon_pb2_grpc.DaemonServiceStub(channel).Health(daemon_pb2.HealthRequest(), timeout=5)
            return True
        except grpc.RpcError:
            return False


def rule_results(records: list[dict], known_failing: set[str]) -> list[RuleResult]:
    by_rule: dict[str, RuleResult] = {}
    for record in records:
        for tag in record["tags"]:
            if is_rule(tag):
                by_rule.setdefault(tag, RuleResult(tag)).scenarios.append(record)
    for rule, result in by_rule.items():
        result.known_failing = rule in known_failing
    order = list(RULES)
    return sorted(by_rule.values(), key=lambda r: order.index(r.rule))


def _one_line(text: str, limit: int = 240) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def write_summary(results: list[RuleResult], records: list[dict], path: Path, title: str) -> None:
    lines = [f"# choo.v1 conformance: {title}", "",
             "| rule | title | result | time | detail |", "|---|---|---|---|---|"]
    for r in results:
        detail = _one_line(r.detail()).replace("|", "\\|")
        lines.append(f"| {r.rule} | {RULES[r.rule]} | {r.verdict} | {r.seconds:.2f} s | {detail} |")
    lines += ["", "## Scenarios", "", "| scenario | rules | result | time | detail |",
              "|---|---|---|---|---|"]
    for s in records:
        rules = ",".join(t for t in s["tags"] if is_rule(t)) or "-"
        detail = _one_line(s["detail"]).replace("|", "\\|")
        lines.append(f"| {s['scenario']} | {rules} | {s['outcome']} | {s['duration_s']:.2f} s | {detail} |")
    lines += ["", _closing_line(results)]
    path.write_text("\n".join(lines) + "\n")


def _closing_line(results: list[RuleResult]) -> str:
    passed = sum(r.verdict == "PASS" for r in results)
    failed = sum(r.verdict in ("FAIL", "XPASS") for r in results)
    skipped = sum(r.verdict == "SKIP" for r in results)
    return f"{passed} passed, {failed} failed, {skipped} skipped"


def pytest_command(report_dir: Path, *, server_cmd=None, target=None, rules=None, tags=None,
                   extra=()) -> list[str]:
    command = [
        sys.executable, "-m", "pytest", str(PACKAGE / "scenarios"), "-q", "-p", "no:cacheprovider",
        "-p", "choo_conformance.plugin",
        "-p", "choo_conformance.results_plugin", f"--results-json={report_dir / 'results.json'}",
        f"--rootdir={PACKAGE}", f"--cucumberjson={report_dir / 'cucumber.json'}",
        f"--junitxml={report_dir / 'junit.xml'}",
    ]
    if server_cmd:
        command.append(f"--server-cmd={server_cmd}")
    if target:
        command.append(f"--target={target}")
    markers = []
    if rules:
        markers.append("(" + " or ".join(rules) + ")")
    if tags:
        markers.append(f"({tags})")
    if markers:
        command += ["-m", " and ".join(markers)]
    return command + list(extra)


def run(report_dir: Path, *, server_cmd: str | None = None, target: str | None = None,
        rules: list[str] | None = None, tags: str | None = None,
        known_failing: str | None = None, title: str | None = None) -> int:
    for rule in rules or ():
        if not is_rule(rule):
            print(f"error: {rule!r} is not a rule id (known: {', '.join(RULES)})", file=sys.stderr)
            return 2
    known = read_known_failing(known_failing)
    if target and not _answers_health(target):
        print(f"error: no daemon answers Health at {target}; start it first, or give "
              "--server-cmd to let the runner start one", file=sys.stderr)
        return 2
    title = title or (f"against {target}" if target else
                      f"against `{server_cmd}`" if server_cmd else "in process")
    report_dir.mkdir(parents=True, exist_ok=True)
    results_path = report_dir / "results.json"
    results_path.unlink(missing_ok=True)
    proc = subprocess.run(
        pytest_command(report_dir, server_cmd=server_cmd, target=target, rules=rules, tags=tags),
        capture_output=True, text=True,
    )
    (report_dir / "pytest.log").write_text(proc.stdout + proc.stderr)
    if not results_path.exists():
        print(proc.stdout[-4000:] + proc.stderr[-4000:], file=sys.stderr)
        print("error: the suite did not run; see the output above", file=sys.stderr)
        return 2
    records = json.loads(results_path.read_text())
    results = rule_results(records, known)
    write_summary(results, records, report_dir / "summary.md", title)

    print(f"== choo.v1 conformance {title}")
    for r in results:
        count = len(r.scenarios)
        print(f"{r.verdict:<5} {r.rule:<4} {RULES[r.rule]}  "
              f"({count} scenario{'s' * (count != 1)}, {r.seconds:.2f} s)")
        if r.verdict in ("FAIL", "XFAIL", "SKIP") and r.detail():
            print(f"      {_one_line(r.detail(), 200)}")
        if r.verdict == "XPASS":
            print("      passes now: remove it from the known-failing list")
    missing_known = sorted(known - {r.rule for r in results})
    if missing_known:
        print(f"note: known-failing rules not run: {', '.join(missing_known)}")
    xfail = sum(r.verdict == "XFAIL" for r in results)
    if xfail:
        print(f"{xfail} known failing (not counted as failures)")
    print(f"report: {report_dir / 'summary.md'}")
    print(_closing_line(results))
    bad = any(r.verdict in ("FAIL", "XPASS") for r in results)
    return 1 if bad else 0
