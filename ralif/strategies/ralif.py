"""RALIF (Xia & Henao, TMLR 2023): influence-ranked candidates, then a diversity step."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from ralif.compute import rows
from ralif.diversity import (
    euclidean_dist_to,
    kmeans_representatives,
    kmeanspp_seeding,
    labeled_sq_dist,
    mean_shift_pick,
)
from ralif.influence import delta_pool_loss, pool_state, solve_influence
from ralif.scoring import READINGS, RULES, ralif_scores
from ralif.strategies.base import Strategy
from ralif.ranking import top_k_lowest

DIVERSITY = ("kmeans", "kmeanspp", "none", "meanshift")
SOLVERS = ("auto", "cholesky", "cg")
SPACES = ("raw", "standardized")
ENGINES = ("single", "dask")


@dataclass
class RalifStrategy(Strategy):
    name = "ralif"
    summary = "influence of labeling each sample on the pseudo-labeled pool loss, then a diverse batch"
    option_help: ClassVar[dict[str, str]] = {
        "rule": "single | expectation | truncated (Eqs. 7, 8, 9-10)",
        "reading": "influence | paper | reference (see ralif.scoring)",
        "tau": "truncation threshold for rule=truncated; default min(4/K, 0.5)",
        "fraction": "share of the pool kept as candidates (lowest scores)",
        "diversity": "kmeans (labeled-aware representatives) | kmeanspp (the paper) | none | meanshift",
        "solver": "auto | cholesky | cg",
        "space": "feature space of the diversity step: standardized (the head's input) | raw",
        "engine": "single (this process) | dask (scoring sharded over a Dask cluster; docs/distributed.md)",
        "scheduler": "engine=dask: local (worker processes here) | threads (workers in this process) | "
                     "tcp://host:port",
        "workers": "engine=dask with a local scheduler: worker count (0 = one per core)",
        "shards": "engine=dask: row shards of the pool (0 = two per worker thread)",
    }
    rule: str = "truncated"
    reading: str = "influence"
    tau: float | None = None
    fraction: float = 0.1
    diversity: str = "kmeans"
    solver: str = "auto"
    space: str = "standardized"
    engine: str = "single"
    scheduler: str = "local"
    workers: int = 0
    shards: int = 0

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"unknown rule {self.rule!r}; choose from {', '.join(RULES)}")
        if self.reading not in READINGS:
            raise ValueError(f"unknown reading {self.reading!r}; choose from {', '.join(READINGS)}")
        if self.diversity not in DIVERSITY:
            raise ValueError(f"unknown diversity {self.diversity!r}; choose from {', '.join(DIVERSITY)}")
        if not 0 < float(self.fraction) <= 1:
            raise ValueError("fraction must be in (0, 1]")
        if self.tau is not None and not 0 <= float(self.tau) < 1:
            raise ValueError("tau must be in [0, 1)")
        if self.space not in SPACES:
            raise ValueError(f"unknown space {self.space!r}; choose from {', '.join(SPACES)}")
        if self.solver not in SOLVERS:
            raise ValueError(f"unknown solver {self.solver!r}; choose from {', '.join(SOLVERS)}")
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; choose from {', '.join(ENGINES)}")
        if int(self.workers) < 0 or int(self.shards) < 0:
            raise ValueError("workers and shards must be 0 (automatic) or positive")

    def options(self) -> dict[str, Any]:
        # The sharded engine's settings only mean something with it; a plain spec stays short.
        opts = super().options()
        if self.engine == "single":
            for key in ("engine", "scheduler", "workers", "shards"):
                opts.pop(key)
        return opts

    def scores(self, head, features, labeled, unlabeled) -> torch.Tensor:
        """The per-sample RALIF score over ``unlabeled`` (lower = better; NaN = never a candidate)."""
        state = pool_state(head, features, unlabeled)
        sol = solve_influence(head, features, labeled, state.grad, method=self.solver)
        delta = delta_pool_loss(head, features, unlabeled, state.probs, sol)
        self.last_info.update(solver=sol.method, solver_iterations=sol.iterations, pool_loss=state.pool_loss)
        return ralif_scores(
            state.probs, delta, state.pool_loss, len(unlabeled), rule=self.rule, reading=self.reading, tau=self.tau
        )

    def _select(self, head, features, labeled, unlabeled, budget, rng):
        n_cand = min(len(unlabeled), max(budget, math.ceil(self.fraction * len(unlabeled))))
        t0 = time.perf_counter()
        if self.engine == "dask":
            cand = self._sharded_candidates(head, features, labeled, unlabeled, n_cand, rng)
        else:
            scores = self.scores(head, features, labeled, unlabeled)
            self.last_info["score_seconds"] = time.perf_counter() - t0
            cand = unlabeled[top_k_lowest(scores, n_cand, rng)]  # best first
        self.last_info["candidates"] = cand
        t0 = time.perf_counter()
        batch = self._diverse(head, features, labeled, cand, budget, rng)
        self.last_info["diversity_seconds"] = time.perf_counter() - t0
        return batch

    def _sharded_candidates(self, head, features, labeled, unlabeled, n_cand, rng) -> np.ndarray:
        """The same candidates, best first, from a map over row shards on a Dask cluster."""
        from ralif.sharded import get_client, sharded_candidates

        t0 = time.perf_counter()
        res = sharded_candidates(
            head, features, labeled, unlabeled, n_cand, rng, client=get_client(self.scheduler, self.workers),
            shards=self.shards, rule=self.rule, reading=self.reading, tau=self.tau, solver=self.solver,
        )
        self.last_info.update(res.info, score_seconds=time.perf_counter() - t0)
        return res.candidates

    def _diverse(self, head, features, labeled, cand, budget, rng) -> np.ndarray:
        """The batch from the candidates (ordered best-scored first)."""
        if self.diversity == "none":
            return cand[:budget]
        if self.space == "standardized":
            features = _StandardizedView(features, head)
        if self.diversity == "meanshift":
            pts = rows(features, cand, head.device, torch.float32)
            return cand[mean_shift_pick(pts, budget, rng)]
        pts, d2 = labeled_sq_dist(features, cand, labeled, head.device)
        if self.diversity == "kmeans":
            return cand[kmeans_representatives(pts, budget, rng, covered_d2=d2)]
        return cand[kmeanspp_seeding(len(cand), budget, rng, euclidean_dist_to(pts), d2=d2, first=0)]


class _StandardizedView:
    """Rows of ``features`` as the head sees them ((x − μ)/σ), computed on access, never copied whole."""

    def __init__(self, features, head):
        self.features, self.head = features, head
        self.shape = features.shape

    def __getitem__(self, idx):
        st = self.head.standardizer
        return ((np.asarray(self.features[idx], dtype=np.float64) - st.mean) / st.scale).astype(np.float32)
