"""Child process of test_crash_safety: records events into a JobStore until
it is killed, printing "<sequence> <timestamp_ns>" for each event only after
record() has returned it.

usage: crash_child.py DB_PATH single|batch
"""

from __future__ import annotations

import sys

from choo_reference.job_store import JobStore

BATCH = 7


def main() -> None:
    db_path, mode = sys.argv[1], sys.argv[2]
    store = JobStore(db_path)
    job = store.create_job("crash-job", repo_path="/repo", feature_branch="feat")
    store.create_job("idle", "pending")
    print("ready", flush=True)
    i = 0
    while True:
        if mode == "batch":
            specs = [("tick", "u1", f'{{"i": {i + k}}}') for k in range(BATCH)]
            events = store.record_many(job.job_id, specs)
        else:
            events = [store.record(job.job_id, "tick", "", f'{{"i": {i}}}')]
        sys.stdout.write("".join(f"{e.sequence} {e.timestamp_ns}\n" for e in events))
        sys.stdout.flush()
        i += len(events)


if __name__ == "__main__":
    main()
