"""Binds features/scale.feature to pytest, against a whole daemon."""

import pytest
from pytest_bdd import scenarios

from choo_conformance.plugin import FEATURES


@pytest.fixture
def target(daemon):
    return daemon


scenarios(FEATURES / "scale.feature")
