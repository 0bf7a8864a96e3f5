"""The defects the suite must catch, each a small edit of the reference's
own code (edit.py), with the rules that must go red and the paths it is run
on: in process (the suite drives the servicers through grpc_testing, so
WatchJob is the generator in watch.py) and over a socket (the daemon, whose
WatchJob is the coroutine in async_watch.py).

Add one by naming the function, the text to replace and its replacement;
`make mutants` tells whether the suite kills it. docs/SUITE_POWER.md lists
them with their catch rates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .edit import Edit

# In process; the daemon over a socket; the same daemon judged in the
# black-box profile (DaemonService alone, the way an unmodified
# implementation is run).
IN_PROCESS, DAEMON, BLACK_BOX = "in-process", "daemon", "black-box"
PATHS = (IN_PROCESS, DAEMON, BLACK_BOX)
BOTH = (IN_PROCESS, DAEMON)

R = "choo_reference"


@dataclass(frozen=True)
class Mutant:
    name: str
    defect: str
    rules: tuple[str, ...]  # at least one must fail
    edits: tuple[Edit, ...]
    paths: tuple[str, ...] = BOTH
    tags: str = ""  # narrows the scenarios run, to keep the run short
    # A variant that stays correct, only choosing differently where the
    # specification leaves a choice: the suite must pass it (no rule fails).
    stays_correct: bool = False

    def apply(self) -> Callable[[], None]:
        """Apply every edit, or none: an edit that no longer applies takes
        back those before it. Returns what undoes them."""
        undos: list[Callable[[], None]] = []

        def undo() -> None:
            for step in reversed(undos):
                step()

        try:
            for edit in self.edits:
                undos.append(edit.apply())
        except BaseException:
            undo()
            raise
        return undo


def _both_watch_loops(old_sync: str, new_sync: str, old_async: str, new_async: str) -> tuple[Edit, ...]:
    return (Edit(f"{R}.watch:_stream", old_sync, new_sync),
            Edit(f"{R}.async_watch:watch_job_async", old_async, new_async))


# Messages built for each delivery, not once per event: an edit of how a
# message is built then shows in every delivery.
_UNCACHED = Edit(f"{R}.convert:event_to_wire", "    entry = _wire.get(key)\n",
                 "    entry = None\n")

# Where a watch starts being served; the same text on both paths.
_SERVED_FROM = "    try:\n        if not admit(jobs, shutdown, request):\n            return\n"

CATALOGUE = (
    # -- the seed's rows ---------------------------------------------------------------
    Mutant("empty-id-looked-up", "an empty job_id is looked up instead of refused", ("W1",),
           (Edit(f"{R}.watch:admit", "    if not job_id:\n", "    if False:\n"),)),
    Mutant("not-found-internal", "an unknown job is INTERNAL, not NOT_FOUND", ("W2",),
           (Edit(f"{R}.watch:admit", "raise Refused(grpc.StatusCode.NOT_FOUND,",
                 "raise Refused(grpc.StatusCode.INTERNAL,"),)),
    Mutant("negative-from-unchecked", "a negative from_sequence reaches the job store (UNKNOWN)", ("W11",),
           (Edit(f"{R}.watch:admit", "    if request.from_sequence < 0:\n", "    if False:\n"),)),
    Mutant("shutdown-checked-after-a-batch", "a watch that arrives during shutdown is served: "
           "shutdown is checked only once a batch has been sent", ("W18",),
           (Edit(f"{R}.watch:admit", "    if shutdown.is_set():\n", "    if False:\n"),
            *_both_watch_loops(
                "            if shutdown.is_set():\n                context.abort(",
                "            if shutdown.is_set() and sent:\n                context.abort(",
                "            if shutdown.is_set():\n                await context.abort(",
                "            if shutdown.is_set() and sent:\n                await context.abort("))),
    Mutant("ignores-from-sequence", "the watch subscribes from 0 whatever it was asked", ("W4", "W10"),
           (Edit(f"{R}.watch:_stream", "jobs.subscribe(job_id, from_sequence, watch.wake.set)",
                 "jobs.subscribe(job_id, 0, watch.wake.set)"),
            Edit(f"{R}.async_watch:watch_job_async", "jobs.subscribe(job_id, request.from_sequence, wake)",
                 "jobs.subscribe(job_id, 0, wake)"))),
    Mutant("subscription-kept-on-cancel", "a watch whose client went away keeps its subscription",
           ("W5", "W7"),
           (Edit(f"{R}.watch:_Watch.end_rpc", "        self.release()\n", ""),
            Edit(f"{R}.watch:_stream", "        watch.release()\n", "        pass\n"),
            Edit(f"{R}.async_watch:watch_job_async", "        unsubscribe()\n", "        pass\n"))),
    Mutant("ok-on-shutdown", "open watches end OK when the daemon shuts down", ("W6",),
           _both_watch_loops(
               "                context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)\n",
               "                return\n",
               "                await context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)\n",
               "                return\n")),
    Mutant("terminal-from-zero-replays", "a terminal job watched from 0 replays its history", ("W8",),
           (Edit(f"{R}.watch:admit", "return not (is_terminal(job.status) and request.from_sequence == 0)",
                 "return True"),)),
    # -- numbering and replay ------------------------------------------------------------
    Mutant("renumbered-by-position", "replayed events are numbered by their position in the watch",
           ("W9", "W10"),
           _both_watch_loops(
               "yield event_to_proto(event)",
               "yield event_to_proto(__import__('dataclasses').replace(event, sequence=sent + 1))",
               "                for event in events:\n"
               "                    await write(event_to_wire(event))\n",
               "                for i, event in enumerate(events):\n"
               "                    await write(event_to_wire(__import__('dataclasses').replace("
               "event, sequence=sent + i + 1)))\n")),
    Mutant("renumbered-from-from-sequence", "replayed events are numbered from_sequence + i "
           "(so a watch from 0 starts at 0)",
           ("W9", "W10"),
           _both_watch_loops(
               "yield event_to_proto(event)",
               "yield event_to_proto(__import__('dataclasses').replace("
               "event, sequence=from_sequence + sent))",
               "                for event in events:\n"
               "                    await write(event_to_wire(event))\n",
               "                for i, event in enumerate(events):\n"
               "                    await write(event_to_wire(__import__('dataclasses').replace("
               "event, sequence=request.from_sequence + sent + i)))\n")),
    Mutant("from-exclusive", "from_sequence is exclusive: a watch starts after it", ("W10",),
           (Edit(f"{R}.job_store:_Feed.__init__", "self._cursor = max(from_sequence, 1)",
                 "self._cursor = from_sequence + 1"),)),
    Mutant("payload-dropped-on-replay", "events replayed from the database lose their payload",
           ("W12", "W17"),
           (Edit(f"{R}.job_store:_Feed._take", "            batch = self._store._log.read(st.job_id, cursor, stop)\n",
                 "            batch = [__import__('dataclasses').replace(e, payload_json='{}')\n"
                 "                     for e in self._store._log.read(st.job_id, cursor, stop)]\n"),)),
    Mutant("no-timestamp", "events are sent without their timestamp", ("W3", "W12"),
           (Edit(f"{R}.convert:event_to_proto",
                 "    set_time(message.timestamp, event.timestamp_ns)\n", ""),
            _UNCACHED)),
    Mutant("stamped-at-send", "events are stamped when sent, not when recorded", ("W3", "W9", "W12"),
           (Edit(f"{R}.convert:event_to_proto", "set_time(message.timestamp, event.timestamp_ns)",
                 "set_time(message.timestamp, __import__('time').time_ns())"),
            _UNCACHED)),
    # -- the event log and its watchers ----------------------------------------------------
    Mutant("window-skip-ahead", "a watcher behind the in-memory window skips ahead to it",
           ("W12", "W14", "W15"),
           (Edit(f"{R}.job_store:_Feed._take", "            base = st.window_base\n",
                 "            base = st.window_base\n            cursor = max(cursor, base)\n"),),
           tags="volume"),
    Mutant("terminal-stops-after-batch", "a watch ends once the job is terminal, after the batch in hand",
           ("W12", "W14"),
           _both_watch_loops(
               "                last = event.sequence\n",
               "                last = event.sequence\n"
               "            if is_terminal(jobs.get_job(job_id).status):\n"
               "                return\n",
               "            last = events[-1].sequence\n",
               "            last = events[-1].sequence\n"
               "            if __import__('choo_reference.jobs').jobs.is_terminal("
               "jobs.get_job(job_id).status):\n"
               "                return\n")),
    Mutant("write-behind", "events reach the database only when the store is closed cleanly", ("W17",),
           (Edit(f"{R}.job_store:JobStore.record_many", "            self._log.append(job_id, events)\n",
                 "            self.__dict__.setdefault('_behind', []).append((job_id, events))\n"),
            Edit(f"{R}.job_store:JobStore.close", "        self._shut()\n",
                 "        for job_id, events in self.__dict__.pop('_behind', []):\n"
                 "            self._log.append(job_id, events)\n"
                 "        self._shut()\n"))),
    Mutant("per-watcher-ring", "each watcher keeps only the newest 16,384 events it has not read",
           ("W15",),
           (Edit(f"{R}.job_store:_Feed._take", "            base = st.window_base\n",
                 "            base = st.window_base\n"
                 "            if st.last_seq - cursor >= 16384:\n"
                 "                cursor = self._cursor = st.last_seq - 16383\n"),),
           tags="volume"),
    Mutant("unbounded-queue", "each watcher gets a queue of the messages for every event it has "
           "not read yet", ("W15",),
           (Edit(f"{R}.job_store:JobStore.record_many", "                st.window.extend(events)\n",
                 "                st.window.extend(events)\n"
                 "                to_message = __import__('choo_reference.convert').convert.event_to_proto\n"
                 "                for f in st.open_feeds:\n"
                 "                    q = self.__dict__.setdefault('_queues', {}).setdefault(id(f), [])\n"
                 "                    q.extend(to_message(e) for e in events)\n"),
            Edit(f"{R}.job_store:_Feed._take", "                self._cursor = cursor + len(batch)\n"
                 "                return batch\n",
                 "                self._cursor = cursor + len(batch)\n"
                 "                q = self._store.__dict__.get('_queues', {}).get(id(self))\n"
                 "                if q:\n"
                 "                    del q[:len(batch)]\n"
                 "                return batch\n")),
           paths=(DAEMON,), tags="daemon_process"),
    Mutant("backlog-read-whole", "a watcher behind the memory window reads its whole backlog in "
           "one go instead of a page at a time", ("W15",),
           (Edit(f"{R}.job_store:_Feed._take", "            stop = min(cursor + limit, base)\n",
                 "            stop = base\n"),),
           paths=(DAEMON,), tags="daemon_process"),
    Mutant("recorder-blocks-when-full", "recording waits while a watcher's buffer of 1,024 is full",
           ("W15",),
           (Edit(f"{R}.job_store:JobStore.record_many", "            first = st.last_seq + 1\n",
                 "            while any(st.last_seq - f.cursor > 1024 for f in list(st.open_feeds)):\n"
                 "                __import__('time').sleep(0.01)\n"
                 "            first = st.last_seq + 1\n"),)),
    Mutant("handover-gap", "a watcher that catches up joins live from the newest event, after a "
           "thread switch: what was recorded meanwhile is lost", ("W13",),
           (Edit(f"{R}.job_store:_Feed._take", "            if cursor > st.last_seq:\n"
                 "                if st.terminal:\n",
                 "            if cursor > st.last_seq and not st.terminal:\n"
                 "                st.lock.release()\n"
                 "                __import__('time').sleep(0)\n"
                 "                st.lock.acquire()\n"
                 "                self._cursor = cursor = st.last_seq + 1\n"
                 "            if cursor > st.last_seq:\n"
                 "                if st.terminal:\n"),)),
    Mutant("handover-duplicate", "a watcher that catches up while an event arrives gets the last "
           "event again", ("W13",),
           (Edit(f"{R}.job_store:_Feed._take", "            if cursor > st.last_seq:\n"
                 "                if st.terminal:\n",
                 "            if cursor > st.last_seq and not st.terminal:\n"
                 "                seen = st.last_seq\n"
                 "                st.lock.release()\n"
                 "                __import__('time').sleep(0)\n"
                 "                st.lock.acquire()\n"
                 "                if st.last_seq != seen:\n"
                 "                    self._cursor = cursor = cursor - 1\n"
                 "            if cursor > st.last_seq:\n"
                 "                if st.terminal:\n"),)),
    # The hand-over at the points the in-process checkpoints script (W13): each
    # goes wrong only when an event is recorded at one point of a new watch.
    Mutant("catch-up-joins-moved-window", "a watch whose page of history reached the events in "
           "memory goes on where they now start: what the window dropped meanwhile is lost",
           ("W13",),
           (Edit(f"{R}.job_store:_Feed._take",
                 "            self._cursor = cursor + len(batch)\n        return batch\n",
                 "            self._cursor = (st.window_base if cursor + len(batch) == base < st.window_base\n"
                 "                            else cursor + len(batch))\n"
                 "        return batch\n"),),
           paths=(IN_PROCESS,)),
    Mutant("catch-up-steps-back", "a watch that read a page of history while more was recorded "
           "steps back one event to be sure: the page's last event comes twice", ("W13",),
           (Edit(f"{R}.job_store:_Feed._take", "            stop = min(cursor + limit, base)\n",
                 "            stop = min(cursor + limit, base)\n"
                 "            seen = st.last_seq\n"),
            Edit(f"{R}.job_store:_Feed._take",
                 "            self._cursor = cursor + len(batch)\n        return batch\n",
                 "            self._cursor = cursor + len(batch) - (st.last_seq != seen)\n"
                 "        return batch\n")),
           paths=(IN_PROCESS,)),
    Mutant("nothing-to-replay-starts-live", "a watch that had nothing to replay when it arrived "
           "starts at the live end as it is when it subscribes: what came in between is lost",
           ("W13",),
           (Edit(f"{R}.job_store:JobStore.subscribe", "        self.checkpoints.reached(BEFORE_SUBSCRIBE)\n",
                 "        seen = self._state(job_id).last_seq\n"
                 "        self.checkpoints.reached(BEFORE_SUBSCRIBE)\n"),
            Edit(f"{R}.job_store:JobStore.subscribe", "                    st.open_feeds[feed] = None\n",
                 "                    if from_sequence > seen:\n"
                 "                        feed._cursor = max(feed._cursor, st.last_seq + 1)\n"
                 "                    st.open_feeds[feed] = None\n")),
           paths=(IN_PROCESS,)),
    Mutant("window-trimmed-one-too-far", "trimming the events kept in memory drops one more than "
           "it counts: the window then starts one event later than it says", ("W13",),
           (Edit(f"{R}.job_store:JobStore._trim", "        del st.window[:cut]\n",
                 "        del st.window[:cut + 1]\n"),),
           paths=(IN_PROCESS,), tags="checkpoints"),
    Mutant("wake-cleared-after-read", "a watch clears its wake-up after reading instead of "
           "before: an event recorded in between waits for the next one to be seen", ("W13",),
           (Edit(f"{R}.watch:_stream", "            watch.wake.clear()\n", ""),
            Edit(f"{R}.watch:_stream", "            if events is None:\n",
                 "            watch.wake.clear()\n            if events is None:\n")),
           paths=(IN_PROCESS,)),
    # -- defects nobody had listed: payloads, concurrency, wake-ups, the edges ----------------
    Mutant("payload-reserialized-on-read", "payloads read back from the database are JSON "
           "re-serialized (spacing, key order and escapes change)", ("W17",),
           (Edit(f"{R}.sqlite_log:SqliteLog.read", "        return [Event(*row) for row in rows]\n",
                 "        def again(p):\n"
                 "            try:\n"
                 "                return __import__('json').dumps(__import__('json').loads(p))\n"
                 "            except ValueError:\n"
                 "                return p\n"
                 "        return [Event(s, t, u, again(p), ts) for s, t, u, p, ts in rows]\n"),)),
    Mutant("payload-ascii-on-record", "non-ASCII payloads are recorded with their text escaped to "
           "ASCII", ("W3", "W9"),
           (Edit(f"{R}.control:ConformanceControlServicer.AppendEvents",
                 'specs = [(e.event_type, e.unit_id, e.payload_json or "{}") for e in request.events]',
                 'specs = [(e.event_type, e.unit_id, (e.payload_json or "{}").encode("ascii", '
                 '"backslashreplace").decode()) for e in request.events]'),)),
    Mutant("sequence-outside-lock", "the next sequence is taken before the lock that guards it: "
           "two appends at once can get the same numbers", ("W9",),
           (Edit(f"{R}.job_store:JobStore.record_many", "            first = st.last_seq + 1\n", ""),
            Edit(f"{R}.job_store:JobStore.record_many",
                 "        with self._write_lock:\n",
                 "        first = st.last_seq + 1\n"
                 "        __import__('time').sleep(0)\n"
                 "        with self._write_lock:\n"))),
    Mutant("release-drops-every-waiter", "a watch that ends drops the wake-ups of every other watch "
           "of the job", ("W14",),
           (Edit(f"{R}.job_store:JobStore._release", "            st.waiters.discard(feed)\n",
                 "            st.waiters.clear()\n"),)),
    Mutant("past-the-end-ends-at-once", "a watch of a running job from beyond its last event but "
           "one ends at once instead of waiting", ("W10",),
           (Edit(f"{R}.job_store:_Feed._take", "            if cursor > st.last_seq:\n"
                 "                if st.terminal:\n",
                 "            if cursor > st.last_seq:\n"
                 "                if st.terminal or cursor > st.last_seq + 1:\n"),)),
    Mutant("ids-from-the-clock", "a job's id is the time in hundredths of a second: StartJobs "
           "that arrive together get the same one", ("R3",),
           (Edit(f"{R}.orchestrator:Orchestrator.start_job", "            job_id = uuid.uuid4().hex\n",
                 "            job_id = '%x' % (__import__('time').time_ns() // 10_000_000)\n"),)),
    Mutant("health-counts-running-only", "Health counts only running jobs as active, not pending "
           "ones", ("R9",),
           (Edit(f"{R}.job_store:JobStore.active_count", "        return len(self._active)\n",
                 "        return sum(1 for st in list(self._active.values()) if st.job.status == 'running')\n"),)),
    Mutant("restart-fails-without-completed-at", "a job that was running when the daemon died comes "
           "back failed with no completed_at", ("R6",),
           (Edit(f"{R}.sqlite_log:SqliteLog.fail_unfinished",
                 "\"UPDATE jobs SET status='failed', error=?, completed_at_ns=?\"",
                 "\"UPDATE jobs SET status='failed', error=?, completed_at_ns=0*?\""),),
           tags="restarts_daemon"),
    Mutant("restart-lists-by-id", "after a restart the jobs are read back in the order of their ids, "
           "not of their creation", ("R7",),
           (Edit(f"{R}.sqlite_log:SqliteLog.load", '" FROM jobs ORDER BY ord"', '" FROM jobs ORDER BY job_id"'),),
           tags="restarts_daemon"),
    Mutant("publish-before-commit", "events reach watchers before they are committed: a crash "
           "in the middle of a burst loses events a watcher already had", ("W17",),
           (Edit(f"{R}.job_store:JobStore.record_many",
                 "            self._log.append(job_id, events)\n            with st.lock:\n",
                 "            with st.lock:\n"),
            Edit(f"{R}.job_store:JobStore.record_many",
                 "        _call_all(wakes)\n        return events\n",
                 "            _call_all(wakes)\n"
                 "            __import__('time').sleep(0.002)  # a commit as slow as an fsync\n"
                 "            self._log.append(job_id, events)\n"
                 "        return events\n")),
           # In process a crash is the store's abandon(), which waits for the
           # write in flight; only a killed process loses it.
           paths=(DAEMON,), tags="restarts_daemon and not reference"),
    Mutant("attach-across-repositories", "StartJob attaches to a busy feature branch of another "
           "repository", ("R4",),
           (Edit(f"{R}.job_store:JobStore.find_active", "                and job.repo_path == repo_path\n",
                 ""),)),
    # -- the other RPCs ------------------------------------------------------------------
    Mutant("negative-parallelism-unchecked", "a negative parallelism reaches the job runner (UNKNOWN)",
           ("R1",),
           (Edit(f"{R}.servicer:DaemonServicer.StartJob", "        if request.parallelism < 0:\n",
                 "        if False:\n"),)),
    Mutant("nul-tasks-dir-unknown", "a NUL byte in tasks_dir reaches the file system (UNKNOWN)",
           ("R10",),
           (Edit(f"{R}.servicer:DaemonServicer.StartJob", 'for field in ("tasks_dir", "repo_path"):',
                 'for field in ("repo_path",):'),)),
    Mutant("graceful-stop-kills", "a graceful StopJob kills the running command", ("R5",),
           (Edit(f"{R}.orchestrator:Orchestrator.stop_job", "            run.stop(force)\n",
                 "            run.stop(True)\n"),)),
    Mutant("stop-terminal-succeeds", "StopJob on a terminal job answers success", ("R5",),
           (Edit(f"{R}.orchestrator:Orchestrator.stop_job", "            raise AlreadyStopped(job.status)\n",
                 "            return \"job stopped gracefully\"\n"),)),
    Mutant("shutdown-zero-means-now", "Shutdown(wait, timeout_seconds=0) does not wait", ("R8",),
           (Edit(f"{R}.orchestrator:Orchestrator.shutdown", "(timeout_s or DEFAULT_SHUTDOWN_WAIT_S)",
                 "timeout_s"),)),
    Mutant("health-counts-terminal", "Health counts finished jobs as active", ("R9",),
           (Edit(f"{R}.job_store:JobStore.set_status",
                 "                        self._active.pop(job_id, None)\n",
                 "                        pass\n"),)),
    Mutant("list-oldest-first", "ListJobs lists the oldest job first", ("R7",),
           (Edit(f"{R}.job_store:JobStore.iter_summaries", "        for entry in reversed(entries):\n",
                 "        for entry in entries:\n"),)),
    # -- correct variants: the suite must fail none of their rules ------------------------
    Mutant("late-take-up", "every watch starts being served 0.3 s after it arrives (slow, not wrong)",
           ("W3", "W4", "W5", "W6", "W7", "W8", "W10", "W16"),
           (Edit(f"{R}.watch:watch_job", _SERVED_FROM,
                 "    threading.Event().wait(0.3)\n" + _SERVED_FROM),
            Edit(f"{R}.async_watch:watch_job_async", _SERVED_FROM,
                 "    await asyncio.sleep(0.3)\n" + _SERVED_FROM)),
           paths=PATHS, tags="not volume and not daemon_capacity", stays_correct=True),
    Mutant("fields-in-words", "details name the fields in words: \"different target branch\", "
           "\"from sequence must be ...\"", ("R4", "W11"),
           (Edit(f"{R}.orchestrator:Orchestrator._attach", 'f"target_branch {target_branch!r}',
                 'f"target branch {target_branch!r}'),
            Edit(f"{R}.watch:admit", 'f"from_sequence must be 0', 'f"From sequence must be 0')),
           stays_correct=True),
    Mutant("forgets-replaced-jobs", "a finished job is no longer listed once a newer job has started "
           "on its repository", ("R7",),
           (Edit(f"{R}.job_store:JobStore.list_jobs",
                 "        return [self._whole(brief.job_id) for brief in self.iter_summaries(statuses)]\n",
                 "        for status in statuses:\n"
                 "            _check_status(status)\n"
                 "        jobs, seen = [], set()\n"
                 "        for brief in self.iter_summaries():\n"
                 "            job = self._whole(brief.job_id)\n"
                 "            if not (is_terminal(job.status) and job.repo_path and job.repo_path in seen):\n"
                 "                jobs.append(job)\n"
                 "            seen.add(job.repo_path)\n"
                 "        return [j for j in jobs if not statuses or j.status in statuses]\n"),
            # ListJobs reads summaries, which hold no repository: it lists
            # through list_jobs here, so that the forgetting shows.
            Edit(f"{R}.servicer:DaemonServicer.ListJobs",
                 'listing = getattr(self.jobs, "iter_summaries", None)', "listing = None")),
           stays_correct=True),
    Mutant("gc-heap-rhythm", "the daemon's memory swells with what it records and falls back at "
           "intervals, as a garbage-collected heap does, with no watcher's backlog in it",
           ("W15",),
           (Edit(f"{R}.job_store:JobStore.record_many", "            self._log.append(job_id, events)\n",
                 "            self._log.append(job_id, events)\n"
                 "            heap = self.__dict__.setdefault('_heap', [])\n"
                 "            pages = __import__('mmap').mmap(-1, 4096 * len(events))\n"
                 "            pages[::4096] = b'g' * len(events)\n"
                 "            heap.append(pages)\n"
                 "            if len(heap) * 4096 * len(events) > 100_000_000:\n"
                 "                for pages in heap:\n"
                 "                    pages.close()\n"
                 "                heap.clear()\n"),),
           paths=(DAEMON,), tags="daemon_process", stays_correct=True),
)

BY_NAME = {mutant.name: mutant for mutant in CATALOGUE}
