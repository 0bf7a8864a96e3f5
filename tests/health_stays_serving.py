"""The reference daemon with one break of R9: its grpc.health.v1 status stays
SERVING after shutdown has begun. tests/test_interop.py runs
grpc-health-probe's NOT_SERVING check against it and expects it to fail.

    python tests/health_stays_serving.py daemon --socket PATH --db PATH
"""

from __future__ import annotations

import sys

from grpc_health.v1 import health

from choo_reference.cli import main


async def _stay_serving(self) -> None:
    """Instead of switching every service to NOT_SERVING."""


health.aio.HealthServicer.enter_graceful_shutdown = _stay_serving

if __name__ == "__main__":
    sys.exit(main())
