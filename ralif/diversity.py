"""Diversity steps that turn a ranked candidate set into a batch, and the distance helpers they share.

Distances are computed as ‖a‖² + ‖b‖² − 2⟨a, b⟩ in chunks: nothing of size N×N is ever formed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ralif.compute import RowSource, as_index, chunk_size, rows
from ralif.head import LinearHead


def sq_norms(x: torch.Tensor) -> torch.Tensor:
    """Each row's squared norm. ``vector_norm`` is one fused pass with no temporary; the earlier
    ``(x * x).sum(1)`` in row chunks made the diversity step at 100k candidates 1.8x slower (docs/speed.md)."""
    return torch.linalg.vector_norm(x, dim=1).square_()


def min_sq_dist(points: torch.Tensor, refs: torch.Tensor, chunk: int | None = None,
                point_norms: torch.Tensor | None = None) -> torch.Tensor:
    """For each row of ``points``, the squared distance to its nearest row of ``refs`` (inf if none)."""
    out = torch.full((points.shape[0],), float("inf"), dtype=points.dtype, device=points.device)
    if refs.shape[0] == 0:
        return out
    pn = sq_norms(points) if point_norms is None else point_norms
    step = chunk or max(1, int(2**25 // max(1, points.shape[0])))
    for start in range(0, refs.shape[0], step):
        r = refs[start : start + step]
        # (‖p‖² + ‖r‖²) − 2 p rᵀ in one fused product: no N×M temporary beyond the result.
        d = torch.addmm(pn[:, None] + sq_norms(r)[None, :], points, r.T, alpha=-2.0)
        out = torch.minimum(out, d.min(1).values)
    return out.clamp_(min=0)


def labeled_sq_dist(
    features: RowSource, cand: np.ndarray, labeled: np.ndarray, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate features (float32) and each candidate's squared distance to the nearest labeled point."""
    pts = rows(features, cand, device, torch.float32)
    d2 = torch.full((len(cand),), float("inf"), device=device)
    step = chunk_size(features.shape[1], itemsize=4)
    pn = sq_norms(pts)
    for start in range(0, len(labeled), step):
        ref = rows(features, labeled[start : start + step], device, torch.float32)
        d2 = torch.minimum(d2, min_sq_dist(pts, ref, point_norms=pn))
    return pts, d2


