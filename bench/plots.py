"""The PNG plots of how cost grows: with the number of watchers, with the
events per job, and latency with the append rate. Daemon and ceiling share
each axis so the gap is visible at every point."""

from __future__ import annotations

from pathlib import Path

COLORS = {"daemon": "tab:blue", "ceiling-sync": "tab:gray", "ceiling-aio": "black"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _log_x(ax, values) -> None:
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    ax.set_xticks(sorted(set(values)))
    ax.set_xticklabels([f"{v:,}" for v in sorted(set(values))])
    ax.xaxis.set_minor_formatter(NullFormatter())


def _series(points: list[dict], x: str, y: str) -> tuple[list, list]:
    points = sorted(points, key=lambda p: p[x])
    return [p[x] for p in points], [p[y] for p in points]


def watchers(sweep: dict[str, list[dict]], path: Path) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    panels = [("events_per_s", "delivered events/s (all watchers)"),
              ("cpu_us_per_event", "server CPU per delivered event (µs)"),
              ("rss_per_watcher_kb", "server RSS per open watcher (KB)")]
    for ax, (key, title) in zip(axes, panels):
        for kind, points in sweep.items():
            xs, ys = _series(points, "watchers", key)
            ax.plot(xs, ys, "o-", color=COLORS[kind], label=kind)
        _log_x(ax, [p["watchers"] for points in sweep.values() for p in points])
        ax.set_xlabel("open watchers of one job")
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    axes[2].axhline(64, color="tab:red", ls="--", lw=1, label="target 64 KB")
    axes[2].set_ylim(0, max(80, axes[2].get_ylim()[1]))
    axes[0].legend()
    axes[2].legend()
    totals = [p["watchers"] * p["events"] for points in sweep.values() for p in points]
    fig.suptitle(f"Cost vs number of watchers (events per job chosen so each point delivers "
                 f"{min(totals):,}-{max(totals):,} events)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def events(live: dict[str, list[dict]], replay: dict[str, list[dict]], window: int,
           path: Path) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = [("events_per_s", "events/s to one watcher"),
              ("cpu_us_per_event", "server CPU per delivered event (µs)")]
    xs_all = [p["events"] for sweep in (live, replay) for pts in sweep.values() for p in pts]
    for ax, (key, title) in zip(axes, panels):
        for kind in live:
            xs, ys = _series(live[kind], "events", key)
            ax.plot(xs, ys, "o-", color=COLORS[kind], label=f"{kind}, live")
            xs, ys = _series(replay.get(kind, []), "events", key)
            ax.plot(xs, ys, "s--", color=COLORS[kind], label=f"{kind}, replay of ended job")
        # The daemon keeps the last window..2*window events of a job in memory.
        ax.axvspan(window, 2 * window, color="tab:orange", alpha=0.12,
                   label="daemon's in-memory window")
        _log_x(ax, xs_all)
        ax.set_xlabel("events per job")
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Cost vs events per job (one watcher)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def latency(sweep: dict[str, list[dict]], watchers: int, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for kind, points in sweep.items():
        for key, style in (("p99_ms", "o-"), ("p50_ms", "s--")):
            xs, ys = _series(points, "rate", key)
            ax.plot(xs, ys, style, color=COLORS[kind], label=f"{kind} {key[:3]}")
    ax.axhline(20, color="tab:red", ls="--", lw=1, label="20 ms (where the ceiling holds it)")
    ax.set_yscale("log")
    ax.set_xlabel("appended events/s")
    ax.set_ylabel("append-to-client latency (ms)")
    ax.set_title(f"Latency vs append rate, {watchers} watchers")
    ax.grid(True, alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
