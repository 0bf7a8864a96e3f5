"""Realistic defects, applied to the reference daemon's own code, that the
conformance suite must catch: `make mutants` (docs/SUITE_POWER.md)."""
