"""Read a tasks folder in choo's layout into units and their steps.

    tasks_dir/
      <folder>/IMPLEMENTATION_PLAN.md   ---  unit: <id>  depends_on: [<unit ids>]  ---
      <folder>/NN-name.md               ---  task: N  backpressure: "<command>"
                                              depends_on: [<task numbers>]  ---

A unit is a folder holding IMPLEMENTATION_PLAN.md (`unit` defaults to the
folder's name). Hidden entries and other files are ignored; a folder with
task files but no plan is an error. The front matter is read by the small
parser below, which knows the part of YAML these files use: `key: value`
lines whose values are plain words or numbers, "double" or 'single' quoted
strings, [flow, lists] or block lists of `- item` lines.

Every problem raises PlanError, whose message names the file and what is
wrong with it.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass

PLAN_FILE = "IMPLEMENTATION_PLAN.md"
STEP_FILE = re.compile(r"^\d+-.+\.md$")

# Limits, each named in the error that enforces it.
MAX_FILE_BYTES = 256 * 1024
MAX_UNITS = 256
MAX_STEPS_PER_UNIT = 256
MAX_COMMAND_BYTES = 16 * 1024
MAX_UNIT_ID_BYTES = 256


class PlanError(Exception):
    def __init__(self, file: str, why: str) -> None:
        super().__init__(f"{file}: {why}")


@dataclass(frozen=True)
class Step:
    number: int
    title: str
    command: str
    after: tuple[int, ...]
    file: str  # the task file's name


@dataclass(frozen=True)
class Unit:
    unit_id: str
    after: tuple[str, ...]  # units that must pass first
    steps: tuple[Step, ...]  # in the order they run


# -- front matter ---------------------------------------------------------------

_KEY = re.compile(r"^([A-Za-z_][\w-]*)\s*:(?:\s+(.*))?$")
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "n": "\n", "t": "\t", "r": "\r", "0": "\0",
            "a": "\a", "b": "\b", "e": "\x1b", "f": "\f", "v": "\v", " ": " "}


def front_matter(text: str) -> dict[str, object]:
    """The `---` block at the top of a markdown file, as a dict. Raises
    ValueError saying what it cannot read."""
    lines = text.splitlines()
    if not lines or lines[0].rstrip() != "---":
        raise ValueError("it does not start with a --- line (front matter)")
    try:
        end = next(i for i, line in enumerate(lines[1:], 1) if line.rstrip() in ("---", "..."))
    except StopIteration:
        raise ValueError("its front matter has no closing --- line") from None
    fields: dict[str, object] = {}
    key = None  # the key whose block list is being read
    for number, line in enumerate(lines[1:end], 2):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("- ") or stripped == "-":
            block = fields.get(key) if key is not None else None
            if not isinstance(block, list):
                raise ValueError(f"line {number}: a list item outside a list")
            block.append(_scalar(stripped[1:].strip(), number))
            continue
        match = _KEY.match(stripped)
        if match is None or line[0].isspace():
            raise ValueError(f"line {number}: expected `key: value`, got {stripped[:60]!r}")
        key, raw = match.group(1), (match.group(2) or "").strip()
        if key in fields:
            raise ValueError(f"line {number}: {key} is given twice")
        fields[key] = _value(raw, number) if raw and not raw.startswith("#") else []
    return fields


def _value(raw: str, line: int) -> object:
    if raw.startswith("["):
        return _flow_list(raw, line)
    return _scalar(raw, line)


def _flow_list(raw: str, line: int) -> list:
    items: list[object] = []
    rest = raw[1:].lstrip()
    while True:
        if rest.startswith("]"):
            if rest[1:].strip() and not rest[1:].strip().startswith("#"):
                raise ValueError(f"line {line}: text after the list")
            return items
        if not rest:
            raise ValueError(f"line {line}: the list has no closing ]")
        item, rest = _take_scalar(rest, line, stop=",]")
        items.append(item)
        rest = rest.lstrip()
        if not rest:
            raise ValueError(f"line {line}: the list has no closing ]")
        if rest.startswith(","):
            rest = rest[1:].lstrip()
            if rest.startswith("]"):
                raise ValueError(f"line {line}: an empty item in the list")
        elif not rest.startswith("]"):
            raise ValueError(f"line {line}: expected , or ] in the list")


def _scalar(raw: str, line: int) -> object:
    value, rest = _take_scalar(raw, line, stop="")
    if rest.strip() and not rest.strip().startswith("#"):
        raise ValueError(f"line {line}: text after the value: {rest.strip()[:40]!r}")
    return value


def _take_scalar(text: str, line: int, stop: str) -> tuple[object, str]:
    """One value from the front of text, and what follows it."""
    out: list[str] = []
    i = 1
    if text.startswith('"'):
        while i < len(text):
            char = text[i]
            if char == '"':
                return "".join(out), text[i + 1:]
            if char == "\\":
                code = text[i + 1:i + 2]
                if code in _ESCAPES:
                    out.append(_ESCAPES[code])
                    i += 2
                    continue
                if code in ("x", "u", "U"):
                    width = {"x": 2, "u": 4, "U": 8}[code]
                    digits = text[i + 2:i + 2 + width]
                    if len(digits) == width and all(c in "0123456789abcdefABCDEF" for c in digits):
                        out.append(chr(int(digits, 16)))
                        i += 2 + width
                        continue
                raise ValueError(f"line {line}: unknown escape \\{code} in a quoted string")
            out.append(char)
            i += 1
        raise ValueError(f"line {line}: a quoted string has no closing \"")
    if text.startswith("'"):
        while i < len(text):
            if text[i] == "'":
                if text[i + 1:i + 2] == "'":
                    out.append("'")
                    i += 2
                    continue
                return "".join(out), text[i + 1:]
            out.append(text[i])
            i += 1
        raise ValueError(f"line {line}: a quoted string has no closing '")
    end = len(text)
    for i, char in enumerate(text):
        if char in stop or (char == "#" and (i == 0 or text[i - 1].isspace())):
            end = i
            break
    word = text[:end].strip()
    if re.fullmatch(r"[-+]?\d+", word):
        return int(word), text[end:]
    if word in ("", "~", "null"):
        return None, text[end:]
    return word, text[end:]


# -- files ----------------------------------------------------------------------


def _read_text(path: str) -> str:
    """A regular file's text, at most MAX_FILE_BYTES. O_NONBLOCK: opening a
    FIFO planted in the folder must not hang the daemon."""
    name = os.path.basename(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        raise PlanError(name, f"cannot open it: {error.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise PlanError(name, "not a regular file")
        data = os.read(fd, MAX_FILE_BYTES + 1)
    except OSError as error:
        raise PlanError(name, f"cannot read it: {error.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise PlanError(name, f"larger than the limit of {MAX_FILE_BYTES // 1024} KiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise PlanError(name, f"not UTF-8 text (byte {error.start})") from None


def _fields(path: str, shown: str) -> tuple[dict[str, object], str]:
    text = _read_text(path)
    try:
        return front_matter(text), text
    except ValueError as error:
        raise PlanError(shown, str(error)) from None


def _title(text: str, fallback: str) -> str:
    for line in text.splitlines():
        if line.startswith("# "):
            return line[2:].strip()[:200]
    return fallback


def _order(items: dict, after: dict, what: str, where: str) -> list:
    """items' keys in dependency order, ties in sorted order; raises on a cycle."""
    placed: list = []
    done: set = set()
    waiting = sorted(items)
    while waiting:
        ready = [key for key in waiting if all(dep in done for dep in after[key])]
        if not ready:
            raise PlanError(where, f"the {what} depend on each other in a cycle: "
                            + ", ".join(str(key) for key in waiting))
        placed.append(ready[0])
        done.add(ready[0])
        waiting.remove(ready[0])
    return placed


