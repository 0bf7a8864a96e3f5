"""Read a tasks_dir in choo's layout into a Plan.

Layout::

    tasks_dir/
      <unit folder>/
        IMPLEMENTATION_PLAN.md   front matter: unit: <id>, depends_on: [unit ids]
        01-first.md              front matter: task: 1, backpressure: "<cmd>",
        02-second.md                           depends_on: [task numbers]

Hidden entries and files that are not unit material (non-.md files, .md files
not named NN-name.md) are ignored. Anything malformed raises PlanError, whose
message names the offending file and says what is wrong with it. A file
that cannot be read because the daemon has run out of open files (or
memory) is no fault of the tasks: that raises jobs.ResourceShortage.

Only regular files are read, each at most limits.MAX_FILE_BYTES, and never
with a call that can block: a FIFO, a device or /dev/zero behind a link is
refused before it is read. The counts and lengths of limits.py hold too.
"""

from __future__ import annotations

import heapq
import os
import re
import stat
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import yaml
from frontmatter.default_handlers import YAMLHandler

from .jobs import SHORTAGE_ERRNOS, ResourceShortage, shorten
from .limits import (
    MAX_COMMAND_BYTES,
    MAX_FILE_BYTES,
    MAX_ID_BYTES,
    MAX_TASKS,
    MAX_TASKS_PER_UNIT,
    MAX_TITLE_BYTES,
    MAX_UNITS,
    size_text,
    too_long,
)

PLAN_FILE = "IMPLEMENTATION_PLAN.md"
TASK_FILE_PATTERN = re.compile(r"^(\d{2,})-(.+)\.md$")

_YAML = YAMLHandler()

K = TypeVar("K", bound=Hashable)


class PlanError(ValueError):
    """A tasks_dir that cannot be read or parsed. str() is "<path>: <reason>"."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True, slots=True)
class Task:
    number: int
    title: str
    backpressure: str
    depends_on: tuple[int, ...]
    path: str


@dataclass(frozen=True, slots=True)
class Unit:
    unit_id: str
    path: str  # the unit folder
    depends_on: tuple[str, ...]
    tasks: tuple[Task, ...]  # dependency order, ties by number


@dataclass(frozen=True, slots=True)
class Plan:
    units: tuple[Unit, ...]  # dependency order, ties by unit id

    def unit(self, unit_id: str) -> Unit:
        """The unit with this id; raises KeyError."""
        for unit in self.units:
            if unit.unit_id == unit_id:
                return unit
        raise KeyError(unit_id)

    @property
    def task_count(self) -> int:
        return sum(len(unit.tasks) for unit in self.units)


def load_plan(tasks_dir: str | os.PathLike[str]) -> Plan:
    """Parse tasks_dir; raises PlanError naming the file and the reason."""
    root = os.path.abspath(os.fspath(tasks_dir))
    unit_dirs = _unit_dirs(root)
    if not unit_dirs:
        raise PlanError(
            root,
            f"no unit folders (expected sub-folders each holding {PLAN_FILE})",
        )

    if len(unit_dirs) > MAX_UNITS:
        raise PlanError(root, f"{len(unit_dirs)} unit folders; the limit is {MAX_UNITS}")

    units: dict[str, Unit] = {}
    tasks = 0
    for unit_dir in unit_dirs:
        unit = _load_unit(unit_dir)
        if unit.unit_id in units:
            raise PlanError(
                os.path.join(unit_dir, PLAN_FILE),
                f"duplicate unit id {unit.unit_id!r} "
                f"(also declared in {os.path.join(units[unit.unit_id].path, PLAN_FILE)})",
            )
        units[unit.unit_id] = unit
        tasks += len(unit.tasks)
        if tasks > MAX_TASKS:
            raise PlanError(root, f"more than {MAX_TASKS} tasks in all; the limit is {MAX_TASKS}")

    for unit in units.values():
        for dep in unit.depends_on:
            if dep not in units:
                raise PlanError(
                    os.path.join(unit.path, PLAN_FILE),
                    f"depends_on names unknown unit {dep!r} "
                    f"(known units: {', '.join(sorted(units))})",
                )

    ids = sorted(units)
    order, cycle = _toposort(ids, {uid: units[uid].depends_on for uid in ids})
    if cycle:
        raise PlanError(
            os.path.join(units[cycle[0]].path, PLAN_FILE),
            "unit dependency cycle: " + " -> ".join(cycle),
        )
    return Plan(units=tuple(units[uid] for uid in order))


def _unit_dirs(root: str) -> list[str]:
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except FileNotFoundError:
        raise PlanError(root, "tasks_dir does not exist") from None
    except NotADirectoryError:
        raise PlanError(root, "tasks_dir is not a directory") from None
    except OSError as exc:
        raise _read_error(root, "cannot read tasks_dir", exc) from None
    dirs = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        _check_name(root, entry.name)
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = False
        if is_dir:
            dirs.append(entry.path)
    return dirs


def escaped_name(name: str) -> str:
    """A file name as text that can be sent anywhere: bytes that are not
    UTF-8 (which os gives back as lone surrogates) shown as \\xNN."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _check_name(folder: str, name: str) -> None:
    # Such a name could not be quoted in a status message, an event or a log
    # line as it is (gRPC sends only UTF-8).
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise PlanError(folder, f"holds an entry whose name is not valid UTF-8: "
                        f"{escaped_name(name)} (rename or remove it)") from None


