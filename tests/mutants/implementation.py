"""The reference, in process, with the mutant named by CHOO_MUTANT applied:
`choo-conformance --implementation tests.mutants.implementation`."""

from __future__ import annotations

import os

from choo_reference.in_process import daemon, watch_servicer

from .catalogue import BY_NAME

BY_NAME[os.environ["CHOO_MUTANT"]].apply()

__all__ = ["daemon", "watch_servicer"]