def _read_unit(folder: str, name: str) -> Unit:
    plan_shown = f"{name}/{PLAN_FILE}"
    fields, _ = _fields(os.path.join(folder, PLAN_FILE), plan_shown)
    unit_id = fields.get("unit", name)
    if not isinstance(unit_id, (str, int)) or str(unit_id) == "":
        raise PlanError(plan_shown, "unit must be a name")
    if len(str(unit_id).encode()) > MAX_UNIT_ID_BYTES:
        raise PlanError(plan_shown, f"the unit name is longer than the limit of "
                        f"{MAX_UNIT_ID_BYTES} bytes")
    after = fields.get("depends_on") or []
    if not isinstance(after, list) or not all(isinstance(d, (str, int)) for d in after):
        raise PlanError(plan_shown, "depends_on must be a list of unit names")

    steps: dict[int, Step] = {}
    for file in sorted(os.listdir(folder)):
        if not STEP_FILE.match(file):
            continue
        shown = f"{name}/{file}"
        fields, text = _fields(os.path.join(folder, file), shown)
        number = fields.get("task")
        if not isinstance(number, int) or number < 0:
            raise PlanError(shown, "task must be a whole number (task: N)")
        command = fields.get("backpressure")
        if not isinstance(command, str) or not command.strip():
            raise PlanError(shown, "it has no backpressure command (backpressure: \"<command>\")")
        if len(command.encode()) > MAX_COMMAND_BYTES:
            raise PlanError(shown, f"the backpressure command is longer than the limit of "
                            f"{MAX_COMMAND_BYTES // 1024} KiB")
        deps = fields.get("depends_on") or []
        if not isinstance(deps, list) or not all(isinstance(d, int) for d in deps):
            raise PlanError(shown, "depends_on must be a list of task numbers")
        if number in steps:
            raise PlanError(shown, f"task {number} is also {steps[number].file}")
        steps[number] = Step(number, _title(text, file), command, tuple(deps), file)
        if len(steps) > MAX_STEPS_PER_UNIT:
            raise PlanError(name, f"more task files than the limit of {MAX_STEPS_PER_UNIT}")
    if not steps:
        raise PlanError(name, "the unit has no task files (NN-name.md)")
    for step in steps.values():
        missing = [d for d in step.after if d not in steps]
        if missing:
            raise PlanError(f"{name}/{step.file}",
                            f"depends on task {missing[0]}, which the unit lacks")
    order = _order(steps, {n: s.after for n, s in steps.items()}, "tasks", plan_shown)
    return Unit(str(unit_id), tuple(str(d) for d in after), tuple(steps[n] for n in order))


