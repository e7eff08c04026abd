"""Closed-form influence of labeling one pool sample on the pool loss, for a linear softmax head.

For head W ∈ R^{K×(D+1)}, x̃ = [φ(x); 1] (standardised), p = softmax(W x̃), m = |L|:
  ∇_W ℓ(x, k) = (p − e_k) x̃ᵀ
  H[V]        = (1/m) Bᵀ X̃_L + λV,  A = X̃_L Vᵀ,  B = P_L∘A − P_L∘rowsum(P_L∘A)
  g_U         = (P_U − Ŷ_U)ᵀ X̃_U / |U|             (pseudo labels Ŷ_U = argmax)
  s           = H⁻¹ g_U                              (Cholesky when small, else preconditioned CG)
  ΔL_U(x, k)  = −(1/m)(p(x)ᵀ a(x) − a_k(x)),  a(x) = S x̃   (S = s as K×(D+1))
All N×K scores come from one matrix product per chunk: no per-sample backward pass, no N×K×D tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ralif.compute import SCORE_DTYPE, as_index
from ralif.head import LinearHead
from ralif.streaming import pool_stream

# K(D+1) up to this size: build H densely and factorise it (exact, and cheaper than CG there).
DENSE_MAX = 2048


def hvp(v: torch.Tensor, x_l: torch.Tensor, p_l: torch.Tensor, l2: float) -> torch.Tensor:
    """Hessian-vector product H[V] for V of shape (..., K, D+1): two matrix products per vector."""
    m = x_l.shape[0]
    a = torch.matmul(v, x_l.T).transpose(-1, -2)  # (..., m, K)
    pa = p_l * a
    b = pa - p_l * pa.sum(-1, keepdim=True)
    return torch.matmul(b.transpose(-1, -2), x_l) / m + l2 * v


def dense_hessian(x_l: torch.Tensor, p_l: torch.Tensor, l2: float) -> torch.Tensor:
    """H as an n×n matrix, n = K(D+1) (small problems only):
    H = (1/m)[blockdiag_k(X̃ᵀ diag(P_k) X̃) − GᵀG] + λI, row i of G being p_i ⊗ x̃_i.

    G is formed for a few labeled rows at a time, so memory stays at a bounded multiple of n².
    """
    m, k = p_l.shape
    d1 = x_l.shape[1]
    n = k * d1
    h = torch.zeros(n, n, dtype=x_l.dtype, device=x_l.device)
    step = max(1, 2**22 // n)
    for start in range(0, m, step):
        x, p = x_l[start : start + step], p_l[start : start + step]
        g = (p[:, :, None] * x[:, None, :]).reshape(len(x), n)
        h -= g.T @ g
        for c in range(k):  # K blocks on the diagonal: a loop over classes, not samples
            blk = slice(c * d1, (c + 1) * d1)
            h[blk, blk] += (x * p[:, c : c + 1]).T @ x
    h /= m
    h.diagonal().add_(l2)
    return 0.5 * (h + h.T)


def conjugate_gradient(
    apply_h, b: torch.Tensor, precond: torch.Tensor, rtol: float = 1e-10, max_iter: int = 1000
) -> tuple[torch.Tensor, int]:
    """Solve H x = b with Jacobi-preconditioned CG; returns (x, iterations)."""
    x = torch.zeros_like(b)
    r = b.clone()
    z = r / precond
    p = z.clone()
    rz = (r * z).sum()
    bnorm = b.norm()
    if bnorm == 0:
        return x, 0
    for it in range(1, max_iter + 1):
        hp = apply_h(p)
        alpha = rz / (p * hp).sum()
        x = x + alpha * p
        r = r - alpha * hp
        if r.norm() <= rtol * bnorm:
            return x, it
        z = r / precond
        rz_new = (r * z).sum()
        p = z + (rz_new / rz) * p
        rz = rz_new
    return x, max_iter


@dataclass
class PoolState:
    """What one pass over the unlabeled pool yields: probabilities, pseudo-label loss and g_U."""

    probs: torch.Tensor  # |U|×K, float64
    pool_loss: float  # mean pseudo-label cross-entropy L_U
    grad: torch.Tensor  # K×(D+1)


def pool_state(head: LinearHead, features: np.ndarray, unlabeled: np.ndarray) -> PoolState:
    """Probabilities, L_U and g_U in one streaming pass over ``features[unlabeled]``.

    Per block: one float32 product for the logits and one for Σ r xᵀ (r = p − e_ŷ) while the block
    is still in cache, both over the raw rows (the standardisation is folded into the weights and
    into g_U afterwards); every sum across blocks is float64.
    """
    unlabeled = as_index(unlabeled)
    n = len(unlabeled)
    if n == 0:
        raise ValueError("the unlabeled pool is empty")
    k, d = head.num_classes, head.dim
    stream = pool_stream(head, features, unlabeled)
    w32, const = stream.fold(head.weight)
    probs = torch.empty(n, k, dtype=SCORE_DTYPE, device=head.device)
    raw = torch.zeros(k, d, dtype=SCORE_DTYPE, device=head.device)
    rsum = torch.zeros(k, dtype=SCORE_DTYPE, device=head.device)
    loss = torch.zeros((), dtype=SCORE_DTYPE, device=head.device)
    for blk in stream.blocks():
        logits = (blk.rows @ w32).to(SCORE_DTYPE) + const
        if blk.keep is not None:
            logits = logits[blk.keep]
        logp = torch.log_softmax(logits, dim=1)
        p = logp.exp()
        probs[blk.pos] = p
        top = p.argmax(1)
        loss -= logp.gather(1, top[:, None]).sum()
        resid = p.clone()
        resid[torch.arange(len(p), device=p.device), top] -= 1.0
        rsum += resid.sum(0)
        r32 = resid.to(torch.float32)
        if blk.keep is not None:
            # Rows of the block that are not in the pool contribute nothing to g_U.
            r32 = torch.zeros(blk.rows.shape[0], k, dtype=torch.float32, device=p.device).index_copy_(
                0, blk.keep, r32)
        raw += (r32.T @ blk.rows).to(SCORE_DTYPE)
    grad = stream.unfold_grad(raw, rsum) / n
    return PoolState(probs=probs, pool_loss=float(loss / n), grad=grad)


@dataclass
class InfluenceSolution:
    s: torch.Tensor  # K×(D+1): H⁻¹ g_U
    m: int
    method: str
    iterations: int


def solve_influence(
    head: LinearHead, features: np.ndarray, labeled: np.ndarray, grad: torch.Tensor,
    *, method: str = "auto", rtol: float = 1e-10, max_iter: int = 1000, l2: float | None = None,
) -> InfluenceSolution:
    """s = H⁻¹ g_U with H the labeled-set Hessian of the head's training objective (its L2 term
    ``l2`` instead of the head's own where given: a damped Hessian)."""
    labeled = as_index(labeled)
    if len(labeled) == 0:
        raise ValueError("influence needs at least one labeled sample (the Hessian is over the labeled set)")
    x_l = head.design(features, labeled)
    p_l = torch.softmax(x_l @ head.weight.T, dim=1)
    k, d1 = head.weight.shape
    lam = head.l2 if l2 is None else float(l2)
    if method == "auto":
        method = "cholesky" if k * d1 <= DENSE_MAX else "cg"
    if method == "cholesky":
        h = dense_hessian(x_l, p_l, lam)
        chol, info = torch.linalg.cholesky_ex(h)
        if int(info) == 0:
            s = torch.cholesky_solve(grad.reshape(-1, 1), chol).reshape(k, d1)
            return InfluenceSolution(s=s, m=len(labeled), method="cholesky", iterations=0)
        method = "cg"  # numerically indefinite: fall back to the iterative solver
    if method != "cg":
        raise ValueError(f"unknown solver {method!r}; use auto, cholesky or cg")
    # Jacobi preconditioner: diag(H) = (1/m) Σ_i p_ik(1 − p_ik) x̃_ia² + λ, one matrix product.
    diag = (p_l * (1 - p_l)).T @ (x_l * x_l) / len(labeled) + lam
    s, its = conjugate_gradient(lambda v: hvp(v, x_l, p_l, lam), grad, diag, rtol=rtol, max_iter=max_iter)
    return InfluenceSolution(s=s, m=len(labeled), method="cg", iterations=its)


def delta_pool_loss(
    head: LinearHead, features: np.ndarray, idx: np.ndarray, probs: torch.Tensor, sol: InfluenceSolution
) -> torch.Tensor:
    """ΔL_U(x, k) for every row of ``features[idx]`` and every class k: an |idx|×K float64 tensor.

    The second streaming pass: one float32 product per block with S folded into raw-row space; the
    probabilities come from the first pass (``probs``, aligned with ``idx``), not recomputed.
    """
    stream = pool_stream(head, features, idx)
    s32, const = stream.fold(sol.s)
    out = torch.empty(len(stream), head.num_classes, dtype=SCORE_DTYPE, device=head.device)
    for blk in stream.blocks():
        a = (blk.rows @ s32).to(SCORE_DTYPE) + const
        if blk.keep is not None:
            a = a[blk.keep]
        p = probs[blk.pos]
        out[blk.pos] = -((p * a).sum(1, keepdim=True) - a) / sol.m
    return out
