"""Small computations the pages show: the class to suggest for a selection, hidden true classes
read through merges, and this project's accuracy curve against the Random reference. Pure
functions on arrays; no database, no UI."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from ralif.evaluation import auca, auca_ratio

# The paper's AUCA leaves out the first measured round, so a ratio needs at least three.
MIN_ROUNDS_FOR_AUCA = 3


def majority_guess(predicted_ids: ArrayLike, predicted_classes: ArrayLike, selected_ids: ArrayLike) -> int | None:
    """The class the model predicts most often among ``selected_ids`` (ties: the lowest class id),
    or None when the model has a prediction for none of them. ``predicted_ids`` is ascending."""
    ids = np.asarray(predicted_ids, dtype=np.int64)
    classes = np.asarray(predicted_classes)
    want = np.asarray(selected_ids, dtype=np.int64)
    if not len(ids) or not len(want):
        return None
    pos = np.minimum(np.searchsorted(ids, want), len(ids) - 1)
    found = pos[ids[pos] == want]
    if not len(found):
        return None
    values, counts = np.unique(classes[found], return_counts=True)
    return int(values[counts.argmax()])


def through_merges(class_ids: ArrayLike, truth_map: Mapping[int, int]) -> np.ndarray:
    """Class ids (hidden true classes, -1 for none) as the live classes they count as now:
    ``truth_map`` is :meth:`Project.truth_map` (a merged-away class counts as the class it went
    into; a deleted one, or -1, gives -1). Held-out evaluation reads truth through this."""
    ids = np.asarray(class_ids, dtype=np.int64)
    if not truth_map:
        return np.full(ids.shape, -1, dtype=np.int64)
    keys = np.fromiter(truth_map.keys(), dtype=np.int64, count=len(truth_map))
    values = np.fromiter(truth_map.values(), dtype=np.int64, count=len(truth_map))
    order = np.argsort(keys)
    keys, values = keys[order], values[order]
    pos = np.minimum(np.searchsorted(keys, ids), len(keys) - 1)
    return np.where(keys[pos] == ids, values[pos], -1)


@dataclass(frozen=True)
class AucaSummary:
    """This project's AUCA over Random's: against Random's mean curve, and against each seed."""

    mean_ratio: float
    per_seed: list[float]


def auca_against_random(accuracy: ArrayLike, random_accuracy: ArrayLike) -> AucaSummary | None:
    """``accuracy``: this project's measured rounds; ``random_accuracy``: seeds x rounds of the
    Random reference at the same label counts. None with fewer than :data:`MIN_ROUNDS_FOR_AUCA`
    rounds (the ratio is not defined yet)."""
    acc = np.asarray(accuracy, dtype=float)
    rand = np.atleast_2d(np.asarray(random_accuracy, dtype=float))
    if len(acc) < MIN_ROUNDS_FOR_AUCA:
        return None
    if rand.shape[1] != len(acc):
        raise ValueError(f"the Random reference covers {rand.shape[1]} rounds, this project {len(acc)}")
    return AucaSummary(mean_ratio=auca_ratio(acc, rand.mean(0)),
                       per_seed=[auca(acc) / auca(r) for r in rand])
