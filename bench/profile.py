"""Where the daemon's time goes in one figure: runs a scenario against the
reference daemon with py-spy sampling it, and prints the functions that hold
the GIL most often (self time, and time including callees). Collapsed stacks
go to bench/results/profile-<scenario>.txt (for flamegraph.pl or speedscope).

    python -m bench.profile watchers-1000      # 1000 watchers, 200 events
    python -m bench.profile one-watcher        # 1 watcher, 20000 events
    python -m bench.profile latency            # 100 watchers at 50 events/s
    python -m bench.profile latency --ceiling aio   # against a ceiling (sync or aio)

Sampling only threads that hold the GIL shows the Python work that competes
for it; time spent in grpc's C core without the GIL (socket writes, polling)
does not appear, and neither do threads blocked waiting for the GIL. grpc's
Cython layer has no Python frames, so time inside an awaited grpc call (such
as `await context.write(...)`) is counted on the line that awaits it; with
--native the C frames and system calls show.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from . import scenarios
from .processes import ROOT, Processes
from .servers import CEILING_AIO, CEILING_SYNC, POOLED, SHIPPED, Server

RESULTS = ROOT / "bench" / "results"
SCENARIOS = {
    "one-watcher": lambda p, s, d: scenarios.stream(p, s, 1, 20000, d),
    "watchers-10": lambda p, s, d: scenarios.stream(p, s, 10, 5000, d),
    "watchers-100": lambda p, s, d: scenarios.stream(p, s, 100, 1000, d),
    "watchers-1000": lambda p, s, d: scenarios.stream(p, s, 1000, 200, d),
    "latency": lambda p, s, d: scenarios.latency(p, s, 100, 50, 5.0, d),
}


def _place(frame: str) -> str:
    for marker, place in (("choo_reference/", "choo_reference (the daemon's code)"),
                          ("grpc/", "grpc (Python part)"), ("(libc", "libc / kernel calls"),
                          ("cygrpc", "grpc C core"), ("libsqlite3", "SQLite"),
                          ("threading.py", "threading (locks, conditions)"),
                          ("concurrent/futures", "thread pool")):
        if marker in frame:
            return place
    return "other"


def summarize(collapsed: Path, top: int = 25) -> str:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    places: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
        places[_place(frames[-1])] += n
    lines = [f"{total} samples (time inside grpc's Cython calls counts on the calling line)",
             "", "self time by where the sampled frame is:"]
    lines += [f"  {100 * n / total:5.1f}%  {p}" for p, n in places.most_common()]
    lines += ["", "self time:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines += ["", "including callees:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--ceiling", choices=("sync", "aio"),
                        help="profile that ceiling instead of the daemon")
    parser.add_argument("--pooled", action="store_true",
                        help="the daemon through bench.reference_daemon with a pool of 1100 "
                        "threads instead of `choo-ref daemon` as installed")
    parser.add_argument("--native", action="store_true",
                        help="every running thread, with grpc's C frames (pauses the daemon "
                        "at each sample) instead of the GIL holder only")
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.ceiling:
        kind = CEILING_AIO if args.ceiling == "aio" else CEILING_SYNC
    else:
        kind = POOLED if args.pooled else SHIPPED
    name = {SHIPPED: "", POOLED: "-pooled"}.get(kind, "-" + kind)
    out = RESULTS / f"profile-{args.scenario}{name}{'-native' if args.native else ''}.txt"
    processes = Processes()
    work_dir = Path(tempfile.mkdtemp(prefix="cb-prof-"))
    try:
        with Server(processes, kind, 1100, work_dir) as server:
            # --native pauses the process at each sample, so it slows the
            # daemon down; the default samples without stopping it.
            mode = ["--native"] if args.native else ["--gil", "--nonblocking"]
            spy = processes.spawn([py_spy, "record", "--pid", str(server.pid), *mode,
                                   "--rate", str(args.rate), "--format", "raw",
                                   "--output", str(out)], log=work_dir / "py-spy.log")
            result = SCENARIOS[args.scenario](processes, server, work_dir)
            # py-spy writes its output when SIGINT asks it to stop.
            spy.send_signal(2)
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                processes.stop(spy)
        print({k: v for k, v in result.items() if not isinstance(v, dict)})
        if out.exists():
            print(summarize(out))
            print(f"\ncollapsed stacks: {out}")
        else:
            print((work_dir / "py-spy.log").read_text(errors="replace"), file=sys.stderr)
            return 1
        return 0
    finally:
        processes.stop_all()
        shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
