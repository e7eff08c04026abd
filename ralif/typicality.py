"""Typicality over a clustering of the whole data set (TypiClust, Hacohen, Dekel & Weinshall, ICML 2022).

The data set (labeled and unlabeled) is split by k-means into as many clusters as there will be labels
after the round (capped, as in the authors' code); each round takes the most typical unlabeled point of
the largest cluster that holds the fewest labeled points. Typicality is the inverse mean distance to a
point's k nearest neighbours inside its cluster: a dense, central member rather than an outlier.

Shared by the ``typiclust`` baseline and RALIF's cold start.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ralif.compute import as_index, rows

MAX_CLUSTERS = 500  # the authors' cap: more clusters cost time and make most of them tiny
NEIGHBOURS = 20
_BLOCK = 2048
# Unlabeled rows clustered at most: k-means and the typicality search grow with the pool.
MAX_POOL = 100_000


def standardizing(head) -> Callable[[torch.Tensor], torch.Tensor]:
    """The head's feature standardisation as a float32 transform (distances as the head sees them),
    applied in place: it is given rows just copied, and at 100k x 1,024 two fresh copies cost more
    than the arithmetic."""
    mean = torch.as_tensor(head.standardizer.mean, dtype=torch.float32)
    inv = torch.as_tensor(1.0 / head.standardizer.scale, dtype=torch.float32)
    return lambda x: x.sub_(mean).mul_(inv)


def top_directions(x: torch.Tensor, dims: int) -> torch.Tensor:
    """The top ``dims`` right singular vectors of the float32 rows ``x`` (D x dims, float64, largest
    first), as eigenvectors of the D x D scatter: faster than an SVD of the rows, the same
    directions up to sign (which distances ignore). The scatter's upper triangle alone (a
    symmetric rank-k update, half the products) and only the wanted eigenvectors
    (benchmarks/typicality_directions.py measures it against the full eigendecomposition)."""
    from scipy.linalg import blas, eigh
    from threadpoolctl import threadpool_limits

    a = np.ascontiguousarray(x.numpy(), dtype=np.float32)
    # SciPy's BLAS keeps its own threads (every core by default): as many as torch is given, so
    # that a round beside the app does not spin threads against it.
    with threadpool_limits(torch.get_num_threads(), user_api="blas"):
        upper = blas.ssyrk(1.0, a.T, trans=0)  # a.T is Fortran-ordered: no copy
        d = upper.shape[0]
        _, vectors = eigh(upper.astype(np.float64), lower=False, subset_by_index=[d - dims, d - 1])
    return torch.from_numpy(np.ascontiguousarray(vectors[:, ::-1]))


def reduced_features(features, idx: np.ndarray, dims: int, rng: np.random.Generator,
                     transform=None) -> torch.Tensor:
    """Rows of ``features[idx]`` (optionally passed through ``transform``), projected on their top
    ``dims`` principal directions and L2-normalised: k-means in 1,000 dimensions on 50k rows is the
    cost, while cluster structure lives in far fewer directions."""
    x = rows(features, as_index(idx), torch.device("cpu"), torch.float32)
    if transform is not None:
        x = transform(x)
    x = x.sub_(x.mean(0))
    if x.shape[1] > dims:
        fit = x if len(x) <= 20_000 else x[torch.as_tensor(np.sort(rng.choice(len(x), 20_000, replace=False)))]
        x = x @ top_directions(fit, dims).to(x.dtype)
    return torch.nn.functional.normalize(x, dim=1)


def kmeans(x: torch.Tensor, k: int, rng: np.random.Generator, iters: int = 20) -> torch.Tensor:
    """Lloyd k-means (random distinct initial centers); returns each row's cluster."""
    n = len(x)
    k = min(k, n)
    centers = x[torch.as_tensor(np.sort(rng.choice(n, k, replace=False)))].clone()
    xn = (x * x).sum(1)
    assign = torch.zeros(n, dtype=torch.long)
    step = max(1, 2**24 // max(1, k))
    for it in range(iters):
        cn = (centers * centers).sum(1)
        new = torch.empty_like(assign)
        for s in range(0, n, step):
            d = xn[s:s + step, None] + cn[None, :] - 2.0 * x[s:s + step] @ centers.T
            new[s:s + step] = d.argmin(1)
        if it and torch.equal(new, assign):
            break
        assign = new
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(centers).index_add_(0, assign, x)
        centers = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None].to(x.dtype), centers)
    return assign


