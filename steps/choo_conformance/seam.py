"""The one seam between the suite and an implementation it runs in process.

Over a socket the suite needs nothing but an address. In process it drives
servicers through grpc_testing, and it gets them from an *implementation*:
any object (usually a module) with the two callables below. The default is
the reference daemon's, `choo_reference.in_process`, loaded by name here and
nowhere else, so the suite imports nothing of the reference; another Python
implementation is run in process with `--implementation MODULE[:OBJECT]`.

    daemon(data_dir) -> InProcessInstance
        A whole daemon on a fresh or existing data directory: the servicers of
        choo.v1.DaemonService and choo.conformance.v1.ConformanceControl, and
        two ways to stop it. `crash()` stops it as a killed process would
        (nothing closed or flushed that a real crash would not flush); the
        suite then calls daemon(data_dir) again on the same directory (W17).

        An instance MAY also offer `checkpoints`, the points of a new
        watch's hand-over from recorded history to live events where the
        suite runs an action in the watch's own thread before it goes on
        (the W13 scenarios tagged @checkpoints; see Checkpoints below).

    watch_servicer(job_manager) -> (DaemonService servicer, begin_shutdown)
        A servicer whose WatchJob runs on the suite's scripted job manager
        (the role of the original Go tests' mockJobManager), and the call that
        makes the daemon start shutting down (W6). The job manager is the
        JobManager protocol below; its events are ScriptedEvent-shaped.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Protocol

DEFAULT_IMPLEMENTATION = "choo_reference.in_process"


class InProcessInstance(Protocol):
    @property
    def servicers(self) -> Mapping[str, object]:
        """Full service name -> servicer, for both services."""

    def crash(self) -> None: ...

    def close(self) -> None: ...


class EventLike(Protocol):
    sequence: int
    event_type: str
    unit_id: str
    payload_json: str
    timestamp_ns: int


class JobLike(Protocol):
    job_id: str
    status: str


class EventFeed(Protocol):
    def read(self, limit: int) -> Sequence[EventLike] | None:
        """The next events available now (at most `limit`); [] when none is
        available yet; None once the feed has ended. Never blocks."""


class JobManager(Protocol):
    """What the scripted double offers a watch servicer (the seed's Go
    JobManager): get_job raises LookupError for an unknown job; subscribe
    returns a feed from from_sequence and the call that releases it, and
    calls `wake` (from any thread) whenever read() may have something new."""

    def get_job(self, job_id: str) -> JobLike: ...

    def subscribe(self, job_id: str, from_sequence: int,
                  wake: Callable[[], None]) -> tuple[EventFeed, Callable[[], None]]: ...


# The points of a new watch's hand-over, whatever order an implementation
# takes its two steps in (reading what the job has recorded, subscribing to
# what it records next). An event recorded at any of them must still reach
# the watch once, in order (W13).
BEFORE_SUBSCRIBE = "before-subscribe"  # request checked, job found; not subscribed
AFTER_SUBSCRIBE = "after-subscribe"  # subscribed: every event recorded from now reaches it
AFTER_HISTORY_READ = "after-history-read"  # read a page of history from storage; next step not taken
CAUGHT_UP = "caught-up"  # read everything recorded so far; not yet waiting for the next event
CHECKPOINTS = (BEFORE_SUBSCRIBE, AFTER_SUBSCRIBE, AFTER_HISTORY_READ, CAUGHT_UP)


class Checkpoints(Protocol):
    """Offered by an in-process instance as `checkpoints` (optional)."""

    @property
    def points(self) -> Collection[str]:
        """Which of CHECKPOINTS this implementation's watches pass."""

    def at(self, point: str, action: Callable[[], None]) -> None:
        """Run action once, in the thread of the next watch that reaches
        point, holding no lock of the implementation's: the action records
        events through the control service and returns."""


class Implementation(Protocol):
    def daemon(self, data_dir: Path) -> InProcessInstance: ...

    def watch_servicer(self, job_manager: JobManager) -> tuple[object, Callable[[], None]]: ...


class ImplementationMissing(Exception):
    pass


def load_implementation(spec: str | None) -> Implementation:
    """`module` or `module:attribute` -> the implementation object."""
    spec = spec or DEFAULT_IMPLEMENTATION
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and module_name.startswith(error.name):
            hint = (" (the reference daemon, package choo-reference, is not installed)"
                    if spec == DEFAULT_IMPLEMENTATION else "")
            raise ImplementationMissing(
                f"in-process mode needs an implementation: cannot import {module_name!r}{hint}; "
                "install it, give --implementation MODULE, or run against a daemon with "
                "--server-cmd or --target") from None
        raise
    implementation = getattr(module, attribute) if attribute else module
    missing = [name for name in ("daemon", "watch_servicer")
               if not callable(getattr(implementation, name, None))]
    if missing:
        raise ImplementationMissing(
            f"{spec} is not an in-process implementation: it has no {' or '.join(missing)}()")
    return implementation
