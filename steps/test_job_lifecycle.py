"""Binds features/job_lifecycle.feature to pytest, against the reference daemon's job
manager."""

import pytest
from pytest_bdd import scenarios


@pytest.fixture
def target(daemon):
    return daemon


scenarios("job_lifecycle.feature")
