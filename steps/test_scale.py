"""Binds features/scale.feature to pytest, against a whole daemon."""

import pytest
from pytest_bdd import scenarios


@pytest.fixture
def target(daemon):
    return daemon


scenarios("scale.feature")
