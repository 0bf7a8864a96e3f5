"""What a run says: a line per rule on the console as it finishes, and at the
end summary.md (for a person), junit.xml (for CI) and results.json (for
tools, and the repository's own tests), all from the same results."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .known_lists import PatternList
from .results import (
    BLOCKED,
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
    EXIT_FAILED: "a rule failed or was blocked, or a known-failing rule passed",
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


# What reruns one scenario alone (the runner knows the command it was given).
Rerun = Callable[[ScenarioResult], str]
# How many lines of a failure's story the console shows.
_STORY_LINES = 12


def rule_line(rule: RuleResult, rerun: Rerun | None = None) -> str:
    """The console line of a finished rule, its explanation if any, and for
    a failed or blocked rule the story of its first such scenario."""
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
    scenario = rule.first(rule.verdict) if rule.verdict in (FAIL, BLOCKED) else None
    if scenario is not None:
        story = scenario.story[:_STORY_LINES]
        line += "".join(f"\n          {one_line(text, 300)}" for text in story)
        if rerun is not None:
            line += f"\n          rerun it alone: {rerun(scenario)}"
    return line


def _why(scenario: ScenarioResult) -> str:
    """A blocked scenario's cause: the precondition it names, or its detail
    less the step."""
    return scenario.cause or scenario.detail.split(": ", 1)[-1]


def cause_of(scenario: ScenarioResult) -> str:
    """What a blocked scenario's failure says, without the scenario's own
    ids, paths and numbers: scenarios blocked by one defect share it."""
    why = _why(scenario)
    why = re.sub(r"\([^()]*\)", "", why)  # how long it waited, and the like
    why = re.sub(r"'[^']*'|\"[^\"]*\"", "'...'", why)
    why = re.sub(r"\b[0-9a-f]{8,}\b|\b\w*\d[\w.-]*\b|/\S+", "#", why)
    return one_line(why, 160)


def blocked_groups(rules: list[RuleResult]) -> list[tuple[str, list[str], ScenarioResult]]:
    """The blocked rules grouped by cause, most rules first: (the cause as one
    of its scenarios words it, the rule ids, that scenario)."""
    groups: dict[str, tuple[list[str], ScenarioResult]] = {}
    for rule in rules:
        if rule.verdict != BLOCKED:
            continue
        scenario = rule.first(BLOCKED)
        assert scenario is not None
        ids, _ = groups.setdefault(cause_of(scenario), ([], scenario))
        ids.append(rule.rule.id)
    ordered = sorted(groups.values(), key=lambda group: -len(group[0]))
    return [(_why(first), ids, first) for ids, first in ordered]


def first_things(rules: list[RuleResult], rerun: Rerun | None = None) -> list[str]:
    """What to look at first: each cause that blocked rules, with the rules it
    blocked, before the rules that failed on their own."""
    lines = []
    for cause, ids, scenario in blocked_groups(rules):
        lines.append(f"BLOCKED {_plural(len(ids), 'rule')} ({', '.join(ids)}) by one cause, upstream of "
                     f"what they check: {one_line(cause, 200)}")
        lines.append(f"        first seen in {scenario.info.key}, at {scenario.detail.split(': ', 1)[0]}")
        if rerun is not None:
            lines.append(f"        rerun it alone: {rerun(scenario)}")
    failed = [r.rule.id for r in rules if r.verdict in (FAIL, XPASS)]
    if failed and lines:
        lines.append(f"FAILED  {_plural(len(failed), 'rule')} on their own: {', '.join(failed)}")
    return lines


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
            f"{rules_with(BLOCKED)} blocked, "
            f"{rules_with(SKIP, NOTRUN)} skipped or not run, {rules_with(XFAIL)} known failing, "
            f"{rules_with(NA)} not applicable; scenarios: {scenarios_with(PASS, FLAKY)} passed, "
            f"{scenarios_with(FAIL, XPASS)} failed, {scenarios_with(BLOCKED)} blocked, "
            f"{scenarios_with(SKIP, NOTRUN)} skipped or not run, "
            f"{scenarios_with(XFAIL)} known failing, {scenarios_with(NA)} not applicable")


def _cell(text: str, limit: int = 300) -> str:
    return one_line(text, limit).replace("|", "\\|")


def write_summary(path: Path, run: RunInfo, rules: list[RuleResult],
                  scenarios: list[ScenarioResult], lists: list[PatternList], code: int,
                  rerun: Rerun | None = None) -> None:
    lines = [
        f"# choo.v1 conformance: {run.title}", "",
        f"- mode: {run.mode}", f"- profile: {run.profile}",
        f"- exit code: {code} ({EXIT_MEANING[code]})", "",
    ]
    groups = blocked_groups(rules)
    if groups:
        lines += ["## Blocked: look at these first", "",
                  "Each cause below kept the scenarios of these rules from reaching what the rule "
                  "checks (their set-up could not be built); fix it, and their verdicts follow.", ""]
        for cause, ids, scenario in groups:
            lines.append(f"- **{_plural(len(ids), 'rule')} ({', '.join(ids)})**: {_cell(cause, 500)} "
                         f"(first in `{scenario.info.key}`)")
        lines.append("")
    lines += [
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
        lines += ["", "## Not applicable in this mode and profile, or to this implementation", ""]
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

    wrong = [s for s in scenarios if s.verdict in (FAIL, BLOCKED, XPASS)]
    if wrong:
        lines += ["", "## What happened", ""]
        for s in wrong:
            lines += [f"### {s.verdict} `{s.info.key}`", "", f"{s.detail}", ""]
            if s.story:
                lines += ["```", *s.story, "```", ""]
            if rerun is not None:
                lines += [f"Rerun it alone: `{rerun(s)}`", ""]

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
            counts[s.info.feature] = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
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
            ET.SubElement(case, "failure", message=one_line(message, 1000)).text = "\n".join(
                [s.detail, *s.story])
        elif s.verdict == BLOCKED:
            # An error, not a failure: the scenario never reached what it checks.
            tally["errors"] += 1
            ET.SubElement(case, "error", message=one_line(f"BLOCKED: {s.detail}", 1000)).text = "\n".join(
                [s.detail, *s.story])
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
