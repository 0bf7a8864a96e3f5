"""The reference daemon with one mutant applied:

    python -m tests.mutants.daemon MUTANT --socket PATH --db PATH
"""

from __future__ import annotations

import sys

from choo_reference.cli import main

from .catalogue import BY_NAME

if __name__ == "__main__":
    BY_NAME[sys.argv[1]].apply()
    sys.exit(main(["daemon", *sys.argv[2:], "--conformance-control"]))
