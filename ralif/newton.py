"""One Newton step instead of the first-order influence: the pool-loss change of labeling x as k.

Adding (x, k) to the head's objective with weight 1/m moves the optimum, to second order, by

    Δθ = −(H + C ⊗ x̃x̃ᵀ / m)⁻¹ g / m,   g = r ⊗ x̃,  r = p(x) − e_k,  C = diag(p) − ppᵀ,

where H is the labeled-set Hessian. The first-order estimate drops x's own curvature C ⊗ x̃x̃ᵀ / m,
which at a few labels per class on high-dimensional features is far larger than H along x̃ (a new
direction has only λ there), so it over-states the change of an outlying x by orders of magnitude.
With U = I_K ⊗ x̃ (so g = U r) the push-through identity gives, for every class at once,

    ΔL_U(x, ·) = g_Uᵀ Δθ = −(1/m) aᵀ (I + C M / m)⁻¹ R,   a = S x̃,  M = Uᵀ H⁻¹ U,  R = p1ᵀ − I,

with S = H⁻¹ g_U the solution the first-order score already has. Only the K×K matrix M is new:
exact from H⁻¹ when H is small enough to factorise, otherwise from a Kronecker-factored H
(the mean of C over the labeled set times the labeled second-moment matrix, plus λ), which needs one
projection of each pool row onto the leading eigen-directions of that D×D matrix.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ralif.compute import SCORE_DTYPE, as_index
from ralif.head import LinearHead
from ralif.influence import DENSE_MAX, InfluenceSolution, dense_hessian

CURVATURES = ("auto", "exact", "kronecker")
# (a, p, M blocks, m) -> ΔL_U for every row and class: how a per-row curvature M reads the influence.
Correction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]
# Eigen-directions of the labeled second-moment matrix kept in the Kronecker curvature; the rest
# share their mean eigenvalue, so the trace is kept. Past the labeled-set rank the eigenvalues are
# zero anyway, so at a few hundred labels nothing is lost.
KRONECKER_RANK = 256


class ExactCurvature:
    """M = Uᵀ H⁻¹ U from the dense inverse of H (problems with K(D+1) ≤ DENSE_MAX)."""

    name = "exact"

    def __init__(self, x_l: torch.Tensor, p_l: torch.Tensor, l2: float):
        h = dense_hessian(x_l, p_l, l2)
        self.k, self.d1 = p_l.shape[1], x_l.shape[1]
        self.inv = torch.linalg.inv(h).reshape(self.k, self.d1, self.k * self.d1)
        # Each block of rows holds an n×K×K(D+1) product: about 32 MB of them at a time.
        self.rows_per_block = max(64, (32 << 20) // (8 * self.k * self.k * self.d1))

    def blocks(self, x: torch.Tensor) -> torch.Tensor:
        """n×K×K: M for each float64 row of x̃ (bias column included)."""
        w = torch.einsum("nd,kdj->nkj", x, self.inv).reshape(len(x), self.k, self.k, self.d1)
        return torch.einsum("nkce,ne->nkc", w, x)


class KroneckerCurvature:
    """M from H ≈ Ā ⊗ Σ + λI, Ā = mean_i(diag(p_i) − p_i p_iᵀ), Σ = X̃ᵀX̃ / m (labeled rows)."""

    name = "kronecker"

    def __init__(self, x_l: torch.Tensor, p_l: torch.Tensor, l2: float, rank: int = KRONECKER_RANK):
        self.rows_per_block = 1 << 30  # no product here grows past the pool chunk's own size
        m = x_l.shape[0]
        a_bar = torch.diag(p_l.mean(0)) - p_l.T @ p_l / m
        self.eig_a, self.q_a = torch.linalg.eigh(0.5 * (a_bar + a_bar.T))
        self.eig_a = self.eig_a.clamp(min=0.0)
        mu, q_x = torch.linalg.eigh(x_l.T @ x_l / m)
        mu = mu.clamp(min=0.0).flip(0)
        q_x = q_x.flip(1)
        r = min(int(rank), len(mu))
        rest = len(mu) - r
        self.mu_rest = float(mu[r:].mean()) if rest else 0.0
        self.q_top = q_x[:, :r]
        inv_top = 1.0 / (self.eig_a[:, None] * mu[None, :r] + l2)  # K×r
        inv_rest = 1.0 / (self.eig_a * self.mu_rest + l2)  # K
        # T_a(x) = Σ_j y_j² / (λ_a μ_j + λ): top directions exactly, the rest at their mean eigenvalue.
        self.weights = inv_top - inv_rest[:, None]
        self.inv_rest = inv_rest

    def blocks(self, x: torch.Tensor) -> torch.Tensor:
        # Squared projections are sums of positive terms: float32 products lose nothing that matters.
        y = x.to(torch.float32) @ self.q_top.to(torch.float32)
        t = (y * y).to(SCORE_DTYPE) @ self.weights.T + (x * x).sum(1, keepdim=True) * self.inv_rest
        return torch.einsum("ka,na,ca->nkc", self.q_a, t, self.q_a)


def curvature(head: LinearHead, features: np.ndarray, labeled: np.ndarray,
              kind: str = "auto") -> ExactCurvature | KroneckerCurvature:
    """The per-row M = Uᵀ H⁻¹ U for the head's labeled-set Hessian: exact when H is small."""
    if kind not in CURVATURES:
        raise ValueError(f"unknown curvature {kind!r}; choose from {', '.join(CURVATURES)}")
    x_l = head.design(features, as_index(labeled))
    p_l = torch.softmax(x_l @ head.weight.T, dim=1)
    if kind == "auto":
        kind = "exact" if head.num_classes * (head.dim + 1) <= DENSE_MAX else "kronecker"
    if kind == "exact":
        return ExactCurvature(x_l, p_l, head.l2)
    return KroneckerCurvature(x_l, p_l, head.l2)


