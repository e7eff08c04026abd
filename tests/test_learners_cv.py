"""The head's L2 strength chosen from the labels by cross-validation (``l2="cv"``)."""

import numpy as np
import pytest

from ralif.features import FeatureSplits
from ralif.head import DEFAULT_L2, Standardizer
from ralif.learners import L2_GRID, LinearProbeLearner, cv_l2


def test_labels_unrelated_to_the_features_get_the_strongest_shrinkage():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 40)).astype(np.float32)
    y = rng.integers(0, 3, size=200)  # nothing to learn: the best held-out guess is the class prior
    idx = np.arange(120)
    assert cv_l2(x, idx, y[idx], 3, Standardizer.fit(x)) == max(L2_GRID)


def test_separable_classes_get_less_than_the_strongest_shrinkage():
    rng = np.random.default_rng(1)
    y = np.arange(300) % 3
    x = (rng.normal(size=(300, 5)) + 6.0 * np.eye(5)[y]).astype(np.float32)
    idx = np.arange(150)
    lam = cv_l2(x, idx, y[idx], 3, Standardizer.fit(x))
    assert lam in L2_GRID and lam < max(L2_GRID)


def test_too_few_labels_keep_the_default():
    x = np.random.default_rng(2).normal(size=(50, 4)).astype(np.float32)
    assert cv_l2(x, np.arange(5), np.array([0, 1, 0, 1, 0]), 2, Standardizer.fit(x)) == DEFAULT_L2


def test_learner_chooses_at_every_fit_and_refuses_other_words():
    rng = np.random.default_rng(3)
    y = np.arange(120) % 2
    x = (rng.normal(size=(120, 6)) + 3.0 * np.eye(6)[y]).astype(np.float32)
    data = FeatureSplits(x[:100], y[:100], x[100:], y[100:], ["a", "b"])
    learner = LinearProbeLearner(data, l2="cv", device="cpu")
    learner.fit(np.arange(30), y[:30], seed=0)
    learner.fit(np.arange(60), y[:60], seed=0)
    assert len(learner.chosen_l2) == 2 and set(learner.chosen_l2) <= set(L2_GRID)
    assert learner.selection_inputs()[0].l2 == learner.chosen_l2[-1]
    with pytest.raises(ValueError, match="'cv'"):
        LinearProbeLearner(data, l2="auto")
