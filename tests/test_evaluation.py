import numpy as np
import pytest

from ralif.evaluation import (
    auca,
    auca_ratio,
    cycles_below,
    mean_interval,
    paired_permutation_test,
    paired_seed_test,
)


def test_auca_hand_case_skips_cycle_zero():
    # (0.2 + 0.4) / 2 + (0.4 + 0.6) / 2; the 0.1 of cycle 0 must not count.
    assert auca([0.1, 0.2, 0.4, 0.6]) == pytest.approx(0.8)
    assert auca(np.array([0.9, 0.5, 0.5, 0.5, 0.5])) == pytest.approx(1.5)


@pytest.mark.parametrize("bad", [[0.1, 0.2], [0.5], [], [0.1, np.nan, 0.3], [[0.1, 0.2, 0.3]]])
def test_auca_rejects_short_nan_or_not_1d(bad):
    with pytest.raises(ValueError):
        auca(bad)


def test_auca_ratio():
    curve = [0.1, 0.2, 0.4, 0.6]
    assert auca_ratio(curve, curve) == 1.0
    # 1.2 / 0.8
    assert auca_ratio([0.0, 0.3, 0.6, 0.9], curve) == pytest.approx(1.5)
    with pytest.raises(ValueError):
        auca_ratio(curve, [0.1, 0.2, 0.4])


def test_permutation_identical_vectors_give_one():
    correct = np.array([True, False, True, True, False])
    assert paired_permutation_test(correct, correct, n_permutations=100, rng=0) == 1.0


def test_permutation_strong_difference_is_significant():
    rng = np.random.default_rng(1)
    a = rng.random(2000) < 0.9
    b = rng.random(2000) < 0.6
    p = paired_permutation_test(a, b, n_permutations=2000, rng=2)
    assert p < 0.01
    # With no permutation reaching the observed value, p is exactly 1 / (1 + n).
    assert p == pytest.approx(1 / 2001)


def test_permutation_matches_exact_enumeration():
    # Three disagreements, all in favour of a: of the 2**3 sign patterns only (+,+,+) and
    # (-,-,-) reach |sum| >= 3, so the exact two-sided p-value is 2/8. The agreements (zeros)
    # must not change it.
    a = np.array([1, 1, 1, 0, 1, 0, 1], dtype=bool)
    b = np.array([0, 0, 0, 0, 1, 0, 1], dtype=bool)
    p = paired_permutation_test(a, b, n_permutations=20_000, rng=3)
    assert abs(p - 0.25) < 0.02
    # The test is symmetric in its arguments.
    assert paired_permutation_test(b, a, n_permutations=20_000, rng=3) == pytest.approx(p)


def test_permutation_balanced_disagreement_is_not_significant():
    a = np.array([1, 0, 1, 0], dtype=bool)
    b = np.array([0, 1, 0, 1], dtype=bool)
    # The observed statistic is 0, which every permutation reaches.
    assert paired_permutation_test(a, b, n_permutations=500, rng=0) == 1.0


def test_permutation_chunks_give_the_same_answer_as_one_block(monkeypatch):
    import ralif.evaluation as ev

    rng = np.random.default_rng(5)
    a = rng.random(300) < 0.55
    b = rng.random(300) < 0.5
    whole = paired_permutation_test(a, b, n_permutations=3000, rng=7)
    # Tiny chunks exercise the loop boundaries; the estimate must stay close to the exact value.
    monkeypatch.setattr(ev, "_CHUNK_ELEMENTS", 64)
    chunked = paired_permutation_test(a, b, n_permutations=3000, rng=7)
    d = a.astype(int) - b.astype(int)
    m = int(np.count_nonzero(d))
    observed = abs(int(d.sum()))
    # Exact two-sided p: P(|2 * Binomial(m, 1/2) - m| >= observed).
    from scipy.stats import binom

    k = np.arange(m + 1)
    exact = float(binom.pmf(k, m, 0.5)[np.abs(2 * k - m) >= observed].sum())
    assert abs(whole - exact) < 0.03
    assert abs(chunked - exact) < 0.03


def test_permutation_is_reproducible_with_seed():
    rng = np.random.default_rng(0)
    a = rng.random(500) < 0.7
    b = rng.random(500) < 0.65
    assert paired_permutation_test(a, b, 1000, rng=11) == paired_permutation_test(a, b, 1000, rng=11)


def test_permutation_rejects_bad_input():
    with pytest.raises(ValueError):
        paired_permutation_test([True, False], [True], n_permutations=10)
    with pytest.raises(ValueError):
        paired_permutation_test([], [], n_permutations=10)
    with pytest.raises(ValueError):
        paired_permutation_test([True], [False], n_permutations=0)


def test_cycles_below_hand_case():
    random = [[0.10, 0.20, 0.30, 0.40], [0.10, 0.25, 0.35, 0.45]]
    strategy = [
        [0.00, 0.10, 0.30, 0.50],  # cycle 1 below, cycle 2 tied (not strictly below), cycle 3 above
        [0.90, 0.20, 0.30, 0.40],  # all three cycles below; cycle 0 is ignored even though higher
    ]
    assert cycles_below(strategy, random) == 4
    assert cycles_below(random, random) == 0
    with pytest.raises(ValueError):
        cycles_below(strategy, [[0.1, 0.2, 0.3, 0.4]])


def test_mean_interval_matches_student_t():
    from scipy import stats

    v = np.array([1.01, 1.03, 1.02, 1.05, 0.99])
    lo, hi = mean_interval(v)
    half = stats.t.ppf(0.975, 4) * v.std(ddof=1) / np.sqrt(5)
    assert (lo, hi) == pytest.approx((v.mean() - half, v.mean() + half))
    assert np.isnan(mean_interval([1.0])[0])
    assert mean_interval([1.0, 1.0]) == (1.0, 1.0)
    with pytest.raises(ValueError):
        mean_interval([])


def test_paired_seed_test_exact_sign_flip():
    # Five seeds all ahead: only the all-positive and all-negative flips are as extreme: 2/32.
    a = np.array([0.71, 0.72, 0.70, 0.73, 0.69])
    b = a - np.array([0.01, 0.02, 0.015, 0.005, 0.03])
    res = paired_seed_test(a, b)
    assert res["sign_flip"] == pytest.approx(2 / 32)
    assert res["t"] < 0.05
    # Mixed signs of equal size: no evidence either way.
    res = paired_seed_test([1.0, 2.0], [2.0, 1.0])
    assert res["sign_flip"] == 1.0 and res["t"] == pytest.approx(1.0)
    assert paired_seed_test([1.0, 2.0], [1.0, 2.0])["sign_flip"] == 1.0
    with pytest.raises(ValueError):
        paired_seed_test([1.0], [1.0, 2.0])