def typicality(x: torch.Tensor, assign: torch.Tensor, neighbours: int = NEIGHBOURS,
               only: np.ndarray | None = None) -> torch.Tensor:
    """Inverse mean distance to the ``neighbours`` nearest members of the same cluster (per row);
    with ``only`` (cluster ids), for the members of those clusters alone (0 elsewhere)."""
    out = torch.zeros(len(x), dtype=torch.float64)
    a = assign.numpy()
    order = np.argsort(a, kind="stable")
    bounds = np.flatnonzero(np.r_[True, a[order][1:] != a[order][:-1], True])
    segments = np.stack([bounds[:-1], bounds[1:]], axis=1)
    if only is not None:
        segments = segments[np.isin(a[order[segments[:, 0]]], np.asarray(only))]
    for lo, hi in segments.tolist():
        members = torch.as_tensor(order[lo:hi])
        if len(members) == 1:
            out[members] = 1.0
            continue
        kk = min(neighbours, len(members) - 1)
        pts = x[members]
        near = torch.empty(len(members), dtype=torch.float64)
        # Row blocks: one large cluster's full distance matrix would not fit in memory.
        for s in range(0, len(members), _BLOCK):
            d = torch.cdist(pts[s:s + _BLOCK], pts)
            d[torch.arange(len(d)), torch.arange(s, s + len(d))] = float("inf")
            near[s:s + len(d)] = d.topk(kk, dim=1, largest=False).values.mean(1).double()
        out[members] = 1.0 / (near + 1e-12)
    return out


def typical_picks(
    x: torch.Tensor, labeled_mask: np.ndarray, budget: int, rng: np.random.Generator,
    clusters: int | None = None, allowed: np.ndarray | None = None,
) -> np.ndarray:
    """Positions (rows of ``x``) of ``budget`` unlabeled points picked the TypiClust way.

    ``labeled_mask`` marks labeled rows of ``x``; ``allowed`` optionally restricts which unlabeled rows
    may be picked (every row by default). Clusters are ranked by (labeled or picked count ascending,
    size descending); from each, its most typical allowed unlabeled member.
    """
    k = clusters or min(int(labeled_mask.sum()) + budget, MAX_CLUSTERS)
    assign = kmeans(x, max(1, k), rng)
    a = assign.numpy()
    free = ~labeled_mask if allowed is None else (~labeled_mask & allowed)
    size = np.bincount(a, minlength=k).astype(np.int64)
    taken = np.bincount(a[labeled_mask], minlength=k).astype(np.int64)
    free_count = np.bincount(a[free], minlength=k).astype(np.int64)
    # Which cluster each pick comes from depends on sizes and counts only, so it is settled first
    # and typicality (the costly part) is computed for those clusters alone.
    used = np.zeros(k, dtype=np.int64)
    order = np.empty(budget, dtype=np.int64)
    tie = rng.random(k)
    for i in range(budget):
        avail = used < free_count
        if not avail.any():
            raise ValueError("fewer free points than the batch")
        # Fewest labels first, then the largest cluster; random among exact ties.
        key = np.lexsort((tie, -size, taken))
        c = int(key[avail[key]][0])
        order[i] = c
        used[c] += 1
        taken[c] += 1
    chosen = np.flatnonzero(used)
    typ = typicality(x, assign, only=chosen).numpy()
    # Per chosen cluster, its free members from most to least typical (ties: lower row first).
    cand = np.flatnonzero(free & np.isin(a, chosen))
    cand = cand[np.lexsort((-typ[cand], a[cand]))]
    starts = np.searchsorted(a[cand], np.arange(k))
    nth = np.zeros(k, dtype=np.int64)
    picked = np.empty(budget, dtype=np.int64)
    for i, cluster in enumerate(order.tolist()):
        picked[i] = cand[starts[cluster] + nth[cluster]]
        nth[cluster] += 1
    return picked


def typical_batch(features, labeled: np.ndarray, unlabeled: np.ndarray, budget: int, rng: np.random.Generator,
                  dims: int = 64, transform=None, max_pool: int = MAX_POOL) -> np.ndarray:
    """``budget`` indices of ``unlabeled`` picked the TypiClust way over ``features`` (rows
    ``labeled`` and ``unlabeled``). Above ``max_pool`` unlabeled rows, a seeded random ``max_pool``
    of them stand for the pool: cluster sizes and densities are read as well from them, and time
    and memory stay bounded at a million images."""
    unlabeled = np.asarray(unlabeled)
    if len(unlabeled) > max(max_pool, budget):
        unlabeled = np.sort(rng.choice(unlabeled, max(max_pool, budget), replace=False))
    everything = np.concatenate([np.asarray(labeled), unlabeled])
    x = reduced_features(features, everything, int(dims), rng, transform=transform)
    mask = np.zeros(len(everything), dtype=bool)
    mask[: len(labeled)] = True
    return everything[typical_picks(x, mask, budget, rng)]