def candidate_points(
    features: np.ndarray, cand: np.ndarray, labeled: np.ndarray, head: LinearHead | None, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``labeled_sq_dist`` in the head's standardised space (``head``) or the raw one (None), with the
    candidates standardised in float32 in place rather than through a float64 copy."""
    if head is None:
        return labeled_sq_dist(features, cand, labeled, device)
    cand, labeled = as_index(cand), as_index(labeled)
    pts = head.standardized_rows(features, cand)
    d2 = torch.full((len(cand),), float("inf"), device=pts.device)
    step = chunk_size(features.shape[1], itemsize=4)
    pn = sq_norms(pts)
    for start in range(0, len(labeled), step):
        ref = head.standardized_rows(features, labeled[start:start + step])
        d2 = torch.minimum(d2, min_sq_dist(pts, ref, point_norms=pn))
    return pts, d2


def kmeanspp_seeding(
    n: int, budget: int, rng: np.random.Generator, dist_to: Callable[[int], torch.Tensor],
    d2: torch.Tensor | None = None, first: int | None = 0, device: torch.device | str = "cpu",
) -> np.ndarray:
    """k-means++ seeding (D² sampling) over ``n`` points; returns their positions in pick order.

    ``dist_to(c)`` gives every point's squared distance to point ``c`` (any geometry: features, or
    BADGE's gradient embeddings). ``d2`` holds each point's squared distance to already-covered points
    (e.g. the labeled set), so seeds avoid what is labeled already. ``first`` fixes the first seed (the
    best-scored candidate); with ``first=None`` it is drawn by D² too (uniformly when nothing is covered).
    """
    if budget > n:
        raise ValueError(f"cannot pick {budget} seeds from {n} points")
    if d2 is None:
        d2 = torch.full((n,), float("inf"), dtype=torch.float64, device=device)
    d2 = d2.to(torch.float64).clone()
    chosen = np.empty(budget, dtype=np.int64)
    taken = torch.zeros(n, dtype=torch.bool, device=d2.device)
    for i in range(budget):
        if i == 0 and first is not None:
            c = int(first)
        else:
            w = torch.where(taken, torch.zeros_like(d2), d2)
            if torch.isinf(w).any():
                w = torch.isinf(w).to(torch.float64)
            if not float(w.sum()) > 0:
                # Every remaining point coincides with a chosen one: any untaken point is as good.
                w = (~taken).to(torch.float64)
            # Inverse-CDF draw with the numpy generator keeps selections reproducible across devices.
            cdf = torch.cumsum(w, 0).cpu().numpy()
            c = min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), n - 1)
            while bool(taken[c]) or w[c] <= 0:  # only reachable through round-off at the cdf's edges
                c = (c + 1) % n
        chosen[i] = c
        taken[c] = True
        d2 = torch.minimum(d2, dist_to(c).to(torch.float64).clamp(min=0))
    return chosen


def kmeanspp_seeding_blocked(
    n: int, budget: int, rng: np.random.Generator,
    dist: Callable[[torch.Tensor | None, torch.Tensor], torch.Tensor],
    d2: torch.Tensor | None = None, first: int | None = 0, device: torch.device | str = "cpu",
    block: int = 32, max_rejects: int = 64,
) -> np.ndarray:
    """k-means++ seeding with the same D² distribution as ``kmeanspp_seeding``, its distance updates
    made ``block`` centers at a time: one n×block product instead of ``block`` passes over the points.

    ``dist(rows, centers)`` gives squared distances (rows × centers; ``rows=None``: every point).
    Between updates the kept distances are upper bounds; a draw from them is accepted with
    probability true/kept (the point's distance to the pending centers decides), which is exact
    rejection sampling from the current D² distribution. ``block=1`` draws the same seeds as
    ``kmeanspp_seeding`` from the same generator.
    """
    if budget > n:
        raise ValueError(f"cannot pick {budget} seeds from {n} points")
    cur: torch.Tensor = (torch.full((n,), float("inf"), dtype=torch.float64, device=device) if d2 is None
                         else d2.to(torch.float64).clone())
    taken = torch.zeros(n, dtype=torch.bool, device=cur.device)
    chosen = np.empty(budget, dtype=np.int64)
    pending: list[int] = []
    cdf: np.ndarray | None = None
    w = cur  # the weights the cdf was built from; always rebuilt before the first draw (cdf is None)
    fallback = False  # the cdf is not D² (uniform over uncovered or untaken points): never kept stale

    def flush() -> None:
        nonlocal cur, cdf
        if pending:
            cs = torch.as_tensor(pending, device=cur.device)
            cur = torch.minimum(cur, dist(None, cs).to(torch.float64).clamp(min=0).min(1).values)
            pending.clear()
        cdf = None

    for i in range(budget):
        if i == 0 and first is not None:
            c = int(first)
        else:
            rejects = 0
            while True:
                if cdf is None:
                    fallback = False
                    w = torch.where(taken, torch.zeros_like(cur), cur)
                    if torch.isinf(w).any():
                        if pending:  # kept infinities may be finite by now: update before drawing
                            flush()
                            continue
                        w, fallback = torch.isinf(w).to(torch.float64), True
                    if not float(w.sum()) > 0:
                        if pending:
                            flush()
                            continue
                        w, fallback = (~taken).to(torch.float64), True
                    cdf = torch.cumsum(w, 0).cpu().numpy()
                c = min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), n - 1)
                while w[c] <= 0:  # only reachable through round-off at the cdf's edges
                    c = (c + 1) % n
                if not pending:
                    break
                kept = float(w[c])
                # A point taken since the cdf was built has distance 0: always rejected, as it must be.
                true = 0.0 if bool(taken[c]) else min(kept, float(dist(torch.as_tensor([c], device=cur.device),
                                            torch.as_tensor(pending, device=cur.device)).clamp(min=0).min()))
                if rng.random() * kept < true:
                    break
                rejects += 1
                if rejects >= max_rejects:
                    flush()
        chosen[i] = c
        taken[c] = True
        pending.append(c)
        if len(pending) >= block or fallback:
            flush()
    return chosen


def euclidean_dist_block(
    pts: torch.Tensor, norms: torch.Tensor | None = None,
) -> Callable[[torch.Tensor | None, torch.Tensor], torch.Tensor]:
    """``dist(rows, centers)`` for ``kmeanspp_seeding_blocked``: squared Euclidean distances
    (``norms``: the points' squared norms when already known)."""
    pn = sq_norms(pts) if norms is None else norms

    def dist(rows: torch.Tensor | None, cs: torch.Tensor) -> torch.Tensor:
        x, xn = (pts, pn) if rows is None else (pts[rows], pn[rows])
        return torch.addmm(xn[:, None] + pn[cs][None, :], x, pts[cs].T, alpha=-2.0)

    return dist


def gradient_kmeanspp(head: LinearHead, features: np.ndarray, idx: np.ndarray, budget: int,
                      rng: np.random.Generator, first: int | None = None) -> np.ndarray:
    """k-means++ seeding over the last-layer gradient embeddings g(x) = (p − e_ŷ) ⊗ x̃ of ``features[idx]``
    (BADGE's geometry); returns positions in ``idx``, in pick order. ``first`` fixes the first seed
    (None: the largest gradient norm, as BADGE starts).

    ⟨g_i, g_j⟩ = ⟨u_i, u_j⟩·⟨x̃_i, x̃_j⟩ with u = p − e_ŷ, so each distance update costs O(K + D) per
    point and the |idx|×K(D+1) embedding matrix is never formed.
    """
    dev = head.device
    p = head.predict_proba_tensor(features, idx)
    u = p.clone()
    u[torch.arange(len(u), device=dev), p.argmax(1)] -= 1.0
    z = head.standardized_rows(features, idx)  # float32; the bias column is the +1 below
    gnorm = (u * u).sum(1) * ((z.double() * z.double()).sum(1) + 1.0)

    def dist(rows: torch.Tensor | None, cs: torch.Tensor) -> torch.Tensor:
        # Two small matrix products (K and D wide) per block of centers, never the embeddings themselves.
        ur, zr, gr = (u, z, gnorm) if rows is None else (u[rows], z[rows], gnorm[rows])
        return gr[:, None] + gnorm[cs][None, :] - 2.0 * (ur @ u[cs].T) * ((zr @ z[cs].T).double() + 1.0)

    start = int(torch.argmax(gnorm)) if first is None else int(first)
    return kmeanspp_seeding_blocked(len(u), budget, rng, dist, first=start, device=dev)


def euclidean_dist_to(pts: torch.Tensor) -> Callable[[int], torch.Tensor]:
    pn = sq_norms(pts)
    return lambda c: pn + pn[c] - 2.0 * (pts @ pts[c])


def mean_shift_pick(
    pts: torch.Tensor, budget: int, rng: np.random.Generator, max_seeds: int = 2000, iters: int = 30
) -> np.ndarray:
    """Mean shift (Gaussian kernel, median k-NN bandwidth) over candidates; positions of one representative
    per mode, modes taken by size, the candidate nearest each mode first, round-robin until ``budget``.

    ``pts`` must be ordered best-scored first so that ties go to better scores.
    """
    n = pts.shape[0]
    if budget >= n:
        return np.arange(n)
    x = pts.to(torch.float64)
    seeds_idx = np.sort(rng.choice(n, min(n, max_seeds), replace=False))
    modes = x[torch.as_tensor(seeds_idx, device=x.device)].clone()
    # Bandwidth: median distance to the 10th neighbour on a sample, a scale that adapts to the data.
    sample = x[torch.as_tensor(seeds_idx[: min(len(seeds_idx), 500)], device=x.device)]
    d = torch.cdist(sample, x)
    kth = min(10, n - 1)
    h = float(torch.kthvalue(d, kth + 1, dim=1).values.median().clamp(min=1e-12))
    for _ in range(iters):
        w = torch.exp(-torch.cdist(modes, x).pow(2) / (2 * h * h))
        new = (w @ x) / w.sum(1, keepdim=True).clamp(min=1e-300)
        shift = (new - modes).norm(dim=1).max()
        modes = new
        if shift < 1e-3 * h:
            break
    # Merge modes closer than h/2: greedy in seed order.
    keep: list[int] = []
    md = torch.cdist(modes, modes)
    alive = torch.ones(len(modes), dtype=torch.bool, device=x.device)
    for i in range(len(modes)):
        if alive[i]:
            keep.append(i)
            alive &= md[i] >= h / 2
    centers = modes[keep]
    assign = torch.cdist(x, centers).argmin(1).cpu().numpy()
    dist_to_center = torch.cdist(x, centers).min(1).values.cpu().numpy()
    sizes = np.bincount(assign, minlength=len(keep))
    order_clusters = np.argsort(-sizes, kind="stable")
    # Within a cluster, members ordered by distance to the mode (most representative first).
    members = [np.flatnonzero(assign == c) for c in order_clusters]
    members = [m[np.argsort(dist_to_center[m], kind="stable")] for m in members]
    picked: list[int] = []
    depth = 0
    while len(picked) < budget:
        for m in members:
            if depth < len(m):
                picked.append(int(m[depth]))
                if len(picked) == budget:
                    break
        depth += 1
    return np.asarray(picked, dtype=np.int64)


def kcenter_greedy(
    features: RowSource, unlabeled: np.ndarray, labeled: np.ndarray, budget: int,
    rng: np.random.Generator, device: torch.device, block: int = 64, lookahead: int = 256,
) -> np.ndarray:
    """Coreset (Sener & Savarese 2018): repeatedly take the pool point farthest from labeled ∪ chosen.

    The same picks as updating every point's nearest-center distance after each pick, with the
    updates made in blocks: the kept distances are upper bounds until the pending centers are
    applied, one matrix product for ``block`` centers (a read of the pool per block, not per pick).
    A pick is exact because only the ``lookahead`` largest bounds are refreshed against the pending
    centers, and the best refreshed distance must reach the largest bound outside them; otherwise
    the pending centers are applied first.
    """
    unlabeled, labeled = as_index(unlabeled), as_index(labeled)
    pts, d2 = labeled_sq_dist(features, unlabeled, labeled, device)
    n = len(unlabeled)
    pn = sq_norms(pts)
    chosen = np.empty(budget, dtype=np.int64)
    pending: list[int] = []

    def apply_pending() -> None:
        nonlocal d2
        p = torch.as_tensor(pending, device=pts.device)
        for start in range(0, n, 16_384):
            sl = slice(start, start + 16_384)
            d = (pn[sl, None] + pn[p][None, :] - 2.0 * pts[sl] @ pts[p].T).clamp_(min=0)
            d2[sl] = torch.minimum(d2[sl], d.min(1).values)
        d2[p] = -1.0  # never chosen twice, even when duplicates make every distance zero
        pending.clear()

    for i in range(budget):
        if i == 0 and len(labeled) == 0:
            c = int(rng.integers(n))
        else:
            while True:
                t = min(n, lookahead + 1)
                vals, ids = torch.topk(d2, t)
                outside = float(vals[-1]) if t > lookahead else -np.inf
                vals, ids = vals[:lookahead], ids[:lookahead]
                if pending:
                    p = torch.as_tensor(pending, device=pts.device)
                    d = (pn[ids, None] + pn[p][None, :] - 2.0 * pts[ids] @ pts[p].T).clamp_(min=0)
                    vals = torch.minimum(vals, d.min(1).values)
                    vals[torch.isin(ids, p)] = -1.0
                    d2[ids] = vals  # still upper bounds, now tight against the pending centers
                j = int(torch.argmax(vals))
                if float(vals[j]) >= outside or not pending:
                    c = int(ids[j])
                    break
                apply_pending()
        chosen[i] = c
        pending.append(c)
        if len(pending) >= block:
            apply_pending()
    return unlabeled[chosen]


def kmeans_representatives(
    pts: torch.Tensor, budget: int, rng: np.random.Generator, covered_d2: torch.Tensor | None = None,
    iters: int = 10, fit_max: int = 20_000, seeding_block: int = 32, weights: torch.Tensor | None = None,
    member: str = "nearest",
) -> np.ndarray:
    """Lloyd k-means with ``budget`` free clusters over ``pts``; returns, per cluster, the position of
    the point nearest its centroid (a typical member, not an outlier), largest clusters first.

    ``covered_d2`` (each point's squared distance to the nearest labeled point) makes it labeled-aware:
    labeled points act as fixed centers, so a point nearer to a labeled point than to every free
    center is covered and neither moves a center nor is picked, and seeding starts away from them.
    ``weights`` (positive, one per point) weigh the centroids and the cluster sizes (weighted k-means;
    the seeding stays D²). ``member="first"`` picks each cluster's free member of lowest position instead
    of the one nearest its centroid (for points ordered best first: the best of each cluster);
    ``member="central"`` the member of lowest position among the nearer half of the cluster's free
    members (the best of its typical members).
    """
    if member not in ("nearest", "first", "central"):
        raise ValueError(f"member must be 'nearest', 'first' or 'central', got {member!r}")
    n = pts.shape[0]
    if budget >= n:
        return np.arange(n)
    x = pts.to(torch.float32)
    cov = None if covered_d2 is None else covered_d2.to(device=x.device, dtype=torch.float32)
    w = None if weights is None else weights.to(device=x.device, dtype=torch.float32)
    if n > max(fit_max, 20 * budget):
        sub = torch.as_tensor(np.sort(rng.choice(n, max(fit_max, 20 * budget), replace=False)), device=x.device)
        fx, fcov, fw = x[sub], None if cov is None else cov[sub], None if w is None else w[sub]
    else:
        fx, fcov, fw = x, cov, w
    fxn = sq_norms(fx)
    # Seeding updates distances ``seeding_block`` seeds at a time (same D² law; 1 = per seed).
    seeds = kmeanspp_seeding_blocked(len(fx), budget, rng, euclidean_dist_block(fx, fxn), d2=fcov, first=None,
                                     device=x.device, block=seeding_block)
    centers = fx[torch.as_tensor(seeds, device=x.device)].clone()
    prev: torch.Tensor | None = None
    for _ in range(iters):
        assign, dist = nearest_centers(fx, fxn, centers)
        # Covered points go to a spare row that is dropped: no copy of the free members.
        slot = assign if fcov is None else torch.where(dist <= fcov, assign, budget)
        if prev is not None and torch.equal(slot, prev):
            break  # the same members give the same centroids: Lloyd has converged
        prev = slot
        counts = torch.bincount(slot, weights=fw, minlength=budget + 1)[:budget]
        sums = torch.zeros(budget + 1, x.shape[1], dtype=x.dtype, device=x.device).index_add_(
            0, slot, fx if fw is None else fx * fw[:, None])[:budget]
        mass = torch.where(counts > 0, counts, torch.ones_like(counts))[:, None].to(x.dtype)
        new = torch.where(counts[:, None] > 0, sums / mass, centers)
        moved = (new - centers).abs().max()
        centers = new
        if moved == 0:
            break
    assign, dist = nearest_centers(x, fxn if fx is x else sq_norms(x), centers)
    keep_t = torch.ones_like(dist, dtype=torch.bool) if cov is None else dist <= cov
    keep = keep_t.cpu().numpy()
    a, dd = assign.cpu().numpy(), dist.cpu().numpy()
    # Representative of each cluster: its free member nearest the centroid (or first); lexsort by
    # (cluster, distance or position).
    cand = np.flatnonzero(keep)
    if member == "central":
        by_dist = cand[np.lexsort((dd[cand], a[cand]))]
        cl = a[by_dist]
        start = np.flatnonzero(np.r_[True, cl[1:] != cl[:-1]])
        rank = np.arange(len(by_dist)) - np.repeat(start, np.diff(np.r_[start, len(by_dist)]))
        size = np.bincount(cl, minlength=budget)[cl]
        cand = by_dist[rank < (size + 1) // 2]
    order = cand[np.lexsort((dd[cand] if member == "nearest" else cand, a[cand]))]
    first = order[np.r_[True, a[order][1:] != a[order][:-1]]] if len(order) else order
    kept_w = None if w is None else w.cpu().numpy()[keep]
    sizes = np.bincount(a[keep], weights=kept_w, minlength=budget)[a[first]]
    picked = first[np.argsort(-sizes, kind="stable")]
    if len(picked) < budget:
        # Empty clusters: fill with the points least covered by anything chosen or labeled.
        far = dd if cov is None else np.minimum(dd, cov.cpu().numpy())
        rest = np.argsort(-far, kind="stable")
        rest = rest[~np.isin(rest, picked)]
        picked = np.concatenate([picked, rest[: budget - len(picked)]])
    return picked.astype(np.int64)


def nearest_centers(x: torch.Tensor, xn: torch.Tensor, centers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's nearest center and squared distance to it (``xn``: the rows' squared norms)."""
    step = max(1, 2**24 // max(1, len(centers)))
    assign = torch.empty(len(x), dtype=torch.long, device=x.device)
    dist = torch.empty(len(x), dtype=torch.float32, device=x.device)
    cn = sq_norms(centers)
    for s in range(0, len(x), step):
        d = torch.addmm(xn[s : s + step, None] + cn[None, :], x[s : s + step], centers.T, alpha=-2.0)
        dist[s : s + step], assign[s : s + step] = d.min(1)
    return assign, dist
