"""Derived pools for simulations: subsample, class subset, long tail with a balanced test set."""

import numpy as np
import pytest

from ralif.features import FeatureSplits
from ralif.pools import PoolRecipe, build_pool, long_tail_counts


def splits(per_class=200, test_per_class=(50, 40, 60, 50), k=4):
    rng = np.random.default_rng(0)
    y_tr = np.repeat(np.arange(k), per_class)
    y_te = np.concatenate([np.full(n, c) for c, n in enumerate(test_per_class)])
    return FeatureSplits(rng.normal(size=(len(y_tr), 3)).astype(np.float32), y_tr,
                         rng.normal(size=(len(y_te), 3)).astype(np.float32), y_te, ["a", "b", "c", "d"])


def test_long_tail_profile_and_balanced_test():
    data = splits()
    out = build_pool(data, PoolRecipe(imbalance=10, class_order=3))
    counts = np.bincount(out.y_train, minlength=4)
    assert counts.max() == 200 and counts.min() == 20  # ratio 10 exactly at the ends
    order = np.random.default_rng(3).permutation(4)
    assert list(counts[order]) == sorted(counts, reverse=True)  # frequent to rare in the seeded order
    assert np.bincount(out.y_test, minlength=4).tolist() == [40, 40, 40, 40]
    # Every kept row is a real row of its class.
    assert all(np.isin(out.x_train[out.y_train == c], data.x_train[data.y_train == c]).all() for c in range(4))
    other = build_pool(data, PoolRecipe(imbalance=10, class_order=4))
    assert sorted(np.bincount(other.y_train)) == sorted(counts)


def test_long_tail_counts_formula():
    got = long_tail_counts(np.array([1000] * 3), 100.0, np.array([2, 0, 1]))
    assert got.tolist() == [100, 10, 1000]


def test_subsample_and_class_subset():
    data = splits()
    out = build_pool(data, PoolRecipe(classes=("d", "b"), pool_size=100))
    assert out.classes == ["d", "b"]
    assert np.bincount(out.y_train).tolist() == [50, 50]
    assert np.bincount(out.y_test).tolist() == [50, 40]  # test set of the kept classes, untouched
    assert build_pool(data, PoolRecipe()).x_train.shape == data.x_train.shape


def test_bad_recipes_say_what_is_wrong():
    data = splits()
    with pytest.raises(ValueError, match="no class 'zebra'"):
        build_pool(data, PoolRecipe(classes=("zebra",)), source="emb.npz")
    with pytest.raises(ValueError, match="imbalance"):
        build_pool(data, PoolRecipe(imbalance=0.5))
