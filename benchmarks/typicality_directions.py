"""Typicality's principal directions: the full eigendecomposition of the scatter matrix against the
rank-k update and partial eigensolver of ``ralif.typicality.top_directions``: the time of a whole
cold-start batch (reduction, k-means, typicality) with each, and whether the batches stay the same.

    python benchmarks/typicality_directions.py FEATURES.npz [--seeds 6] [--labeled 20] [--budget 20]

FEATURES.npz: an embeddings file as ``simulate --features`` reads it (the pool's rows are used).
Runs at one torch thread, as the app's rounds do. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from ralif import typicality
from ralif.features import load_feature_splits


def full_eigh(x: torch.Tensor, dims: int) -> torch.Tensor:
    """The reference: every eigenvector of the D x D scatter, the top ``dims`` kept."""
    _, vectors = torch.linalg.eigh((x.T @ x).double())
    return vectors[:, -dims:].flip(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("features")
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--labeled", type=int, default=20)
    parser.add_argument("--budget", type=int, default=20)
    parser.add_argument("--pool", type=int, default=10_000, help="unlabeled rows clustered (the cold start's share)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    x = np.ascontiguousarray(load_feature_splits(args.features).x_train, dtype=np.float32)
    fast = typicality.top_directions
    same, total, seconds = 0, 0, {"full": [], "partial": []}
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        labeled = rng.choice(len(x), args.labeled, replace=False)
        unlabeled = np.setdiff1d(np.arange(len(x)), labeled)
        picks = []
        for name, fn in (("full", full_eigh), ("partial", fast)):
            typicality.top_directions = fn
            try:
                start = time.perf_counter()
                picks.append(typicality.typical_batch(x, labeled, unlabeled, args.budget, np.random.default_rng(seed),
                                                      max_pool=args.pool))
                seconds[name].append(time.perf_counter() - start)
            finally:
                typicality.top_directions = fast
        same += len(set(picks[0].tolist()) & set(picks[1].tolist()))
        total += args.budget
    print(json.dumps({"seeds": args.seeds, "rows": min(len(x), args.pool + args.labeled), "dim": int(x.shape[1]),
                      "same_picks": same, "picks": total,
                      "batch_seconds_median": {k: round(float(np.median(v)), 3) for k, v in seconds.items()}},
                     indent=2))


if __name__ == "__main__":
    main()
