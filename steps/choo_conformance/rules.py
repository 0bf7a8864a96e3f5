"""The contract's rules, as the feature files declare them: every `Rule:`
block is named "<id> <title>" and tagged with its id. This is the one place
rule ids and titles come from; docs/SPEC.md states the same rules in prose."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from .scenario_info import is_rule, rule_order


@dataclass(frozen=True)
class Rule:
    id: str
    title: str


class RuleBlockError(ValueError):
    pass


def read_rules(features: Path) -> dict[str, Rule]:
    """Rule id -> Rule, in the contract's order. A rule declared in several
    feature files must have the same title in each."""
    from pytest_bdd.feature import get_features

    rules: dict[str, Rule] = {}
    for feature in get_features([str(path) for path in sorted(features.glob("*.feature"))]):
        for scenario in feature.scenarios.values():
            block = scenario.rule
            if block is None:
                continue
            rule_id, _, title = block.name.partition(" ")
            if not is_rule(rule_id) or rule_id not in block.tags:
                raise RuleBlockError(
                    f"{feature.filename}: the Rule block {block.name!r} must be named "
                    "'<id> <title>' and tagged @<id>")
            known = rules.setdefault(rule_id, Rule(rule_id, title.strip()))
            if known.title != title.strip():
                raise RuleBlockError(
                    f"{feature.filename}: rule {rule_id} is titled {title.strip()!r} here "
                    f"and {known.title!r} elsewhere")
    return {r: rules[r] for r in sorted(rules, key=rule_order)}


@functools.cache
def contract_rules() -> dict[str, Rule]:
    from .plugin import FEATURES

    return read_rules(FEATURES)