def _load_unit(unit_dir: str) -> Unit:
    plan_path = os.path.join(unit_dir, PLAN_FILE)
    try:
        names = sorted(os.listdir(unit_dir))
    except OSError as exc:
        raise _read_error(unit_dir, "cannot read unit folder", exc) from None
    if PLAN_FILE not in names:
        raise PlanError(unit_dir, f"unit folder has no {PLAN_FILE}")

    meta, _ = _read_front_matter(plan_path)
    unit_id = meta.get("unit")
    if unit_id is None:
        raise PlanError(plan_path, "front matter: 'unit' is required")
    if not isinstance(unit_id, str):
        raise PlanError(plan_path, "front matter: 'unit' must be a string")
    if not unit_id.strip():
        raise PlanError(plan_path, "front matter: 'unit' must not be empty")
    _check_length(plan_path, "'unit'", unit_id, MAX_ID_BYTES)
    unit_deps = _depends_on(
        meta, plan_path, lambda v: isinstance(v, str) and v.strip() != "", "unit ids"
    )

    tasks: dict[int, Task] = {}
    for name in names:
        if name.startswith("."):
            continue
        _check_name(unit_dir, name)
        if not TASK_FILE_PATTERN.match(name):
            continue
        path = os.path.join(unit_dir, name)
        if os.path.isdir(path):
            continue
        if len(tasks) == MAX_TASKS_PER_UNIT:
            raise PlanError(
                unit_dir, f"more than {MAX_TASKS_PER_UNIT} task files; the limit is "
                f"{MAX_TASKS_PER_UNIT}")
        task = _load_task(path, name)
        if task.number in tasks:
            raise PlanError(
                path,
                f"duplicate task number {task.number} "
                f"(also used by {os.path.basename(tasks[task.number].path)})",
            )
        tasks[task.number] = task
    if not tasks:
        raise PlanError(
            unit_dir, f"unit {unit_id!r} has no task files (expected NN-name.md)"
        )

    for task in tasks.values():
        for dep in task.depends_on:
            if dep not in tasks:
                raise PlanError(
                    task.path,
                    f"depends_on names unknown task {dep} (unit {unit_id!r} "
                    f"has tasks {', '.join(str(n) for n in sorted(tasks))})",
                )

    numbers = sorted(tasks)
    order, cycle = _toposort(numbers, {n: tasks[n].depends_on for n in numbers})
    if cycle:
        raise PlanError(
            tasks[cycle[0]].path,
            f"task dependency cycle in unit {unit_id!r}: "
            + " -> ".join(str(n) for n in cycle),
        )
    return Unit(
        unit_id=unit_id,
        path=unit_dir,
        depends_on=unit_deps,
        tasks=tuple(tasks[n] for n in order),
    )


def _load_task(path: str, name: str) -> Task:
    meta, body = _read_front_matter(path)
    number = meta.get("task")
    if number is None:
        raise PlanError(path, "front matter: 'task' is required")
    # bool is an int subclass; `task: yes` is a mistake, not task 1.
    if not isinstance(number, int) or isinstance(number, bool):
        raise PlanError(path, "front matter: 'task' must be an integer")
    command = meta.get("backpressure")
    if command is None:
        raise PlanError(path, "front matter: 'backpressure' is required")
    if not isinstance(command, str):
        raise PlanError(path, "front matter: 'backpressure' must be a string")
    if not command.strip():
        raise PlanError(path, "front matter: 'backpressure' must not be empty")
    _check_length(path, "'backpressure'", command, MAX_COMMAND_BYTES)
    deps = _depends_on(
        meta,
        path,
        lambda v: isinstance(v, int) and not isinstance(v, bool),
        "task numbers",
    )
    title = _title(body, fallback=name)
    problem = too_long("the title (its first '# ' heading)", title, MAX_TITLE_BYTES)
    if problem:
        raise PlanError(path, problem)
    return Task(
        number=number,
        title=title,
        backpressure=command,
        depends_on=deps,
        path=path,
    )


def _check_length(path: str, what: str, value: str, limit: int) -> None:
    problem = too_long(f"front matter: {what}", value, limit)
    if problem:
        raise PlanError(path, problem)


_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder"}


def _not_regular(mode: int) -> str:
    kind = _KINDS.get(stat.S_IFMT(mode), "not a file")
    return f"not a regular file ({kind}); only regular files are read"


