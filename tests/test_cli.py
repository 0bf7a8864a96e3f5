import subprocess
import sys

from choo_reference import __version__


def test_version():
    out = subprocess.run(
        [sys.executable, "-m", "choo_reference.cli", "--version"],
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == f"choo-ref {__version__}"
