"""Binds features/watch_job.feature to pytest."""

from pytest_bdd import scenarios

from choo_conformance.plugin import FEATURES

scenarios(FEATURES / "watch_job.feature")
