"""Placing points into the map: by nearest fitted neighbours against UMAP's own ``transform``.

Usage: python benchmarks/map_placing.py [--embeddings ../shared/data/cifar10_mobilenetv1_imagenet_emb1024.npz]
       [--fit 20000] [--place 30000] [--seed 0]

UMAP is fitted once on ``--fit`` rows of real embeddings (CIFAR-10 train, or the synthetic mixture of
``ralif benchmark selection`` when the file is absent); the next ``--place`` rows are placed both
ways. Printed, as one JSON line: the seconds of each way and their ratio (same run, same machine);
how far the two placements of a point are apart, in units of the median distance between a fitted
point and its nearest fitted neighbour on the map; and, for each way, how often a placed point's 10
nearest fitted points on the map have its true class as their majority (the map's use: a point sits
among its kind).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ralif.benchmarking import synthetic_features
from ralif.map.placing import NeighbourPlacer

DEFAULT_EMBEDDINGS = Path(__file__).resolve().parents[1].parent / "shared/data/cifar10_mobilenetv1_imagenet_emb1024.npz"


def load(path: Path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    if path.is_file():
        with np.load(path) as data:
            x = (data["emb_train_uint8"].astype(np.float32) - float(data["quant_zero_point"])) * float(
                data["quant_scale"])
            y = data["y_train"]
        order = np.random.default_rng(seed).permutation(len(x))[:n]
        return x[order], y[order], path.name
    x, y = synthetic_features(n, 1024, 10, seed)
    return np.asarray(x), np.asarray(y), "synthetic mixture"


def knn_majority(fit_xy: np.ndarray, fit_y: np.ndarray, xy: np.ndarray, y: np.ndarray, k: int = 10) -> float:
    a, q = torch.from_numpy(fit_xy), torch.from_numpy(xy)
    hits = 0
    for start in range(0, len(q), 4096):
        idx = torch.cdist(q[start:start + 4096], a).topk(k, largest=False).indices.numpy()
        votes = np.apply_along_axis(np.bincount, 1, fit_y[idx], minlength=int(fit_y.max()) + 1)
        hits += int((votes.argmax(1) == y[start:start + 4096]).sum())
    return hits / len(q)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--embeddings", type=Path, default=DEFAULT_EMBEDDINGS)
    ap.add_argument("--fit", type=int, default=20_000)
    ap.add_argument("--place", type=int, default=30_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    x, y, source = load(args.embeddings, args.fit + args.place, args.seed)
    fit_x, fit_y, rest_x, rest_y = x[:args.fit], y[:args.fit], x[args.fit:], y[args.fit:]

    import umap

    reducer = umap.UMAP(n_components=2, n_neighbors=15, min_dist=0.1, metric="cosine", random_state=args.seed,
                        transform_seed=args.seed, low_memory=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        t0 = time.perf_counter()
        fit_xy = np.asarray(reducer.fit_transform(fit_x), dtype=np.float32)
        fit_s = time.perf_counter() - t0
        reducer.transform(rest_x[:200])     # numba compiles the transform path once, outside the timing
        t0 = time.perf_counter()
        by_umap = np.asarray(reducer.transform(rest_x), dtype=np.float32)
        umap_s = time.perf_counter() - t0
    placer = NeighbourPlacer.fit(fit_x, fit_xy, k=15, metric="cosine", a=reducer._a, b=reducer._b, seed=args.seed)
    placer.place(rest_x[:200])          # numba compiles the epoch loop once, outside the timing
    t0 = time.perf_counter()
    by_neighbours = placer.place(rest_x)
    neighbours_s = time.perf_counter() - t0

    a = torch.from_numpy(fit_xy)
    spacing = float(torch.cdist(a, a).fill_diagonal_(float("inf")).min(1).values.median())
    apart = np.linalg.norm(by_umap - by_neighbours, axis=1) / spacing
    print(json.dumps({
        "source": source, "fit": args.fit, "placed": len(rest_x), "seed": args.seed,
        "fit_seconds": round(fit_s, 1), "umap_transform_seconds": round(umap_s, 2),
        "neighbours_seconds": round(neighbours_s, 2), "speedup": round(umap_s / neighbours_s, 1),
        "apart_median_spacings": round(float(np.median(apart)), 2),
        "apart_p90_spacings": round(float(np.quantile(apart, 0.9)), 2),
        "knn10_majority_umap": round(knn_majority(fit_xy, fit_y, by_umap, rest_y), 4),
        "knn10_majority_neighbours": round(knn_majority(fit_xy, fit_y, by_neighbours, rest_y), 4),
    }), flush=True)


if __name__ == "__main__":
    main()
