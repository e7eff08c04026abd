"""RALIF (Xia & Henao, TMLR 2023): influence-ranked candidates, then a diversity step."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from ralif.calibration import cv_temperature
from ralif.compute import rows
from ralif.diversity import (
    candidate_points,
    euclidean_dist_to,
    gradient_kmeanspp,
    kcenter_greedy,
    kmeans_representatives,
    kmeanspp_seeding,
    mean_shift_pick,
    min_sq_dist,
)
from ralif.influence import delta_pool_loss, pool_state, solve_influence
from ralif.newton import CURVATURES, newton_delta_pool_loss, relative_correction
from ralif.ranking import top_k_lowest
from ralif.scoring import READINGS, RULES, ralif_scores
from ralif.strategies.base import Strategy
from ralif.typicality import reduced_features, standardizing, typical_batch

DIVERSITY = ("kmeans", "kmeanspp", "none", "meanshift", "kcenter", "auto", "gradient")
# Pseudo-label balance (effective number of predicted classes over K, exp(entropy)/K) below which
# the pool is treated as long-tailed and the batch favours coverage. A 10-class exponential tail of
# ratio 10 has 0.79, ratio 100 0.52. Measured on pseudo labels (4 random initial sets each): long-tailed
# CIFAR-10 (ratio 10) 0.65-0.79 at 100 and 500 labels; balanced CIFAR-10 at 100 labels 0.90-0.97;
# digits at 20 labels 0.86-0.96.
BALANCE_FOR_COVERAGE = 0.82
SOLVERS = ("auto", "cholesky", "cg")
SPACES = ("raw", "standardized", "cosine", "pca", "auto")
ENGINES = ("single", "dask")
CANDIDATES = ("score", "balanced", "auto")
WEIGHTINGS = ("uniform", "balanced", "confidence", "auto")
STEPS = ("first", "newton", "relative")
CENTROIDS = ("uniform", "score")
CALIBRATIONS = ("none", "cv")
REPRESENTATIVES = ("nearest", "best", "central", "auto")
TARGETS = ("pseudo", "entropy")
GATES = ("none", "auto", "half", "error")
# gate=auto: the least-sure share it keeps (the candidates are then exactly that share, ordered by
# influence for the diversity step).
AUTO_GATE = 0.1
# ... from this many labels per class on (gate_from's default for gate=auto).
AUTO_GATE_FROM = 100.0


@dataclass
class RalifStrategy(Strategy):
    name = "ralif"
    summary = "influence of labeling each sample on the pseudo-labeled pool loss, then a diverse batch"
    option_help: ClassVar[dict[str, str]] = {
        "rule": "single | expectation | truncated (Eqs. 7, 8, 9-10)",
        "reading": "influence | paper | reference (see ralif.scoring)",
        "tau": "truncation threshold for rule=truncated; default min(4/K, 0.5)",
        "fraction": "share of the pool kept as candidates (lowest scores)",
        "diversity": "kmeans (labeled-aware representatives) | kmeanspp (the paper) | none | meanshift | "
                     "kcenter (farthest candidates from labeled ∪ picked) | gradient (k-means++ over the "
                     "candidates' last-layer gradient embeddings, BADGE's geometry, from the best-scored) | "
                     "auto (kcenter when the pseudo "
                     f"labels are long-tailed: effective classes exp(H)/K < {BALANCE_FOR_COVERAGE}; else kmeans)",
        "solver": "auto | cholesky | cg",
        "space": "feature space of the diversity step: standardized (the head's input) | raw | cosine (kmeans "
                 "and kmeanspp: the standardized candidates and labels, centred and L2-normalised) | pca (cosine "
                 "on their top pca_dims principal directions, as TypiClust clusters) | auto (cosine on balanced "
                 "pseudo labels, standardized on long-tailed ones)",
        "engine": "single (this process) | dask (scoring sharded over a Dask cluster; docs/distributed.md)",
        "scheduler": "engine=dask: local (worker processes here) | threads (workers in this process) | "
                     "tcp://host:port",
        "workers": "engine=dask with a local scheduler: worker count (0 = one per core)",
        "shards": "engine=dask: row shards of the pool (0 = two per worker thread)",
        "multiple": "candidates are at least this many times the batch (0 = the fraction alone)",
        "candidates": "score (lowest scores) | balanced (lowest scores within each predicted class, in equal "
                      "shares: rare classes stay covered) | auto (balanced when the pseudo labels are long-tailed)",
        "weighting": "pool loss over pseudo labels: uniform | balanced (each predicted class weighs the same) | "
                     "confidence (each pool image weighs by the head's top probability) | "
                     "auto (balanced when the pseudo labels are long-tailed)",
        "step": "first (the first-order influence, the paper) | newton (one Newton step: the sample's own "
                "curvature included, ralif.newton) | relative (the first-order influence over the square root "
                "of the sample's self-influence: RelatIF, Barshan et al. 2020)",
        "curvature": "step=newton: auto | exact (dense H⁻¹, small heads) | kronecker (H ≈ Ā ⊗ Σ + λI)",
        "cover": "diversity=auto on long-tailed pseudo labels: k-center coverage only while some class has fewer "
                 "than this many labels (as the head predicts the labeled set), else kmeans (0 = always k-center)",
        "cold_pool": "unlabeled images the cold start clusters at most (a seeded random share of larger pools)",
        "centroids": "diversity=kmeans: uniform | score (each candidate weighs by its score rank, best 1, worst "
                     "1/n: weighted k-means, Zhdanov 2019)",
        "pca_dims": "space=pca: principal directions kept",
        "representative": "diversity=kmeans: the member each cluster gives, nearest (its centroid) | best "
                          "(its best-scored candidate) | central (the best-scored of its nearer half) | auto (best "
                          "on long-tailed pseudo labels, else central)",
        "calibration": "none | cv (score with the head's logits divided by a temperature fitted on held-out "
                       "folds of the labels: calibrated pool probabilities and label expectation)",
        "damping": "the Hessian's L2 term in the influence solve, as a multiple of the head's own (more "
                   "damping, less pull towards directions the labels have not reached)",
        "target": "the pool loss the influence lowers: pseudo (cross-entropy with the head's pseudo labels, "
                  "the paper) | entropy (the pool's mean prediction entropy)",
        "gate": "candidates only among the images the head is least sure of (smallest top-2 margin): none | "
                f"auto (the least-sure {AUTO_GATE:.0%} from {AUTO_GATE_FROM:g} labels per class; none with "
                "engine=dask) | half (the less sure half of "
                "the pool) | error (as many as the head expects to get wrong, Σ(1 − max p); never fewer than "
                "the candidates) | a share in (0, 1]",
        "gate_from": "labels per class (mean) from which the gate applies (0 = always; default 100 for "
                     "gate=auto, 0 for a gate given explicitly): the head's doubt misleads while it has "
                     "seen few labels",
        "cold": "labels per class below which the batch is picked by typicality (TypiClust) instead (0 = never)",
    }
    rule: str = "truncated"
    reading: str = "influence"
    tau: float | None = None
    fraction: float = 0.1
    diversity: str = "auto"
    solver: str = "auto"
    # space=cosine / auto gained on development seeds at init 100 (+0.007, +0.006 in AUCA ratio over
    # 15 seeds) and not on report seeds (-0.002 on both, more cycles below Random on the animals):
    # not the default (docs/quality.md, "Cosine geometry for the representatives").
    space: str = "standardized"
    engine: str = "single"
    scheduler: str = "local"
    workers: int = 0
    shards: int = 0
    multiple: float = 0.0
    candidates: str = "auto"
    weighting: str = "auto"
    step: str = "first"
    curvature: str = "auto"
    # cover=3, the same trust threshold as cold: on long-tailed pseudo labels, k-center coverage while
    # some class has fewer than 3 labels, then representatives (docs/quality.md: long tail ratio 10
    # 1.043 -> 1.056 on report seeds, ratio 100 1.253 -> 1.236, every balanced setting unchanged).
    cover: float = 3.0
    # The cold start clusters a seeded random 10,000 of the unlabeled images: about 3.5x faster at 50k
    # (1.57-1.83 -> 0.45-0.49 s on one thread) with the same accuracy after its batch on CIFAR-10 over 10
    # seeds (48.9 vs 48.7 %; docs/quality.md). TypiClust itself keeps its 100,000.
    cold_pool: int = 10_000
    # cold=3 (typicality while labels per class are fewer than 3) is the measured best (docs/quality.md:
    # digits at 2 labels per class 1.024 -> 1.037 on report seeds; the same elsewhere, where the
    # starts already have 3 or more labels per class).
    cold: float = 3.0
    centroids: str = "uniform"
    pca_dims: int = 64
    calibration: str = "none"
    # representative=auto: each region of the candidates gives its best-scored member among its typical
    # (nearer) half, and its best-scored member outright on long-tailed pseudo labels, where the rare
    # classes sit off-centre (docs/quality.md, "The best of the typical half": weak features at init 100
    # +0.049 over 10 development seeds; the long tail ratio 100 -0.014 with central, so best there).
    representative: str = "auto"
    damping: float = 1.0
    target: str = "pseudo"
    # gate=auto from 100 labels per class: candidates among the least-sure 10 % once the head has seen
    # enough labels to be trusted in its doubt (docs/quality.md, "The least-sure gate from 100 labels
    # per class": the weak features at 1,000 labels +0.009 on report seeds, pairs below Random 20 -> 5
    # of 25; within +-0.0015 elsewhere; at 30-90 labels per class -0.002 to -0.003 on development seeds).
    gate: str = "auto"
    gate_from: float | None = None

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
        if self.centroids not in CENTROIDS:
            raise ValueError(f"unknown centroids {self.centroids!r}; choose from {', '.join(CENTROIDS)}")
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"unknown calibration {self.calibration!r}; choose from {', '.join(CALIBRATIONS)}")
        if self.representative not in REPRESENTATIVES:
            raise ValueError(f"unknown representative {self.representative!r}; "
                             f"choose from {', '.join(REPRESENTATIVES)}")
        if self.target not in TARGETS:
            raise ValueError(f"unknown target {self.target!r}; choose from {', '.join(TARGETS)}")
        if self.gate not in GATES and not 0 < _share(self.gate) <= 1:
            raise ValueError(f"unknown gate {self.gate!r}; choose from {', '.join(GATES)} or a share in (0, 1]")
        if self.engine == "dask" and self.gate not in ("none", "auto"):
            raise ValueError("engine=dask supports gate=none|auto only")
        if not float(self.damping) > 0:
            raise ValueError("damping must be positive")
        if (self.step != "first" or self.engine != "single") and (float(self.damping) != 1 or self.target != "pseudo"):
            raise ValueError("damping and target=entropy need step=first and engine=single")
        if int(self.pca_dims) < 1:
            raise ValueError("pca_dims must be at least 1")
        if self.space not in SPACES:
            raise ValueError(f"unknown space {self.space!r}; choose from {', '.join(SPACES)}")
        if self.solver not in SOLVERS:
            raise ValueError(f"unknown solver {self.solver!r}; choose from {', '.join(SOLVERS)}")
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; choose from {', '.join(ENGINES)}")
        if self.candidates not in CANDIDATES:
            raise ValueError(f"unknown candidates {self.candidates!r}; choose from {', '.join(CANDIDATES)}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {self.weighting!r}; choose from {', '.join(WEIGHTINGS)}")
        if self.step not in STEPS:
            raise ValueError(f"unknown step {self.step!r}; choose from {', '.join(STEPS)}")
        if self.curvature not in CURVATURES:
            raise ValueError(f"unknown curvature {self.curvature!r}; choose from {', '.join(CURVATURES)}")
        if self.engine == "dask" and self.step != "first":
            raise ValueError("engine=dask supports step=first only")
        if float(self.multiple) < 0 or float(self.cold) < 0 or float(self.cover) < 0:
            raise ValueError("multiple, cold and cover must be 0 (off) or positive")
        if self.gate_from is not None and not float(self.gate_from) >= 0:
            raise ValueError("gate_from must be 0 (always) or positive")
        if self.engine == "dask" and "balanced" in (self.candidates, self.weighting):
            raise ValueError("engine=dask supports candidates=score|auto and weighting=uniform|auto only")
        if int(self.cold_pool) < 1:
            raise ValueError("cold_pool must be positive")
        if int(self.workers) < 0 or int(self.shards) < 0:
            raise ValueError("workers and shards must be 0 (automatic) or positive")

    def options(self) -> dict[str, Any]:
        # The sharded engine's settings only mean something with it; a plain spec stays short.
        opts = super().options()
        if self.engine == "single":
            for key in ("engine", "scheduler", "workers", "shards"):
                opts.pop(key)
        if self.step == "first":
            opts.pop("curvature")
        return opts

    def scores(self, head, features, labeled, unlabeled) -> torch.Tensor:
        """The per-sample RALIF score over ``unlabeled`` (lower = better; NaN = never a candidate)."""
        state = pool_state(head, features, unlabeled)
        self._note_skew(state.probs.argmax(1).cpu().numpy(), head)
        grad = state.grad
        weighting = self._resolve(self.weighting, "balanced", "uniform")
        # The entropy target has no pseudo labels to weigh, so it replaces any weighting.
        if self.target == "entropy":
            grad = entropy_pool_grad(head, features, unlabeled, state.probs)
        elif weighting == "balanced":
            grad = balanced_pool_grad(head, features, unlabeled, state.probs)
        elif weighting == "confidence":
            # A pseudo label the head is unsure of is likely wrong: its pull on the pool loss weighs less.
            grad = weighted_pool_grad(head, features, unlabeled, state.probs, state.probs.max(1).values)
        sol = solve_influence(head, features, labeled, grad, method=self.solver, l2=self.damping * head.l2)
        if self.step != "first":
            delta, curv = newton_delta_pool_loss(head, features, labeled, unlabeled, state.probs, sol,
                                                 kind=self.curvature,
                                                 correction=relative_correction if self.step == "relative" else None)
            self.last_info["curvature"] = curv
        else:
            delta = delta_pool_loss(head, features, unlabeled, state.probs, sol)
        self.last_info.update(solver=sol.method, solver_iterations=sol.iterations, pool_loss=state.pool_loss)
        scores = ralif_scores(
            state.probs, delta, state.pool_loss, len(unlabeled), rule=self.rule, reading=self.reading, tau=self.tau
        )
        return self._gated(scores, state.probs) if self._gate_applies(labeled, head) else scores

    def _gate_applies(self, labeled, head) -> bool:
        # The sharded engine has no gate: gate=auto resolves to none there.
        if self.gate == "none" or (self.gate == "auto" and self.engine == "dask"):
            return False
        start = self.gate_from if self.gate_from is not None else (AUTO_GATE_FROM if self.gate == "auto" else 0)
        return len(labeled) >= float(start) * head.num_classes

    def _gated(self, scores: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """``scores`` with every image outside the least-sure share of the pool set to NaN (never a candidate)."""
        top2 = probs.topk(2, dim=1).values
        margin = top2[:, 0] - top2[:, 1]
        share = {"auto": AUTO_GATE, "half": 0.5, "error": float((1 - top2[:, 0]).mean())}.get(self.gate)
        share = _share(self.gate) if share is None else share
        # Never fewer than the candidates the selection takes (the fraction's, a multiple of the batch,
        # the batch itself): the images outside the gate are never candidates.
        floor = max(math.ceil(max(share, self.fraction) * len(scores)), int(self.last_info.get("min_candidates", 0)))
        keep = min(len(scores), floor)
        self.last_info["gate_share"] = keep / len(scores)
        out = torch.full_like(scores, float("nan"))
        unsure = torch.argsort(margin)[:keep]
        out[unsure] = scores[unsure]
        return out

    def _select(self, head, features, labeled, unlabeled, budget, rng):
        if self.cold and len(labeled) < self.cold * head.num_classes:
            # Too few labels per class for the model's view to be trusted: typical points first.
            self.last_info.update(cold_start=True, cold=float(self.cold),
                                  cold_labels_per_class=len(labeled) / head.num_classes)
            return typical_batch(features, labeled, unlabeled, budget, rng, 64, standardizing(head),
                                 max_pool=int(self.cold_pool))
        if self.calibration == "cv":
            head = self._calibrated(head, features)
        n_cand = max(budget, math.ceil(self.fraction * len(unlabeled)), math.ceil(self.multiple * budget))
        n_cand = min(len(unlabeled), n_cand)
        self.last_info["min_candidates"] = n_cand
        t0 = time.perf_counter()
        if self.engine == "dask":
            cand = self._sharded_candidates(head, features, labeled, unlabeled, n_cand, rng)
            if "auto" in (self.diversity, self.candidates, self.weighting, self.space):
                # The sharded map ranks with the plain pool loss; a long tail changes the diversity step only.
                self._note_skew(head.predict_proba_tensor(features, unlabeled).argmax(1).cpu().numpy(), head)
                if self._resolve("auto", "tail", "") == "tail":
                    self.last_info["note"] = "engine=dask: plain pool loss and candidates on a long-tailed pool"
        else:
            scores = self.scores(head, features, labeled, unlabeled)
            self.last_info["score_seconds"] = time.perf_counter() - t0
            if self._resolve(self.candidates, "balanced", "score") == "balanced":
                order = top_k_lowest(scores, len(unlabeled), rng)
                # Images the gate left out (NaN) are never candidates, whatever a class's share.
                finite = order[torch.isfinite(scores[torch.as_tensor(order, device=scores.device)]).cpu().numpy()]
                order = finite if len(finite) >= n_cand else order
                pred = self.last_info["pseudo_labels"]
                cand = unlabeled[class_balanced_take(order, pred[order], n_cand, head.num_classes)]
            else:
                cand = unlabeled[top_k_lowest(scores, n_cand, rng)]  # best first
        self.last_info["candidates"] = cand
        t0 = time.perf_counter()
        batch = self._diverse(head, features, labeled, cand, budget, rng)
        self.last_info["diversity_seconds"] = time.perf_counter() - t0
        return batch

    def _calibrated(self, head, features):
        """``head`` tempered to its held-out temperature (unchanged where none can be fitted)."""
        temperature = cv_temperature(head, features)
        self.last_info["temperature"] = 1.0 if temperature is None else temperature
        if temperature is None:
            self.last_info["note"] = "calibration=cv: too few labels to hold out (or no labels known): temperature 1"
            return head
        return head.tempered(temperature)

    def _resolve(self, option: str, tail: str, otherwise: str) -> str:
        """An ``auto`` option's value: ``tail`` on long-tailed pseudo labels, else ``otherwise``."""
        if option != "auto":
            return option
        return tail if self.last_info.get("pseudo_label_balance", 1.0) < BALANCE_FOR_COVERAGE else otherwise

    def _note_skew(self, pred: np.ndarray, head) -> None:
        self.last_info["pseudo_labels"] = pred
        self.last_info["pseudo_label_balance"] = class_balance(pred, head.num_classes)

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
        diversity = self._resolve(self.diversity, "kcenter", "kmeans")
        if diversity == "kcenter" and self.diversity == "auto" and self.cover:
            # Coverage is for finding classes the labels have barely reached; once every class has
            # `cover` labels, representatives of the (class-balanced) candidates serve better.
            seen = np.bincount(head.predict(features, labeled), minlength=head.num_classes)
            self.last_info["fewest_labels_in_a_class"] = int(seen.min())
            if seen.min() >= self.cover:
                diversity = "kmeans"
        self.last_info["diversity"] = diversity
        if diversity == "none":
            return cand[:budget]
        if diversity == "gradient":
            return cand[gradient_kmeanspp(head, features, cand, budget, rng, first=0)]
        space = self._resolve(self.space, "standardized", "cosine")
        self.last_info["space"] = space
        standardized = space != "raw"  # kcenter and meanshift read cosine and pca as standardized
        if diversity == "kcenter":
            view = StandardizedView(features, head) if standardized else features
            return kcenter_greedy(view, cand, labeled, budget, rng, head.device)
        if diversity == "meanshift":
            view = StandardizedView(features, head) if standardized else features
            pts = rows(view, cand, head.device, torch.float32)
            return cand[mean_shift_pick(pts, budget, rng)]
        if space in ("cosine", "pca"):
            # Direction, not length: an image's feature norm varies with things other than its class.
            dims = int(self.pca_dims) if space == "pca" else features.shape[1]
            z = reduced_features(features, np.concatenate([cand, labeled]), dims, rng, standardizing(head))
            pts = z[: len(cand)].to(head.device)
            d2 = min_sq_dist(pts, z[len(cand):].to(head.device))
        else:
            # Standardised in float32 as the rows are read, never through a float64 copy of the candidates.
            pts, d2 = candidate_points(features, cand, labeled, head if standardized else None, head.device)
        if diversity == "kmeans":
            # Candidates come best first: rank weights are scale-free (the estimates' scale is not).
            rank_w = None if self.centroids == "uniform" else torch.arange(len(cand), 0, -1) / len(cand)
            representative = self._resolve(self.representative, "best", "central")
            self.last_info["representative"] = representative
            member = {"nearest": "nearest", "best": "first", "central": "central"}[representative]
            return cand[kmeans_representatives(pts, budget, rng, covered_d2=d2, weights=rank_w, member=member)]
        return cand[kmeanspp_seeding(len(cand), budget, rng, euclidean_dist_to(pts), d2=d2, first=0)]


