"""Reading pytest-bdd's cucumber JSON report: one result per scenario."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ScenarioResult:
    feature: str
    name: str
    tags: tuple[str, ...]
    status: str  # "passed", "failed" or "skipped"
    message: str
    duration_s: float

    @property
    def rules(self) -> tuple[str, ...]:
        """Rule ids among the tags (W1, R5, ...)."""
        return tuple(t for t in self.tags if t[:1].isupper() and t[1:].isdigit())


def read_results(path: str | Path) -> list[ScenarioResult]:
    results = []
    for feature in json.loads(Path(path).read_text() or "[]"):
        for element in feature.get("elements", []):
            steps = element.get("steps", [])
            statuses = [s.get("result", {}).get("status", "skipped") for s in steps]
            if "failed" in statuses:
                status = "failed"
            elif statuses and all(s == "passed" for s in statuses):
                status = "passed"
            else:
                status = "skipped"
            message = next(
                (s["result"].get("error_message", "") for s in steps
                 if s.get("result", {}).get("status") == "failed"),
                "",
            )
            duration_ns = sum(s.get("result", {}).get("duration", 0) for s in steps)
            results.append(
                ScenarioResult(
                    feature=feature.get("name", ""),
                    name=element.get("name", ""),
                    tags=tuple(t["name"].lstrip("@") for t in element.get("tags", [])),
                    status=status,
                    message=message,
                    duration_s=duration_ns / 1e9,
                )
            )
    return results
