"""Selection timing on synthetic features, and the naive autograd baseline it is compared to."""

from __future__ import annotations

import resource
import sys
import time

import numpy as np
import psutil
import torch

from ralif.compute import configure_threads, resolve_device
from ralif.head import Standardizer, fit_head
from ralif.influence import delta_pool_loss, pool_state, solve_influence
from ralif.strategies import make_strategy, warm_up


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def synthetic_features(pool: int, dim: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A Gaussian mixture (one mean per class, unit noise) generated in place, chunk by chunk, in float32."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, dim), dtype=np.float32) * 0.5
    y = rng.integers(0, classes, size=pool)
    x = np.empty((pool, dim), dtype=np.float32)
    step = 65_536
    for start in range(0, pool, step):
        sl = slice(start, min(pool, start + step))
        x[sl] = rng.standard_normal((sl.stop - start, dim), dtype=np.float32)
        x[sl] += centers[y[sl]]
    return x, y


def naive_influence(head, features: np.ndarray, idx: np.ndarray, sol) -> tuple[np.ndarray, float]:
    """ΔL_U the way the authors' code gets it: per (sample, class), a forward pass through the head,
    one autograd backward pass for ∇_W ℓ(x, k), and its inner product with s. Returns (|idx|×K, seconds)."""
    layer = torch.nn.Linear(head.dim, head.num_classes, dtype=torch.float64, device=head.device)
    with torch.no_grad():
        layer.weight.copy_(head.weight[:, :-1])
        layer.bias.copy_(head.weight[:, -1])
    s_flat = torch.cat([sol.s[:, :-1].reshape(-1), sol.s[:, -1]])
    out = np.empty((len(idx), head.num_classes))
    t0 = time.perf_counter()
    for i, row in enumerate(idx):
        z = head.standardize(torch.as_tensor(np.asarray(features[row : row + 1]), device=head.device))
        for k in range(head.num_classes):
            loss = torch.nn.functional.cross_entropy(layer(z), torch.tensor([k], device=head.device))
            gw, gb = torch.autograd.grad(loss, (layer.weight, layer.bias))
            out[i, k] = float(-(torch.cat([gw.reshape(-1), gb]) @ s_flat) / sol.m)
    return out, time.perf_counter() - t0


def selection_benchmark(
    *, pool: int, dim: int, classes: int, budget: int, labeled: int | None = None, strategy: str = "ralif",
    device: str | None = None, seed: int = 0, naive: int = 0, features: str | None = None, warm: bool = False,
) -> dict:
    configure_threads()
    dev = resolve_device(device)
    t_warm = None
    if warm:
        # What a long-running process (the app's round server) has paid before its first round.
        t0 = time.perf_counter()
        warm_up(strategy, device=str(dev))
        t_warm = round(time.perf_counter() - t0, 4)
    rss0 = psutil.Process().memory_info().rss / 2**20
    if features:
        from ralif.features import load_feature_splits

        data = load_feature_splits(features)
        x, y = data.x_train[:pool], data.y_train[:pool]
        pool, dim, classes = len(x), x.shape[1], data.num_classes
    else:
        x, y = synthetic_features(pool, dim, classes, seed)
    features_mb = x.nbytes / 2**20
    m = labeled or max(budget, 10 * classes)
    rng = np.random.default_rng(seed)
    lab = np.sort(rng.choice(pool, m, replace=False))
    mask = np.ones(pool, dtype=bool)
    mask[lab] = False
    unl = np.flatnonzero(mask)
    strat = make_strategy(strategy)

    # Pool statistics are computed once per project and cached; they are timed apart from the cycle.
    t0 = time.perf_counter()
    std = Standardizer.fit(x)
    t_std = time.perf_counter() - t0
    t0 = time.perf_counter()
    head = fit_head(x, lab, y[lab], classes, standardizer=std, device=dev)
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    picked = strat.select(head, x, lab, unl, budget, np.random.default_rng(seed + 1))
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t_select = time.perf_counter() - t0
    result = {
        "strategy": strat.spec(), "device": str(dev), "threads": torch.get_num_threads(),
        "data": "synthetic" if not features else str(features).rsplit("/", 1)[-1],
        "pool": pool, "dim": dim, "classes": classes, "budget": budget, "labeled": m,
        "seconds": round(t_fit + t_select, 4), "fit_seconds": round(t_fit, 4), "select_seconds": round(t_select, 4),
        "standardize_seconds": round(t_std, 4), "warmup_seconds": t_warm,
        "selected": len(picked), "features_mb": round(features_mb, 1),
        "rss_before_features_mb": round(rss0, 1), "peak_rss_mb": round(peak_rss_mb(), 1),
        "info": {k: v for k, v in strat.last_info.items() if isinstance(v, (int, float, str))},
    }
    if naive:
        # The closed form for the whole pool, timed alone, against per-(sample, class) backward passes.
        t0 = time.perf_counter()
        state = pool_state(head, x, unl)
        sol = solve_influence(head, x, lab, state.grad)
        closed = delta_pool_loss(head, x, unl, state.probs, sol)
        t_closed = time.perf_counter() - t0
        sub = unl[np.sort(rng.choice(len(unl), min(naive, len(unl)), replace=False))]
        ref, t_naive = naive_influence(head, x, sub, sol)
        pos = np.searchsorted(unl, sub)
        got = closed[torch.as_tensor(pos, device=closed.device)].cpu().numpy()
        per_pair_naive = t_naive / ref.size
        per_pair_closed = t_closed / closed.numel()
        t0 = time.perf_counter()
        delta_pool_loss(head, x, unl, state.probs, sol)
        per_pair_product = (time.perf_counter() - t0) / closed.numel()
        result["naive"] = {
            "samples": len(sub), "naive_seconds": round(t_naive, 4),
            "closed_form_seconds_whole_pool": round(t_closed, 4),
            "naive_seconds_per_pair": per_pair_naive, "closed_form_seconds_per_pair": per_pair_closed,
            "speedup": round(per_pair_naive / per_pair_closed, 1),
            "speedup_scoring_product_only": round(per_pair_naive / per_pair_product, 1),
            "naive_seconds_whole_pool_estimate": round(per_pair_naive * closed.numel(), 1),
            "max_abs_difference": float(np.abs(got - ref).max()),
            "max_abs_value": float(np.abs(ref).max()),
        }
    return result
