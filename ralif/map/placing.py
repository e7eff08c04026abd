"""Placing points into a fitted 2-D layout, as UMAP's ``transform`` does, on every core.

UMAP's own ``transform`` runs on one thread when the seed is fixed: 0.5–0.7 s per 1,000 points on
two cores, over 11 minutes at 1M (docs/speed.md, "UMAP at scale"). It does three things, each
done here vectorised or in parallel over all the points of a call:

1. each point's ``k`` nearest fitted points: here by blocked matrix products over a few principal
   directions of the fitted subsample (encoder features put most of their variance in a few dozen
   directions, and the search cost is linear in their number);
2. their fuzzy memberships ``exp(-d / sigma)``, ``sigma`` solved per point so that they sum to
   ``log2(k)`` (``transform`` uses a local connectivity of 0, so nothing is subtracted from ``d``),
   and the start at the membership-weighted mean of the neighbours' positions;
3. refinement epochs with the fitted points fixed: each edge pulls its point towards the neighbour
   as often as its membership says, with five random fitted points pushing it away per pull, the
   step shrinking linearly (UMAP's ``optimize_layout_euclidean`` with ``move_other=False``). The
   edges of a point are applied one after the other, as UMAP does, and all points at once.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ralif.compute import configure_threads

# Principal directions kept for the neighbour search: on CIFAR-10 embeddings (1,024-d) 128 places
# points among their class as often as UMAP's own transform, 64 a point less (benchmarks/map_placing.py).
DEFAULT_DIMS = 128
# Query rows per distance block (block x anchors float32 values held at once).
_BLOCK = 2048
# Bisection steps for sigma: the bracket shrinks by 2**-40, far below float32 resolution.
_SIGMA_STEPS = 40
METRICS = ("cosine", "euclidean")
# UMAP's defaults for the refinement: repulsion per pull, gradient clip, step (its learning rate
# 1 over 4 in transform), and the floor of sigma relative to the mean neighbour distance. The
# compiled epoch loop reads the first three as constants.
NEGATIVE_RATE = 5.0
CLIP = 4.0
ALPHA = 0.25
_MIN_SIGMA_SCALE = 1e-3


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def memberships(dist: torch.Tensor) -> torch.Tensor:
    """UMAP's fuzzy membership ``exp(-d / sigma)`` of each row's neighbours, with ``sigma`` per
    row such that the memberships sum to ``log2(k)`` (local connectivity 0, as in transform)."""
    k = dist.shape[1]
    target = float(np.log2(k))
    lo = torch.zeros_like(dist[:, :1])
    hi = torch.full_like(lo, float("inf"))
    sigma = torch.ones_like(lo)
    for _ in range(_SIGMA_STEPS):
        big = torch.exp(-dist / sigma).sum(1, keepdim=True) > target      # too wide: shrink sigma
        hi = torch.where(big, sigma, hi)
        lo = torch.where(big, lo, sigma)
        sigma = torch.where(torch.isinf(hi), sigma * 2, (lo + hi) / 2)
    floor = _MIN_SIGMA_SCALE * dist.mean().clamp_min(1e-12)
    return torch.exp(-dist / torch.maximum(sigma, floor))


def epochs_for(points: int) -> int:
    """UMAP transform's rule: more epochs for small calls."""
    return 100 if points <= 10_000 else 30


@functools.cache
def _compile_epochs() -> Any:
    """The epoch loop, compiled once per process (numba comes with UMAP): the points are
    independent while the fitted ones stay fixed, so each runs its own edges in UMAP's order,
    in parallel over the points."""
    import numba

    @numba.njit(parallel=True, fastmath=False, cache=False)
    def epochs_loop(y, targets, per_sample, anchors, a, b, epochs, seeds):  # pragma: no cover - compiled
        n, k = per_sample.shape
        n_anchors = anchors.shape[0]
        for i in numba.prange(n):
            state = np.uint64(seeds[i])
            next_pull = per_sample[i].copy()
            per_negative = per_sample[i] / NEGATIVE_RATE
            next_push = per_negative.copy()
            y0, y1 = y[i, 0], y[i, 1]
            for epoch in range(epochs):
                alpha = ALPHA * (1.0 - epoch / epochs)
                for slot in range(k):
                    if next_pull[slot] > epoch:
                        continue
                    t = targets[i, slot]
                    d0, d1 = y0 - anchors[t, 0], y1 - anchors[t, 1]
                    d2 = d0 * d0 + d1 * d1
                    coeff = 0.0
                    if d2 > 0.0:
                        coeff = -2.0 * a * b * d2 ** (b - 1.0) / (a * d2 ** b + 1.0)
                    y0 += min(max(coeff * d0, -CLIP), CLIP) * alpha
                    y1 += min(max(coeff * d1, -CLIP), CLIP) * alpha
                    next_pull[slot] += per_sample[i, slot]
                    pushes = max(0, int((epoch - next_push[slot]) / per_negative[slot]))
                    for _ in range(pushes):
                        state ^= state << np.uint64(13)
                        state ^= state >> np.uint64(7)
                        state ^= state << np.uint64(17)
                        j = int(state % np.uint64(n_anchors))
                        d0, d1 = y0 - anchors[j, 0], y1 - anchors[j, 1]
                        d2 = d0 * d0 + d1 * d1
                        if d2 > 0.0:
                            coeff = 2.0 * b / ((0.001 + d2) * (a * d2 ** b + 1.0))
                            y0 += min(max(coeff * d0, -CLIP), CLIP) * alpha
                            y1 += min(max(coeff * d1, -CLIP), CLIP) * alpha
                        else:       # coincident with the sampled point: UMAP steps by the clip value
                            y0 += CLIP * alpha
                            y1 += CLIP * alpha
                    next_push[slot] += pushes * per_negative[slot]
            y[i, 0], y[i, 1] = y0, y1

    return epochs_loop


