"""Temperature scaling from held-out folds of the labels (ralif.calibration, ralif(calibration=cv))."""

import numpy as np
import pytest
import torch

from ralif.calibration import best_temperature, cv_temperature, held_out_logits, stratified_folds
from ralif.head import LinearHead, fit_head
from ralif.strategies import make_strategy


def blobs(n, d, k, seed, spread):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=spread, size=(k, d))
    y = np.arange(n) % k
    rng.shuffle(y)
    return (centers[y] + rng.normal(size=(n, d))).astype(np.float32), y


def test_folds_are_stratified_and_seeded():
    labels = np.repeat(np.arange(4), [9, 7, 3, 12])
    fold = stratified_folds(labels, 3, seed=5)
    for c in range(4):
        counts = np.bincount(fold[labels == c], minlength=3)
        assert counts.max() - counts.min() <= 1
    np.testing.assert_array_equal(fold, stratified_folds(labels, 3, seed=5))
    assert not np.array_equal(fold, stratified_folds(labels, 3, seed=6))


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_best_temperature_recovers_the_temperature_labels_were_drawn_at(true_t):
    rng = np.random.default_rng(0)
    logits = torch.as_tensor(rng.normal(scale=3.0, size=(20_000, 5)))
    p = torch.softmax(logits / true_t, dim=1).numpy()
    labels = (p.cumsum(1) > rng.random((len(p), 1))).argmax(1)
    assert best_temperature(logits, labels) == pytest.approx(true_t, rel=0.08)


def test_held_out_logits_come_from_heads_that_never_saw_the_image():
    x, y = blobs(300, 6, 3, seed=1, spread=2.0)
    labeled = np.arange(60)
    head = fit_head(x, labeled, y[labeled], 3)
    assert head.trained_on is not None
    np.testing.assert_array_equal(head.trained_on[0], labeled)
    logits, labels = held_out_logits(head, x, folds=3, seed=0)
    np.testing.assert_array_equal(labels, y[labeled])
    fold = stratified_folds(y[labeled], 3, 0)
    part = fit_head(x, labeled[fold != 1], y[labeled][fold != 1], 3, standardizer=head.standardizer)
    want = part.design(x, labeled[fold == 1]) @ part.weight.T
    torch.testing.assert_close(logits[torch.from_numpy(np.flatnonzero(fold == 1))], want.cpu())


def test_an_overconfident_head_is_tempered_above_one_and_a_weakly_fitted_one_below():
    # Overlapping classes in many dimensions with little shrinkage: the fit separates the labels
    # perfectly and is overconfident off them. Well separated classes with heavy shrinkage: underconfident.
    x, y = blobs(2000, 40, 4, seed=2, spread=0.35)
    over = fit_head(x, np.arange(120), y[:120], 4, l2=1e-4)
    assert cv_temperature(over, x) > 1.5
    x, y = blobs(2000, 10, 4, seed=3, spread=3.0)
    under = fit_head(x, np.arange(120), y[:120], 4, l2=3.0)
    assert cv_temperature(under, x) < 0.8


def test_no_temperature_without_labels_or_with_too_few():
    x, y = blobs(200, 5, 3, seed=4, spread=2.0)
    wrapped = LinearHead.from_linear_layer(np.ones((3, 5)), np.zeros(3))
    assert cv_temperature(wrapped, x) is None
    assert cv_temperature(fit_head(x, np.arange(5), y[:5], 3), x) is None  # fewer than two per fold
    one_class = np.flatnonzero(y == 0)[:12]
    assert cv_temperature(fit_head(x, one_class, y[one_class], 3), x) is None


def test_tempered_head_predicts_the_same_with_softer_probabilities():
    x, y = blobs(300, 6, 3, seed=5, spread=2.0)
    head = fit_head(x, np.arange(60), y[:60], 3)
    soft = head.tempered(2.0)
    np.testing.assert_array_equal(soft.predict(x), head.predict(x))
    assert soft.predict_proba(x).max(1).mean() < head.predict_proba(x).max(1).mean()
    assert soft.trained_on is head.trained_on
    with pytest.raises(ValueError, match="temperature must be positive"):
        head.tempered(0.0)


def test_ralif_calibration_scores_with_the_tempered_head():
    x, y = blobs(600, 30, 4, seed=7, spread=0.5)
    labeled = np.arange(80)
    unlabeled = np.arange(80, 600)
    head = fit_head(x, labeled, y[labeled], 4, l2=1e-3)
    strategy = make_strategy("ralif(calibration=cv)")
    batch = strategy.select(head, x, labeled, unlabeled, 10, np.random.default_rng(0))
    t = strategy.last_info["temperature"]
    assert t == pytest.approx(cv_temperature(head, x)) and t != 1.0
    assert len(set(batch.tolist())) == 10 and set(batch.tolist()) <= set(unlabeled.tolist())
    # The same candidates as the default strategy given the tempered head by hand.
    plain = make_strategy("ralif")
    plain.select(head.tempered(t), x, labeled, unlabeled, 10, np.random.default_rng(0))
    np.testing.assert_array_equal(np.sort(strategy.last_info["candidates"]), np.sort(plain.last_info["candidates"]))
    # A head that does not know its labels is scored as it is, and the batch says so.
    wrapped = LinearHead(head.weight, head.standardizer, head.l2, head.device)
    strategy.select(wrapped, x, labeled, unlabeled, 10, np.random.default_rng(0))
    assert strategy.last_info["temperature"] == 1.0 and "temperature 1" in strategy.last_info["note"]
