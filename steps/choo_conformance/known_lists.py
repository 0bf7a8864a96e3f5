"""Known-failing and known-flaky lists: patterns over scenario ids, one per
line, `#` starting a comment. An id is `<rule>/<feature>/<scenario>` with the
example values in brackets for an outline row, e.g.

    W10                                   every scenario of W10
    W10/event_stream/*                    W10's scenarios in event_stream.feature
    W12/*[from=5, expected=none]          one example row
    */scale/*                             every rule's scenarios in scale.feature

Patterns are shell-style (fnmatch: `*`, `?`, `[seq]`; a literal `[` is
written `[[]`); a bare rule id stands for all of its scenarios. Entries that
match no scenario of a run are reported, so that a list does not rot.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

from .scenario_info import ScenarioInfo, is_rule


class ListError(ValueError):
    pass


@dataclass
class Entry:
    pattern: str
    where: str  # file:line
    used: bool = False


@dataclass
class PatternList:
    name: str
    entries: list[Entry] = field(default_factory=list)

    @classmethod
    def read(cls, name: str, path: str | None, rule_ids: set[str]) -> PatternList:
        patterns = cls(name)
        if not path:
            return patterns
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise ListError(f"cannot read the {name} list {path}: {error.strerror}") from None
        for number, line in enumerate(text.splitlines(), start=1):
            pattern = line.split("#", 1)[0].strip()
            if not pattern:
                continue
            head = pattern.split("/", 1)[0]
            if is_rule(head) and head not in rule_ids:
                raise ListError(f"{path}:{number}: {head!r} is not a rule id of the contract")
            if not is_rule(head) and not any(c in head for c in "*?["):
                raise ListError(
                    f"{path}:{number}: {pattern!r} does not start with a rule id or a wildcard")
            if is_rule(pattern):
                pattern += "/*"
            patterns.entries.append(Entry(pattern, f"{path}:{number}"))
        return patterns

    def matches(self, info: ScenarioInfo) -> bool:
        hit = False
        for entry in self.entries:
            if any(fnmatch.fnmatchcase(scenario_id, entry.pattern) for scenario_id in info.ids):
                entry.used = True
                hit = True
        return hit

    def unmatched(self) -> list[Entry]:
        return [entry for entry in self.entries if not entry.used]