def _share(text: str) -> float:
    """A gate given as a number (the least-sure share of the pool kept), else NaN."""
    try:
        return float(text)
    except ValueError:
        return float("nan")


def class_balance(labels: np.ndarray, num_classes: int) -> float:
    """Effective number of classes over K: exp(entropy of the label shares) / K (1 = even, 1/K = one class)."""
    counts = np.bincount(labels, minlength=num_classes)
    share = counts[counts > 0] / max(1, counts.sum())
    return float(np.exp(-(share * np.log(share)).sum()) / num_classes)


def balanced_pool_grad(head, features: np.ndarray, unlabeled: np.ndarray, probs: torch.Tensor) -> torch.Tensor:
    """g_U with every predicted class weighing the same: Σ_i w_i (p_i − e_ŷi) x̃_iᵀ / Σ_i w_i, w_i = 1/n_ŷi.

    On a long-tailed pool the plain mean is dominated by the frequent classes, so the influence term
    would favour what helps them; the test set a user cares about is rarely as skewed as the pool.
    """
    pred = probs.argmax(1)
    counts = torch.bincount(pred, minlength=head.num_classes).to(probs.dtype)
    return weighted_pool_grad(head, features, unlabeled, probs, 1.0 / counts[pred])


def entropy_pool_grad(head, features: np.ndarray, unlabeled: np.ndarray, probs: torch.Tensor) -> torch.Tensor:
    """The gradient of the pool's mean prediction entropy: Σ_i r_i x̃_iᵀ / N, r_ij = −p_ij (log p_ij + H_i)."""
    logp = probs.clamp_min(1e-30).log()
    ent = -(probs * logp).sum(1, keepdim=True)
    r = -probs * (logp + ent) / len(probs)
    return residual_grad(head, features, unlabeled, lambda pos: r[pos], probs)


