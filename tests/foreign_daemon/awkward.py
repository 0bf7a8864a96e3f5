"""Awkward in time: wherever the contract leaves a moment open, the other
allowed moment, with delays. Each switch (`--awkward NAME`, repeatable, or
`--awkward all`) keeps the daemon correct; the suite must still pass it.

  late-status     a job's status turns terminal 20-80 ms after its last
                  event is recorded (its watchers end only then).
  stop-waits      a graceful StopJob answers once the running commands have
                  ended and the job is cancelled.
  cancel-early    a graceful StopJob marks the job cancelled and answers at
                  once; the running command finishes on its own afterwards,
                  recording nothing.
  late-shutdown   Shutdown answers 100-300 ms after the shutdown is over.
  late-unhealthy  Shutdown is accepted 20-80 ms after it arrives: healthy
                  turns false then, together with every other sign of a
                  shutdown (R9 allows no later moment).
  bursty          events are recorded in bursts a few ms apart: a job's own
                  events wait in a buffer and are recorded 1-4 at a time;
                  AppendEvents records its events in 2-4 bursts, and
                  answers once the last is recorded.
  gc-memory       resident memory grows with every event recorded and is
                  handed back every 8-20 MB, like a collected heap.
  jitter          every answer waits 0-20 ms before it goes out, and so
                  does a watch's next event once the watch has caught up
                  (a backlog then follows at full speed: latency, not a
                  lower rate).

With both stop-waits and cancel-early on (`all`), each graceful StopJob
draws one of the two. Every delay is drawn from one random.Random, seeded
by --seed (logged), so a run's delays can be drawn again; the order in
which the event loop asks for them still varies between runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mmap
import random
from collections.abc import Callable

log = logging.getLogger("foreign")

SWITCHES = ("late-status", "stop-waits", "cancel-early", "late-shutdown", "late-unhealthy",
            "bursty", "gc-memory", "jitter")

# Delays, in seconds (low, high).
STATUS_FLIP_S = (0.020, 0.080)
SHUTDOWN_ANSWER_S = (0.100, 0.300)
SHUTDOWN_ACCEPT_S = (0.020, 0.080)
JITTER_S = (0.0, 0.020)
BURST_GAP_S = (0.001, 0.006)
# How many events a burst of a job's own events holds at most, and into how
# many bursts AppendEvents cuts a call's events at most (a number of bursts,
# not a size: fifty thousand events take a few writes, not thousands).
BURST_MAX = 4
# gc-memory: what each recorded event leaves behind until the next
# collection, and how much is left behind before one.
GARBAGE_PER_EVENT = 2048
COLLECT_AT_MB = (8, 20)
PAGE = mmap.PAGESIZE


class Ballast:
    """Memory that grows like a collected heap's garbage and is handed back
    to the system at each collection: an anonymous mapping whose pages are
    touched as it grows and discarded (MADV_DONTNEED) when it is collected,
    so the process's resident size really rises and falls."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        # Private: MADV_DONTNEED then frees the pages (a shared mapping's
        # would stay allocated).
        self._map = mmap.mmap(-1, COLLECT_AT_MB[1] * 1024 * 1024 + PAGE, flags=mmap.MAP_PRIVATE)
        self.size = 0  # bytes touched since the last collection
        self.collections = 0
        self._next_collection()

    def _next_collection(self) -> None:
        self.collect_at = self._rng.randint(*COLLECT_AT_MB) * 1024 * 1024

    def grow(self, nbytes: int) -> None:
        end = min(self.size + nbytes, self.collect_at)
        # Pages below self.size are touched already: the next one starts here.
        for offset in range(-(-self.size // PAGE) * PAGE, end, PAGE):
            self._map[offset] = 1
        self.size = end
        if self.size >= self.collect_at:
            self._map.madvise(mmap.MADV_DONTNEED)
            log.info("gc-memory: handed back %d MB", self.size // (1024 * 1024))
            self.size = 0
            self.collections += 1
            self._next_collection()


class Awkward:
    """The switches that are on, and the one source of their delays."""

    def __init__(self, switches: frozenset[str] | set[str] = frozenset(),
                 seed: int | None = None) -> None:
        self.switches = frozenset(SWITCHES if "all" in switches else switches)
        unknown = self.switches - set(SWITCHES)
        if unknown:
            raise ValueError(f"no awkward switch is called {sorted(unknown)[0]}")
        self.seed = random.SystemRandom().randrange(2**32) if seed is None else seed
        self._rng = random.Random(self.seed)
        self.ballast = Ballast(self._rng) if "gc-memory" in self.switches else None
        self._job_locks: dict[str, asyncio.Lock] = {}

    def on(self, switch: str) -> bool:
        return switch in self.switches

    def __bool__(self) -> bool:
        return bool(self.switches)

    def describe(self) -> str:
        return f"awkward: {', '.join(sorted(self.switches))} (seed {self.seed})"

    async def wait(self, switch: str, seconds: float) -> None:
        """Every delay of every switch is spent here (tests put a gate of
        their own in its place)."""
        await asyncio.sleep(seconds)

    async def _pause(self, switch: str, span: tuple[float, float]) -> None:
        if switch in self.switches:
            await self.wait(switch, self._rng.uniform(*span))

    # -- the moments the switches move -----------------------------------------

    async def before_status_flip(self) -> None:
        """late-status: between a job's last event and its terminal status."""
        await self._pause("late-status", STATUS_FLIP_S)

    async def before_shutdown_begins(self) -> None:
        """late-unhealthy: between Shutdown's arrival and its acceptance."""
        await self._pause("late-unhealthy", SHUTDOWN_ACCEPT_S)

    async def before_shutdown_answers(self) -> None:
        """late-shutdown: between the end of the shutdown and its answer."""
        await self._pause("late-shutdown", SHUTDOWN_ANSWER_S)

    async def jitter(self) -> None:
        """jitter: before an answer, or a watch's first event after it waited."""
        await self._pause("jitter", JITTER_S)

    def graceful_stop(self) -> str:
        """How a graceful StopJob goes: 'cancel-early', 'stop-waits', or ''
        for the usual way (mark cancelled when the commands end, answer at
        once)."""
        ways = [way for way in ("cancel-early", "stop-waits") if way in self.switches]
        return self._rng.choice(ways) if ways else ""

    # -- bursty ----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def job_lock(self, job_id: str):
        """Held while AppendEvents records a call's bursts, and by FinishJob:
        one call's events stay contiguous, and no job ends between two of
        its bursts."""
        if "bursty" not in self.switches:
            yield
            return
        lock = self._job_locks.setdefault(job_id, asyncio.Lock())
        async with lock:
            yield

    async def record_in_bursts(self, record: Callable[[list], list[int]], items: list) -> list[int]:
        """Records items with record(), in 2-4 bursts a few ms apart; their
        sequences, once every one is recorded."""
        if "bursty" not in self.switches or len(items) < 2:
            return record(items)
        cuts = sorted(self._rng.sample(range(1, len(items)),
                                       self._rng.randint(1, min(BURST_MAX, len(items)) - 1)))
        sequences: list[int] = []
        for start, end in zip([0, *cuts], [*cuts, len(items)], strict=True):
            if start:
                await self.burst_gap()
            sequences += record(items[start:end])
        return sequences

    async def burst_gap(self) -> None:
        await self._pause("bursty", BURST_GAP_S)

    def burst_size(self) -> int:
        return self._rng.randint(1, BURST_MAX)

    def event_buffer(self, record: Callable[[list], object]) -> EventBuffer | None:
        """A buffer for a job's own events, when bursty is on."""
        return EventBuffer(record, self) if "bursty" in self.switches else None

    # -- gc-memory -------------------------------------------------------------

    def recorded(self, count: int) -> None:
        if self.ballast is not None:
            self.ballast.grow(count * GARBAGE_PER_EVENT)


class EventBuffer:
    """A job's own events, recorded a few at a time every few ms by a task of
    its own. drain() records what is left before the job may end."""

    def __init__(self, record: Callable[[list], object], awkward: Awkward) -> None:
        self._record = record
        self._awkward = awkward
        self._items: list = []
        self._flusher: asyncio.Task | None = None

    def add(self, item) -> None:
        self._items.append(item)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        while self._items:
            await self._awkward.burst_gap()
            size = self._awkward.burst_size()
            burst, self._items = self._items[:size], self._items[size:]
            self._record(burst)

    def flush_now(self) -> None:
        """Records everything buffered at once (a job ending now)."""
        burst, self._items = self._items, []
        if burst:
            self._record(burst)

    async def drain(self) -> None:
        if self._flusher is not None:
            await self._flusher
        self.flush_now()
