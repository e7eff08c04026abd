"""The streaming pool passes (folded standardisation, views, gathered blocks) against a plain
float64 computation of the same formulas."""

import numpy as np
import pytest
import torch

from ralif.head import fit_head
from ralif.influence import delta_pool_loss, pool_state, solve_influence
from ralif.streaming import PoolStream

DT = torch.float64


def reference(head, x, unl, sol_s, m):
    """Probabilities, L_U, g_U and ΔL_U from a float64 design matrix of the whole pool."""
    z = torch.as_tensor((x[unl].astype(np.float64) - head.standardizer.mean) / head.standardizer.scale)
    xt = torch.cat([z, torch.ones(len(z), 1, dtype=DT)], 1)
    logp = torch.log_softmax(xt @ head.weight.T, 1)
    p = logp.exp()
    top = p.argmax(1)
    resid = p.clone()
    resid[torch.arange(len(p)), top] -= 1
    grad = resid.T @ xt / len(unl)
    loss = float(-logp.gather(1, top[:, None]).mean())
    a = xt @ sol_s.T
    delta = -((p * a).sum(1, keepdim=True) - a) / m
    return p, loss, grad, delta


def problem(offset=0.0, n=3000, d=24, k=4, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=1.5, size=(k, d))
    y = rng.integers(k, size=n)
    x = (centers[y] + rng.normal(size=(n, d)) + offset).astype(np.float32)
    lab = np.sort(rng.choice(n, 200, replace=False))
    head = fit_head(x, lab, y[lab], k, device="cpu")
    return x, lab, head


@pytest.mark.parametrize("offset", [0.0, 50.0])  # 50: far past FOLD_MAX_OFFSET, the centred path
@pytest.mark.parametrize("layout", ["dense", "sparse", "unsorted", "memmap"])
def test_streaming_passes_match_float64_reference(tmp_path, offset, layout):
    x, lab, head = problem(offset)
    rng = np.random.default_rng(1)
    unl = np.setdiff1d(np.arange(len(x)), lab)
    if layout == "sparse":
        unl = np.sort(rng.choice(unl, 300, replace=False))  # under half the span: gathered blocks
    elif layout == "unsorted":
        unl = rng.permutation(unl)
    elif layout == "memmap":
        np.save(tmp_path / "x.npy", x)
        x = np.load(tmp_path / "x.npy", mmap_mode="r")
    state = pool_state(head, x, unl)
    sol = solve_influence(head, x, lab, state.grad)
    delta = delta_pool_loss(head, x, unl, state.probs, sol)
    p, loss, grad, dref = reference(head, np.asarray(x), unl, sol.s, sol.m)
    assert torch.allclose(state.probs, p, atol=2e-5)
    assert state.pool_loss == pytest.approx(loss, rel=1e-4)
    assert torch.allclose(state.grad, grad, atol=1e-5 * float(grad.abs().max()))
    assert torch.allclose(delta, dref, atol=1e-4 * float(dref.abs().max()))
    # Same candidate set: the best 10% by single-class influence agree (beyond float32-level ties).
    best = lambda d: set(np.argsort(d.min(1).values.numpy(), kind="stable")[: len(unl) // 10].tolist())
    assert len(best(delta) ^ best(dref)) <= 2


def test_blocks_cover_every_index_once_in_place():
    x = np.arange(40 * 3, dtype=np.float32).reshape(40, 3)
    for idx in (np.arange(40), np.array([3, 5, 6, 7, 8, 30]), np.array([39, 0, 17, 18, 2]),
                np.delete(np.arange(40), [0, 9, 10, 39])):
        stream = PoolStream(x, idx, np.zeros(3), np.ones(3), torch.device("cpu"), block=7)
        out = torch.full((len(idx), 3), -1.0)
        for blk in stream.blocks():
            rows = blk.rows if blk.keep is None else blk.rows[blk.keep]
            out[blk.pos] = rows
        assert torch.equal(out, torch.from_numpy(x[idx])), idx


def test_top_k_lowest_partition_matches_a_full_sort():
    from ralif.ranking import top_k_lowest

    rng = np.random.default_rng(3)
    s = np.round(rng.normal(size=5000), 1)  # many ties
    s[rng.choice(5000, 300, replace=False)] = np.nan
    for k in (1, 10, 400, 4699, 4700, 4800, 5000):
        got = top_k_lowest(torch.as_tensor(s), k, np.random.default_rng(k))
        tie = np.random.default_rng(k).random(len(s))
        nan = np.isnan(s)
        full = np.lexsort((tie, np.where(nan, np.inf, s), nan.astype(np.int8)))[:k]
        np.testing.assert_array_equal(got, full)
