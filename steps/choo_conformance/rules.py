"""The contract's rules, as the feature files declare them: every `Rule:`
block is named "<id> <title>" and tagged with its id. This is the one place
rule ids and titles come from; docs/SPEC.md states the same rules in prose."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .scenario_info import is_rule, rule_order

# The feature files: the contract's rules and their scenarios.
FEATURES = Path(__file__).resolve().parent / "features"


@dataclass(frozen=True)
class Rule:
    id: str
    title: str


class RuleBlockError(ValueError):
    pass


# The keywords that open a scenario in Gherkin (an outline's "Examples:"
# table is not one of them).
_SCENARIO_KEYWORDS = frozenset({"Scenario", "Scenario Outline", "Scenario Template", "Example"})
_DOC_STRING_FENCES = ('"""', "```")


def _rule_blocks(path: Path) -> Iterator[tuple[str, frozenset[str]]]:
    """(name, tags) of each Rule block of a feature file that holds a
    scenario, in file order. Only the Gherkin the runner needs (tags,
    keywords, comments, doc strings), read without pytest-bdd, so that the
    runner never imports pytest (tests/test_rules.py compares the two)."""
    tags: list[str] = []
    rule: tuple[str, frozenset[str]] | None = None
    announced = False
    fence: str | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if fence is not None:
            fence = None if text.startswith(fence) else fence
            continue
        if text.startswith(_DOC_STRING_FENCES):
            fence = text[:3]
            continue
        if not text or text.startswith("#"):
            continue
        if text.startswith("@"):
            tags += [tag[1:] for tag in text.partition(" #")[0].split()]
            continue
        keyword = text.partition(":")[0]
        if keyword == "Rule":
            rule, announced = (text.partition(":")[2].strip(), frozenset(tags)), False
        elif keyword == "Feature":
            rule = None
        elif keyword in _SCENARIO_KEYWORDS and rule is not None and not announced:
            announced = True
            yield rule
        tags = []


def read_rules(features: Path) -> dict[str, Rule]:
    """Rule id -> Rule, in the contract's order. A rule declared in several
    feature files must have the same title in each."""
    rules: dict[str, Rule] = {}
    for path in sorted(features.glob("*.feature")):
        for name, tags in _rule_blocks(path):
            rule_id, _, title = name.partition(" ")
            if not is_rule(rule_id) or rule_id not in tags:
                raise RuleBlockError(
                    f"{path}: the Rule block {name!r} must be named "
                    "'<id> <title>' and tagged @<id>")
            known = rules.setdefault(rule_id, Rule(rule_id, title.strip()))
            if known.title != title.strip():
                raise RuleBlockError(
                    f"{path}: rule {rule_id} is titled {title.strip()!r} here "
                    f"and {known.title!r} elsewhere")
    return {r: rules[r] for r in sorted(rules, key=rule_order)}


@functools.cache
def contract_rules() -> dict[str, Rule]:
    return read_rules(FEATURES)
