"""What a run says: a line per rule on the console as it finishes, and at the
end summary.md (for a person), junit.xml (for CI) and results.json (for
tools, and the repository's own tests), all from the same results."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from .known_lists import PatternList
from .results import (
    EXIT_FAILED,
    EXIT_NO_VERDICT,
    EXIT_PASSED,
    FAIL,
    FLAKY,
    NA,
    NOTRUN,
    PASS,
    SKIP,
    XFAIL,
    XPASS,
    RuleResult,
    ScenarioResult,
)

EXIT_MEANING = {
    EXIT_PASSED: "every selected rule passed (or is known to fail and still fails)",
    EXIT_FAILED: "a rule failed, or a known-failing rule passed",
    EXIT_NO_VERDICT: "no verdict: a selected rule was skipped or not run, or nothing was checked",
}


@dataclass
class RunInfo:
    title: str  # what ran against what, in words
    mode: str  # "in process", "--server-cmd", "--target"
    profile: str


def one_line(text: str, limit: int = 240) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def rule_line(rule: RuleResult) -> str:
    """The console line of a finished rule, and its explanation if any."""
    applicable = rule.applicable
    parts = [_plural(len(applicable), "scenario")]
    for verdict, word in ((SKIP, "skipped"), (FLAKY, "flaky"), (XFAIL, "known failing"),
                          (NOTRUN, "not run"), (NA, "not applicable")):
        count = rule.count(verdict)
        if count:
            parts.append(f"{count} {word}")
    line = (f"{rule.verdict:<7} {rule.rule.id:<4} {rule.rule.title}  "
            f"({', '.join(parts)}, {rule.seconds:.2f} s)")
    if client_side_only(rule):
        line += f"\n        {CLIENT_SIDE_ONLY}"
    detail = rule.detail()
    if rule.verdict != PASS and detail:
        line += f"\n        {one_line(detail, 200)}"
    return line


CLIENT_SIDE_ONLY = ("checked from the client side only: whether the daemon let go of the "
                    "subscription needs the control service (ListSubscriptions)")


def client_side_only(rule: RuleResult) -> bool:
    applicable = rule.applicable
    return bool(applicable) and all("client_side" in s.info.tags for s in applicable)


def closing_line(rules: list[RuleResult], scenarios: list[ScenarioResult]) -> str:
    def rules_with(*verdicts):
        return sum(1 for r in rules if r.verdict in verdicts)

    def scenarios_with(*verdicts):
        return sum(1 for s in scenarios if s.verdict in verdicts)

    return (f"rules: {rules_with(PASS)} passed, {rules_with(FAIL, XPASS)} failed, "
            f"{rules_with(SKIP, NOTRUN)} skipped or not run, {rules_with(XFAIL)} known failing, "
            f"{rules_with(NA)} not applicable; scenarios: {scenarios_with(PASS, FLAKY)} passed, "
            f"{scenarios_with(FAIL, XPASS)} failed, {scenarios_with(SKIP, NOTRUN)} skipped or not run, "
            f"{scenarios_with(XFAIL)} known failing, {scenarios_with(NA)} not applicable")


def _cell(text: str, limit: int = 300) -> str:
    return one_line(text, limit).replace("|", "\\|")


def write_summary(path: Path, run: RunInfo, rules: list[RuleResult],
                  scenarios: list[ScenarioResult], lists: list[PatternList], code: int) -> None:
    lines = [
        f"# choo.v1 conformance: {run.title}", "",
        f"- mode: {run.mode}", f"- profile: {run.profile}",
        f"- exit code: {code} ({EXIT_MEANING[code]})", "",
        "## Rules", "",
        "| rule | title | verdict | scenarios | skipped | not applicable | time | detail |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rules:
        detail = r.detail() or (CLIENT_SIDE_ONLY if client_side_only(r) else "")
        lines.append(
            f"| {r.rule.id} | {_cell(r.rule.title)} | {r.verdict} | {len(r.applicable)} | "
            f"{r.count(SKIP, NOTRUN)} | {r.count(NA)} | {r.seconds:.2f} s | {_cell(detail)} |")

    skipped = [r for r in rules if r.count(SKIP, NOTRUN)]
    if skipped:
        lines += ["", "## Skipped: rules not fully checked in this run", ""]
        for r in skipped:
            for s in r.scenarios:
                if s.verdict in (SKIP, NOTRUN):
                    lines.append(f"- {r.rule.id} `{s.info.key}`: {one_line(s.detail) or s.verdict}")

    na = [s for s in scenarios if s.verdict == NA]
    if na:
        lines += ["", "## Not applicable in this mode and profile", ""]
        for s in na:
            lines.append(f"- {','.join(s.info.rules) or '-'} `{s.info.key}`: {one_line(s.detail)}")

    lines += ["", "## Scenarios", "",
              "| rules | feature | scenario | example | verdict | time | detail |",
              "|---|---|---|---|---|---|---|"]
    for s in scenarios:
        example = ", ".join(f"{k}={v}" for k, v in s.info.example.items()) or "-"
        attempts = f" ({s.attempts} attempts)" if s.attempts > 1 else ""
        lines.append(
            f"| {','.join(s.info.rules) or '-'} | {s.info.feature} | {_cell(s.info.scenario)} | "
            f"{_cell(example)} | {s.verdict}{attempts} | {s.duration_s:.2f} s | {_cell(s.detail)} |")

    for patterns in lists:
        unused = patterns.unmatched()
        if unused:
            lines += ["", f"## {patterns.name} entries that matched no scenario", ""]
            lines += [f"- `{e.pattern}` ({e.where})" for e in unused]
    lines += ["", closing_line(rules, scenarios)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_junit(path: Path, run: RunInfo, scenarios: list[ScenarioResult]) -> None:
    """One testsuite per feature, one testcase per scenario (and example),
    each with its rule ids as properties. Not-applicable scenarios are left out."""
    root = ET.Element("testsuites", name=f"choo.v1 conformance: {run.title}")
    features: dict[str, ET.Element] = {}
    counts: dict[str, dict[str, int]] = {}
    for s in scenarios:
        if s.verdict == NA:
            continue
        suite = features.get(s.info.feature)
        if suite is None:
            suite = features[s.info.feature] = ET.SubElement(root, "testsuite", name=s.info.feature)
            counts[s.info.feature] = {"tests": 0, "failures": 0, "skipped": 0}
        tally = counts[s.info.feature]
        tally["tests"] += 1
        case = ET.SubElement(suite, "testcase", classname=s.info.feature, name=s.info.key,
                             time=f"{s.duration_s:.3f}")
        properties = ET.SubElement(case, "properties")
        for rule in s.info.rules:
            ET.SubElement(properties, "property", name="rule", value=rule)
        ET.SubElement(properties, "property", name="verdict", value=s.verdict)
        if s.verdict in (FAIL, XPASS):
            tally["failures"] += 1
            message = s.detail if s.verdict == FAIL else "known to fail, but passed"
            ET.SubElement(case, "failure", message=one_line(message, 1000)).text = s.detail
        elif s.verdict in (SKIP, NOTRUN, XFAIL):
            tally["skipped"] += 1
            ET.SubElement(case, "skipped", message=one_line(f"{s.verdict}: {s.detail}", 1000))
    for name, suite in features.items():
        for key, value in counts[name].items():
            suite.set(key, str(value))
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def write_results(path: Path, run: RunInfo, rules: list[RuleResult],
                  scenarios: list[ScenarioResult], lists: list[PatternList], code: int) -> None:
    data = {
        "title": run.title, "mode": run.mode, "profile": run.profile,
        "exit_code": code, "exit_meaning": EXIT_MEANING[code],
        "rules": [r.to_json() for r in rules],
        "scenarios": [s.to_json() for s in scenarios],
        "unmatched": {patterns.name: [e.pattern for e in patterns.unmatched()] for patterns in lists},
    }
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
