"""``ralif simulate``: the paper's simulation protocol on a features file, with reports."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ralif.head import DEFAULT_L2
from ralif.strategies import split_specs

NAME = "simulate"
HELP = "simulate active learning with true labels as the oracle and compare strategies against Random"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--features", type=Path, help=".npz with x_train, y_train, x_test, y_test")
    parser.add_argument("--strategies", default="random,ralif",
                        help="comma-separated specs, e.g. random,uncertainty,coreset,badge,gradnorm,ralif")
    parser.add_argument("--initial", type=int, default=100, help="initial labeled set size (default 100)")
    parser.add_argument("--budget", type=int, default=100, help="labels added per cycle (default 100)")
    parser.add_argument("--cycles", type=int, default=9, help="active-learning cycles (default 9)")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds 0..S-1 (default 3)")
    parser.add_argument("--l2", type=float, default=DEFAULT_L2, help=f"head L2 strength (default {DEFAULT_L2})")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--out", type=Path, required=True, help="output folder for results.json and reports")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ralif.features import load_feature_splits
    from ralif.report import write_results
    from ralif.simulation import SimulationConfig, simulate

    for name in ("initial", "budget", "cycles", "seeds"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be at least 1")
    data = load_feature_splits(args.features)
    cfg = SimulationConfig(
        strategies=split_specs(args.strategies), initial=args.initial, budget=args.budget,
        cycles=args.cycles, seeds=list(range(args.seeds)), l2=args.l2, device=args.device,
        extra={"features": args.features.name, "pool": len(data.x_train), "dim": int(data.x_train.shape[1]),
               "classes": data.num_classes, "test": len(data.x_test)},
    )
    bar = tqdm(total=1, disable=args.quiet, unit="fit", dynamic_ncols=True)

    def progress(done: int, total: int, what: str) -> None:
        bar.total = total
        bar.set_description(what)
        bar.update(done - bar.n)

    results = simulate(data, cfg, progress=progress)
    bar.close()
    paths = write_results(args.out, results)
    print(paths["md"].read_text())
    summary = {name: round(s["auca_ratio_mean"], 4) for name, s in results["strategies"].items()}
    print(json.dumps({"auca_ratio_mean": summary, "out": str(args.out)}))
    return 0
