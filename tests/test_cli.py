import subprocess
import sys

from reference_server import __version__


def test_version():
    out = subprocess.run(
        [sys.executable, "-m", "reference_server.cli", "--version"],
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == f"choo-ref {__version__}"
