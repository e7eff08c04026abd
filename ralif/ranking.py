"""Ranking primitives shared by every strategy and by the sharded engine."""

from __future__ import annotations

import numpy as np
import torch


def top_k_lowest(scores: torch.Tensor, k: int, rng: np.random.Generator) -> np.ndarray:
    """Positions of the k lowest scores (NaN last), ties broken at random under ``rng``."""
    s = scores.detach().cpu().numpy().astype(np.float64)
    tie = rng.random(len(s))
    nan = np.isnan(s)
    order = np.lexsort((tie, np.where(nan, np.inf, s), nan.astype(np.int8)))
    return order[:k]
