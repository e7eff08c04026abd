"""RALIF scoring rules: a number per pool sample, lower = labeling it is expected to help more.

Rules (Xia & Henao 2023): single-IL (Eq. 7) labels x with its pseudo label; expectation-IL (Eq. 8)
averages over all classes weighted by p_k(x); truncated-IL (Eqs. 9–10) keeps classes with p_k(x) > τ.

Readings, because the paper and the authors' code disagree in ways that change the selection:
- ``paper``: the equations as printed, including the current pool loss L_U: Σ_{kept} p_k (L_U + ΔL_U(x,k)).
  The O(1) constant times the kept mass dominates the O(1/m) influence term, and a sample with no kept
  class scores 0 (the best possible).
- ``reference``: the authors' code: mean over kept classes of p_k (ΣL_U + ΔL_U(x,k)) with the summed
  pool loss; a sample with no kept class gets NaN and is never a candidate.
- ``influence``: the influence term only, as a conditional expectation over the kept classes, which
  always include the predicted class: Σ_{kept} p_k ΔL_U(x,k) / Σ_{kept} p_k.
"""

from __future__ import annotations

import torch

RULES = ("single", "expectation", "truncated")
READINGS = ("paper", "reference", "influence")


def default_tau(num_classes: int) -> float:
    """The paper's τ = 4/K, capped at 0.5: for K ≤ 4, 4/K ≥ 1 would keep no class at all."""
    return min(4.0 / max(1, num_classes), 0.5)


def kept_classes(probs: torch.Tensor, rule: str, tau: float) -> torch.Tensor:
    """Boolean N×K mask of the classes each rule sums over."""
    if rule == "single":
        return torch.nn.functional.one_hot(probs.argmax(1), probs.shape[1]).bool()
    if rule == "expectation":
        return torch.ones_like(probs, dtype=torch.bool)
    if rule == "truncated":
        return probs > tau
    raise ValueError(f"unknown rule {rule!r}; choose from {', '.join(RULES)}")


def ralif_scores(
    probs: torch.Tensor, delta: torch.Tensor, pool_loss: float, pool_size: int,
    *, rule: str = "truncated", reading: str = "influence", tau: float | None = None,
) -> torch.Tensor:
    """Per-sample score (N, float64; NaN = never a candidate) from probabilities and ΔL_U (both N×K)."""
    k = probs.shape[1]
    tau = default_tau(k) if tau is None else float(tau)
    mask = kept_classes(probs, rule, tau)
    if reading == "paper":
        if rule == "single":
            top = probs.argmax(1, keepdim=True)
            return pool_loss + delta.gather(1, top).squeeze(1)
        return (mask * probs * (pool_loss + delta)).sum(1)
    if reading == "reference":
        weighted = probs * (pool_loss * pool_size + delta)
        count = mask.sum(1)
        total = (mask * weighted).sum(1)
        return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("nan")))
    if reading == "influence":
        mask = mask | torch.nn.functional.one_hot(probs.argmax(1), k).bool()
        w = mask * probs
        return (w * delta).sum(1) / w.sum(1)
    raise ValueError(f"unknown reading {reading!r}; choose from {', '.join(READINGS)}")