def weighted_pool_grad(head, features: np.ndarray, unlabeled: np.ndarray, probs: torch.Tensor,
                       w: torch.Tensor) -> torch.Tensor:
    """g_U with pool sample i weighing w_i: Σ_i w_i (p_i − e_ŷi) x̃_iᵀ / Σ_i w_i."""
    pred = probs.argmax(1)
    w = w.to(probs.dtype) / w.sum()

    def resid(pos: slice) -> torch.Tensor:
        r = probs[pos].clone()
        r[torch.arange(len(r), device=r.device), pred[pos]] -= 1.0
        return r * w[pos, None]

    return residual_grad(head, features, unlabeled, resid, probs)


def residual_grad(head, features: np.ndarray, unlabeled: np.ndarray, resid: Callable[[slice], torch.Tensor],
                  probs: torch.Tensor) -> torch.Tensor:
    """[Σ_i r_i x̃_iᵀ | Σ_i r_i] (K × (D+1)) for per-sample residuals r_i = ``resid(rows)``, built one
    chunk of pool rows at a time so no N×D copy of the features is made."""
    grad_w = torch.zeros(head.num_classes, head.dim, dtype=probs.dtype, device=probs.device)
    grad_b = torch.zeros(head.num_classes, dtype=probs.dtype, device=probs.device)
    for pos, z in head.chunks(features, unlabeled):
        r = resid(pos)
        grad_w += (r.to(torch.float32).T @ z).to(probs.dtype)
        grad_b += r.sum(0)
    return torch.cat([grad_w, grad_b[:, None]], dim=1)


