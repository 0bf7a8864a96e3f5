"""The reference daemon as an in-process implementation for the conformance
suite (the suite's seam: `choo_conformance.seam`).

The suite finds this module by name and drives its servicers through
grpc_testing; nothing here imports the suite, whose protocols these objects
meet by shape.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from choo.conformance.v1 import control_pb2
from choo.v1 import daemon_pb2

from .checkpoints import Checkpoints
from .control import ConformanceControlServicer
from .job_store import JobStore
from .jobs import JobManager
from .orchestrator import Orchestrator
from .servicer import DaemonServicer
from .shutdown import ShutdownSignal

DAEMON_SERVICE = daemon_pb2.DESCRIPTOR.services_by_name["DaemonService"].full_name
CONTROL_SERVICE = control_pb2.DESCRIPTOR.services_by_name["ConformanceControl"].full_name


# Events a job keeps in memory, in process: small, so that a watch of a job
# of a few hundred events reads its start from the database and then hands
# over to the events in memory, the hand-over the suite's checkpoints script
# (the daemon keeps 16,384).
EVENT_WINDOW = 64


class ReferenceInstance:
    """The daemon's parts on one database file, without the socket; its
    `checkpoints` are the points of a watch's hand-over where the suite may
    act (checkpoints.py)."""

    def __init__(self, data_dir: str | os.PathLike[str], store: JobStore | None = None) -> None:
        self.store = store if store is not None else JobStore(
            database(data_dir), event_window=EVENT_WINDOW, checkpoints=Checkpoints())
        self.checkpoints = self.store.checkpoints
        self.orchestrator = Orchestrator(self.store)
        self.shutdown = ShutdownSignal()
        self._servicers = {
            DAEMON_SERVICE: DaemonServicer(self.orchestrator, self.shutdown),
            CONTROL_SERVICE: ConformanceControlServicer(self.orchestrator),
        }

    @property
    def servicers(self) -> Mapping[str, object]:
        return self._servicers

    def crash(self) -> None:
        """Stop as a killed daemon would: nothing is finished or flushed on
        the way down; the database keeps what was committed."""
        self.shutdown.trigger()  # open watches end, as their connections would
        self.orchestrator.crash()

    def close(self) -> None:
        self.shutdown.trigger()
        self.orchestrator.shutdown(wait_for_jobs=False, timeout_s=0)
        self.store.close()


def database(data_dir: str | os.PathLike[str]) -> str:
    return os.path.join(data_dir, "daemon.db")


def daemon(data_dir: str | os.PathLike[str]) -> ReferenceInstance:
    return ReferenceInstance(data_dir)


def watch_servicer(job_manager: JobManager) -> tuple[DaemonServicer, Callable[[], object]]:
    shutdown = ShutdownSignal()
    return DaemonServicer(job_manager, shutdown), shutdown.trigger
