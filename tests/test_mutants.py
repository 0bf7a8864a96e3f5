"""The suite catches realistic defects of the reference's own code
(tests/mutants, docs/SUITE_POWER.md). Every mutant of the catalogue must
still apply to the code as it is; a few cheap ones run here on both paths,
and `make mutants` runs them all."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.mutants.catalogue import BLACK_BOX, BY_NAME, CATALOGUE, DAEMON, IN_PROCESS, Mutant
from tests.mutants.edit import _EDITED_SOURCE, Edit, StaleEdit
from tests.mutants.harness import run_one


@pytest.mark.parametrize("mutant", CATALOGUE, ids=lambda m: m.name)
def test_every_mutant_still_applies_to_the_reference(mutant):
    undo = mutant.apply()  # raises StaleEdit when the code it edits has changed
    undo()


def test_a_mutant_whose_later_edit_is_stale_leaves_nothing_applied():
    # Tests share their process: an edit left in place would break the
    # reference for every test that runs after, far from the cause.
    from choo_reference import watch

    before = watch.admit
    mutant = Mutant("half-stale", "the first edit applies, the second does not", ("W1",),
                    (Edit("choo_reference.watch:admit", "    if not job_id:\n", "    if False:\n"),
                     Edit("choo_reference.watch:client_gone", "text that is nowhere", "")))
    with pytest.raises(StaleEdit):
        mutant.apply()
    assert watch.admit is before


def test_two_edits_of_one_function_both_apply_and_both_come_undone():
    from choo_reference import watch

    before = watch.admit
    mutant = Mutant("two-in-one", "two edits of admit", ("W1",),
                    (Edit("choo_reference.watch:admit", "    if not job_id:\n", "    if False:\n"),
                     Edit("choo_reference.watch:admit", "    if request.from_sequence < 0:\n",
                          "    if False:\n")))
    undo = mutant.apply()
    try:
        assert watch.admit is not before
        source = _EDITED_SOURCE[watch.admit]
        assert "if not job_id" not in source and "from_sequence < 0" not in source
    finally:
        undo()
    assert watch.admit is before


# A few that run quickly, every path between them, and the correct variant
# where it is cheapest: a daemon slow to take up a watch is still correct.
# Its daemon and black-box runs (each some 10 s of the machine's two cores)
# are left to make mutants, which CI runs too.
FAST = [("empty-id-looked-up", IN_PROCESS), ("from-exclusive", IN_PROCESS),
        ("not-found-internal", DAEMON), ("not-found-internal", BLACK_BOX),
        ("late-take-up", IN_PROCESS)]


@pytest.mark.slow
@pytest.mark.long
def test_the_suite_kills_a_few_mutants_and_passes_a_correct_variant(tmp_path):
    with ThreadPoolExecutor(max_workers=len(FAST)) as pool:
        outcomes = list(pool.map(lambda job: run_one(BY_NAME[job[0]], job[1], tmp_path), FAST))
    survivors = {f"{o.mutant} ({o.path})": f"{o.verdict}: {o.detail[-800:]}" for o in outcomes
                 if not o.as_expected}
    assert not survivors, survivors


def test_docs_suite_power_lists_every_mutant():
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "SUITE_POWER.md").read_text()
    missing = [m.name for m in CATALOGUE if f"| `{m.name}` |" not in text]
    assert not missing, f"docs/SUITE_POWER.md does not list {missing}"
