"""Diversity step at 1M x 1024 (100k candidates, B = 100): the default strategy's former candidate path
(float64 view) against candidate_points, and k-means seeding per seed (seeding_block=1) against blocked.

Usage: RALIF_THREADS=2 python benchmarks/diversity_parts.py
"""

from __future__ import annotations

import time

import numpy as np

from ralif.benchmarking import synthetic_features
from ralif.compute import configure_threads
from ralif.diversity import candidate_points, kmeans_representatives, labeled_sq_dist
from ralif.head import Standardizer, fit_head
from ralif.strategies.ralif import StandardizedView


def main() -> None:
    configure_threads()
    n = 1_000_000
    x, y = synthetic_features(n, 1024, 10, 0)
    rng = np.random.default_rng(0)
    lab = np.sort(rng.choice(n, 100, replace=False))
    head = fit_head(x, lab, y[lab], 10, standardizer=Standardizer.fit(x), device="cpu")
    cand = np.sort(rng.choice(n, n // 10, replace=False))
    for _ in range(2):
        t0 = time.perf_counter()
        pts, d2 = labeled_sq_dist(StandardizedView(x, head), cand, lab, head.device)
        t1 = time.perf_counter()
        del pts, d2
        pts, d2 = candidate_points(x, cand, lab, head, head.device)
        t2 = time.perf_counter()
        kmeans_representatives(pts, 100, np.random.default_rng(1), covered_d2=d2, seeding_block=1)
        t3 = time.perf_counter()
        kmeans_representatives(pts, 100, np.random.default_rng(1), covered_d2=d2)
        t4 = time.perf_counter()
        print(f"view+labeled_sq_dist {t1 - t0:.2f}  candidate_points {t2 - t1:.2f}  "
              f"kmeans per-seed {t3 - t2:.2f}  kmeans blocked {t4 - t3:.2f}", flush=True)


if __name__ == "__main__":
    main()
