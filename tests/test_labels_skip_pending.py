"""``bulk_label(skip_pending=True)`` leaves the batch waiting on the Label page alone, read in the
write's own transaction: a round that finishes after the caller chose its images (so the caller
could not leave that batch out) cannot have its images, audit images among them, bulk labeled."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from ralif.project import Project, ProjectError
from ralif.project.records import RoundOutcome


def batch_arrives(project: Project, image_ids: Sequence[int], audit_ids: Sequence[int] = ()) -> int:
    """A round finishes with ``image_ids`` as its batch (``audit_ids`` drawn to measure the model),
    through the rounds' own write path; the pending batch before it, if any, is submitted."""
    if project.pending_round() is not None:
        project.round_book.submit()
    number = project.round_book.claim(None)
    n = len(image_ids)
    guess = project.classes()[0].id
    project.round_book.finish(number, RoundOutcome(
        np.asarray(image_ids, dtype=np.int64), [None] * n, ["picked"] * n, [guess] * n, [0.9] * n,
        cold_start=False, labeled_count=0, info={"audit_ids": list(audit_ids), "audit_share": 0.1}), 0.0)
    return number


@pytest.fixture()
def fresh(tmp_path) -> Project:
    """A demo whose first round has not run: no batch is pending."""
    return Project.create_demo(tmp_path / "demo", run_first_round=False)


def pool(project: Project, n: int) -> list[int]:
    return [int(r[0]) for r in project.store.query("SELECT id FROM images WHERE split = 'pool' ORDER BY id LIMIT ?",
                                                   (n,))]


def written_by(project: Project, action: int | None) -> list[int]:
    return [int(r[0]) for r in project.store.query("SELECT image_id FROM label_history WHERE action_id = ?"
                                                   " ORDER BY image_id", (action,))]


def test_a_batch_that_arrives_after_the_choice_is_not_written(fresh: Project) -> None:
    ids = pool(fresh, 40)
    chosen = ids[:10]                    # what a page chose while no batch was pending
    assert fresh.pending_round() is None
    batch = chosen[2:5] + ids[20:30]
    number = batch_arrives(fresh, batch, audit_ids=[chosen[3], ids[20]])
    assert fresh.pending_round() == number and chosen[3] in fresh.audit_images()
    ship = fresh.class_id("ship")
    res = fresh.bulk_label(chosen, ship, source="map", skip_pending=True)
    assert res.skipped == sorted(chosen[2:5])
    assert (res.changed, res.unchanged) == (7, 0)
    want = sorted(set(chosen) - set(chosen[2:5]))
    assert written_by(fresh, res.action_id) == want
    assert all(fresh.label_of(i).state == "unlabeled" for i in chosen[2:5])
    assert all((fresh.label_of(i).class_id, fresh.label_of(i).source) == (ship, "map") for i in want)
    # The action is what was written: its count and its undo.
    info = fresh.action_info(res.action_id or 0)
    assert info.count == 7
    assert sorted(fresh.undo_action(res.action_id or 0).restored) == want


def test_nothing_written_when_every_image_is_in_the_batch(fresh: Project) -> None:
    ids = pool(fresh, 10)
    batch_arrives(fresh, ids[:6], audit_ids=ids[:1])
    actions = fresh.store.query_one("SELECT COUNT(*) FROM actions")[0]
    res = fresh.bulk_label(ids[:3], None, source="map", skip_pending=True)
    assert (res.action_id, res.changed, res.unchanged, res.skipped) == (None, 0, 0, ids[:3])
    assert fresh.store.query_one("SELECT COUNT(*) FROM actions")[0] == actions
    assert all(fresh.label_of(i).state == "unlabeled" for i in ids[:3])


def test_labeled_images_count_as_unchanged_and_a_submitted_batch_is_not_skipped(fresh: Project) -> None:
    ids = pool(fresh, 20)
    cat = fresh.class_id("cat")
    batch_arrives(fresh, ids[:5])
    fresh.round_book.submit()            # round 1's batch is no longer pending
    fresh.bulk_label(ids[5:7], cat)
    res = fresh.bulk_label(ids[:10], cat, skip_pending=True)
    assert res.skipped == [] and (res.changed, res.unchanged) == (8, 2)
    batch_arrives(fresh, ids[10:15])
    res = fresh.bulk_label(ids[5:15], cat, skip_pending=True)
    # Unchanged counts only the images it may write: the five of the batch are not among them.
    assert res.skipped == ids[10:15] and (res.changed, res.unchanged) == (0, 5)


def test_without_the_option_the_batch_is_written_and_bad_ids_still_fail(fresh: Project) -> None:
    ids = pool(fresh, 10)
    batch_arrives(fresh, ids[:5])
    dog = fresh.class_id("dog")
    with pytest.raises(ProjectError, match="not in this project"):
        fresh.bulk_label([ids[0], 10**9], dog, skip_pending=True)
    # The Label page's own bulk label is of the batch itself.
    res = fresh.bulk_label(ids[:5], dog)
    assert res.changed == 5 and res.skipped == []
