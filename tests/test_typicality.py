"""TypiClust's pieces: typicality in row blocks equals the direct computation, and a pool larger
than the cap is clustered through a seeded random share of it."""

import numpy as np
import torch
from helpers import blobs

from ralif import typicality as typ
from ralif.head import fit_head
from ralif.strategies import make_strategy


def test_blocked_typicality_equals_the_full_distance_matrix():
    x = torch.from_numpy(blobs(5000, 6, 2, 0)[0])
    assign = torch.from_numpy((np.arange(5000) % 3 == 0).astype(np.int64))   # clusters of 1,667 and 3,333
    got = typ.typicality(x, assign)
    for c in (0, 1):
        members = torch.nonzero(assign == c).flatten()
        d = torch.cdist(x[members], x[members])
        d.fill_diagonal_(float("inf"))
        want = 1.0 / (d.topk(typ.NEIGHBOURS, dim=1, largest=False).values.mean(1).double() + 1e-12)
        torch.testing.assert_close(got[members], want)


def test_a_pool_above_the_cap_is_read_through_a_seeded_share():
    x, _y = blobs(3000, 8, 4, 1, spread=5.0)
    labeled = np.arange(4)
    unlabeled = np.arange(4, 3000)
    a = typ.typical_batch(x, labeled, unlabeled, 12, np.random.default_rng(0), dims=4, max_pool=500)
    b = typ.typical_batch(x, labeled, unlabeled, 12, np.random.default_rng(0), dims=4, max_pool=500)
    np.testing.assert_array_equal(a, b)
    assert len(set(a.tolist())) == 12 and set(a.tolist()) <= set(unlabeled.tolist())
    # The picks come from the share the generator draws first.
    share = np.random.default_rng(0).choice(unlabeled, 500, replace=False)
    assert set(a.tolist()) <= set(share.tolist())
    whole = typ.typical_batch(x, labeled, unlabeled, 12, np.random.default_rng(0), dims=4)
    assert len(set(whole.tolist())) == 12


def test_the_default_ralif_starts_by_typicality_and_says_so():
    x, y = blobs(800, 8, 4, 2, spread=5.0)
    labeled = np.array([np.flatnonzero(y == c)[0] for c in range(4)])       # one label per class
    unlabeled = np.setdiff1d(np.arange(800), labeled)
    head = fit_head(x, labeled, y[labeled], 4, device="cpu")
    s = make_strategy("ralif")
    picked = s.select(head, x, labeled, unlabeled, 8, np.random.default_rng(0))
    assert s.last_info["cold_start"] and s.last_info["cold_labels_per_class"] == 1.0
    want = typ.typical_batch(x, labeled, unlabeled, 8, np.random.default_rng(0), 64, typ.standardizing(head))
    np.testing.assert_array_equal(picked, want)
    off = make_strategy("ralif(cold=0)")
    off.select(head, x, labeled, unlabeled, 8, np.random.default_rng(0))
    assert "cold_start" not in off.last_info


def reference_picks(x, labeled_mask, budget, rng):
    """TypiClust's picks with typicality over every cluster, in the straightforward order."""
    k = min(int(labeled_mask.sum()) + budget, typ.MAX_CLUSTERS)
    assign = typ.kmeans(x, k, rng)
    t = typ.typicality(x, assign).numpy()
    a = assign.numpy()
    size, taken = np.bincount(a, minlength=k), np.bincount(a[labeled_mask], minlength=k)
    tie = rng.random(k)
    free = [sorted(np.flatnonzero((a == c) & ~labeled_mask), key=lambda i: (-t[i], i)) for c in range(k)]
    picked = []
    for _ in range(budget):
        key = np.lexsort((tie, -size, taken))
        c = next(int(c) for c in key if free[c])
        picked.append(free[c].pop(0))
        taken[c] += 1
    return np.array(picked)


def test_typicality_only_where_picks_come_from_changes_no_pick():
    x = torch.from_numpy(blobs(3000, 6, 5, 2, spread=4.0)[0])
    for seed, n_labeled, budget in ((0, 5, 10), (1, 40, 30), (2, 0, 25)):
        mask = np.zeros(len(x), dtype=bool)
        mask[np.random.default_rng(seed).choice(len(x), n_labeled, replace=False)] = True
        got = typ.typical_picks(x, mask, budget, np.random.default_rng(seed))
        np.testing.assert_array_equal(got, reference_picks(x, mask, budget, np.random.default_rng(seed)))


def test_top_directions_are_the_leading_singular_vectors_in_order():
    rng = np.random.default_rng(3)
    # A spectrum with distinct gaps, so each direction is defined up to sign.
    scale = np.linspace(10.0, 1.0, 40).astype(np.float32)
    x = torch.from_numpy(rng.standard_normal((600, 40)).astype(np.float32) * scale)
    x -= x.mean(0)
    got = typ.top_directions(x, 8)
    _, _, vt = torch.linalg.svd(x.double(), full_matrices=False)
    assert got.shape == (40, 8) and got.dtype == torch.float64
    cos = (got * vt[:8].T).sum(0).abs()
    torch.testing.assert_close(cos, torch.ones(8, dtype=torch.float64), atol=1e-4, rtol=0)
