"""Binds features/event_stream.feature to pytest, against the reference job
manager rather than the scripted double."""

import pytest
from pytest_bdd import scenarios

from choo_conformance.plugin import FEATURES


@pytest.fixture
def target(daemon):
    return daemon


scenarios(FEATURES / "event_stream.feature")
