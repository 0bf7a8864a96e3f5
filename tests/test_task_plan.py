"""load_plan: choo's tasks_dir layout, its ordering, and every rejection."""

from __future__ import annotations

import dataclasses
import os
import pathlib

import pytest

from choo_reference.task_plan import Plan, PlanError, Task, Unit, load_plan

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "hello-tasks"


def plan_md(unit: str, depends_on: list[str] | None = None) -> str:
    deps = "" if depends_on is None else f"depends_on: [{', '.join(depends_on)}]\n"
    return f"---\nunit: {unit}\n{deps}---\n\n# {unit}\n"


def task_md(
    number: int, command: str = "true", depends_on: list[int] | None = None, title: str = ""
) -> str:
    deps = "" if depends_on is None else f"depends_on: {list(depends_on)}\n"
    heading = f"# {title}\n" if title else ""
    return f"---\ntask: {number}\nbackpressure: {command!r}\n{deps}---\n\n{heading}"


def write_tree(root: pathlib.Path, files: dict[str, str | bytes | None]) -> pathlib.Path:
    """Create files (str/bytes content) and folders (None) under root."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        path = root / rel
        if content is None:
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def one_unit(**files: str) -> dict[str, str]:
    """A unit 'api' with the given task files (name -> content)."""
    tree = {"api/IMPLEMENTATION_PLAN.md": plan_md("api")}
    tree.update({f"api/{name}": content for name, content in files.items()})
    return tree


# -- a good plan --------------------------------------------------------------------


def test_good_plan_parses_in_dependency_order(tmp_path):
    root = write_tree(
        tmp_path / "tasks",
        {
            "api/IMPLEMENTATION_PLAN.md": plan_md("api", ["db"]),
            "api/01-routes.md": task_md(1, "echo routes", title="Routes"),
            # task 2 waits for 3: order 1, 3, 2
            "api/02-handlers.md": task_md(2, "echo handlers", [1, 3], title="Handlers"),
            "api/03-models.md": task_md(3, "echo models", [1], title="Models"),
            "db/IMPLEMENTATION_PLAN.md": plan_md("db"),
            "db/01-schema.md": task_md(1, "test -d .", title="Schema"),
            "web/IMPLEMENTATION_PLAN.md": plan_md("web", ["api"]),
            "web/01-ui.md": task_md(1),
            "docs/IMPLEMENTATION_PLAN.md": plan_md("docs"),
            "docs/01-readme.md": task_md(1),
            "zeta/IMPLEMENTATION_PLAN.md": plan_md("zeta"),
            "zeta/10-last.md": task_md(10),
        },
    )
    plan = load_plan(root)

    assert isinstance(plan, Plan)
    # Dependencies first; among units ready together, by unit id.
    assert [u.unit_id for u in plan.units] == ["db", "api", "docs", "web", "zeta"]
    api = plan.unit("api")
    assert api.depends_on == ("db",)
    assert api.path == str(root / "api")
    assert [t.number for t in api.tasks] == [1, 3, 2]
    handlers = api.tasks[2]
    assert handlers == Task(
        number=2,
        title="Handlers",
        backpressure="echo handlers",
        depends_on=(1, 3),
        path=str(root / "api" / "02-handlers.md"),
    )
    assert plan.unit("db").depends_on == ()
    assert plan.unit("zeta").tasks[0].number == 10
    assert plan.task_count == 7
    with pytest.raises(dataclasses.FrozenInstanceError):
        api.unit_id = "x"  # type: ignore[misc]
    with pytest.raises(KeyError):
        plan.unit("nope")


def test_ordering_is_deterministic_and_ties_go_by_number(tmp_path):
    files = {
        "u/IMPLEMENTATION_PLAN.md": plan_md("u"),
        "u/05-e.md": task_md(5),
        "u/04-d.md": task_md(4, depends_on=[5]),
        "u/03-c.md": task_md(3),
        "u/02-b.md": task_md(2, depends_on=[5]),
        "u/01-a.md": task_md(1, depends_on=[4]),
    }
    root = write_tree(tmp_path / "tasks", files)
    first = load_plan(root)
    assert [t.number for t in first.units[0].tasks] == [3, 5, 2, 4, 1]
    assert load_plan(root) == first


def test_titles_layout_details_and_ignored_entries(tmp_path):
    root = write_tree(
        tmp_path / "tasks",
        {
            "README.md": "# not a unit\n",
            "notes.txt": "ignored",
            ".git/config": "ignored",
            ".hidden-unit/IMPLEMENTATION_PLAN.md": "not even front matter",
            "folder-name/IMPLEMENTATION_PLAN.md": "---\nunit: real-id\ndepends_on:\n---\n",
            # The first '# ' heading outside code fences, trailing #s dropped.
            "folder-name/001-fenced.md": (
                "---\ntask: 1\nbackpressure: \"make check\"\n---\n"
                "Intro\n```sh\n# a shell comment\n```\n## Sub\n# Real Title ##\n# Later\n"
            ),
            "folder-name/02-untitled.md": "---\ntask: 2\nbackpressure: 'true'\n---\nno heading\n",
            "folder-name/.03-hidden.md": "garbage",
            "folder-name/3-one-digit.md": "garbage",
            "folder-name/NOTES.md": "garbage",
            "folder-name/04-data.json": "garbage",
            "folder-name/05-sub.md/01-inner.md": "garbage",
            "folder-name/nested": None,
        },
    )
    plan = load_plan(root)
    (unit,) = plan.units
    assert unit.unit_id == "real-id"
    assert unit.depends_on == ()  # `depends_on:` with no value means none
    assert [(t.number, t.title) for t in unit.tasks] == [
        (1, "Real Title"),
        (2, "02-untitled.md"),
    ]
    assert unit.tasks[0].backpressure == "make check"


def test_relative_tasks_dir_gives_absolute_paths(tmp_path, monkeypatch):
    write_tree(tmp_path / "tasks", one_unit(**{"01-a.md": task_md(1)}))
    monkeypatch.chdir(tmp_path)
    plan = load_plan("tasks")
    assert plan.units[0].path == str(tmp_path / "tasks" / "api")
    assert os.path.isabs(plan.units[0].tasks[0].path)


def test_repeated_dependencies_are_kept_once(tmp_path):
    root = write_tree(
        tmp_path / "tasks",
        {
            "a/IMPLEMENTATION_PLAN.md": plan_md("a"),
            "a/01-x.md": task_md(1),
            "a/02-y.md": task_md(2, depends_on=[1, 1]),
            "b/IMPLEMENTATION_PLAN.md": plan_md("b", ["a", "a"]),
            "b/01-x.md": task_md(1),
        },
    )
    plan = load_plan(root)
    assert plan.unit("b").depends_on == ("a",)
    assert plan.unit("a").tasks[1].depends_on == (1,)


def test_example_hello_tasks_loads():
    plan = load_plan(EXAMPLE)
    ids = [u.unit_id for u in plan.units]
    assert set(ids) == {"setup", "build", "docs"}
    assert ids.index("setup") < ids.index("build")
    assert plan.unit("build").depends_on == ("setup",)
    for unit in plan.units:
        assert isinstance(unit, Unit)
        assert 1 <= len(unit.tasks) <= 3


# -- rejections -----------------------------------------------------------------------

# (case id, files under tasks/, offending path relative to tasks/, reason or
# list of parts of it)
REJECTIONS = [
    ("empty tasks_dir", {}, "", "no unit folders"),
    (
        "only hidden folders and loose files",
        {".git/config": "x", "README.md": "# hi\n", "plan.txt": "x"},
        "",
        "no unit folders",
    ),
    (
        "unit folder without IMPLEMENTATION_PLAN.md",
        {"api/01-a.md": task_md(1)},
        "api",
        "unit folder has no IMPLEMENTATION_PLAN.md",
    ),
    (
        "plan without front matter",
        {"api/IMPLEMENTATION_PLAN.md": "# API\n", "api/01-a.md": task_md(1)},
        "api/IMPLEMENTATION_PLAN.md",
        "no front matter",
    ),
    (
        "unclosed front matter",
        {"api/IMPLEMENTATION_PLAN.md": "---\nunit: api\n", "api/01-a.md": task_md(1)},
        "api/IMPLEMENTATION_PLAN.md",
        "front matter: no closing '---' line",
    ),
    (
        "plan front matter is invalid YAML",
        {"api/IMPLEMENTATION_PLAN.md": "---\nunit: [api\n---\n", "api/01-a.md": task_md(1)},
        "api/IMPLEMENTATION_PLAN.md",
        "front matter: invalid YAML",
    ),
    (
        "front matter is a list",
        {"api/IMPLEMENTATION_PLAN.md": "---\n- api\n---\n", "api/01-a.md": task_md(1)},
        "api/IMPLEMENTATION_PLAN.md",
        "front matter: expected key: value pairs, got a list",
    ),
    (
        "missing unit",
        {"api/IMPLEMENTATION_PLAN.md": "---\ndepends_on: []\n---\n", "api/01-a.md": task_md(1)},
        "api/IMPLEMENTATION_PLAN.md",
        "front matter: 'unit' is required",
    ),
    (
        "empty unit",
        {"api/IMPLEMENTATION_PLAN.md": "---\nunit: ''\n---\n", "api/01-a.md": task_md(1)},
        "api/IMPLEMENTATION_PLAN.md",
        "front matter: 'unit' must not be empty",
    ),
    (
        "unit not a string",
        {"api/IMPLEMENTATION_PLAN.md": "---\nunit: [api]\n---\n", "api/01-a.md": task_md(1)},
        "api/IMPLEMENTATION_PLAN.md",
        "front matter: 'unit' must be a string",
    ),
    (
        "duplicate unit ids",
        {
            "a/IMPLEMENTATION_PLAN.md": plan_md("same"),
            "a/01-x.md": task_md(1),
            "b/IMPLEMENTATION_PLAN.md": plan_md("same"),
            "b/01-x.md": task_md(1),
        },
        "b/IMPLEMENTATION_PLAN.md",
        "duplicate unit id 'same' (also declared in {root}/a/IMPLEMENTATION_PLAN.md)",
    ),
    (
        "unit depends_on not a list",
        {
            "api/IMPLEMENTATION_PLAN.md": "---\nunit: api\ndepends_on: db\n---\n",
            "api/01-a.md": task_md(1),
        },
        "api/IMPLEMENTATION_PLAN.md",
        "front matter: 'depends_on' must be a list of unit ids",
    ),
    (
        "unit depends_on holds a number",
        {
            "api/IMPLEMENTATION_PLAN.md": "---\nunit: api\ndepends_on: [1]\n---\n",
            "api/01-a.md": task_md(1),
        },
        "api/IMPLEMENTATION_PLAN.md",
        "front matter: 'depends_on' must be a list of unit ids",
    ),
    (
        "unit depends on an unknown unit",
        {"api/IMPLEMENTATION_PLAN.md": plan_md("api", ["nope"]), "api/01-a.md": task_md(1)},
        "api/IMPLEMENTATION_PLAN.md",
        "depends_on names unknown unit 'nope' (known units: api)",
    ),
    (
        "unit depends on itself",
        {"api/IMPLEMENTATION_PLAN.md": plan_md("api", ["api"]), "api/01-a.md": task_md(1)},
        "api/IMPLEMENTATION_PLAN.md",
        "unit dependency cycle: api -> api",
    ),
    (
        "unit cycle behind an innocent unit",
        {
            "x/IMPLEMENTATION_PLAN.md": plan_md("x", ["b"]),
            "x/01-t.md": task_md(1),
            "a/IMPLEMENTATION_PLAN.md": plan_md("a", ["c"]),
            "a/01-t.md": task_md(1),
            "b/IMPLEMENTATION_PLAN.md": plan_md("b", ["a"]),
            "b/01-t.md": task_md(1),
            "c/IMPLEMENTATION_PLAN.md": plan_md("c", ["b"]),
            "c/01-t.md": task_md(1),
        },
        "a/IMPLEMENTATION_PLAN.md",
        "unit dependency cycle: a -> c -> b -> a",
    ),
    (
        "unit with no tasks",
        {"api/IMPLEMENTATION_PLAN.md": plan_md("api"), "api/notes.md": "# notes\n"},
        "api",
        "unit 'api' has no task files (expected NN-name.md)",
    ),
    (
        "task without front matter",
        one_unit(**{"01-a.md": "# A\n"}),
        "api/01-a.md",
        "no front matter (the file must start with a '---' line)",
    ),
    (
        "task front matter is invalid YAML",
        one_unit(**{"01-a.md": "---\ntask: 1\nbackpressure: : x\n---\n"}),
        "api/01-a.md",
        # PyYAML words the problem itself; the place is ours.
        ["front matter: invalid YAML: ", "(line 3, column 15)"],
    ),
    (
        "missing task",
        one_unit(**{"01-a.md": "---\nbackpressure: 'true'\n---\n"}),
        "api/01-a.md",
        "front matter: 'task' is required",
    ),
    (
        "task is a word",
        one_unit(**{"02-db.md": "---\ntask: two\nbackpressure: 'true'\n---\n"}),
        "api/02-db.md",
        "front matter: 'task' must be an integer",
    ),
    (
        "task is a float",
        one_unit(**{"02-db.md": "---\ntask: 2.5\nbackpressure: 'true'\n---\n"}),
        "api/02-db.md",
        "front matter: 'task' must be an integer",
    ),
    (
        "task is a boolean",
        one_unit(**{"02-db.md": "---\ntask: true\nbackpressure: 'true'\n---\n"}),
        "api/02-db.md",
        "front matter: 'task' must be an integer",
    ),
    (
        "duplicate task numbers",
        one_unit(**{"01-a.md": task_md(1), "02-b.md": task_md(1)}),
        "api/02-b.md",
        "duplicate task number 1 (also used by 01-a.md)",
    ),
    (
        "missing backpressure",
        one_unit(**{"01-a.md": "---\ntask: 1\n---\n"}),
        "api/01-a.md",
        "front matter: 'backpressure' is required",
    ),
    (
        "empty backpressure",
        one_unit(**{"01-a.md": "---\ntask: 1\nbackpressure: '   '\n---\n"}),
        "api/01-a.md",
        "front matter: 'backpressure' must not be empty",
    ),
    (
        "backpressure not a string",
        one_unit(**{"01-a.md": "---\ntask: 1\nbackpressure: [make, test]\n---\n"}),
        "api/01-a.md",
        "front matter: 'backpressure' must be a string",
    ),
    (
        "task depends_on not a list",
        one_unit(
            **{
                "01-a.md": task_md(1),
                "02-b.md": "---\ntask: 2\nbackpressure: x\ndepends_on: 1\n---\n",
            }
        ),
        "api/02-b.md",
        "front matter: 'depends_on' must be a list of task numbers",
    ),
    (
        "task depends_on holds strings",
        one_unit(
            **{
                "01-a.md": task_md(1),
                "02-b.md": "---\ntask: 2\nbackpressure: x\ndepends_on: ['1']\n---\n",
            }
        ),
        "api/02-b.md",
        "front matter: 'depends_on' must be a list of task numbers",
    ),
    (
        "task depends on an unknown task",
        one_unit(**{"01-a.md": task_md(1), "02-b.md": task_md(2, depends_on=[9])}),
        "api/02-b.md",
        "depends_on names unknown task 9 (unit 'api' has tasks 1, 2)",
    ),
    (
        "task cycle",
        one_unit(
            **{
                "01-a.md": task_md(1),
                "02-b.md": task_md(2, depends_on=[3]),
                "03-c.md": task_md(3, depends_on=[2, 1]),
            }
        ),
        "api/02-b.md",
        "task dependency cycle in unit 'api': 2 -> 3 -> 2",
    ),
    (
        "task depends on itself",
        one_unit(**{"01-a.md": task_md(1, depends_on=[1])}),
        "api/01-a.md",
        "task dependency cycle in unit 'api': 1 -> 1",
    ),
    (
        "task file not UTF-8",
        one_unit(**{"01-a.md": "placeholder"}) | {"api/01-a.md": b"---\ntask: 1\xff\n---\n"},
        "api/01-a.md",
        "not valid UTF-8",
    ),
]


@pytest.mark.parametrize(
    "files, where, reason", [r[1:] for r in REJECTIONS], ids=[r[0] for r in REJECTIONS]
)
def test_rejection_names_the_file_and_the_reason(tmp_path, files, where, reason):
    root = write_tree(tmp_path / "tasks", files)
    expected_path = os.path.join(str(root), where) if where else str(root)
    with pytest.raises(PlanError) as caught:
        load_plan(root)
    err = caught.value
    assert isinstance(err, ValueError)
    assert err.path == expected_path
    assert str(err).startswith(f"{expected_path}: ")
    for part in reason if isinstance(reason, list) else [reason]:
        assert part.format(root=root) in err.reason
    assert str(err) == f"{err.path}: {err.reason}"
    assert "\n" not in str(err)


def test_the_documented_message_shape(tmp_path):
    root = write_tree(
        tmp_path / "tasks",
        one_unit(**{"02-db.md": "---\ntask: '2'\nbackpressure: 'true'\n---\n"}),
    )
    with pytest.raises(PlanError) as caught:
        load_plan(root)
    assert str(caught.value) == f"{root}/api/02-db.md: front matter: 'task' must be an integer"


def test_missing_tasks_dir(tmp_path):
    with pytest.raises(PlanError) as caught:
        load_plan(tmp_path / "nope")
    assert str(caught.value) == f"{tmp_path / 'nope'}: tasks_dir does not exist"


def test_tasks_dir_is_a_file(tmp_path):
    path = tmp_path / "file.md"
    path.write_text("x")
    with pytest.raises(PlanError) as caught:
        load_plan(path)
    assert str(caught.value) == f"{path}: tasks_dir is not a directory"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any directory")
def test_unreadable_tasks_dir(tmp_path):
    root = write_tree(tmp_path / "tasks", one_unit(**{"01-a.md": task_md(1)}))
    root.chmod(0)
    try:
        with pytest.raises(PlanError) as caught:
            load_plan(root)
    finally:
        root.chmod(0o755)
    assert str(caught.value).startswith(f"{root}: cannot read tasks_dir: ")


def test_folder_named_like_a_task_file_is_ignored(tmp_path):
    root = write_tree(
        tmp_path / "tasks",
        one_unit(**{"01-a.md": task_md(1)}) | {"api/02-b.md": None},
    )
    plan = load_plan(root)
    assert [t.number for t in plan.units[0].tasks] == [1]


def test_unreadable_tasks_dir_simulated(tmp_path, monkeypatch):
    # Root can read anything, so also simulate the refusal.
    from choo_reference import task_plan

    root = write_tree(tmp_path / "tasks", one_unit(**{"01-a.md": task_md(1)}))

    def refuse(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(task_plan.os, "scandir", refuse)
    with pytest.raises(PlanError) as caught:
        load_plan(root)
    assert str(caught.value) == f"{root}: cannot read tasks_dir: Permission denied"


def test_unreadable_task_file_simulated(tmp_path, monkeypatch):
    from choo_reference import task_plan

    root = write_tree(tmp_path / "tasks", one_unit(**{"01-a.md": task_md(1)}))
    target = str(root / "api" / "01-a.md")
    real_open = os.open

    def guarded_open(path, *args, **kwargs):
        if str(path) == target:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(task_plan.os, "open", guarded_open)
    with pytest.raises(PlanError) as caught:
        load_plan(root)
    assert str(caught.value) == f"{target}: cannot read: Permission denied"
