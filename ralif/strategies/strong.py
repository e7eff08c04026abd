"""Stronger baselines: Margin (smallest top-2 gap) and TypiClust (Hacohen et al. 2022)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ralif.ranking import top_k_lowest
from ralif.strategies.base import Strategy
from ralif.typicality import standardizing, typical_batch


@dataclass
class MarginStrategy(Strategy):
    name = "margin"
    summary = "smallest gap between the two most probable classes"

    def _select(self, head, features, labeled, unlabeled, budget, rng):
        p = head.predict_proba_tensor(features, unlabeled)
        if p.shape[1] < 2:
            return rng.choice(unlabeled, size=budget, replace=False)
        top2 = p.topk(2, dim=1).values
        return unlabeled[top_k_lowest(top2[:, 0] - top2[:, 1], budget, rng)]


@dataclass
class TypiClustStrategy(Strategy):
    """k-means over the whole data set into |L| + B clusters (at most 500); the most typical unlabeled
    point of each of the largest clusters holding the fewest labels."""

    name = "typiclust"
    summary = "most typical point of the largest uncovered k-means clusters (Hacohen et al. 2022)"
    needs_model = False
    option_help: ClassVar[dict[str, str]] = {"dims": "principal directions kept before k-means"}
    dims: int = 64

    def __post_init__(self) -> None:
        if int(self.dims) < 1:
            raise ValueError("dims must be positive")

    def _select(self, head, features, labeled, unlabeled, budget, rng):
        transform = None if head is None else standardizing(head)
        return typical_batch(features, labeled, unlabeled, budget, rng, int(self.dims), transform)
