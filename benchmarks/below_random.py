"""How many (seed, cycle) pairs below Random a strategy's gain and spread imply, and what gain
"none below Random" would need at that spread.

    python benchmarks/below_random.py [--merge] [--against SPEC] RUN_DIR [RUN_DIR ...]

Reads each RUN_DIR/results.csv of `ralif simulate` (Random among its strategies). Per strategy: the
AUCA ratio to Random (mean over seeds, 95 % Student-t interval); the paired accuracy differences to
Random over every (seed, cycle) after the initial set, in points; their mean μ and standard deviation
σ; the pairs observed below Random; the count a normal model of the differences expects, n·Φ(−μ/σ);
and the mean gain at which that model expects fewer than half a pair below Random at the same σ,
σ·Φ⁻¹(1 − 0.5/n). ``--merge`` reads the runs as one (runs over other seeds, or other strategies on
the same seeds: Random must agree wherever two runs share a seed). ``--against SPEC`` adds each
strategy's AUCA ratio minus SPEC's, paired by seed, with its 95 % interval.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.stats import norm

from ralif.evaluation import auca_ratio, cycles_below, mean_interval

Curves = dict[str, dict[int, dict[int, float]]]  # strategy -> seed -> cycle -> accuracy


def read_runs(runs: list[Path]) -> Curves:
    acc: Curves = defaultdict(lambda: defaultdict(dict))
    for run in runs:
        with open(run / "results.csv", newline="") as fh:
            for r in csv.DictReader(fh):
                s, seed, cycle, a = r["strategy"], int(r["seed"]), int(r["cycle"]), float(r["accuracy"])
                known = acc[s][seed].get(cycle)
                if known is not None and known != a:
                    raise SystemExit(f"{run}: {s} seed {seed} cycle {cycle} reads {a}, another run {known}")
                acc[s][seed][cycle] = a
    if "random" not in acc:
        raise SystemExit("no Random in the runs")
    return acc


def curve(by_cycle: dict[int, float]) -> np.ndarray:
    return np.array([by_cycle[c] for c in sorted(by_cycle)])


def rows(name: str, acc: Curves, against: str | None) -> list[str]:
    base = acc["random"]
    ratios = {s: {seed: auca_ratio(curve(c), curve(base[seed])) for seed, c in seeds.items()}
              for s, seeds in acc.items() if s != "random"}
    out = []
    for s, seeds in acc.items():
        if s == "random":
            continue
        mine = np.array([curve(seeds[k]) for k in sorted(seeds)])
        theirs = np.array([curve(base[k]) for k in sorted(seeds)])
        d = 100 * (mine[:, 1:] - theirs[:, 1:]).ravel()
        n, mu, sd = len(d), float(d.mean()), float(d.std(ddof=1))
        r = np.array(list(ratios[s].values()))
        lo, hi = mean_interval(r)
        line = (f"| {name} | {s} | {len(r)} | {r.mean():.3f} [{lo:.3f}, {hi:.3f}] | {n} | {mu:+.2f} | {sd:.2f} "
                f"| {cycles_below(mine, theirs)} | {n * norm.cdf(-mu / sd):.1f} | {sd * norm.ppf(1 - 0.5 / n):.2f} |")
        if against is not None:
            if s == against or against not in ratios:
                line += " — |"
            else:
                shared = sorted(set(ratios[s]) & set(ratios[against]))
                diff = np.array([ratios[s][k] - ratios[against][k] for k in shared])
                dlo, dhi = mean_interval(diff)
                line += f" {diff.mean():+.4f} [{dlo:+.4f}, {dhi:+.4f}] ({len(shared)} seeds) |"
        out.append(line)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--merge", action="store_true", help="read the runs as one")
    ap.add_argument("--against", help="strategy spec the others are compared with, seed by seed")
    args = ap.parse_args()
    head = ("| run | strategy | seeds | AUCA ratio [95 % CI] | pairs | mean gain μ (points) | σ | below Random "
            "| expected n·Φ(−μ/σ) | μ needed for none |")
    rule = "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    if args.against:
        head += f" AUCA ratio − {args.against}'s [95 % CI] |"
        rule += "---:|"
    print(head)
    print(rule)
    groups = [(" + ".join(r.name for r in args.runs), args.runs)] if args.merge else [(r.name, [r]) for r in args.runs]
    for name, runs in groups:
        for line in rows(name, read_runs(runs), args.against):
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