def refine(start: torch.Tensor, neighbours: torch.Tensor, weight: torch.Tensor, anchors: torch.Tensor,
           a: float, b: float, epochs: int, seed: int) -> torch.Tensor:
    """UMAP's layout epochs for points ``start`` (n x 2) tied to fixed ``anchors`` (F x 2) by edges
    ``neighbours`` (n x k indices) of membership ``weight`` (n x k): each edge pulls its point as
    often as its membership says, with five random anchors pushing it away per pull."""
    if epochs < 1 or not len(start):
        return start.clone()
    w = weight.double().numpy()
    w = np.where(w < w.max() / epochs, 0.0, w)
    with np.errstate(divide="ignore"):
        per_sample = np.where(w > 0, w.max() / np.where(w > 0, w, 1.0), np.inf)
    y = np.ascontiguousarray(start.numpy(), dtype=np.float64)
    seeds = np.random.default_rng(seed).integers(1, 2**62, len(y), dtype=np.int64).astype(np.uint64)
    _compile_epochs()(y, np.ascontiguousarray(neighbours.numpy()), per_sample,
               np.ascontiguousarray(anchors.numpy(), dtype=np.float64), float(a), float(b), int(epochs), seeds)
    return torch.from_numpy(y.astype(np.float32))


@dataclass(frozen=True)
class NeighbourPlacer:
    """A fitted subsample's reduced features and 2-D positions, ready to place other points."""

    mean: torch.Tensor        # (D,) centre of the (unit, for cosine) fitted features
    basis: torch.Tensor       # (D, d) principal directions
    anchors: torch.Tensor     # (F, d) fitted points in the reduced space
    anchor_sq: torch.Tensor   # (F,) their squared norms
    coords: torch.Tensor      # (F, 2) their layout positions
    k: int
    metric: str
    a: float                  # UMAP's curve parameters (``reducer._a``, ``reducer._b``)
    b: float
    epochs: int | None        # None: UMAP transform's rule for each call
    seed: int

    @classmethod
    def fit(cls, features: np.ndarray, coords: np.ndarray, *, k: int = 15, dims: int = DEFAULT_DIMS,
            metric: str = "cosine", a: float = 1.577, b: float = 0.895, epochs: int | None = None,
            seed: int = 0) -> NeighbourPlacer:
        """``features`` (F x D) were laid out at ``coords`` (F x 2); ``a``, ``b`` default to UMAP's
        values for ``min_dist=0.1``."""
        if metric not in METRICS:
            raise ValueError(f"placing by neighbours supports the metrics {METRICS}, not {metric!r}")
        if len(features) != len(coords) or len(features) < 2:
            raise ValueError("need at least two fitted points, each with its coordinates")
        configure_threads()
        x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        if metric == "cosine":
            x = _unit_rows(x)
        mean = x.mean(0)
        centred = x - mean
        d = int(min(dims, centred.shape[1], centred.shape[0] - 1))
        # Principal directions from the D x D scatter matrix: D is small, F may be large.
        _, vectors = torch.linalg.eigh(centred.T.double() @ centred.double())
        basis = vectors[:, -d:].flip(1).float().contiguous()
        anchors = (centred @ basis).contiguous()
        return cls(mean=mean, basis=basis, anchors=anchors, anchor_sq=(anchors * anchors).sum(1),
                   coords=torch.from_numpy(np.ascontiguousarray(coords, dtype=np.float32)),
                   k=int(min(k, len(anchors))), metric=metric, a=float(a), b=float(b), epochs=epochs,
                   seed=int(seed))

    def neighbours(self, features: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(indices, distances) of each row's ``k`` nearest fitted points, nearest first; distances
        as UMAP measures them (cosine distance, or euclidean in the reduced space)."""
        configure_threads()
        x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        idx = torch.empty((len(x), self.k), dtype=torch.long)
        dist = torch.empty((len(x), self.k), dtype=torch.float32)
        for start in range(0, len(x), _BLOCK):
            q = x[start:start + _BLOCK]
            if self.metric == "cosine":
                q = _unit_rows(q)
            q = (q - self.mean) @ self.basis
            sq = torch.addmm(self.anchor_sq.unsqueeze(0), q, self.anchors.T, alpha=-2.0)
            sq += (q * q).sum(1, keepdim=True)
            near_sq, near = torch.topk(sq, self.k, dim=1, largest=False, sorted=True)
            near_sq = near_sq.clamp_min(0)
            # Cosine distance of unit vectors is half their squared distance.
            dist[start:start + len(q)] = near_sq / 2 if self.metric == "cosine" else near_sq.sqrt()
            idx[start:start + len(q)] = near
        return idx, dist

    def place(self, features: np.ndarray) -> np.ndarray:
        """2-D positions (N x 2 float32) of ``features`` (N x D). The same rows in the same call
        give the same positions."""
        idx, dist = self.neighbours(features)
        weight = memberships(dist)
        start = (weight.unsqueeze(2) * self.coords[idx]).sum(1) / weight.sum(1, keepdim=True)
        epochs = epochs_for(len(idx)) if self.epochs is None else int(self.epochs)
        return refine(start, idx, weight, self.coords, self.a, self.b, epochs, self.seed).numpy()
