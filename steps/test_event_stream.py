"""Binds features/event_stream.feature to pytest, against the reference job
manager rather than the scripted double."""

import pytest
from pytest_bdd import scenarios


@pytest.fixture
def target(daemon):
    return daemon


scenarios("event_stream.feature")
