"""The random audit share: drawn uniformly, never by the strategy; an unbiased accuracy estimate with a
Wilson interval that covers the truth about 95 % of the time; warnings and the accept rule."""

from __future__ import annotations

import numpy as np
import pytest

from ralif.audit import (
    MIN_AUDITS,
    AuditAnswer,
    accept_allowed,
    audit_count,
    dominant_class,
    estimate_accuracy,
    expected_width,
    loss_problem,
    split_batch,
    trust_warnings,
    wilson_interval,
)


@pytest.mark.parametrize(("batch", "share", "expected"),
                         [(4, 0.1, 0), (5, 0.1, 1), (20, 0.1, 2), (100, 0.1, 10), (20, 0.0, 0), (20, 0.25, 5),
                          (6, 0.9, 5), (1, 0.5, 0)])
def test_audit_count(batch, share, expected):
    assert audit_count(batch, share) == expected


def test_audit_share_must_be_a_fraction():
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        audit_count(20, 1.0)


def test_split_is_disjoint_and_the_strategy_fills_the_rest():
    pool = np.arange(100, 200)
    ranked = pool[::-1]                                   # the strategy prefers high ids
    split = split_batch(20, ranked, pool, np.random.default_rng(0))
    assert len(split.audit) == 2 and len(split.picks) == 18 and len(split.batch) == 20
    assert not set(split.audit) & set(split.picks) and set(split.audit) <= set(pool)
    assert list(split.picks) == [i for i in ranked if i not in set(split.audit)][:18]
    again = split_batch(20, ranked, pool, np.random.default_rng(0))
    assert np.array_equal(again.audit, split.audit) and np.array_equal(again.picks, split.picks)
    small = split_batch(4, ranked, pool, np.random.default_rng(0))
    assert len(small.audit) == 0 and list(small.picks) == [199, 198, 197, 196]
    # A budget larger than the pool takes the pool.
    tiny = split_batch(50, [3, 2, 1, 0, 4, 5], [0, 1, 2, 3, 4, 5], np.random.default_rng(1))
    assert sorted(tiny.batch) == [0, 1, 2, 3, 4, 5]


def test_audit_draws_are_uniform_over_the_whole_pool():
    # The strategy's favourites must be audited as often as any other image, or the sample is biased.
    pool = np.arange(50)
    ranked = np.arange(50)
    rng = np.random.default_rng(123)
    hits = np.zeros(50)
    reps = 20_000
    for _ in range(reps):
        hits[split_batch(10, ranked, pool, rng).audit] += 1
    expected = reps * 1 / 50
    chi2 = float(((hits - expected) ** 2 / expected).sum())
    assert chi2 < 90          # 49 degrees of freedom: 90 is far in the tail (p < 0.001)
    assert abs(hits[:10].mean() - expected) < 0.1 * expected


def test_wilson_interval_covers_the_truth_about_95_percent():
    rng = np.random.default_rng(7)
    for p in (0.1, 0.3, 0.7, 0.95):
        for n in (20, 50):
            k = rng.binomial(n, p, size=20_000)
            lo, hi = wilson_interval(k, n)
            coverage = float(((lo <= p) & (p <= hi)).mean())
            assert 0.92 <= coverage <= 0.985, (p, n, coverage)
    lo, hi = wilson_interval(0, 0)
    assert (lo, hi) == (0.0, 1.0)
    assert expected_width(0.7, 40) < expected_width(0.7, 10)


def test_audit_estimate_is_unbiased_where_strategy_picks_are_not():
    # A pool where the model is right 80 % of the time, but wrong on most of what the strategy ranks
    # first (the hard cases): the audit sees the pool's accuracy, the strategy's picks do not.
    rng = np.random.default_rng(0)
    n_pool, k_classes = 2000, 5
    truth = rng.integers(0, k_classes, n_pool)
    hardness = rng.random(n_pool)
    correct = hardness < 0.8
    predicted = np.where(correct, truth, (truth + 1) % k_classes)
    ranked = np.argsort(-hardness)                      # hardest first
    estimates, strategy_acc = [], []
    for _ in range(400):
        split = split_batch(50, ranked, np.arange(n_pool), rng)
        answers = [AuditAnswer(1, int(i), int(predicted[i]), int(truth[i])) for i in split.audit]
        estimates.append(estimate_accuracy(answers, k_classes).accuracy)
        strategy_acc.append(correct[split.picks].mean())
    assert abs(np.mean(estimates) - correct.mean()) < 0.02
    assert np.mean(strategy_acc) < 0.1


