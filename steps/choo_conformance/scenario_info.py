"""What the suite knows about a collected scenario: its feature, name,
example values, rule ids and tags, and the stable id known-failing lists
match against (`W10/event_stream/<scenario>[from=3, expected=3-6]`)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

RULE_ID = re.compile(r"^[WR]\d+$")
# Markers that are pytest's own, not Gherkin tags.
PYTEST_MARKERS = frozenset({"parametrize", "usefixtures", "skip", "skipif", "xfail",
                            "filterwarnings"})


def is_rule(tag: str) -> bool:
    return bool(RULE_ID.match(tag))


@dataclass
class ScenarioInfo:
    nodeid: str
    feature: str  # the feature file's stem, e.g. "event_stream"
    feature_title: str
    scenario: str
    example: dict[str, str] = field(default_factory=dict)
    rules: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        """feature/scenario[example], without a rule."""
        text = f"{self.feature}/{self.scenario}"
        if self.example:
            text += "[" + ", ".join(f"{k}={v}" for k, v in self.example.items()) + "]"
        return text

    @property
    def ids(self) -> list[str]:
        """One stable id per rule the scenario checks."""
        return [f"{rule}/{self.key}" for rule in self.rules] or [f"-/{self.key}"]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> ScenarioInfo:
        return cls(**data)


def scenario_info(item) -> ScenarioInfo | None:
    """The info of a pytest-bdd scenario item; None for any other test."""
    from pytest_bdd.scenario import scenario_wrapper_template_registry

    function = getattr(item, "function", None)
    template = scenario_wrapper_template_registry.get(function) if function is not None else None
    if template is None:
        return None
    callspec = getattr(item, "callspec", None)
    example = dict(callspec.params.get("_pytest_bdd_example", {})) if callspec else {}
    # pytest-bdd makes every Gherkin tag a marker, those of the example's
    # own Examples block included.
    tags = {marker.name for marker in item.iter_markers()} - PYTEST_MARKERS
    name = template.name
    if example:
        from pytest_bdd.parser import render_string

        name = render_string(name, example)
    return ScenarioInfo(
        nodeid=item.nodeid,
        feature=Path(template.feature.filename).stem,
        feature_title=template.feature.name,
        scenario=name,
        example=example,
        rules=sorted((t for t in tags if is_rule(t)), key=rule_order),
        tags=sorted(tags),
    )


def rule_order(rule: str) -> tuple[int, int]:
    """W rules before R rules, each by number."""
    return (0 if rule[0] == "W" else 1, int(rule[1:]))