def read_limited(path: str) -> bytes:
    """The bytes of a regular file of at most MAX_FILE_BYTES. Nothing here
    can block: the file is checked before it is opened, opened non-blocking
    and checked again (it may have been swapped meanwhile)."""
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise PlanError(path, _not_regular(mode))
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise _read_error(path, "cannot read", exc) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise PlanError(path, _not_regular(mode))
        chunks, size = [], 0
        while size <= MAX_FILE_BYTES:
            chunk = os.read(fd, MAX_FILE_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise _read_error(path, "cannot read", exc) from None
    finally:
        os.close(fd)
    if size > MAX_FILE_BYTES:
        raise PlanError(path, f"larger than {size_text(MAX_FILE_BYTES)}; the limit for a "
                        f"plan or task file is {size_text(MAX_FILE_BYTES)}")
    return b"".join(chunks)


def _read_front_matter(path: str) -> tuple[dict[str, Any], str]:
    """The YAML front matter as a dict, and the body after it."""
    raw = read_limited(path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PlanError(path, f"not valid UTF-8 (byte {exc.start})") from None

    lead = len(text) - len(text.lstrip())
    stripped = text[lead:]
    opening = _YAML.FM_BOUNDARY.match(stripped)
    if opening is None:
        raise PlanError(path, "no front matter (the file must start with a '---' line)")
    # YAML error marks count lines from where the front matter text begins.
    first_line = text.count("\n", 0, lead + opening.end()) + 1
    try:
        fm, body = _YAML.split(stripped)
    except ValueError:
        raise PlanError(path, "front matter: no closing '---' line") from None
    try:
        meta = _YAML.load(fm)
    except yaml.YAMLError as exc:
        raise PlanError(
            path, f"front matter: invalid YAML: {_yaml_reason(exc, first_line)}"
        ) from None
    except (ValueError, OverflowError, RecursionError) as exc:
        # Parsed, but a value cannot be built: a date that is none
        # (2001-13-45), an integer past Python's 4300 digits, nesting too deep.
        raise PlanError(path, f"front matter: a value cannot be read: "
                        f"{shorten(str(exc), 200)}") from None
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise PlanError(
            path,
            f"front matter: expected key: value pairs, got a {type(meta).__name__}",
        )
    return meta, body


def _depends_on(
    meta: Mapping[str, Any], path: str, valid: Any, what: str
) -> tuple[Any, ...]:
    value = meta.get("depends_on")
    if value is None:
        return ()
    if not isinstance(value, list) or not all(valid(v) for v in value):
        raise PlanError(path, f"front matter: 'depends_on' must be a list of {what}")
    return tuple(dict.fromkeys(value))  # drop repeats, keep order


def _title(body: str, fallback: str) -> str:
    """The first '# ' heading outside fenced code blocks, else the fallback."""
    fence = ""
    for line in body.splitlines():
        marker = line.lstrip(" ")[:3]
        if fence:
            if marker == fence:
                fence = ""
            continue
        if marker in ("```", "~~~"):
            fence = marker
            continue
        if line.startswith("# "):
            title = line[2:].strip().rstrip("#").strip()
            if title:
                return title
    return fallback


def _toposort(
    nodes: Sequence[K], deps: Mapping[K, Sequence[K]]
) -> tuple[list[K], list[K]]:
    """Order nodes so each follows its deps, ties broken by position in nodes.

    Returns (order, []) or, when there is a cycle, ([], cycle) where cycle
    starts and ends at the same node: a -> b -> a reads "a depends on b,
    which depends on a".
    """
    index = {node: i for i, node in enumerate(nodes)}
    waiting = {node: set(deps[node]) for node in nodes}
    dependents: dict[K, list[K]] = {node: [] for node in nodes}
    for node in nodes:
        for dep in waiting[node]:
            dependents[dep].append(node)
    ready = [index[node] for node in nodes if not waiting[node]]
    heapq.heapify(ready)
    order: list[K] = []
    while ready:
        node = nodes[heapq.heappop(ready)]
        order.append(node)
        for dependent in dependents[node]:
            waiting[dependent].discard(node)
            if not waiting[dependent]:
                heapq.heappush(ready, index[dependent])
    if len(order) == len(nodes):
        return order, []

    # Every node left still waits on another node left, so walking from any
    # of them along its first unmet dependency must come round to a node
    # already seen.
    seen: dict[K, int] = {}
    path: list[K] = []
    node = next(n for n in nodes if waiting[n])
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = min(waiting[node], key=index.__getitem__)
    cycle = path[seen[node] :]
    first = min(range(len(cycle)), key=lambda i: index[cycle[i]])
    cycle = cycle[first:] + cycle[:first]
    return [], cycle + [cycle[0]]


def _read_error(path: str, what: str, exc: OSError) -> Exception:
    if exc.errno in SHORTAGE_ERRNOS:
        return ResourceShortage(f"the daemon cannot read the tasks at {path} now: "
                                f"{_os_reason(exc)} (try again later)")
    return PlanError(path, f"{what}: {_os_reason(exc)}")


def _os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _yaml_reason(exc: yaml.YAMLError, first_line: int) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        parts = []
        if exc.context:
            where = exc.context_mark
            parts.append(
                exc.context
                + (f" (line {first_line + where.line})" if where is not None else "")
            )
        if exc.problem:
            where = exc.problem_mark
            parts.append(
                exc.problem
                + (
                    f" (line {first_line + where.line}, column {where.column + 1})"
                    if where is not None
                    else ""
                )
            )
        return ", ".join(parts) or "syntax error"
    return " ".join(str(exc).split())