def newton_correction(a: torch.Tensor, p: torch.Tensor, m_blocks: torch.Tensor, m: int) -> torch.Tensor:
    """ΔL_U(x, k) for every row and class: −(1/m) aᵀ (I + C M / m)⁻¹ (p − e_k), rows batched."""
    k = p.shape[1]
    eye = torch.eye(k, dtype=p.dtype, device=p.device)
    c = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    lhs = eye + torch.bmm(c, m_blocks) / m
    rhs = p[:, :, None] - eye  # column k is p − e_k
    v = torch.linalg.solve(lhs, rhs)
    return -torch.einsum("nc,nck->nk", a, v) / m


def relative_correction(a: torch.Tensor, p: torch.Tensor, m_blocks: torch.Tensor, m: int) -> torch.Tensor:
    """The first-order ΔL_U(x, k) over √ of x's self-influence gᵀH⁻¹g / m = (p − e_k)ᵀ M (p − e_k) / m
    (RelatIF, Barshan et al. 2020: a sample whose gradient moves the head a lot anyway weighs less)."""
    k = p.shape[1]
    eye = torch.eye(k, dtype=p.dtype, device=p.device)
    r = p[:, :, None] - eye  # n×K×K, column k is p − e_k
    first = -torch.einsum("nc,nck->nk", a, r) / m
    self_inf = torch.einsum("nck,ncd,ndk->nk", r, m_blocks, r) / m
    return first / self_inf.clamp_min(1e-300).sqrt()


def newton_delta_pool_loss(
    head: LinearHead, features: np.ndarray, labeled: np.ndarray, idx: np.ndarray, probs: torch.Tensor,
    sol: InfluenceSolution, *, kind: str = "auto", correction: Correction | None = None,
) -> tuple[torch.Tensor, str]:
    """The one-Newton-step ΔL_U for every row of ``features[idx]`` (|idx|×K float64) and the
    curvature used ("exact" or "kronecker"); ``probs`` are the head's probabilities, aligned with idx.
    ``correction`` replaces the Newton step by another reading of the same per-row K×K curvature
    (``relative_correction``)."""
    curv = curvature(head, features, labeled, kind)
    idx = as_index(idx)
    out = torch.empty(len(idx), head.num_classes, dtype=SCORE_DTYPE, device=head.device)
    s = sol.s.to(SCORE_DTYPE)
    step = curv.rows_per_block
    for pos, z in head.chunks(features, idx):
        for lo in range(0, z.shape[0], step):
            zz = z[lo:lo + step].to(SCORE_DTYPE)
            x = torch.cat([zz, torch.ones(len(zz), 1, dtype=SCORE_DTYPE, device=zz.device)], dim=1)
            rows_at = slice(pos.start + lo, pos.start + lo + len(zz))
            out[rows_at] = (correction or newton_correction)(x @ s.T, probs[rows_at], curv.blocks(x), sol.m)
    return out, curv.name
