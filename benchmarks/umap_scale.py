"""The map's layout end to end at scale: UMAP fitted on a seeded subsample, the rest placed in chunks.

Usage: python benchmarks/umap_scale.py [--pool 1000000] [--dim 1024] [--fit-max 20000] [--chunk 50000]
       [--placing neighbours|umap]

Features are the synthetic Gaussian mixture of ``ralif benchmark selection``. Every progress report
is printed with the seconds since the start, so the fit and the per-chunk placing rate (and from it
the time at other pool sizes) can be read off one run; the last line is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import time

from ralif.benchmarking import peak_rss_mb, synthetic_features
from ralif.map.layout import DEFAULT_CHUNK, DEFAULT_FIT_MAX, PLACINGS, fit_projection


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pool", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--fit-max", type=int, default=DEFAULT_FIT_MAX)
    ap.add_argument("--chunk", type=int, default=DEFAULT_CHUNK)
    ap.add_argument("--placing", choices=PLACINGS, default="neighbours")
    args = ap.parse_args()
    x, _ = synthetic_features(args.pool, args.dim, 10, 0)
    marks: list[tuple[str, float, float]] = []
    t0 = time.perf_counter()

    def progress(phase: str, fraction: float, message: str) -> None:
        marks.append((phase, fraction, time.perf_counter() - t0))
        print(f"{marks[-1][2]:8.1f} s  {phase:8s} {fraction:6.1%}  {message}", flush=True)

    coords, params = fit_projection(x, fit_max=args.fit_max, chunk=args.chunk, placing=args.placing,
                                    progress=progress)
    total = time.perf_counter() - t0
    fit_end = next((t for phase, _, t in marks if phase == "placing"), total)
    placed = args.pool - params["fit_points"]
    per_point = (total - fit_end) / max(1, placed)
    print(json.dumps({
        "pool": args.pool, "dim": args.dim, "fit_points": params["fit_points"], "chunk": args.chunk,
        "method": params["method"], "placing": params.get("placing"), "seconds": round(total, 1),
        "fit_seconds": round(fit_end, 1),
        "placing_seconds": round(total - fit_end, 1), "placing_ms_per_1000_points": round(1e6 * per_point, 1),
        "estimate_1m_seconds": round(fit_end + per_point * (1_000_000 - params["fit_points"]), 1),
        "features_mb": round(x.nbytes / 2**20, 1), "peak_rss_mb": round(peak_rss_mb(), 1),
        "placed": len(coords),
    }), flush=True)


if __name__ == "__main__":
    main()
