"""Metrics for comparing active-learning strategies, following the evaluation protocol of RALIF.

Accuracy curves are indexed by cycle: index 0 is the model trained on the initial labeled set and
indices 1..C are the C active-learning cycles. The area-based metrics deliberately ignore cycle 0
because every strategy starts from the same initial set, so it carries no information about the
selection rule.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "auca", "auca_ratio", "cycles_below", "mean_interval", "paired_permutation_test", "paired_seed_test",
]

# Upper bound on the number of sign-matrix entries materialised at once by the permutation test;
# 2**20 float64 entries keep each chunk around 8 MB whatever the test-set size.
_CHUNK_ELEMENTS = 1 << 20


def _curve(accuracy: ArrayLike, name: str = "accuracy") -> np.ndarray:
    a = np.asarray(accuracy, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of per-cycle accuracies, got shape {a.shape}")
    if a.size < 3:
        raise ValueError(
            f"{name} needs cycle 0 plus at least 2 active-learning cycles to define an area, "
            f"got {a.size} value(s)"
        )
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def auca(accuracy: ArrayLike) -> float:
    """Area under the accuracy-vs-cycle curve over cycles 1..C (trapezoid rule, unit spacing).

    ``accuracy`` holds C+1 test accuracies; the first one (cycle 0, the initial labeled set) is
    excluded from the area.
    """
    a = _curve(accuracy)[1:]
    return float(np.sum(a[:-1] + a[1:]) / 2.0)


def auca_ratio(accuracy: ArrayLike, accuracy_random: ArrayLike) -> float:
    """AUCA of a strategy divided by the AUCA of Random on the same seed; above 1 beats Random."""
    a = _curve(accuracy)
    r = _curve(accuracy_random, "accuracy_random")
    if a.shape != r.shape:
        raise ValueError(f"curves cover different numbers of cycles: {a.size - 1} vs {r.size - 1} for Random")
    denom = auca(r)
    if denom <= 0.0:
        raise ValueError("Random's AUCA is not positive; the ratio is undefined")
    return auca(a) / denom


def paired_permutation_test(
    correct_a: ArrayLike,
    correct_b: ArrayLike,
    n_permutations: int = 10_000,
    rng: np.random.Generator | int | None = None,
) -> float:
    """Two-sided paired permutation test for a difference in accuracy on the same test set.

    ``correct_a`` and ``correct_b`` say, per test sample, whether each strategy's model predicted
    it correctly. The statistic is ``mean(correct_a - correct_b)``; under the null hypothesis the
    two labels of each pair are exchangeable, so each paired difference has its sign flipped at
    random. Returns ``(1 + #{|permuted| >= |observed|}) / (1 + n_permutations)``, which is never 0
    so that a Monte Carlo estimate is not over-confident.
    """
    a = np.asarray(correct_a)
    b = np.asarray(correct_b)
    if a.ndim != 1 or b.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"correct_a and correct_b must be 1-D of equal length, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("the test set is empty")
    if n_permutations < 1:
        raise ValueError("n_permutations must be at least 1")
    d = a.astype(np.float64) - b.astype(np.float64)
    if not np.all(np.isfinite(d)):
        raise ValueError("correctness values must be finite")
    # Zero differences contribute nothing to any signed sum, so dropping them shrinks every chunk
    # to the samples on which the strategies disagree, often a small fraction of the test set.
    d = d[d != 0.0]
    if d.size == 0:
        return 1.0
    generator = np.random.default_rng(rng)

    # The common 1/n factor of the mean cancels in the comparison, so work with sums.
    observed = abs(float(d.sum()))
    # Sums of +-1 are exact in float64; the tolerance only matters for fractional scores, where
    # a permutation reproducing the observed value may differ from it by rounding.
    threshold = observed - 1e-9 * float(np.abs(d).sum())
    total = float(d.sum())
    m = d.size
    n_bytes = (m + 7) // 8
    rows = max(1, _CHUNK_ELEMENTS // m)
    hits = 0
    done = 0
    while done < n_permutations:
        k = min(rows, n_permutations - done)
        # Random bytes unpacked to bits give eight fair coin flips per generated value.
        packed = generator.integers(0, 256, size=(k, n_bytes), dtype=np.uint8)
        keep = np.unpackbits(packed, axis=1, count=m)
        # With sign s = 2*keep - 1, sum(s * d) = 2 * (keep @ d) - sum(d).
        stats = 2.0 * (keep @ d) - total
        hits += int(np.count_nonzero(np.abs(stats) >= threshold))
        done += k
    return (1 + hits) / (1 + n_permutations)


def cycles_below(accuracy_seeds: ArrayLike, random_seeds: ArrayLike) -> int:
    """Count (seed, cycle) pairs, cycles 1..C, where the strategy is strictly below Random.

    Both inputs have shape (seeds, C+1) and row ``i`` of each comes from the same seed, i.e. the
    same initial labeled set.
    """
    a = np.asarray(accuracy_seeds, dtype=np.float64)
    r = np.asarray(random_seeds, dtype=np.float64)
    if a.ndim != 2 or a.shape != r.shape:
        raise ValueError(
            f"expected two (seeds, cycles) arrays of the same shape, got {a.shape} and {r.shape}"
        )
    if a.shape[1] < 2:
        raise ValueError("curves need cycle 0 plus at least one active-learning cycle")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(r))):
        raise ValueError("accuracies contain NaN or infinite values")
    return int(np.count_nonzero(a[:, 1:] < r[:, 1:]))


def mean_interval(values: ArrayLike, level: float = 0.95) -> tuple[float, float]:
    """Two-sided Student-t confidence interval for the mean of per-seed values.

    With one value the interval is undefined and (nan, nan) is returned; identical values give a
    zero-width interval.
    """
    from scipy import stats

    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0 or not np.all(np.isfinite(v)):
        raise ValueError("values must be a non-empty sequence of finite numbers")
    if not 0.0 < level < 1.0:
        raise ValueError("level must be in (0, 1)")
    if v.size < 2:
        return float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2.0, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    m = float(v.mean())
    return m - half, m + half


def paired_seed_test(values_a: ArrayLike, values_b: ArrayLike, max_exact_seeds: int = 20) -> dict[str, float]:
    """Paired tests across seeds of a per-seed metric (e.g. AUCA) of two strategies, seed i with seed i.

    Returns ``t``: the two-sided paired t-test p-value (nan when it is undefined: fewer than 2 seeds or
    all differences equal), and ``sign_flip``: the two-sided exact permutation p-value that flips the
    sign of each seed's difference (all 2^S flips up to ``max_exact_seeds`` seeds, else 100,000 random
    flips). The sign-flip test assumes only that each difference is symmetric under the null.
    """
    from scipy import stats

    a = np.asarray(values_a, dtype=np.float64).ravel()
    b = np.asarray(values_b, dtype=np.float64).ravel()
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"need two equal-length, non-empty per-seed sequences, got {a.shape} and {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("per-seed values must be finite")
    d = a - b
    s = d.size
    if s >= 2 and np.ptp(d) > 0:
        t_p = float(stats.ttest_rel(a, b).pvalue)
    else:
        t_p = float("nan") if s < 2 or not np.any(d) else 0.0
    if not np.any(d):
        return {"t": t_p if s >= 2 else float("nan"), "sign_flip": 1.0}
    if s <= max_exact_seeds:
        signs = 1.0 - 2.0 * ((np.arange(2**s)[:, None] >> np.arange(s)[None, :]) & 1)
    else:
        signs = np.random.default_rng(0).choice([-1.0, 1.0], size=(100_000, s))
    stats_ = np.abs(signs @ d)
    observed = abs(float(d.sum()))
    flip_p = float(np.mean(stats_ >= observed - 1e-12 * np.abs(d).sum()))
    return {"t": t_p, "sign_flip": flip_p}
