"""How many (seed, cycle) pairs below Random a strategy's gain and spread imply, and what gain
"none below Random" would need at that spread.

    python benchmarks/below_random.py RUN_DIR [RUN_DIR ...]

Reads each RUN_DIR/results.csv of `ralif simulate` (Random among its strategies). Per strategy: the
paired accuracy differences to Random over every (seed, cycle) after the initial set, in points; their
mean μ and standard deviation σ; the pairs observed below Random; the count a normal model of the
differences expects, n·Φ(−μ/σ); and the mean gain at which that model expects fewer than half a pair
below Random at the same σ, σ·Φ⁻¹(1 − 0.5/n).
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.stats import norm


def differences(run: Path) -> dict[str, np.ndarray]:
    acc: dict[str, dict[tuple[int, int], float]] = defaultdict(dict)
    with open(run / "results.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            acc[r["strategy"]][(int(r["seed"]), int(r["cycle"]))] = float(r["accuracy"])
    base = acc.pop("random")
    return {s: 100 * np.array([v - base[k] for k, v in sorted(a.items()) if k[1] > 0 and k in base])
            for s, a in acc.items()}


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    print("| run | strategy | pairs | mean gain μ (points) | σ | below Random | expected n·Φ(−μ/σ) "
          "| μ needed for none |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for arg in sys.argv[1:]:
        run = Path(arg)
        for s, d in differences(run).items():
            n, mu, sd = len(d), float(d.mean()), float(d.std(ddof=1))
            print(f"| {run.name} | {s} | {n} | {mu:+.2f} | {sd:.2f} | {int((d < 0).sum())} | "
                  f"{n * norm.cdf(-mu / sd):.1f} | {sd * norm.ppf(1 - 0.5 / n):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
