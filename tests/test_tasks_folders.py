"""Every tasks folder the feature files have the suite write stays inside
what docs/SPEC.md section 7 promises an implementation: task files named
`NN-name.md` (two digits), and no more units and tasks than it lists. A
daemon that reads only `[0-9][0-9]-*.md`, as choo's does, must see every
task the suite wrote."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from choo_conformance.black_box_steps import folder_of_steps
from choo_conformance.fixtures import World
from choo_conformance.lifecycle_steps import write_tasks_folder

ROOT = Path(__file__).resolve().parent.parent
FEATURES = sorted((ROOT / "features").glob("*.feature"))
TASK_FILE = re.compile(r"[0-9]{2}-[^/]+\.md")
# docs/SPEC.md section 7: the sizes an implementation must accept.
MOST_UNITS, MOST_TASKS_IN_A_UNIT, MOST_TASKS = 16, 99, 1200

FOLDER_OF_STEPS = re.compile(
    r'a tasks folder "(?P<name>[^"]+)" with (?P<units>one|\d+) units? of (?P<count>\d+) steps that each '
    r"(?P<kind>.+)$")


def _folders_of_steps() -> list[tuple[str, str, str, str]]:
    found = []
    for feature in FEATURES:
        for line in feature.read_text().splitlines():
            match = FOLDER_OF_STEPS.search(line.strip())
            if match:
                found.append((match["name"], match["units"], match["count"], match["kind"]))
    return found


def test_the_feature_files_generate_folders_of_steps():
    # The check below is only worth something if it finds the folders.
    assert any(name == "busy" for name, *_ in _folders_of_steps())


@pytest.mark.parametrize("name, units, count, kind", _folders_of_steps())
def test_each_generated_folder_is_within_section_7(tmp_path, name, units, count, kind):
    world = World()
    folder_of_steps(world, tmp_path, name, units, count, kind)
    folder = tmp_path / "tasks" / name
    unit_dirs = [d for d in folder.iterdir() if d.is_dir()]
    tasks = {d.name: [f.name for f in d.iterdir() if f.name != "IMPLEMENTATION_PLAN.md"] for d in unit_dirs}
    badly_named = [f"{unit}/{task}" for unit, names in tasks.items() for task in names
                   if not TASK_FILE.fullmatch(task)]
    assert not badly_named, f"task files not named NN-name.md: {badly_named[:5]}"
    assert len(unit_dirs) <= MOST_UNITS
    assert max(len(names) for names in tasks.values()) <= MOST_TASKS_IN_A_UNIT
    assert sum(len(names) for names in tasks.values()) <= MOST_TASKS


def test_a_unit_of_more_tasks_than_two_digits_name_is_refused(tmp_path):
    rows = [["unit", "depends_on", "commands"], ["big", "", "; ".join(["true"] * 100)]]
    with pytest.raises(ValueError, match="99"):
        write_tasks_folder(tmp_path / "tasks", rows, tmp_path)


def test_the_commands_depend_on_nothing_in_their_working_directory(tmp_path):
    # A daemon may run a command in repo_path or in a checkout of it (a git
    # worktree): the command's marks must land where the suite looks for
    # them whatever the directory it runs in.
    rows = [["unit", "depends_on", "commands"], ["setup", "", "true; echo hello"]]
    write_tasks_folder(tmp_path / "tasks" / "plain", rows, tmp_path)
    elsewhere = tmp_path / "a-worktree"
    elsewhere.mkdir()
    for task in sorted((tmp_path / "tasks" / "plain" / "setup").glob("[0-9][0-9]-*.md")):
        front = task.read_text().split("---")[1]
        command = re.search(r'^backpressure: "(.*)"$', front, re.M)[1].encode().decode("unicode_escape")
        subprocess.run(["sh", "-c", command], cwd=elsewhere, check=True, timeout=30)
    made = sorted(p.name for p in (tmp_path / "ran").iterdir())
    assert made == ["plain.setup-1.ended", "plain.setup-1.pid", "plain.setup-1.started",
                    "plain.setup-2.ended", "plain.setup-2.pid", "plain.setup-2.started"]
    assert list(elsewhere.iterdir()) == []
