"""Ranking primitives shared by every strategy and by the sharded engine."""

from __future__ import annotations

import numpy as np
import torch


def top_k_lowest(scores: torch.Tensor, k: int, rng: np.random.Generator) -> np.ndarray:
    """Positions of the k lowest scores (NaN last), ties broken at random under ``rng``."""
    s = scores.detach().cpu().numpy().astype(np.float64)
    tie = rng.random(len(s))
    nan = np.isnan(s)
    key = np.where(nan, np.inf, s)
    sel = None
    if 0 < k < len(s):
        # Partition first, then sort only the scores at or below the k-th: the same order as a full
        # sort (every tie at the k-th value is kept and broken by ``tie``), at O(n) instead of O(n log n).
        kth = np.partition(key, k - 1)[k - 1]
        if np.isfinite(kth):
            sel = np.flatnonzero(key <= kth)
    if sel is None:
        return np.lexsort((tie, key, nan.astype(np.int8)))[:k]
    order = np.lexsort((tie[sel], key[sel]))
    return sel[order[:k]]
