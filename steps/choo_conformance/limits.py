"""The time limits of a run, shared by the runner and the pytest plugin.
Kept apart from the plugin so that the runner, which only starts pytest in
a process of its own, never imports it."""

from __future__ import annotations

from collections.abc import Iterable

DEFAULT_SCENARIO_TIMEOUT_S = 120.0
# Scenarios that move a lot (a thousand watchers, tens of thousands of
# events) get this many times the limit: on a loaded machine they are slow
# without anything being wrong.
LONG_TAGS = frozenset({"volume", "daemon_capacity"})
LONG_FACTOR = 3
# After a scenario's time is up, its clean-up gets this long (or the
# scenario's own limit, if shorter) before the clock rings again.
TEARDOWN_GRACE_S = 30.0


def scenario_limit(scenario_timeout: float, tags: Iterable[str]) -> float:
    return scenario_timeout * (LONG_FACTOR if LONG_TAGS & set(tags) else 1)


def teardown_grace(scenario_timeout: float) -> float:
    return min(TEARDOWN_GRACE_S, scenario_timeout)