def read_plan(tasks_dir: str) -> list[Unit]:
    """The units of tasks_dir, in an order where each comes after those it
    depends on."""
    try:
        entries = sorted(os.listdir(tasks_dir))
    except OSError as error:
        raise PlanError(tasks_dir, f"cannot list it: {error.strerror}") from None
    units: dict[str, Unit] = {}
    for name in entries:
        folder = os.path.join(tasks_dir, name)
        if name.startswith(".") or not os.path.isdir(folder):
            continue
        if not os.path.lexists(os.path.join(folder, PLAN_FILE)):
            if any(STEP_FILE.match(f) for f in os.listdir(folder)):
                raise PlanError(name, f"it has task files but no {PLAN_FILE}")
            continue
        unit = _read_unit(folder, name)
        if unit.unit_id in units:
            raise PlanError(f"{name}/{PLAN_FILE}", f"unit {unit.unit_id!r} is defined twice")
        units[unit.unit_id] = unit
        if len(units) > MAX_UNITS:
            raise PlanError(tasks_dir, f"more units than the limit of {MAX_UNITS}")
    if not units:
        raise PlanError(tasks_dir, f"no unit folders (a folder with an {PLAN_FILE})")
    for unit in units.values():
        for dep in unit.after:
            if dep not in units:
                raise PlanError(f"{unit.unit_id}/{PLAN_FILE}",
                                f"depends on unit {dep!r}, which is not in the folder")
    order = _order(units, {u: units[u].after for u in units}, "units", tasks_dir)
    return [units[u] for u in order]
