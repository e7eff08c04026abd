"""One-Newton-step influence (ralif.newton) against a brute-force Newton step on a dense Hessian."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ralif.head import Standardizer, fit_head
from ralif.influence import delta_pool_loss, dense_hessian, pool_state, solve_influence
from ralif.newton import (
    KroneckerCurvature,
    curvature,
    newton_correction,
    newton_delta_pool_loss,
    relative_correction,
)
from ralif.strategies import make_strategy


def problem(n=80, d=6, k=3, m=15, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 2.0, (k, d))
    y = rng.integers(0, k, n)
    x = (centers[y] + rng.normal(0, 1.5, (n, d))).astype(np.float32)
    lab = np.sort(rng.choice(n, m, replace=False))
    lab = np.unique(np.concatenate([lab, [np.flatnonzero(y == c)[0] for c in range(k)]]))
    unl = np.setdiff1d(np.arange(n), lab)
    head = fit_head(x, lab, y[lab], k, standardizer=Standardizer.fit(x), l2=0.05, device="cpu")
    return x, y, lab, unl, head


def brute_force(head, x, lab, unl, hess):
    """ΔL_U(z, k) = g_Uᵀ Δθ with Δθ = −(H + C⊗x̃x̃ᵀ/m)⁻¹ (r⊗x̃)/m, solved densely per (z, k)."""
    state = pool_state(head, x, unl)
    g_u = state.grad.reshape(-1)
    m = len(lab)
    xs = head.design(x, unl)
    out = torch.empty(len(unl), head.num_classes, dtype=torch.float64)
    for i in range(len(unl)):
        p = state.probs[i]
        c = torch.diag(p) - torch.outer(p, p)
        h = hess + torch.kron(c, torch.outer(xs[i], xs[i])) / m
        for k in range(head.num_classes):
            r = p.clone()
            r[k] -= 1
            out[i, k] = g_u @ -torch.linalg.solve(h, torch.kron(r, xs[i]) / m)
    return out


def test_exact_newton_step_matches_brute_force():
    x, _, lab, unl, head = problem()
    state = pool_state(head, x, unl)
    sol = solve_influence(head, x, lab, state.grad, method="cholesky")
    got, kind = newton_delta_pool_loss(head, x, lab, unl, state.probs, sol, kind="exact")
    assert kind == "exact"
    x_l = head.design(x, lab)
    hess = dense_hessian(x_l, torch.softmax(x_l @ head.weight.T, 1), head.l2)
    want = brute_force(head, x, lab, unl, hess)
    # The pool rows arrive standardised in float32 (as in every streaming pass); H and the solve are float64.
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))


def test_kronecker_blocks_match_the_kronecker_hessian():
    x, _, lab, unl, head = problem(d=8, k=4)
    x_l = head.design(x, lab)
    p_l = torch.softmax(x_l @ head.weight.T, 1)
    m = len(lab)
    a_bar = torch.diag(p_l.mean(0)) - p_l.T @ p_l / m
    h = torch.kron(a_bar, x_l.T @ x_l / m) + head.l2 * torch.eye(a_bar.shape[0] * x_l.shape[1], dtype=torch.float64)
    hinv = torch.linalg.inv(h)
    xs = head.design(x, unl)
    k = head.num_classes
    eye = torch.eye(k, dtype=torch.float64)
    want = torch.stack([torch.kron(eye, v[:, None]).T @ hinv @ torch.kron(eye, v[:, None]) for v in xs])
    # Every eigen-direction kept: exact algebra; fewer: the rest at their mean eigenvalue.
    full = KroneckerCurvature(x_l, p_l, head.l2, rank=x_l.shape[1]).blocks(xs)
    torch.testing.assert_close(full, want, rtol=1e-4, atol=1e-6)
    low = KroneckerCurvature(x_l, p_l, head.l2, rank=3).blocks(xs)
    assert low.shape == want.shape and torch.isfinite(low).all()
    assert not torch.allclose(low, want, rtol=1e-4)


def test_without_own_curvature_the_newton_step_is_the_first_order_influence():
    x, _, lab, unl, head = problem()
    state = pool_state(head, x, unl)
    sol = solve_influence(head, x, lab, state.grad)
    first = delta_pool_loss(head, x, unl, state.probs, sol)
    xs = head.design(x, unl)
    k = head.num_classes
    zero = torch.zeros(len(unl), k, k, dtype=torch.float64)
    torch.testing.assert_close(newton_correction(xs @ sol.s.T, state.probs, zero, sol.m), first,
                               rtol=1e-4, atol=1e-6 * float(first.abs().max()))
    newton, _ = newton_delta_pool_loss(head, x, lab, unl, state.probs, sol)
    assert not torch.allclose(newton, first, rtol=1e-2)


def test_unknown_curvature_and_dask_combination_are_refused():
    x, _, lab, _, head = problem()
    with pytest.raises(ValueError, match="curvature"):
        curvature(head, x, lab, "bogus")
    with pytest.raises(ValueError, match="step"):
        make_strategy("ralif(step=second)")
    with pytest.raises(ValueError, match="step=first"):
        make_strategy("ralif(step=newton,engine=dask)")


def test_strategy_reports_the_curvature_it_used():
    x, _, lab, unl, head = problem(n=200)
    strat = make_strategy("ralif(step=newton,cold=0)")
    batch = strat.select(head, x, lab, unl, 10, np.random.default_rng(0))
    assert len(set(batch.tolist())) == 10 and set(batch.tolist()) <= set(unl.tolist())
    assert strat.last_info["curvature"] == "exact"
    assert "curvature=" in strat.spec() and "curvature=" not in make_strategy("ralif").spec()


def test_relative_influence_is_the_first_order_estimate_over_the_root_self_influence():
    x, _, lab, unl, head = problem()
    state = pool_state(head, x, unl)
    sol = solve_influence(head, x, lab, state.grad, method="cholesky")
    got, _kind = newton_delta_pool_loss(head, x, lab, unl, state.probs, sol, kind="exact",
                                       correction=relative_correction)
    x_l = head.design(x, lab)
    hinv = torch.linalg.inv(dense_hessian(x_l, torch.softmax(x_l @ head.weight.T, 1), head.l2))
    g_u, m, xs = state.grad.reshape(-1), len(lab), head.design(x, unl)
    want = torch.empty_like(got)
    for i in range(len(unl)):
        for k in range(head.num_classes):
            r = state.probs[i].clone()
            r[k] -= 1
            g = torch.kron(r, xs[i])
            want[i, k] = -(g_u @ hinv @ g / m) / torch.sqrt(g @ hinv @ g / m)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6 * float(want.abs().max()))
    # The same ranking signal with the sample's own reach divided out: not the first-order scores.
    first = delta_pool_loss(head, x, unl, state.probs, sol)
    assert not torch.allclose(got / got.abs().max(), first / first.abs().max(), rtol=1e-2)


def test_relative_step_and_gradient_diversity_pick_distinct_candidates():
    x, _, lab, unl, head = problem(n=200)
    for spec in ("ralif(step=relative,cold=0)", "ralif(diversity=gradient,cold=0)"):
        strat = make_strategy(spec)
        batch = strat.select(head, x, lab, unl, 10, np.random.default_rng(0))
        cand = strat.last_info["candidates"]
        assert len(set(batch.tolist())) == 10 and set(batch.tolist()) <= set(cand.tolist())
    # The gradient step's first seed is the best-scored candidate.
    assert batch[0] == cand[0] and strat.last_info["diversity"] == "gradient"
