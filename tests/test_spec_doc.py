"""docs/SPEC.md gives every rule its own section, headed `### <ID> — <title>`,
once each, WatchJob rules first and then the other RPCs, in id order: the
report, the feature files and the specification name rules the same way."""

from __future__ import annotations

import re
from pathlib import Path

SPEC = Path(__file__).resolve().parent.parent / "docs" / "SPEC.md"

RULE_IDS = [f"W{n}" for n in range(1, 19)] + [f"R{n}" for n in range(1, 12)]

# A rule heading: the id, an em dash with a space either side, a title.
RULE_HEADING = re.compile(r"^### (?P<id>[WR]\d+) — (?P<title>\S.*)$")
# Anything that starts like a rule heading, well formed or not.
RULE_LIKE = re.compile(r"^#+\s*[WR]\d+\b")


def rule_headings(text: str) -> list[tuple[str, str]]:
    return [(m["id"], m["title"]) for m in map(RULE_HEADING.match, text.splitlines()) if m]


def malformed_rule_headings(text: str) -> list[str]:
    return [line for line in text.splitlines()
            if RULE_LIKE.match(line) and not RULE_HEADING.match(line)]


def test_every_rule_has_one_heading_in_id_order():
    ids = [rule_id for rule_id, _ in rule_headings(SPEC.read_text(encoding="utf-8"))]
    missing = [r for r in RULE_IDS if r not in ids]
    repeated = sorted({r for r in ids if ids.count(r) > 1})
    unknown = [r for r in ids if r not in RULE_IDS]
    assert not missing, f"rules with no `### <ID> — <title>` heading: {missing}"
    assert not repeated, f"rules with more than one heading: {repeated}"
    assert not unknown, f"headings for ids that are not rules: {unknown}"
    assert ids == RULE_IDS, f"rule headings out of order: {ids}"


def test_no_rule_heading_is_malformed():
    bad = malformed_rule_headings(SPEC.read_text(encoding="utf-8"))
    assert not bad, f"rule headings not written `### <ID> — <title>`: {bad}"


def test_the_feature_files_declare_the_same_rules_with_the_same_titles():
    from choo_conformance.rules import contract_rules

    declared = {rule.id: rule.title for rule in contract_rules().values()}
    specified = dict(rule_headings(SPEC.read_text(encoding="utf-8")))
    assert declared == specified
