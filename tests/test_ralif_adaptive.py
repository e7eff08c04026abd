"""RALIF's data-driven switches: on long-tailed pseudo labels the default favours coverage."""

import numpy as np
import pytest
import torch

from ralif.diversity import kmeans_representatives, min_sq_dist
from ralif.head import fit_head
from ralif.strategies import make_strategy
from ralif.strategies.ralif import BALANCE_FOR_COVERAGE


def blobs(counts, d=8, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(len(counts), d))
    y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    return (centers[y] + rng.normal(size=(len(y), d))).astype(np.float32), y


def setup(counts, per_class_labels=3):
    x, y = blobs(counts)
    labeled = np.sort(np.concatenate([np.flatnonzero(y == c)[:per_class_labels] for c in range(len(counts))]))
    unlabeled = np.setdiff1d(np.arange(len(y)), labeled)
    head = fit_head(x, labeled, y[labeled], len(counts), device="cpu")
    return x, y, labeled, unlabeled, head


TAIL = [400, 120, 40, 12, 6]


def pool(counts):
    """(x, labeled, unlabeled, head) of ``setup`` with 3 labels per class."""
    x, _y, labeled, unlabeled, head = setup(counts, per_class_labels=3)
    return x, labeled, unlabeled, head


def run(spec, x, labeled, unlabeled, head, budget=10):
    s = make_strategy(spec)
    picked = s.select(head, x, labeled, unlabeled, budget, np.random.default_rng(0))
    return s, picked


def resolves_as(auto_spec, fixed_spec, key, value, x, labeled, unlabeled, head):
    """Run ``auto_spec``: its ``auto`` option read ``value`` (in ``last_info[key]``) and it picks what
    ``fixed_spec`` picks. Returns the strategy and the picks."""
    s, picked = run(auto_spec, x, labeled, unlabeled, head)
    assert s.last_info[key] == value
    np.testing.assert_array_equal(picked, run(fixed_spec, x, labeled, unlabeled, head)[1])
    return s, picked


def test_balanced_pool_keeps_the_representative_step():
    x, _y, labeled, unlabeled, head = setup([100] * 4)
    s, picked = run("ralif", x, labeled, unlabeled, head)
    assert s.last_info["pseudo_label_balance"] > BALANCE_FOR_COVERAGE
    assert s.last_info["diversity"] == "kmeans" and s.last_info["space"] == "standardized"
    # On balanced pseudo labels the default is exactly the earlier configuration.
    _, earlier = run("ralif(candidates=score,weighting=uniform,diversity=kmeans)", x, labeled, unlabeled, head)
    np.testing.assert_array_equal(picked, earlier)


def test_space_auto_is_cosine_on_balanced_pools_and_standardized_on_long_tails():
    resolves_as("ralif(space=auto)", "ralif(space=cosine)", "space", "cosine", *pool([100] * 4))
    s, _ = resolves_as("ralif(cold=0,space=auto)", "ralif(cold=0)", "space", "standardized", *pool(TAIL))
    assert s.last_info["diversity"] == "kmeans"


