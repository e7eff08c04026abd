"""Diversity steps: k-means representatives, k-means++ seeding, k-center greedy, mean shift."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ralif.diversity import (
    euclidean_dist_to,
    kcenter_greedy,
    kmeans_representatives,
    kmeanspp_seeding,
    mean_shift_pick,
    min_sq_dist,
)


def blobs(k: int, per: int, d: int = 5, spread: float = 0.05, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d)) * 10
    x = np.concatenate([c + spread * rng.standard_normal((per, d)) for c in centers]).astype(np.float32)
    return torch.from_numpy(x), np.repeat(np.arange(k), per), centers


def test_kmeans_representatives_take_one_typical_point_per_blob():
    x, blob, _ = blobs(6, 40)
    picked = kmeans_representatives(x, 6, np.random.default_rng(0))
    assert len(picked) == 6 and len(set(picked.tolist())) == 6
    assert sorted(blob[picked].tolist()) == list(range(6))
    # Each pick is among the points nearest its blob's mean (typical, not an outlier).
    for p in picked:
        members = np.flatnonzero(blob == blob[p])
        d = ((x[members] - x[members].mean(0)) ** 2).sum(1).numpy()
        assert d[members.tolist().index(p)] <= np.quantile(d, 0.25)


def test_kmeans_representatives_skip_regions_already_labeled():
    x, blob, _ = blobs(4, 30)
    labeled = x[blob == 0][:3]
    covered = min_sq_dist(x, labeled)
    picked = kmeans_representatives(x, 3, np.random.default_rng(1), covered_d2=covered)
    assert 0 not in set(blob[picked].tolist())
    assert sorted(blob[picked].tolist()) == [1, 2, 3]


def test_kmeans_representatives_fill_empty_clusters_and_handle_duplicates():
    x = torch.zeros(10, 3)  # every point identical: clusters collapse, the batch must still be full
    picked = kmeans_representatives(x, 4, np.random.default_rng(0))
    assert len(set(picked.tolist())) == 4
    assert sorted(kmeans_representatives(x, 10, np.random.default_rng(0)).tolist()) == list(range(10))


def test_kmeans_representatives_reproducible():
    x, _, _ = blobs(5, 20, spread=2.0)
    a = kmeans_representatives(x, 7, np.random.default_rng(3))
    b = kmeans_representatives(x, 7, np.random.default_rng(3))
    assert a.tolist() == b.tolist()


def test_kmeanspp_seeding_respects_covered_distance_and_first_seed():
    x, blob, _ = blobs(3, 20)
    covered = torch.where(torch.as_tensor(blob == 0), 0.0, float("inf"))
    seeds = kmeanspp_seeding(len(x), 2, np.random.default_rng(0), euclidean_dist_to(x), d2=covered, first=None)
    assert 0 not in set(blob[seeds].tolist()) and len(set(blob[seeds].tolist())) == 2
    seeds = kmeanspp_seeding(len(x), 3, np.random.default_rng(0), euclidean_dist_to(x), first=5)
    assert seeds[0] == 5 and sorted(blob[seeds].tolist()) == [0, 1, 2]


def test_kcenter_greedy_starts_from_the_labeled_set():
    x, blob, _ = blobs(3, 20)
    feats = x.numpy()
    labeled = np.flatnonzero(blob == 0)[:2]
    unlabeled = np.setdiff1d(np.arange(len(x)), labeled)
    picked = kcenter_greedy(feats, unlabeled, labeled, 2, np.random.default_rng(0), torch.device("cpu"))
    assert sorted(blob[picked].tolist()) == [1, 2]


def test_mean_shift_pick_one_per_mode_first():
    x, blob, _ = blobs(3, 30, spread=0.1)
    picked = mean_shift_pick(x, 3, np.random.default_rng(0))
    assert sorted(blob[picked].tolist()) == [0, 1, 2]


def test_kmeans_representatives_fit_on_a_subsample_for_large_candidate_sets():
    x, blob, _ = blobs(4, 300)
    picked = kmeans_representatives(x, 4, np.random.default_rng(0), fit_max=100)
    assert sorted(blob[picked].tolist()) == [0, 1, 2, 3]
    # Every point is assigned after the subsample fit, so picks can come from outside the subsample.
    again = kmeans_representatives(x, 4, np.random.default_rng(0), fit_max=100)
    assert picked.tolist() == again.tolist()


def test_blocked_kcenter_greedy_picks_what_the_sequential_one_does():
    import torch

    from ralif.diversity import kcenter_greedy, labeled_sq_dist

    def sequential(x, unl, lab, budget):
        pts, d2 = labeled_sq_dist(x, unl, lab, torch.device("cpu"))
        pts, d2 = pts.double(), d2.double()
        pn = (pts * pts).sum(1)
        out = []
        for _ in range(budget):
            c = int(torch.argmax(d2))
            out.append(c)
            d2 = torch.minimum(d2, (pn + pn[c] - 2.0 * pts @ pts[c]).clamp(min=0))
            d2[c] = -1.0
        return unl[np.asarray(out)]

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 16)).astype(np.float32) * rng.uniform(0.5, 3, size=(3000, 1)).astype(np.float32)
    lab = np.arange(20)
    unl = np.arange(20, 3000)
    ref = sequential(x, unl, lab, 150)
    for block, look in ((1, 256), (8, 16), (64, 256), (500, 4)):
        got = kcenter_greedy(x, unl, lab, 150, np.random.default_rng(0), torch.device("cpu"), block=block,
                             lookahead=look)
        np.testing.assert_array_equal(got, ref)


def _euclid(pts):
    from ralif.diversity import euclidean_dist_block

    return euclidean_dist_block(pts)


def test_blocked_kmeanspp_with_block_one_is_the_sequential_seeding():
    import torch

    from ralif.diversity import euclidean_dist_to, kmeanspp_seeding, kmeanspp_seeding_blocked

    pts = torch.as_tensor(np.random.default_rng(0).normal(size=(400, 5)))
    d2 = torch.as_tensor(np.random.default_rng(1).uniform(0.5, 3, size=400))
    for first, cov in ((0, None), (None, None), (0, d2), (None, d2)):
        ref = kmeanspp_seeding(400, 40, np.random.default_rng(5), euclidean_dist_to(pts), d2=cov, first=first)
        got = kmeanspp_seeding_blocked(400, 40, np.random.default_rng(5), _euclid(pts), d2=cov, first=first,
                                       block=1)
        np.testing.assert_array_equal(got, ref)


def test_blocked_kmeanspp_draws_from_the_exact_d2_distribution():
    """The second seed, drawn against a pending first one (rejection step), has the D² law."""
    import torch

    from ralif.diversity import kmeanspp_seeding_blocked

    pts = torch.as_tensor([[0.0], [1.0], [2.0], [4.0], [7.0]], dtype=torch.float64)
    cov = torch.full((5,), 9.0, dtype=torch.float64)  # kept bound above every true distance
    rng = np.random.default_rng(0)
    counts = np.zeros(5)
    trials = 6000
    for _ in range(trials):
        seeds = kmeanspp_seeding_blocked(5, 2, rng, _euclid(pts), d2=cov, first=0, block=8)
        counts[seeds[1]] += 1
    true = np.minimum(9.0, (pts[:, 0].numpy() - 0.0) ** 2)
    expect = true / true.sum() * trials
    assert counts[0] == 0
    # Binomial noise: about sqrt(trials·p) per cell; 5 standard deviations.
    assert np.all(np.abs(counts - expect) <= 5 * np.sqrt(expect + 1)), (counts, expect)


def test_blocked_badge_batches_cover_as_well_as_sequential_ones():
    """Quality check: the k-means cost of the seeds (every point to its nearest seed) is the same
    in distribution for blocked and per-pick updates (means over seeds within 5 %)."""
    import torch

    from ralif.diversity import euclidean_dist_to, kmeanspp_seeding, kmeanspp_seeding_blocked

    rng = np.random.default_rng(3)
    centers = rng.normal(scale=4, size=(30, 8))
    pts = torch.as_tensor(centers[rng.integers(30, size=3000)] + rng.normal(size=(3000, 8)))
    dist = _euclid(pts)

    def cost(seeds):
        return float(dist(None, torch.as_tensor(seeds)).clamp(min=0).min(1).values.sum())

    seq = [cost(kmeanspp_seeding(3000, 30, np.random.default_rng(s), euclidean_dist_to(pts), first=None))
           for s in range(12)]
    blk = [cost(kmeanspp_seeding_blocked(3000, 30, np.random.default_rng(s), dist, first=None, block=16))
           for s in range(12)]
    assert abs(np.mean(blk) / np.mean(seq) - 1) < 0.05, (np.mean(blk), np.mean(seq))


def test_kmeans_representatives_blocked_seeding_keeps_batch_quality():
    """Quality check for the blocked seeding inside the default diversity step: the batch's k-means
    objective (each candidate to its nearest pick or labeled point) matches per-seed seeding."""
    import torch

    from ralif.diversity import euclidean_dist_block, kmeans_representatives

    rng = np.random.default_rng(4)
    centers = rng.normal(scale=3, size=(60, 16))
    pts = torch.as_tensor(centers[rng.integers(60, size=6000)] + rng.normal(size=(6000, 16)), dtype=torch.float32)
    cov = torch.as_tensor(rng.uniform(20, 60, size=6000), dtype=torch.float32)
    dist = euclidean_dist_block(pts)

    def objective(picked):
        d = dist(None, torch.as_tensor(picked)).clamp(min=0).min(1).values
        return float(torch.minimum(d, cov).sum())

    old = [objective(kmeans_representatives(pts, 40, np.random.default_rng(s), covered_d2=cov, seeding_block=1))
           for s in range(6)]
    new = [objective(kmeans_representatives(pts, 40, np.random.default_rng(s), covered_d2=cov)) for s in range(6)]
    assert np.mean(new) <= 1.03 * np.mean(old), (np.mean(new), np.mean(old))


def test_weighted_kmeans_centroids_lean_to_the_heavy_points_and_equal_weights_change_nothing():
    x, _, _ = blobs(5, 20, spread=2.0)
    plain = kmeans_representatives(x, 7, np.random.default_rng(3))
    same = kmeans_representatives(x, 7, np.random.default_rng(3), weights=torch.full((len(x),), 0.01))
    assert plain.tolist() == same.tolist()
    # One cluster over a line of points: the pick is the point nearest the (weighted) mean.
    line = torch.arange(10, dtype=torch.float32)[:, None]
    assert kmeans_representatives(line, 1, np.random.default_rng(0)).tolist() in ([4], [5])
    heavy = torch.tensor([0.01] * 9 + [1.0])
    assert kmeans_representatives(line, 1, np.random.default_rng(0), weights=heavy).tolist() == [9]
    # Largest clusters first counts weight, not members: a light crowd comes after a heavy few.
    crowd = torch.cat([torch.zeros(30, 1), torch.full((3, 1), 100.0)])
    w = torch.cat([torch.full((30,), 0.01), torch.ones(3)])
    assert kmeans_representatives(crowd, 2, np.random.default_rng(0))[0] < 30
    assert kmeans_representatives(crowd, 2, np.random.default_rng(0), weights=w)[0] >= 30


def test_kmeans_representatives_first_member_takes_the_lowest_position_of_each_cluster():
    x, blob, _ = blobs(5, 30, seed=4)
    perm = np.random.default_rng(9).permutation(len(x))
    xs, bs = x[perm], blob[perm]  # position = rank when points come best first
    nearest = kmeans_representatives(xs, 5, np.random.default_rng(2))
    first = kmeans_representatives(xs, 5, np.random.default_rng(2), member="first")
    assert sorted(bs[first].tolist()) == list(range(5))
    for p in first:
        assert p == np.flatnonzero(bs == bs[p]).min()
    # Same clusters, other members: the typical point of a blob is rarely its first.
    assert sorted(bs[nearest].tolist()) == list(range(5)) and set(first.tolist()) != set(nearest.tolist())
    with pytest.raises(ValueError, match="member must be"):
        kmeans_representatives(xs, 5, np.random.default_rng(2), member="middle")


def test_kmeans_representatives_central_member_is_the_first_of_the_nearer_half():
    x, blob, _ = blobs(5, 31, seed=4, spread=1.0)
    perm = np.random.default_rng(9).permutation(len(x))
    xs, bs = x[perm], blob[perm]
    central = kmeans_representatives(xs, 5, np.random.default_rng(2), member="central")
    assert sorted(bs[central].tolist()) == list(range(5))
    for p in central:
        members = np.flatnonzero(bs == bs[p])
        d = ((xs[members] - xs[members].mean(0)) ** 2).sum(1).numpy()
        near = members[d <= np.median(d)]  # 31 members: the 16 nearest, the median included
        assert p == near.min()
    # It differs from the first member wherever that one lies in the outer half.
    first = kmeans_representatives(xs, 5, np.random.default_rng(2), member="first")
    outer = [f for f in first if f not in central.tolist()]
    for f in outer:
        members = np.flatnonzero(bs == bs[f])
        d = ((xs[members] - xs[members].mean(0)) ** 2).sum(1).numpy()
        assert d[members.tolist().index(f)] > np.median(d)


def test_gradient_kmeanspp_seeds_as_k_means_pp_over_the_explicit_gradient_embeddings():
    from ralif.diversity import euclidean_dist_block, gradient_kmeanspp, kmeanspp_seeding_blocked
    from ralif.head import Standardizer, fit_head

    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 120)
    x = (rng.normal(0, 2.0, (3, 6))[y] + rng.normal(0, 1.5, (120, 6))).astype(np.float32)
    lab = np.concatenate([np.flatnonzero(y == c)[:4] for c in range(3)])
    unl = np.setdiff1d(np.arange(120), lab)
    head = fit_head(x, lab, y[lab], 3, standardizer=Standardizer.fit(x), l2=0.05, device="cpu")
    p = head.predict_proba_tensor(x, unl)
    u = p.clone()
    u[torch.arange(len(u)), p.argmax(1)] -= 1.0
    xs = head.design(x, unl)  # standardised rows with the bias column
    g = (u[:, :, None] * xs[:, None, :]).reshape(len(unl), -1)  # the embeddings, formed explicitly here
    for first, start in ((None, int(torch.argmax((g * g).sum(1)))), (7, 7)):
        got = gradient_kmeanspp(head, x, unl, 15, np.random.default_rng(0), first=first)
        want = kmeanspp_seeding_blocked(len(unl), 15, np.random.default_rng(0), euclidean_dist_block(g), first=start)
        assert got[0] == start and len(set(got.tolist())) == 15
        np.testing.assert_array_equal(got, want)