def test_estimate_uses_the_newest_rounds_and_leaves_out_skips():
    answers = ([AuditAnswer(1, i, 0, 1) for i in range(30)]                # round 1: all wrong
               + [AuditAnswer(2, 100 + i, 1, 1) for i in range(30)]        # round 2: all right
               + [AuditAnswer(2, 200, 1, None), AuditAnswer(3, 300, None, 1)])
    est = estimate_accuracy(answers, 2)
    assert est.rounds == (2,) and est.n == 30 and est.accuracy == 1.0 and est.skipped == 1
    assert est.low == pytest.approx(0.8865, abs=1e-4) and est.high == pytest.approx(1.0)
    both = estimate_accuracy(answers, 2, min_answers=40)
    assert both.rounds == (1, 2) and both.accuracy == 0.5
    assert estimate_accuracy([], 3).accuracy is None
    assert "not measured yet" in estimate_accuracy([], 3).text()
    assert both.text().startswith("50% (95% CI ")


def test_warnings_for_a_model_not_to_trust():
    near_chance = estimate_accuracy([AuditAnswer(1, i, i % 10, (i * 7) % 10) for i in range(30)], 10)
    codes = {w.code for w in trust_warnings(near_chance)}
    assert codes == {"near_chance"}
    preds = np.array([2] * 70 + [0] * 20 + [1] * 10)
    warnings = trust_warnings(None, pool_predictions=preds, losses=[2.3, 1.9, 2.1, 11.5],
                              class_names=["Ankle boot", "Shirt", "Sandal"])
    assert [w.code for w in warnings] == ["dominant_class", "loss_rising"]
    assert "Sandal for 70%" in warnings[0].text and "11.5" in warnings[1].text
    assert dominant_class(preds, 2) is None                  # two classes: 70 % may be the truth
    assert dominant_class(np.array([0, 1, 2, 0, 1, 2]), 3) is None
    assert loss_problem([2.0, float("nan")]) == "diverged"
    assert loss_problem([2.3, 1.5, 1.1, 0.9]) is None
    assert loss_problem([2.3, 1.0, 1.4]) is None and loss_problem([2.3, 1.0, 1.6]) == "rising"
    good = estimate_accuracy([AuditAnswer(1, i, 1, 1) for i in range(40)], 10)
    assert trust_warnings(good, pool_predictions=np.arange(100) % 10, losses=[2.0, 1.0, 0.5]) == []


def test_accept_rule():
    assert accept_allowed(None).mode == "confirm"
    few = estimate_accuracy([AuditAnswer(1, i, 1, 1) for i in range(MIN_AUDITS - 1)], 10)
    assert accept_allowed(few).mode == "confirm" and "not measured yet" in accept_allowed(few).reason
    chance = estimate_accuracy([AuditAnswer(1, i, 1, 1 if i < 4 else 2) for i in range(30)], 10)
    assert accept_allowed(chance).mode == "off"
    middling = estimate_accuracy([AuditAnswer(1, i, 1, 1 if i < 22 else 2) for i in range(30)], 10)
    assert accept_allowed(middling).mode == "confirm"
    good = estimate_accuracy([AuditAnswer(1, i, 1, 1 if i < 58 else 2) for i in range(60)], 10)
    assert good.low >= 0.8 and accept_allowed(good).allowed
    diverged = trust_warnings(good, losses=[1.0, float("inf")])
    assert accept_allowed(good, warnings=diverged).mode == "off"
    dominant = trust_warnings(good, pool_predictions=np.zeros(10, dtype=int))
    assert accept_allowed(good, warnings=dominant).mode == "confirm"