def test_cosine_space_is_k_means_on_centred_unit_vectors_of_the_standardized_rows(monkeypatch):
    import ralif.strategies.ralif as ralif_mod

    seen = {}

    def spy(pts, budget, rng, covered_d2=None, **kw):
        seen.update(pts=pts.clone(), d2=covered_d2.clone())
        return kmeans_representatives(pts, budget, rng, covered_d2=covered_d2, **kw)

    monkeypatch.setattr(ralif_mod, "kmeans_representatives", spy)
    x, _y, labeled, unlabeled, head = setup([100] * 4)
    s = make_strategy("ralif(space=cosine,cold=0,fraction=0.5)")
    s.select(head, x, labeled, unlabeled, 10, np.random.default_rng(3))
    cand = s.last_info["candidates"]
    z = (x[np.concatenate([cand, labeled])] - head.standardizer.mean) / head.standardizer.scale
    z = z - z.mean(0)
    z = torch.as_tensor(z / np.linalg.norm(z, axis=1, keepdims=True), dtype=torch.float32)
    pts, ref = z[: len(cand)], z[len(cand):]
    torch.testing.assert_close(seen["pts"], pts, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(seen["d2"], min_sq_dist(pts, ref), rtol=1e-4, atol=1e-5)


def test_long_tail_switches_to_coverage_and_reaches_rare_classes():
    counts = [400, 120, 40, 12, 4]
    x, y, labeled, unlabeled, head = setup(counts, per_class_labels=1)
    # cold=0: at one label per class the default would pick by typicality before any of this.
    s, picked = run("ralif(cold=0)", x, labeled, unlabeled, head, budget=10)
    assert s.last_info["pseudo_label_balance"] < BALANCE_FOR_COVERAGE
    assert s.last_info["diversity"] == "kcenter"
    # Coverage: the batch reaches more classes than the frequent class's share would suggest.
    assert len(np.unique(y[picked])) >= 3


def test_cover_keeps_coverage_only_while_a_class_has_few_labels():
    counts = [400, 120, 40, 12, 6]
    for per_class, want in ((1, "kcenter"), (3, "kmeans")):
        x, _y, labeled, unlabeled, head = setup(counts, per_class_labels=per_class)
        s, _ = run("ralif(cold=0,cover=3)", x, labeled, unlabeled, head, budget=10)
        assert s.last_info["pseudo_label_balance"] < BALANCE_FOR_COVERAGE
        assert s.last_info["fewest_labels_in_a_class"] == per_class
        assert s.last_info["diversity"] == want
    # An explicit diversity is never overridden, and cover=0 keeps coverage on every long tail.
    s, _ = run("ralif(cold=0,cover=3,diversity=kcenter)", x, labeled, unlabeled, head)
    assert s.last_info["diversity"] == "kcenter"
    s, _ = run("ralif(cold=0,cover=0)", x, labeled, unlabeled, head)
    assert s.last_info["diversity"] == "kcenter"


@pytest.mark.parametrize("option", ["candidates=balanced", "weighting=balanced"])
def test_sharded_engine_rejects_options_it_cannot_compute(option):
    with pytest.raises(ValueError, match="engine=dask"):
        make_strategy(f"ralif({option},engine=dask)")


def test_cold_start_picks_typical_points_while_labels_per_class_are_few():
    x, y, labeled, unlabeled, head = setup([100] * 4, per_class_labels=2)
    s, picked = run("ralif(cold=3)", x, labeled, unlabeled, head, budget=8)
    assert s.last_info.get("cold_start") is True and "candidates" not in s.last_info
    # The same picks as TypiClust over the head's standardised features.
    _, typical = run("typiclust", x, labeled, unlabeled, head, budget=8)
    np.testing.assert_array_equal(np.sort(picked), np.sort(typical))
    assert len(np.unique(y[picked])) == 4  # typical points of the largest uncovered clusters: every blob
    # From three labels per class on, the influence score ranks the pool.
    x, y, labeled, unlabeled, head = setup([100] * 4, per_class_labels=3)
    s, _ = run("ralif(cold=3)", x, labeled, unlabeled, head, budget=8)
    assert "cold_start" not in s.last_info and len(s.last_info["candidates"]) >= 8


def test_cold_start_clusters_a_bounded_share_of_a_large_pool():
    x, y, labeled, unlabeled, head = setup([100] * 4, per_class_labels=2)
    s, picked = run("ralif(cold=3,cold_pool=120)", x, labeled, unlabeled, head, budget=8)
    assert s.last_info.get("cold_start") is True
    assert len(np.unique(picked)) == 8 and np.isin(picked, unlabeled).all()
    assert len(np.unique(y[picked])) == 4  # a 120-image share still has every blob's typical points
    # The same share is drawn for the same seed: the picks are reproducible.
    _, again = run("ralif(cold=3,cold_pool=120)", x, labeled, unlabeled, head, budget=8)
    np.testing.assert_array_equal(picked, again)
    with pytest.raises(ValueError, match="cold_pool"):
        make_strategy("ralif(cold_pool=0)")


def test_representative_auto_is_central_on_balanced_pools_and_best_on_long_tails():
    resolves_as("ralif(fraction=0.5)", "ralif(fraction=0.5,representative=central)", "representative", "central",
                *pool([100] * 4))
    tail = pool(TAIL)
    s, picked = resolves_as("ralif(cold=0,fraction=0.5)", "ralif(cold=0,fraction=0.5,representative=best)",
                            "representative", "best", *tail)
    assert s.last_info["diversity"] == "kmeans"
    # The two members differ on these pools, so the switch is what the assertions above see.
    assert not np.array_equal(picked, run("ralif(cold=0,fraction=0.5,representative=central)", *tail)[1])
