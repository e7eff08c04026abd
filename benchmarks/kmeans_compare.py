"""k-means diversity step before/after, side by side in one process, with the batch compared.

Usage: python benchmarks/kmeans_compare.py [--before-commit 4d1a91c] [--candidates 100100] [--budget 100]
       [--seeds 2]

``ralif/diversity.py`` as of ``--before-commit`` is loaded as a separate module; both versions pick a
batch from the same standardised synthetic candidates (the first 100 rows stand for the labeled set)
with the same seed. Prints each version's seconds, the batch's k-means objective (Σ over candidates
of the squared distance to the nearest labeled or picked point) and the overlap of the two batches.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ralif import diversity as new
from ralif.benchmarking import synthetic_features
from ralif.compute import configure_threads

ROOT = Path(__file__).resolve().parents[1]


def load_before(commit: str):
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:ralif/diversity.py"], check=True,
                         capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp(prefix="ralif-kmeans-")) / "diversity_before.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("diversity_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before-commit", default="4d1a91c")
    ap.add_argument("--candidates", type=int, default=100_100)
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=2)
    args = ap.parse_args()
    configure_threads()
    old = load_before(args.before_commit)
    x, _ = synthetic_features(args.candidates, 1024, 10, 3)
    t = torch.from_numpy(x)
    t = (t - t.mean(0)) / t.std(0)
    labeled, pts = t[:100], t[100:]
    d2 = new.min_sq_dist(pts, labeled)

    def cost(picked: np.ndarray) -> float:
        return float(torch.minimum(d2, new.min_sq_dist(pts, pts[torch.as_tensor(picked)])).double().sum())

    for seed in range(args.seeds):
        res = {}
        for name, mod in (("before", old), ("after", new)):
            t0 = time.perf_counter()
            picked = mod.kmeans_representatives(pts, args.budget, np.random.default_rng(seed), covered_d2=d2)
            res[name] = (picked, time.perf_counter() - t0)
        (pb, tb), (pa, ta) = res["before"], res["after"]
        print(f"seed {seed}: before {tb:.2f} s objective {cost(pb):.6g}   after {ta:.2f} s objective "
              f"{cost(pa):.6g}   same picks {len(np.intersect1d(pb, pa))} of {args.budget}", flush=True)


if __name__ == "__main__":
    main()
