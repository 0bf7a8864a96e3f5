"""Binds features/watch_job.feature to pytest."""

from pytest_bdd import scenarios

scenarios("watch_job.feature")
