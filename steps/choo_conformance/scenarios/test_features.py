"""Binds every feature file to pytest: one test per scenario (per example of
an outline). Which target a scenario talks to is the `target` fixture's
choice (choo_conformance.fixtures)."""

from pytest_bdd import scenarios

from choo_conformance.rules import FEATURES

scenarios(*sorted(str(path) for path in FEATURES.glob("*.feature")))
