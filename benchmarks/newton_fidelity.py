"""How close the first-order influence and the one-Newton-step estimate are to real retraining.

For random (x, k) pairs of the pool, the head is retrained on the up-weighted objective the influence
describes, (1/m)[Σ_L ℓ + ℓ(x, k)] + λ/2‖W‖², from the current optimum to a gradient of 1e-10, and the
pool loss over the current pseudo labels is measured before and after. Reports Spearman ρ and the
least-squares slope of each estimate against the true change.

Usage: python benchmarks/newton_fidelity.py FEATURES.npz [--labeled 100 1000] [--pairs 40] [--seeds 3]
       [--curvature auto|exact|kronecker] [--label random|pseudo]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

from ralif.compute import configure_threads
from ralif.features import load_feature_splits
from ralif.head import Standardizer, fit_head
from ralif.influence import delta_pool_loss, pool_state, solve_influence
from ralif.newton import newton_delta_pool_loss


def retrained_pool_loss(head, x_l, y_l, x_new, k_new, x_pool, pseudo) -> float:
    m = len(x_l)
    x = torch.cat([x_l, x_new[None]])
    y = torch.cat([y_l, torch.tensor([k_new])])
    weight = torch.ones(m + 1, dtype=torch.float64) / m
    w = head.weight.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=2000, tolerance_grad=1e-10, tolerance_change=1e-16,
                            history_size=30, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (F.cross_entropy(x @ w.T, y, reduction="none") * weight).sum() + 0.5 * head.l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(F.cross_entropy(x_pool @ w.T, pseudo))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("features")
    ap.add_argument("--labeled", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--pairs", type=int, default=40)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--label", default="random", choices=("random", "pseudo"),
                    help="the class k of each pair: uniform at random, or the head's prediction (single-IL)")
    ap.add_argument("--curvature", default="auto", help="auto | exact | kronecker (ralif.newton)")
    ap.add_argument("--pool", type=int, default=10000, help="pool subsample (the pool loss is over it)")
    args = ap.parse_args()
    configure_threads()
    splits = load_feature_splits(args.features)
    k = int(splits.y_train.max()) + 1
    print("| labeled | seed | first-order ρ | Newton ρ | first-order slope | Newton slope |")
    print("|---:|---:|---:|---:|---:|---:|")
    for m in args.labeled:
        for seed in range(args.seeds):
            rng = np.random.default_rng(seed)
            idx = np.sort(rng.choice(len(splits.x_train), args.pool + m, replace=False))
            feats, labels = splits.x_train[idx], splits.y_train[idx]
            lab = np.sort(rng.choice(len(idx), m, replace=False))
            unl = np.setdiff1d(np.arange(len(idx)), lab)
            head = fit_head(feats, lab, labels[lab], k, standardizer=Standardizer.fit(feats), device="cpu",
                            tol=1e-10, max_iter=2000)
            state = pool_state(head, feats, unl)
            sol = solve_influence(head, feats, lab, state.grad)
            pick = rng.choice(len(unl), args.pairs, replace=False)
            cls = rng.integers(0, k, args.pairs)
            if args.label == "pseudo":
                cls = state.probs[pick].argmax(1).numpy()
            first = delta_pool_loss(head, feats, unl[pick], state.probs[pick], sol)
            newton, _ = newton_delta_pool_loss(head, feats, lab, unl[pick], state.probs[pick], sol,
                                               kind=args.curvature)
            x_l, x_pool = head.design(feats, lab), head.design(feats, unl)
            y_l = torch.as_tensor(labels[lab], dtype=torch.long)
            pseudo = state.probs.argmax(1)
            base = float(F.cross_entropy(x_pool @ head.weight.T, pseudo))
            true = np.array([retrained_pool_loss(head, x_l, y_l, x_pool[i], int(c), x_pool, pseudo) - base
                             for i, c in zip(pick, cls)])
            rows = np.arange(args.pairs)
            f = first[rows, cls].numpy()
            n = newton[rows, cls].numpy()
            # Least-squares slope of the true change on each estimate (1 = right scale).
            slope_f = float(np.dot(f, true) / np.dot(f, f))
            slope_n = float(np.dot(n, true) / np.dot(n, n))
            print(f"| {m} | {seed} | {spearmanr(f, true)[0]:.2f} | {spearmanr(n, true)[0]:.2f} | "
                  f"{slope_f:.3f} | {slope_n:.3f} |", flush=True)


if __name__ == "__main__":
    main()
