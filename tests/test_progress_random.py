"""The Progress page's Random comparison is like for like: the same starting labels, the same label
counts, the same head and the same held-out evaluation as the project's own rounds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import DEMO

from ralif import projection as proj
from ralif.map.baseline import (
    compare_with_random,
    random_order,
    reference_unavailable,
    simulation_reference,
    starting_set,
)
from ralif.project import Project


@pytest.fixture(scope="module")
def played(tmp_path_factory) -> Project:
    project = Project.create_demo(tmp_path_factory.mktemp("p") / "demo", assets=DEMO, initial_labels=30)
    for _ in range(3):
        project.oracle_label_batch()
        project.submit_batch()
        project.run_round()
    return project


def test_random_starts_from_the_projects_first_trained_labels(played):
    first = next(r for r in played.rounds() if r["accuracy"] is not None)
    assert first["number"] == 1 and first["labeled_count"] == 30
    ids, classes = starting_set(played, first["started_at"])
    imported = played.store.query("SELECT image_id, new_class_id FROM label_history h JOIN actions a"
                                  " ON a.id = h.action_id WHERE a.kind = 'import' ORDER BY image_id")
    assert ids.tolist() == [r[0] for r in imported] and classes.tolist() == [r[1] for r in imported]
    order = random_order(np.array([5, 2, 9]), 20, seed=3)
    assert set(order[:3].tolist()) == {2, 5, 9} and sorted(order.tolist()) == list(range(20))
    assert not np.array_equal(order, random_order(np.array([5, 2, 9]), 20, seed=4))


def test_random_first_point_is_the_projects_own_and_counts_match(played):
    measured = [r for r in played.rounds() if r["accuracy"] is not None]
    counts = [int(r["labeled_count"]) for r in measured]
    assert counts == [30, 50, 70, 90]
    ref = proj.random_baseline(played, counts)
    rand = np.asarray(ref["accuracy"])
    assert rand.shape == (5, 4) and ref["counts"] == counts and ref["start"] == 30
    # Same labels, same head, same held-out images: every seed reproduces the project's first
    # accuracy exactly. Random subsets of its own (the earlier reference) would not.
    assert np.allclose(rand[:, 0], measured[0]["accuracy"], atol=1e-12)
    assert len({tuple(r) for r in rand[:, 1:]}) > 1           # the seeds do differ after the start
    comparison = compare_with_random([r["accuracy"] for r in measured], ref)
    assert comparison is not None and comparison.seeds == 5 and comparison.start == 30
    assert comparison.low <= np.mean(comparison.per_seed) <= comparison.high


def test_comparison_interval_is_students_t_over_the_seeds():
    acc = [0.5, 0.6, 0.7, 0.8]
    rand = {"accuracy": [[0.5, 0.55, 0.65, 0.7], [0.5, 0.6, 0.7, 0.8], [0.5, 0.62, 0.72, 0.82]], "start": 10}
    c = compare_with_random(acc, rand)
    assert c is not None
    per = np.array(c.per_seed)
    half = 4.303 * per.std(ddof=1) / np.sqrt(3)
    assert (c.low, c.high) == pytest.approx((per.mean() - half, per.mean() + half))
    assert c.verdict == "not distinguishable from random picking yet"
    assert compare_with_random(acc[:2], {"accuracy": [r[:2] for r in rand["accuracy"]]}) is None


def test_comparison_is_unavailable_without_hidden_truth(tmp_path: Path):
    project = Project.create(tmp_path / "p", DEMO / "images" / "train", test=DEMO / "images" / "test",
                             encoder=f"precomputed:{(DEMO / 'embeddings.npz').resolve()}", known_labels="ignore",
                             layout="imagefolder", decode=False)
    why = reference_unavailable(project)
    assert why is not None and "hidden true labels for every pool image" in why
    assert simulation_reference(project) is None
