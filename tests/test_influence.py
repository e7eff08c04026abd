"""The influence engine against autograd, dense solves and brute-force retraining; scoring readings."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from sklearn.datasets import load_digits

import ralif.head
import ralif.influence
from ralif.head import LinearHead, Standardizer, fit_head
from ralif.influence import (
    conjugate_gradient,
    delta_pool_loss,
    dense_hessian,
    hvp,
    pool_state,
    solve_influence,
)
from ralif.scoring import default_tau, ralif_scores

DT = torch.float64


def blobs(n, d, k, seed, spread=2.5):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=spread, size=(k, d))
    y = rng.integers(k, size=n)
    return (centers[y] + rng.normal(size=(n, d))).astype(np.float32), y


@pytest.fixture(scope="module")
def small():
    """60 labeled samples, D=5, K=3, and a pool of 140."""
    x, y = blobs(200, 5, 3, seed=1)
    labeled, unlabeled = np.arange(60), np.arange(60, 200)
    head = fit_head(x, labeled, y[labeled], 3, l2=1e-2, device="cpu")
    return x, y, labeled, unlabeled, head


def objective(w_flat, x_l, y_l, k, l2):
    w = w_flat.reshape(k, -1)
    return F.cross_entropy(x_l @ w.T, y_l) + 0.5 * l2 * (w * w).sum()


# -- Hessian ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("at", ["optimum", "random"])
def test_hvp_and_dense_hessian_match_autograd(small, at):
    x, y, labeled, _, head = small
    x_l = head.design(x, labeled)
    y_l = torch.as_tensor(y[labeled])
    k, d1 = head.weight.shape
    w = head.weight if at == "optimum" else torch.randn(k, d1, dtype=DT, generator=torch.Generator().manual_seed(0))
    l2 = 0.03
    h_ref = torch.autograd.functional.hessian(lambda v: objective(v, x_l, y_l, k, l2), w.reshape(-1))
    p_l = torch.softmax(x_l @ w.T, dim=1)

    v = torch.randn(4, k, d1, dtype=DT, generator=torch.Generator().manual_seed(1))
    got = hvp(v, x_l, p_l, l2)
    assert got.shape == v.shape
    want = (h_ref @ v.reshape(4, -1).T).T.reshape(4, k, d1)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)

    h = dense_hessian(x_l, p_l, l2)
    torch.testing.assert_close(h, h_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(h, h.T, rtol=0, atol=0)
    # λ bounds the spectrum from below: the solve the engine relies on is well posed.
    assert torch.linalg.eigvalsh(h).min() >= l2 * (1 - 1e-9)


# -- solvers ---------------------------------------------------------------------------------------


def test_conjugate_gradient_matches_dense_solve(small):
    x, _, labeled, _, head = small
    x_l = head.design(x, labeled)
    p_l = torch.softmax(x_l @ head.weight.T, dim=1)
    h = dense_hessian(x_l, p_l, 1e-2)
    b = torch.randn(h.shape[0], dtype=DT, generator=torch.Generator().manual_seed(2))
    want = torch.linalg.solve(h, b)
    got, its = conjugate_gradient(lambda v: h @ v, b, torch.diagonal(h).clone(), rtol=1e-12)
    assert 0 < its <= h.shape[0] + 5
    torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-10)
    # Through the matrix-free HVP on K×(D+1)-shaped vectors, as the engine uses it.
    k, d1 = head.weight.shape
    got2, _ = conjugate_gradient(
        lambda v: hvp(v, x_l, p_l, 1e-2), b.reshape(k, d1), torch.ones(k, d1, dtype=DT), rtol=1e-12
    )
    torch.testing.assert_close(got2.reshape(-1), want, rtol=1e-8, atol=1e-10)
    zero, its0 = conjugate_gradient(lambda v: h @ v, torch.zeros_like(b), torch.ones_like(b))
    assert its0 == 0 and not zero.any()


def test_solve_influence_cg_agrees_with_cholesky(small):
    x, _, labeled, unlabeled, head = small
    state = pool_state(head, x, unlabeled)
    chol = solve_influence(head, x, labeled, state.grad, method="cholesky")
    cg = solve_influence(head, x, labeled, state.grad, method="cg")
    auto = solve_influence(head, x, labeled, state.grad)
    assert (chol.method, cg.method, auto.method) == ("cholesky", "cg", "cholesky")
    assert cg.iterations > 0 and chol.m == cg.m == len(labeled)
    torch.testing.assert_close(cg.s, chol.s, rtol=1e-6, atol=1e-9 * chol.s.abs().max().item())
    # s really solves H s = g_U.
    x_l = head.design(x, labeled)
    p_l = torch.softmax(x_l @ head.weight.T, dim=1)
    torch.testing.assert_close(hvp(chol.s, x_l, p_l, head.l2), state.grad, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="unknown solver"):
        solve_influence(head, x, labeled, state.grad, method="lu")
    with pytest.raises(ValueError, match="at least one labeled"):
        solve_influence(head, x, np.array([], dtype=np.int64), state.grad)


def test_damped_solve_uses_the_given_l2_term(small):
    x, _, labeled, unlabeled, head = small
    state = pool_state(head, x, unlabeled)
    x_l = head.design(x, labeled)
    p_l = torch.softmax(x_l @ head.weight.T, dim=1)
    for method in ("cholesky", "cg"):
        sol = solve_influence(head, x, labeled, state.grad, method=method, l2=10 * head.l2)
        torch.testing.assert_close(hvp(sol.s, x_l, p_l, 10 * head.l2), state.grad, rtol=1e-7, atol=1e-10)
    plain = solve_influence(head, x, labeled, state.grad)
    # More damping shrinks the solution: the smallest eigenvalues grow most.
    assert sol.s.norm() < plain.s.norm()


def test_entropy_target_is_the_gradient_of_the_pool_entropy(small):
    from ralif.strategies.ralif import entropy_pool_grad

    x, _, _, unlabeled, head = small
    probs = pool_state(head, x, unlabeled).probs
    x_u = head.design(x, unlabeled)
    w = head.weight.clone().requires_grad_(True)
    p = torch.softmax(x_u @ w.T, 1)
    (grad,) = torch.autograd.grad(-(p * p.log()).sum(1).mean(), w)
    torch.testing.assert_close(entropy_pool_grad(head, x, unlabeled, probs), grad, rtol=1e-4,
                               atol=1e-6 * grad.abs().max().item())


def test_auto_switches_to_cg_above_dense_limit():
    # K(D+1) = 50·41 = 2050 > DENSE_MAX: CG, and still the same answer as a dense solve.
    assert ralif.influence.DENSE_MAX < 50 * 41
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 40))
    head = LinearHead(torch.as_tensor(rng.normal(scale=0.1, size=(50, 41))), Standardizer.identity(40), 0.1, "cpu")
    g = torch.as_tensor(rng.normal(size=(50, 41)))
    labeled = np.arange(100)
    auto = solve_influence(head, x, labeled, g)
    assert auto.method == "cg" and auto.iterations > 0
    dense = solve_influence(head, x, labeled, g, method="cholesky")
    assert dense.method == "cholesky"
    torch.testing.assert_close(auto.s, dense.s, rtol=1e-6, atol=1e-9)


# -- pool pass and ΔL_U ----------------------------------------------------------------------------


def test_pool_state_matches_autograd(small):
    x, _, _, unlabeled, head = small
    state = pool_state(head, x, unlabeled)
    x_u = head.design(x, unlabeled)
    pseudo = torch.softmax(x_u @ head.weight.T, 1).argmax(1)
    w = head.weight.clone().requires_grad_(True)
    loss = F.cross_entropy(x_u @ w.T, pseudo)
    (grad,) = torch.autograd.grad(loss, w)
    # Pool-sized products run in float32 on standardised rows, so agreement is to float32 round-off.
    assert state.pool_loss == pytest.approx(loss.item(), rel=1e-5)
    torch.testing.assert_close(state.grad, grad, rtol=1e-4, atol=1e-6 * grad.abs().max().item())
    torch.testing.assert_close(state.probs, torch.softmax(x_u @ head.weight.T, 1), rtol=1e-4, atol=1e-7)
    assert torch.equal(state.probs.argmax(1), pseudo)
    with pytest.raises(ValueError, match="empty"):
        pool_state(head, x, np.array([], dtype=np.int64))


def test_delta_matches_explicit_formula(small):
    x, _, labeled, unlabeled, head = small
    state = pool_state(head, x, unlabeled)
    sol = solve_influence(head, x, labeled, state.grad)
    delta = delta_pool_loss(head, x, unlabeled, state.probs, sol)
    x_u = head.design(x, unlabeled)
    k = head.num_classes
    # ΔL_U(x, k) = −(1/m)⟨s, (p(x) − e_k) x̃ᵀ⟩, one (x, k) at a time.
    want = torch.empty_like(delta)
    for i in range(len(unlabeled)):
        for c in range(k):
            grad_l = torch.outer(state.probs[i] - F.one_hot(torch.tensor(c), k).to(DT), x_u[i])
            want[i, c] = -(sol.s * grad_l).sum() / sol.m
    scale = want.abs().max().item()
    torch.testing.assert_close(delta, want, rtol=1e-4, atol=1e-5 * scale)


def test_expectation_over_classes_is_zero(small):
    x, _, labeled, unlabeled, head = small
    state = pool_state(head, x, unlabeled)
    sol = solve_influence(head, x, labeled, state.grad)
    delta = delta_pool_loss(head, x, unlabeled, state.probs, sol)
    scale = delta.abs().max().item()
    assert scale > 0
    # Σ_k p_k (p − e_k) = 0, so Σ_k p_k ΔL_U(x, k) = 0 for every x: expectation-IL carries no influence.
    assert (state.probs * delta).sum(1).abs().max().item() <= 1e-12 * scale
    scores = ralif_scores(state.probs, delta, state.pool_loss, len(unlabeled), rule="expectation")
    assert scores.abs().max().item() <= 1e-12 * scale


def _force_chunks(monkeypatch, size):
    for mod in (ralif.head, ralif.influence):
        if hasattr(mod, "chunk_size"):
            monkeypatch.setattr(mod, "chunk_size", lambda *a, **k: size)


def test_chunking_does_not_change_results(small, monkeypatch):
    x, _, labeled, unlabeled, head = small
    ref_state = pool_state(head, x, unlabeled)
    sol = solve_influence(head, x, labeled, ref_state.grad)
    ref_delta = delta_pool_loss(head, x, unlabeled, ref_state.probs, sol)

    _force_chunks(monkeypatch, 7)
    assert len(list(head.chunks(x, unlabeled))) == math.ceil(len(unlabeled) / 7)  # 140 rows → 20 chunks
    state = pool_state(head, x, unlabeled)
    delta = delta_pool_loss(head, x, unlabeled, state.probs, sol)
    torch.testing.assert_close(state.probs, ref_state.probs, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(state.grad, ref_state.grad, rtol=1e-5, atol=1e-7)
    assert state.pool_loss == pytest.approx(ref_state.pool_loss, rel=1e-6)
    torch.testing.assert_close(delta, ref_delta, rtol=1e-4, atol=1e-6 * ref_delta.abs().max().item())
    # An index order that is not sorted and not a multiple of the chunk size.
    pos = np.arange(len(unlabeled))[::-3].copy()
    part = delta_pool_loss(head, x, unlabeled[pos], ref_state.probs[pos], sol)
    torch.testing.assert_close(part, ref_delta[pos], rtol=1e-4, atol=1e-6 * ref_delta.abs().max().item())


# -- brute force on a real problem ------------------------------------------------------------------
#
# The head minimises F(W) = (1/m) Σ_L ℓ_i(W) + (λ/2)‖W‖², optimum W*, so (1/m) Σ_L ∇ℓ_i(W*) = −λW*.
# Influence functions up-weight z = (x, k) by ε: dW/dε = −H⁻¹∇ℓ_z, dL_U/dε = −⟨g_U, H⁻¹∇ℓ_z⟩ = −⟨s, ∇ℓ_z⟩,
# and delta_pool_loss is this derivative times ε = 1/m.
# Retraining on L ∪ {z} minimises F'(W) = (1/(m+1)) (Σ_L ℓ_i + ℓ_z) + (λ/2)‖W‖², whose gradient at W* is
# (m/(m+1))(−λW*) + ∇ℓ_z/(m+1) + λW* = (∇ℓ_z + λW*)/(m+1). One Newton step from W* therefore predicts
#   ΔL_U ≈ −⟨s, ∇ℓ_z + λW*⟩/(m+1) = (m/(m+1))·delta_pool_loss(x, k) − λ⟨s, W*⟩/(m+1):
# a positive rescaling plus an offset shared by every (x, k) (the old samples' weight drops from 1/m
# to 1/(m+1)). Ranks are unaffected; magnitudes are compared after this correction.

L2_DIGITS = 1e-2


def _weighted_objective(w, x, t, c):
    return float((c * F.cross_entropy(x @ w.T, t, reduction="none")).sum() + 0.5 * L2_DIGITS * (w * w).sum())


def _weighted_grad(w, x, t, c):
    r = torch.softmax(x @ w.T, 1)
    r[torch.arange(len(t)), t] -= 1.0
    return (c[:, None] * r).T @ x + L2_DIGITS * w


def _hessian_cholesky(w, x, c):
    k, d1 = w.shape
    p = torch.softmax(x @ w.T, 1)
    m = (torch.diag_embed(p) - p[:, :, None] * p[:, None, :]) * c[:, None, None]
    a = (m.reshape(len(x), k * k)[:, :, None] * x[:, None, :]).reshape(len(x), -1)
    h = (a.T @ x).reshape(k, k, d1, d1).permute(0, 2, 1, 3).reshape(k * d1, k * d1)
    return torch.linalg.cholesky(h + L2_DIGITS * torch.eye(k * d1, dtype=x.dtype))


def _retrain(x, t, c, w, chol):
    """Minimise Σ c_i ℓ_i + λ/2‖W‖² from w (Newton with line search; the Hessian is refreshed only
    when a step gains less than 2×), to a max-abs gradient below 1e-13. Independent of ralif."""
    f, g = _weighted_objective(w, x, t, c), _weighted_grad(w, x, t, c)
    for _ in range(300):
        gmax = g.abs().max().item()
        if gmax < 1e-13:
            return w
        step = torch.cholesky_solve(g.reshape(-1, 1), chol).reshape(w.shape)
        dec, a = float((g * step).sum()), 1.0
        while dec > 1e-12 and _weighted_objective(w - a * step, x, t, c) > f - 1e-4 * a * dec:
            a *= 0.5
        w = w - a * step
        f, g = _weighted_objective(w, x, t, c), _weighted_grad(w, x, t, c)
        if g.abs().max().item() > 0.5 * gmax:
            chol = _hessian_cholesky(w, x, c)
    raise AssertionError("reference retraining did not converge")


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(x))
    labeled, unlabeled = perm[:600], perm[600:]
    head = fit_head(x, labeled, y[labeled], 10, l2=L2_DIGITS, device="cpu", tol=1e-10, max_iter=5000)
    state = pool_state(head, x, unlabeled)
    sol = solve_influence(head, x, labeled, state.grad)
    x_l, x_u = head.design(x, labeled), head.design(x, unlabeled)
    y_l = torch.as_tensor(y[labeled])
    m = len(labeled)
    c_l = torch.full((m,), 1.0 / m, dtype=DT)
    chol = _hessian_cholesky(head.weight, x_l, c_l)
    w0 = _retrain(x_l, y_l, c_l, head.weight, chol)  # the exact optimum on L: the baseline
    pseudo = torch.softmax(x_u @ head.weight.T, 1).argmax(1)  # fixed from here on
    assert torch.equal(pseudo, state.probs.argmax(1))

    def pool_loss(w):
        return float(-torch.log_softmax(x_u @ w.T, 1).gather(1, pseudo[:, None]).mean())

    # 20 pool points, each with its pseudo label and with one other class (cycling over the others).
    picks = rng.choice(len(unlabeled), 20, replace=False)
    pairs = []
    for j, q in enumerate(picks):
        others = [c for c in range(10) if c != int(pseudo[q])]
        pairs += [(int(q), int(pseudo[q])), (int(q), others[j % 9])]
    pos = np.array([q for q, _ in pairs])
    cls = np.array([c for _, c in pairs])
    delta = delta_pool_loss(head, x, unlabeled[pos], state.probs[pos], sol)[np.arange(len(pairs)), cls].numpy()
    return {
        "head": head, "sol": sol, "x_l": x_l, "x_u": x_u, "y_l": y_l, "m": m, "c_l": c_l, "chol": chol,
        "w0": w0, "pool_loss": pool_loss, "base": pool_loss(w0), "pairs": pairs, "delta": delta,
    }


def test_delta_ranks_like_brute_force_retraining(digits):
    d = digits
    m = d["m"]
    c_new = torch.full((m + 1,), 1.0 / (m + 1), dtype=DT)
    true = []
    for q, k in d["pairs"]:
        x_new = torch.cat([d["x_l"], d["x_u"][q : q + 1]])
        t_new = torch.cat([d["y_l"], torch.tensor([k])])
        w = _retrain(x_new, t_new, c_new, d["w0"], d["chol"])
        true.append(d["pool_loss"](w) - d["base"])
    true = np.array(true)
    delta = d["delta"]
    assert np.ptp(true) > 1e-4  # the pairs span a real range of effects

    rho = spearmanr(true, delta).statistic
    assert rho >= 0.9, rho
    offset = -L2_DIGITS * float((d["sol"].s * d["head"].weight).sum()) / (m + 1)
    pred = m / (m + 1) * delta + offset
    slope = float(true @ pred / (pred @ pred))
    assert 0.5 <= slope <= 2.0, slope
    assert np.corrcoef(true, pred)[0, 1] >= 0.9


def test_delta_is_the_exact_derivative(digits):
    """Up-weighting z by a tiny ε: the pool-loss change over ε·m converges to delta_pool_loss."""
    d = digits
    m = d["m"]
    eps = 1e-3 / m
    c_eps = torch.cat([d["c_l"], torch.tensor([eps], dtype=DT)])
    for i in range(6):
        q, k = d["pairs"][i]
        x_new = torch.cat([d["x_l"], d["x_u"][q : q + 1]])
        t_new = torch.cat([d["y_l"], torch.tensor([k])])
        w = _retrain(x_new, t_new, c_eps, d["w0"], d["chol"])
        derivative = (d["pool_loss"](w) - d["base"]) / (eps * m)
        assert derivative == pytest.approx(d["delta"][i], rel=5e-3, abs=1e-3 * np.abs(d["delta"]).max())


# -- scoring readings ------------------------------------------------------------------------------

PROBS = torch.tensor([[0.5, 0.4, 0.1], [0.34, 0.33, 0.33], [0.1, 0.2, 0.7]], dtype=DT)
DELTA = torch.tensor([[-0.01, 0.02, 0.05], [0.03, -0.02, 0.01], [0.04, 0.01, -0.03]], dtype=DT)
LU, N, TAU = 0.8, 10, 0.35  # with τ = 0.35 row 0 keeps {0, 1}, row 1 keeps nothing, row 2 keeps {2}


def score(rule, reading, tau=TAU):
    return ralif_scores(PROBS, DELTA, LU, N, rule=rule, reading=reading, tau=tau)


def test_paper_truncated_reading():
    want = torch.tensor([0.5 * (LU - 0.01) + 0.4 * (LU + 0.02), 0.0, 0.7 * (LU - 0.03)], dtype=DT)
    torch.testing.assert_close(score("truncated", "paper"), want)
    # Row 1 keeps no class: 0, the best possible score under this reading.
    assert score("truncated", "paper")[1] == 0.0


def test_reference_truncated_reading():
    got = score("truncated", "reference")
    # Mean over kept classes of p_k (N·L_U + Δ_k); no kept class → NaN (never a candidate).
    assert got[0].item() == pytest.approx((0.5 * (N * LU - 0.01) + 0.4 * (N * LU + 0.02)) / 2)
    assert math.isnan(got[1].item())
    assert got[2].item() == pytest.approx(0.7 * (N * LU - 0.03))


def test_influence_truncated_reading():
    got = score("truncated", "influence")
    assert got[0].item() == pytest.approx((0.5 * -0.01 + 0.4 * 0.02) / 0.9)
    assert got[1].item() == pytest.approx(0.03)  # nothing kept: Δ at the argmax class
    assert got[2].item() == pytest.approx(-0.03)


def test_single_rule_uses_the_argmax_column():
    top = torch.tensor([-0.01, 0.03, -0.03], dtype=DT)
    torch.testing.assert_close(score("single", "influence"), top)
    torch.testing.assert_close(score("single", "paper"), LU + top)
    torch.testing.assert_close(score("single", "reference"), PROBS.max(1).values * (N * LU + top))


def test_expectation_rule_and_default_tau():
    torch.testing.assert_close(score("expectation", "paper"), LU + (PROBS * DELTA).sum(1))
    torch.testing.assert_close(score("expectation", "influence"), (PROBS * DELTA).sum(1))
    # The documented default τ = min(4/K, 0.5): 4/K as in the paper, capped so that K ≤ 4 keeps a class.
    assert default_tau(10) == pytest.approx(0.4) and default_tau(100) == pytest.approx(0.04)
    assert default_tau(3) == 0.5 and default_tau(2) == 0.5
    for reading in ("paper", "reference", "influence"):
        torch.testing.assert_close(score("truncated", reading, tau=None), score("truncated", reading, tau=0.5),
                                   equal_nan=True)


def test_unknown_rule_or_reading():
    with pytest.raises(ValueError, match="unknown rule"):
        score("mean", "paper")
    with pytest.raises(ValueError, match="unknown reading"):
        score("single", "book")