def class_balanced_take(order: np.ndarray, classes: np.ndarray, n: int, num_classes: int) -> np.ndarray:
    """The first ``n`` of ``order`` (best first) taken in equal shares per class of ``classes``; a class
    with fewer members gives its unused share to the others. Returns the taken items, best first."""
    rank = np.empty(len(order), dtype=np.int64)
    # Rank of each item within its class, in the order given.
    sort = np.lexsort((np.arange(len(order)), classes))
    cls_sorted = classes[sort]
    starts = np.searchsorted(cls_sorted, cls_sorted)
    rank[sort] = np.arange(len(order)) - starts
    sizes = np.bincount(classes, minlength=num_classes)
    # The largest per-class quota q with Σ_c min(size_c, q) ≥ n, found over the sorted sizes.
    lo, hi = 0, int(sizes.max())
    while lo < hi:
        mid = (lo + hi) // 2
        if np.minimum(sizes, mid).sum() >= n:
            hi = mid
        else:
            lo = mid + 1
    keep = np.flatnonzero(rank < lo)
    if len(keep) > n:
        # The last quota level overshoots: drop the worst-ranked items among those at rank lo − 1.
        at_edge = keep[rank[keep] == lo - 1]
        drop = at_edge[::-1][: len(keep) - n]
        keep = np.setdiff1d(keep, drop)
    return order[np.sort(keep)]


class StandardizedView:
    """Rows of ``features`` as the head sees them ((x − μ)/σ), computed on access, never copied whole."""

    def __init__(self, features, head):
        self.features, self.head = features, head
        self.shape = features.shape

    def __getitem__(self, idx):
        st = self.head.standardizer
        return ((np.asarray(self.features[idx], dtype=np.float64) - st.mean) / st.scale).astype(np.float32)
