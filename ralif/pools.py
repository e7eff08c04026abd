"""Pools built from a features file for harder simulations: a subsample, a class subset, a long tail.

A long-tailed pool keeps n_max · ratio^(−r/(K−1)) samples of the class at rank r (Cao et al. 2019's
exponential profile), so the rarest class has ``ratio`` times fewer samples than the most frequent one.
The rank order of the classes is a seeded permutation, so several orders can be run. The test set is
made balanced (every class cut to the rarest class's test count): the accuracy a user cares about is
rarely as skewed as the pool they happen to have.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ralif.features import FeatureSplits


@dataclass(frozen=True)
class PoolRecipe:
    """How to derive a pool from a features file; every field's neutral value leaves the data as it is."""

    classes: Sequence[str] = ()  # keep only these class names (all when empty)
    pool_size: int = 0  # stratified subsample of the pool to about this many rows (0 = all)
    imbalance: float = 1.0  # ratio of the most to the least frequent class in the pool (1 = as is)
    class_order: int = 0  # seed of the permutation that ranks classes from frequent to rare
    seed: int = 0  # seed of the row subsampling

    def describe(self) -> dict:
        out: dict = {}
        if self.classes:
            out["pool_classes"] = list(self.classes)
        if self.pool_size:
            out["pool_size"] = self.pool_size
        if self.imbalance != 1.0:
            out.update(imbalance=self.imbalance, class_order=self.class_order)
        return out


def _take(n_per_class: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    parts = [rng.choice(np.flatnonzero(y == c), size=int(n), replace=False) for c, n in enumerate(n_per_class)]
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


def long_tail_counts(counts: np.ndarray, ratio: float, order: np.ndarray) -> np.ndarray:
    """Per-class sample counts of an exponential long tail over ``counts`` (classes ranked by ``order``)."""
    k = len(counts)
    n_max = int(counts.min())
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)
    want = np.floor(n_max * ratio ** (-rank / max(1, k - 1))).astype(np.int64)
    return np.clip(want, 1, counts)


def build_pool(data: FeatureSplits, recipe: PoolRecipe, source: str = "features") -> FeatureSplits:
    """The splits ``recipe`` asks for; ``source`` names the file in error messages."""
    if recipe.imbalance < 1.0:
        raise ValueError(f"imbalance must be ≥ 1 (most over least frequent class), got {recipe.imbalance}")
    if recipe.pool_size < 0:
        raise ValueError("pool size must be positive (or 0 for the whole pool)")
    x_tr, y_tr, x_te, y_te, names = data.x_train, data.y_train, data.x_test, data.y_test, list(data.classes)
    twice = sorted({c for c in recipe.classes if list(recipe.classes).count(c) > 1})
    if twice:
        raise ValueError(f"pool classes list {', '.join(map(repr, twice))} twice; name each class once")
    if recipe.classes:
        missing = [c for c in recipe.classes if c not in names]
        if missing:
            raise ValueError(f"{source} has no class {', '.join(map(repr, missing))}; classes: {', '.join(names)}")
        keep = [names.index(c) for c in recipe.classes]
        remap = np.full(len(names), -1, dtype=np.int64)
        remap[keep] = np.arange(len(keep))
        tr, te = np.isin(y_tr, keep), np.isin(y_te, keep)
        x_tr, y_tr, x_te, y_te = x_tr[tr], remap[y_tr[tr]], x_te[te], remap[y_te[te]]
        names = [names[i] for i in keep]
    k = len(names)
    rng = np.random.default_rng([recipe.seed, 7])
    counts = np.bincount(y_tr, minlength=k)
    if (counts == 0).any():
        raise ValueError(f"{source}: class {names[int(np.argmin(counts))]!r} has no pool samples")
    if recipe.pool_size and recipe.pool_size < k:
        raise ValueError(f"pool size {recipe.pool_size} is below one sample per class: {source} has {k} "
                         f"classes{' kept' if recipe.classes else ''}, and a stratified pool keeps at least "
                         f"one sample of each; ask for at least {k}")
    if recipe.pool_size and recipe.pool_size < counts.sum():
        counts = np.maximum(1, np.floor(counts * recipe.pool_size / counts.sum())).astype(np.int64)
    if recipe.imbalance > 1.0:
        order = np.random.default_rng(recipe.class_order).permutation(k)
        counts = long_tail_counts(counts, recipe.imbalance, order)
        te_counts = np.bincount(y_te, minlength=k)
        te_idx = _take(np.full(k, te_counts.min()), y_te, rng)
        x_te, y_te = x_te[te_idx], y_te[te_idx]
    idx = _take(counts, y_tr, rng)
    return FeatureSplits(x_tr[idx], y_tr[idx], x_te, y_te, names)
