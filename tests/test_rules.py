"""The contract's rules as the runner reads them from the feature files: the
same Rule blocks pytest-bdd sees, and a clear error for a block that does
not name or tag its rule."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from pytest_bdd.feature import get_features

from choo_conformance.rules import FEATURES, RuleBlockError, _rule_blocks, read_rules


def _pytest_bdd_blocks(path: Path) -> list[tuple[str, frozenset[str]]]:
    blocks: list[tuple[str, frozenset[str]]] = []
    (feature,) = get_features([str(path)])
    for scenario in feature.scenarios.values():
        block = scenario.rule
        if block is not None and (block.name, frozenset(block.tags)) not in blocks:
            blocks.append((block.name, frozenset(block.tags)))
    return blocks


@pytest.mark.parametrize("path", sorted(FEATURES.glob("*.feature")), ids=lambda p: p.stem)
def test_every_feature_file_reads_as_pytest_bdd_reads_it(path):
    assert list(_rule_blocks(path)) == _pytest_bdd_blocks(path)


TRICKY = """\
    # A comment: Rule: W98 not a rule
    @black_box
    Feature: tricky

      @W1 @extra  # a comment after the tags
      Rule: W1 An empty job_id is refused

        @some_scenario_tag
        Scenario: one
          Given a step with a doc string
            \"\"\"
            Rule: W99 inside a doc string
            Scenario: not one either
            \"\"\"

        Scenario Outline: two
          Given <x>

          Examples:
            | x |
            | 1 |

      @W2
      Rule: W2 A rule with no scenario is no rule of the run

      @W3
      Rule: W3 Every event reaches the client in order

        Example: three
          Given something
"""


def test_tags_comments_doc_strings_and_empty_rules(tmp_path):
    path = tmp_path / "tricky.feature"
    path.write_text(textwrap.dedent(TRICKY))
    expected = [("W1 An empty job_id is refused", frozenset({"W1", "extra"})),
                ("W3 Every event reaches the client in order", frozenset({"W3"}))]
    assert list(_rule_blocks(path)) == expected == _pytest_bdd_blocks(path)


@pytest.mark.parametrize("rules, says", [
    (["@W1\nRule: An empty job_id is refused"], "must be named '<id> <title>' and tagged @<id>"),
    (["@W2\nRule: W1 An empty job_id is refused"], "must be named '<id> <title>' and tagged @<id>"),
    (["@W1\nRule: W1 An empty job_id is refused", "@W1\nRule: W1 Empty ids are refused"],
     "rule W1 is titled 'Empty ids are refused' here and 'An empty job_id is refused' elsewhere"),
])
def test_a_rule_block_that_does_not_name_its_rule_is_refused(tmp_path, rules, says):
    for number, rule in enumerate(rules):
        (tmp_path / f"f{number}.feature").write_text(
            f"Feature: f{number}\n{rule}\n  Scenario: s\n    Given x\n")
    with pytest.raises(RuleBlockError, match=says.replace("(", r"\(").replace(")", r"\)")):
        read_rules(tmp_path)


def test_the_runner_imports_neither_pytest_nor_pytest_bdd(tmp_path):
    # The runner only starts pytest, in a process of its own: a quarter of
    # its start-up time would go to importing it.
    import subprocess

    code = ("import sys; from choo_conformance import cli, rules; rules.contract_rules(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pytest', '_pytest', "
            "'pytest_bdd')))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         check=True)
    assert run.stdout.strip() == "[]"
