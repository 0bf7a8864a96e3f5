"""From scenario outcomes to verdicts: per scenario, per rule, and the exit
code of the run (0 every selected rule passed or is known to fail and still
fails; 1 a rule failed, or a known-failing one passed; 2 no verdict)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .known_lists import PatternList
from .rules import Rule
from .scenario_info import ScenarioInfo, rule_order

# Scenario outcomes, as the pytest process reports them (plus the runner's own).
PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
BLOCKED_OUTCOME = "blocked"  # its set-up (a Given, or a precondition) could not be built
NOT_APPLICABLE = "not applicable"  # by design, in this mode or profile
# How a step says, as it runs, that its scenario does not apply: the
# implementation lacks something optional the scenario needs (a skip whose
# reason starts with this is reported not applicable, not skipped).
NOT_APPLICABLE_MARK = "not applicable: "
NOT_RUN = "not run"  # the run ended (--timeout) before it

# Verdicts.
PASS, FAIL, SKIP, XFAIL, XPASS, FLAKY, NA, NOTRUN, BLOCKED = (
    "PASS", "FAIL", "SKIP", "XFAIL", "XPASS", "FLAKY", "N/A", "NOT RUN", "BLOCKED")

EXIT_PASSED, EXIT_FAILED, EXIT_NO_VERDICT = 0, 1, 2


@dataclass
class ScenarioResult:
    info: ScenarioInfo
    outcome: str
    detail: str = ""
    duration_s: float = 0.0
    attempts: int = 0
    known_failing: bool = False
    known_flaky: bool = False
    story: list[str] = field(default_factory=list)  # steps, calls and answers of a failure
    cause: str = ""  # a blocked scenario's precondition, in words shared by all it blocked

    @property
    def went_wrong(self) -> bool:
        return self.outcome in (FAILED, BLOCKED_OUTCOME)

    @property
    def verdict(self) -> str:
        if self.outcome == NOT_APPLICABLE:
            return NA
        if self.outcome == NOT_RUN:
            return NOTRUN
        if self.outcome == SKIPPED:
            return SKIP
        if self.known_flaky and (self.went_wrong or self.attempts > 1):
            return FLAKY
        if self.known_failing:
            return XFAIL if self.went_wrong else XPASS
        if self.outcome == BLOCKED_OUTCOME:
            return BLOCKED
        return FAIL if self.outcome == FAILED else PASS

    def to_json(self) -> dict:
        return {**self.info.to_json(), "id": self.info.key, "ids": self.info.ids,
                "outcome": self.outcome, "verdict": self.verdict, "detail": self.detail,
                "story": self.story, "cause": self.cause, "duration_s": round(self.duration_s, 3),
                "attempts": self.attempts}


# Which scenario verdict decides the rule's, most telling first.
# A failure is the rule's own; a blocked scenario never reached the rule.
_PRECEDENCE = (FAIL, XPASS, BLOCKED, NOTRUN, SKIP, XFAIL, PASS)


@dataclass
class RuleResult:
    rule: Rule
    scenarios: list[ScenarioResult] = field(default_factory=list)

    @property
    def applicable(self) -> list[ScenarioResult]:
        return [s for s in self.scenarios if s.outcome != NOT_APPLICABLE]

    @property
    def verdict(self) -> str:
        verdicts = {PASS if s.verdict == FLAKY else s.verdict for s in self.applicable}
        for verdict in _PRECEDENCE:
            if verdict in verdicts:
                return verdict
        return NA

    @property
    def seconds(self) -> float:
        return sum(s.duration_s for s in self.scenarios)

    def count(self, *verdicts: str) -> int:
        return sum(1 for s in self.scenarios if s.verdict in verdicts)

    def first(self, *verdicts: str) -> ScenarioResult | None:
        return next((s for s in self.scenarios if s.verdict in verdicts), None)

    def detail(self) -> str:
        """The line that explains the verdict."""
        verdict = self.verdict
        if verdict in (FAIL, BLOCKED, XFAIL, XPASS, SKIP, NOTRUN):
            scenario = self.first(verdict)
            assert scenario is not None
            text = scenario.detail or ""
            if verdict == XPASS:
                text = "passes now: take it off the known-failing list"
            return f"{scenario.info.key}: {text}".strip(": ")
        if verdict == NA:
            return self.scenarios[0].detail if self.scenarios else ""
        return ""

    def to_json(self) -> dict:
        return {"id": self.rule.id, "title": self.rule.title, "verdict": self.verdict,
                "scenarios": len(self.applicable), "passed": self.count(PASS, FLAKY),
                "failed": self.count(FAIL), "blocked": self.count(BLOCKED),
                "skipped": self.count(SKIP),
                "known_failing": self.count(XFAIL), "xpass": self.count(XPASS),
                "flaky": self.count(FLAKY), "not_run": self.count(NOTRUN),
                "not_applicable": self.count(NA), "seconds": round(self.seconds, 3),
                "detail": self.detail()}


def mark_known(results: list[ScenarioResult], known_failing: PatternList,
               known_flaky: PatternList) -> None:
    for result in results:
        result.known_failing = known_failing.matches(result.info)
        result.known_flaky = known_flaky.matches(result.info)


def by_rule(results: list[ScenarioResult], rules: dict[str, Rule]) -> list[RuleResult]:
    grouped: dict[str, RuleResult] = {}
    for result in results:
        for rule_id in result.info.rules:
            rule = rules.get(rule_id) or Rule(rule_id, "(no Rule block declares it)")
            grouped.setdefault(rule_id, RuleResult(rule)).scenarios.append(result)
    return [grouped[r] for r in sorted(grouped, key=rule_order)]


def exit_code(rules: list[RuleResult], allow_skips: bool) -> int:
    verdicts = [r.verdict for r in rules]
    if FAIL in verdicts or XPASS in verdicts or BLOCKED in verdicts:
        return EXIT_FAILED
    if not any(v in (PASS, XFAIL) for v in verdicts):
        return EXIT_NO_VERDICT  # nothing was checked
    if NOTRUN in verdicts or (SKIP in verdicts and not allow_skips):
        return EXIT_NO_VERDICT
    return EXIT_PASSED


def load(path: str | Path) -> dict:
    """A results.json the runner wrote: {"rules": [...], "scenarios": [...], ...}."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
