"""Binds features/daemon_lifecycle.feature to pytest, against the reference daemon's job
manager."""

import pytest
from pytest_bdd import scenarios

from choo_conformance.plugin import FEATURES


@pytest.fixture
def target(daemon):
    return daemon


scenarios(FEATURES / "daemon_lifecycle.feature")
