"""A counterexample the explorer found, written as a Gherkin scenario that can
be pasted into a feature file: the operations as the steps of features/
say them, where a step says it, and the check that failed as the last Then.
A step no feature file has yet is marked by a comment above it."""

from __future__ import annotations

from dataclasses import dataclass, field

# Where a scenario of each rule belongs (the feature file whose Rule block
# it goes under); the control-service rules of section 5 have no block.
_FEATURE = {rule: "features/event_stream.feature" for rule in
            ("W9", "W10", "W11", "W12", "W13", "W14", "W15", "W16", "W17", "W18")}
_FEATURE.update({rule: "features/watch_job_daemon.feature" for rule in
                 ("W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8")})

NEW_STEP = "# a new step: no feature file says this yet"


@dataclass(frozen=True)
class Line:
    kind: str  # given, when, then
    text: str
    new: bool = False  # no step of features/ matches it yet


@dataclass
class Counterexample:
    rule: str
    message: str
    lines: list[Line]
    seed: int
    tags: set[str] = field(default_factory=set)  # restarts_daemon, ends_daemon

    @property
    def operations(self) -> int:
        return sum(1 for line in self.lines if line.kind != "then")


def gherkin(example: Counterexample, titles: dict[str, str]) -> str:
    """The scenario, indented as under a Rule block of a feature file."""
    title = titles.get(example.rule, "")
    out = []
    tags = " ".join(f"@{tag}" for tag in sorted(example.tags))
    if tags:
        out.append(f"    {tags}")
    out.append(f"    Scenario: Found by the explorer (seed {example.seed}): {title or example.rule}")
    previous = None
    for line in example.lines:
        keyword = "And" if line.kind == previous else line.kind.capitalize()
        previous = line.kind
        if line.new:
            out.append(f"      {NEW_STEP}")
        out.append(f"      {keyword} {line.text}")
    return "\n".join(out)


def report(example: Counterexample, titles: dict[str, str]) -> str:
    """What the explorer prints for a counterexample: the rule, why, and the
    scenario to paste."""
    title = titles.get(example.rule)
    where = _FEATURE.get(example.rule)
    head = [
        f"COUNTEREXAMPLE: the daemon breaks {example.rule}"
        + (f" ({title})" if title else "")
        + f", in {example.operations} operations (seed {example.seed})",
        f"  {example.message}",
        "",
        (f"As a scenario for {where}, under its Rule: {example.rule} block:" if where
         else "As a scenario, for a feature whose Background gives the daemon a fresh database:"),
        "",
    ]
    return "\n".join(head) + gherkin(example, titles) + "\n"
