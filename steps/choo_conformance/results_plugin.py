"""A pytest plugin that writes one JSON record per scenario: its tags, its
outcome, why it was skipped, and the assertion that failed. The runner turns
these into per-rule results (`-p steps.results_plugin --results-json=PATH`)."""

from __future__ import annotations

import json

import pytest


def pytest_addoption(parser):
    parser.addoption("--results-json", default=None, help="write per-scenario results here")


def _declared_names(item) -> tuple[str, str]:
    """(feature, scenario) of a test that never reached pytest-bdd's
    before-scenario hook (skipped in setup)."""
    from pytest_bdd.scenario import scenario_wrapper_template_registry

    template = scenario_wrapper_template_registry.get(getattr(item, "function", None))
    if template is None:
        return "", item.name
    return template.feature.name, template.name


class _Results:
    def __init__(self, path: str) -> None:
        self.path = path
        self.records: dict[str, dict] = {}
        self.names: dict[str, tuple[str, str]] = {}  # nodeid -> (feature, scenario)

    def pytest_bdd_before_scenario(self, request, feature, scenario):
        self.names[request.node.nodeid] = (feature.name, scenario.name)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        feature, scenario = self.names.get(item.nodeid) or _declared_names(item)
        record = self.records.setdefault(item.nodeid, {
            "nodeid": item.nodeid,
            "feature": feature,
            "scenario": scenario,
            "tags": sorted(m.name for m in item.iter_markers()),
            "outcome": "passed",
            "detail": "",
            "duration_s": 0.0,
        })
        record["feature"], record["scenario"] = self.names.get(item.nodeid, (feature, scenario))
        record["duration_s"] += report.duration
        if report.skipped and record["outcome"] == "passed":
            record["outcome"] = "skipped"
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            record["detail"] = reason.removeprefix("Skipped: ")
        elif report.failed and record["outcome"] != "failed":
            record["outcome"] = "failed"
            crash = getattr(report.longrepr, "reprcrash", None)
            message = crash.message if crash is not None else str(report.longrepr)
            record["detail"] = ("in teardown: " if report.when == "teardown" else "") + message

    def pytest_sessionfinish(self):
        with open(self.path, "w") as out:
            json.dump(list(self.records.values()), out, indent=1)


def pytest_configure(config):
    path = config.getoption("results_json")
    if path:
        config.pluginmanager.register(_Results(path), "choo-results")
