"""The results table of the performance targets (figure, measured, ceiling,
ratio, target, met?), the machine facts printed with it, and the closing note
that names each missed figure, by how much, and what limits it."""

from __future__ import annotations

import math
import os
import platform
import sys
from dataclasses import asdict, dataclass
from importlib import metadata


def machine() -> dict:
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f
                          if line.startswith("model name")), "")
    except OSError:
        pass
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "cpu": model or platform.processor(),
        "memory_gb": round(memory_gb, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "grpcio": version("grpcio"),
        "protobuf": version("protobuf"),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        # Set, every import compiles from source: it slows the suite's start.
        "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE", ""),
    }


def machine_line(facts: dict) -> str:
    return (f"{facts['usable_cores']} cores ({facts['cpu']}), {facts['memory_gb']} GB, "
            f"{facts['os']}, Python {facts['python']}, grpcio {facts['grpcio']}, "
            f"protobuf {facts['protobuf']}, load average at start "
            f"{' '.join(map(str, facts['load_average']))}"
            + (", PYTHONDONTWRITEBYTECODE set" if facts["PYTHONDONTWRITEBYTECODE"] else "")
            + (f"; {facts['placement']}" if facts.get("placement") else "")
            + (f"; choo_reference at {facts['commit']}" if facts.get("commit") else "")
            + (" with uncommitted changes to "
               + ", ".join(facts["reference_server_uncommitted"])
               if facts.get("reference_server_uncommitted") else ""))


@dataclass
class Row:
    figure: str
    measured: float
    ceiling: float | None
    unit: str
    target: str
    met: bool
    note: str = ""  # shown after the table when the figure is missed
    shown: str = ""  # replaces the formatted measurement (a timeout, a lower bound)
    ceiling_api: str = ""  # which of grpcio's server APIs gave the ceiling
    # Server CPU (user + system) per delivered event in the runs a throughput
    # figure comes from: the daemon's and the ceiling's.
    cpu_us: float | None = None
    ceiling_cpu_us: float | None = None

    @property
    def ratio(self) -> float | None:
        if self.ceiling is None or not self.ceiling or math.isnan(self.ceiling):
            return None
        return self.measured / self.ceiling


def _fmt(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "events/s":
        return f"{value:,.0f} {unit}"
    if unit in ("ms", "KB", "µs"):
        return f"{value:,.1f} {unit}" if value < 100 else f"{value:,.0f} {unit}"
    return f"{value:.2f} {unit}"


def _fmt_ratio(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    return f"{ratio:.2f}" if ratio < 10 else f"{ratio:,.0f}"


def _fmt_cpu(r: Row) -> str:
    if r.cpu_us is None:
        return ""
    return f"{_fmt(r.cpu_us, 'µs')} / {_fmt(r.ceiling_cpu_us, 'µs')}"


def table(rows: list[Row]) -> str:
    """A Markdown table, readable as plain text too."""
    head = ["figure", "measured", "ceiling", "ratio", "target", "met?",
            "server CPU per event (daemon / ceiling)"]
    body = [[r.figure, r.shown or _fmt(r.measured, r.unit),
             _fmt(r.ceiling, r.unit) + (f" ({r.ceiling_api})" if r.ceiling_api else ""),
             _fmt_ratio(r.ratio), r.target, "yes" if r.met else "NO", _fmt_cpu(r)]
            for r in rows]
    widths = [max(len(line[i]) for line in [head] + body) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [line(b) for b in body])


def closing_note(rows: list[Row]) -> str:
    missed = [r for r in rows if not r.met]
    if not missed:
        return "Every figure meets its target."
    lines = [f"{len(missed)} of {len(rows)} figures miss their target:"]
    for r in missed:
        lines.append(f"- {r.figure}: {r.note}")
    return "\n".join(lines)


def as_dicts(rows: list[Row]) -> list[dict]:
    return [dict(asdict(r), ratio=r.ratio) for r in rows]
