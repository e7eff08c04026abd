"""The paper's baselines: Random, Uncertainty (entropy), Coreset, BADGE and GradNorm."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from ralif.compute import as_index
from ralif.diversity import gradient_kmeanspp, kcenter_greedy
from ralif.head import LinearHead
from ralif.ranking import top_k_lowest
from ralif.strategies.base import Strategy


def entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * torch.log(p.clamp(min=1e-300))).sum(1)


@dataclass
class RandomStrategy(Strategy):
    name = "random"
    summary = "uniformly random batch from the pool"
    needs_model = False

    def _select(self, head, features, labeled, unlabeled, budget, rng):
        return rng.choice(unlabeled, size=budget, replace=False)


@dataclass
class UncertaintyStrategy(Strategy):
    name = "uncertainty"
    summary = "top-B predictive entropy"

    def _select(self, head, features, labeled, unlabeled, budget, rng):
        h = entropy(head.predict_proba_tensor(features, unlabeled))
        return unlabeled[top_k_lowest(-h, budget, rng)]


@dataclass
class CoresetStrategy(Strategy):
    name = "coreset"
    summary = "k-center greedy on features from the labeled set (Sener & Savarese 2018)"
    needs_model = False

    def _select(self, head, features, labeled, unlabeled, budget, rng):
        return kcenter_greedy(features, unlabeled, labeled, budget, rng, self.device_of(head))


@dataclass
class BadgeStrategy(Strategy):
    """k-means++ seeding on gradient embeddings g(x) = (p − e_ŷ) ⊗ x̃ (Ash et al. 2020).

    ⟨g_i, g_j⟩ = ⟨u_i, u_j⟩·⟨x̃_i, x̃_j⟩ with u = p − e_ŷ, so each distance update costs O(K + D) per
    point and the |U|×K(D+1) embedding matrix is never formed.
    """

    name = "badge"
    summary = "k-means++ seeding on last-layer gradient embeddings (Ash et al. 2020)"

    def _select(self, head, features, labeled, unlabeled, budget, rng):
        return unlabeled[gradient_kmeanspp(head, features, unlabeled, budget, rng)]


@dataclass
class GradNormStrategy(Strategy):
    """Largest last-layer gradient norm (Wang et al. 2022), in closed form for a linear head.

    ``entropy``: ‖∇_W H(p)‖ = ‖p ∘ (log p + H)‖·‖x̃‖ (the gradient of the predictive entropy).
    ``expected``: Σ_k p_k ‖∇_W ℓ(x, k)‖ = Σ_k p_k ‖p − e_k‖·‖x̃‖ (expected loss-gradient norm).
    """

    name = "gradnorm"
    summary = "largest closed-form gradient norm of the entropy or expected loss (Wang et al. 2022)"
    option_help: ClassVar[dict[str, str]] = {"loss": "entropy | expected"}
    loss: str = "entropy"

    def __post_init__(self) -> None:
        if self.loss not in ("entropy", "expected"):
            raise ValueError(f"gradnorm loss must be 'entropy' or 'expected', got {self.loss!r}")

    def _select(self, head, features, labeled, unlabeled, budget, rng):
        p = head.predict_proba_tensor(features, unlabeled)
        xnorm = ((_standardized(head, features, unlabeled).double() ** 2).sum(1) + 1.0).sqrt()
        if self.loss == "entropy":
            logp = torch.log(p.clamp(min=1e-300))
            h = -(p * logp).sum(1, keepdim=True)
            g = (p * (logp + h)).norm(dim=1)
        else:
            pp = (p * p).sum(1, keepdim=True)
            g = (p * (pp - 2 * p + 1).clamp(min=0).sqrt()).sum(1)
        return unlabeled[top_k_lowest(-(g * xnorm), budget, rng)]


def _standardized(head: LinearHead, features: np.ndarray, idx: np.ndarray) -> torch.Tensor:
    out = torch.empty(len(as_index(idx)), head.dim, dtype=torch.float32, device=head.device)
    for pos, z in head.chunks(features, idx):
        out[pos] = z
    return out
