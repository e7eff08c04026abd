"""Before/after timings of the selection engine's parts, side by side in one process.

Usage: python benchmarks/speed_compare.py [--before-commit main] [--pool 1000000] [--dim 1024]
       [--coreset-pool 50000] [--coreset-budget 200] [--repeats 2]

The library as of ``--before-commit`` is exported (git archive) into a temporary folder as the
package ``ralif_before`` and imported next to this tree's ``ralif``; both run on the same synthetic
features, interleaved, ``--repeats`` times; the table gives each part's best time and the ratio.
On a machine shared with other work the ratios are the figures to trust.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def export_before(commit: str, dest: Path) -> None:
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "ralif"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=tar, check=True)
    (dest / "ralif").rename(dest / "ralif_before")
    for f in (dest / "ralif_before").rglob("*.py"):
        f.write_text(re.sub(r"\b(from|import) ralif\.", r"\1 ralif_before.", f.read_text()))


def best(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before-commit", default="main")
    ap.add_argument("--pool", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--coreset-pool", type=int, default=50_000)
    ap.add_argument("--coreset-budget", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--baselines-only", action="store_true",
                    help="time only Coreset and BADGE (at --coreset-pool / --coreset-budget)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ralif-before-"))
    export_before(args.before_commit, tmp)
    sys.path.append(str(tmp))
    from ralif.compute import configure_threads

    configure_threads()
    new = {m: importlib.import_module(f"ralif.{m}") for m in ("head", "influence", "diversity", "ranking")}
    old = {m: importlib.import_module(f"ralif_before.{m}") for m in ("head", "influence", "diversity", "ranking")}
    view_cls = importlib.import_module("ralif.strategies.ralif").StandardizedView
    from ralif.benchmarking import synthetic_features

    rows = []

    def part(name, f_old, f_new):
        t_old, r_old = best(f_old, args.repeats)
        t_new, r_new = best(f_new, args.repeats)
        rows.append({"part": name, "before_s": round(t_old, 3), "after_s": round(t_new, 3),
                     "ratio": round(t_old / t_new, 2)})
        print(json.dumps(rows[-1]), flush=True)
        return r_old, r_new

    rel, overlap = float("nan"), float("nan")
    if not args.baselines_only:
        x, y = synthetic_features(args.pool, args.dim, 10, 0)
        rng = np.random.default_rng(0)
        lab = np.sort(rng.choice(args.pool, 100, replace=False))
        unl = np.setdiff1d(np.arange(args.pool), lab)
        st_old, st_new = part("standardise (fit)", lambda: old["head"].Standardizer.fit(x),
                              lambda: new["head"].Standardizer.fit(x))
        h_old, h_new = part("head fit (100 labels, first call in the process)",
                            lambda: old["head"].fit_head(x, lab, y[lab], 10, standardizer=st_old, device="cpu"),
                            lambda: new["head"].fit_head(x, lab, y[lab], 10, standardizer=st_new, device="cpu"))

        def score(mods, head):
            def run():
                s = mods["influence"].pool_state(head, x, unl)
                sol = mods["influence"].solve_influence(head, x, lab, s.grad)
                return s, mods["influence"].delta_pool_loss(head, x, unl, s.probs, sol)
            return run
        (_s_old, d_old), (_s_new, d_new) = part("score: pass 1 + solve + pass 2", score(old, h_old), score(new, h_new))
        rel = float((d_new - d_old).abs().max() / d_old.abs().max())
        sc_old, sc_new = d_old.min(1).values, d_new.min(1).values
        n_cand = len(unl) // 10
        c_old, c_new = part("top 10 % (top_k_lowest)",
                            lambda: old["ranking"].top_k_lowest(sc_old, n_cand, np.random.default_rng(1)),
                            lambda: new["ranking"].top_k_lowest(sc_new, n_cand, np.random.default_rng(1)))
        overlap = len(np.intersect1d(c_old, c_new)) / n_cand
        cand = unl[c_new]
        part("candidates standardised + distance to labeled (100k)",
             lambda: old["diversity"].labeled_sq_dist(view_cls(x, h_old), cand, lab, torch.device("cpu")),
             lambda: new["diversity"].candidate_points(x, cand, lab, h_new, torch.device("cpu")))
        pts, d2 = new["diversity"].candidate_points(x, cand, lab, h_new, torch.device("cpu"))
        part("k-means representatives (B = 100)",
             lambda: old["diversity"].kmeans_representatives(pts, 100, np.random.default_rng(2), covered_d2=d2),
             lambda: new["diversity"].kmeans_representatives(pts, 100, np.random.default_rng(2), covered_d2=d2))
        del pts, d2
    xc, yc = synthetic_features(args.coreset_pool, args.dim, 10, 1)
    labc = np.arange(1000)
    unlc = np.arange(1000, args.coreset_pool)
    k_old, k_new = part(f"coreset k-center greedy ({args.coreset_pool}, B = {args.coreset_budget})",
                        lambda: old["diversity"].kcenter_greedy(xc, unlc, labc, args.coreset_budget,
                                                                np.random.default_rng(0), torch.device("cpu")),
                        lambda: new["diversity"].kcenter_greedy(xc, unlc, labc, args.coreset_budget,
                                                                np.random.default_rng(0), torch.device("cpu")))
    bl_old = importlib.import_module("ralif_before.strategies.baselines")
    bl_new = importlib.import_module("ralif.strategies.baselines")
    hc_new = new["head"].fit_head(xc, labc, yc[labc], 10, device="cpu")
    hc_old = old["head"].LinearHead(hc_new.weight, old["head"].Standardizer(hc_new.standardizer.mean,
                                    hc_new.standardizer.scale), hc_new.l2, hc_new.device)
    part(f"badge ({args.coreset_pool}, B = {args.coreset_budget})",
         lambda: bl_old.BadgeStrategy()._select(hc_old, xc, labc, unlc, args.coreset_budget, np.random.default_rng(0)),
         lambda: bl_new.BadgeStrategy()._select(hc_new, xc, labc, unlc, args.coreset_budget, np.random.default_rng(0)))
    print(json.dumps({"threads": torch.get_num_threads(), "pool": args.pool, "dim": args.dim,
                      "delta_max_rel_difference": rel, "candidate_overlap": overlap,
                      "coreset_same_picks": bool(np.array_equal(k_old, k_new))}), flush=True)


if __name__ == "__main__":
    main()
