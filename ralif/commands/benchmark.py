"""``ralif benchmark selection``: time one selection on synthetic features, with peak memory."""

from __future__ import annotations

import argparse
import json

NAME = "benchmark"
HELP = "time one selection on synthetic features (train head, score, candidates, diversity)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", choices=["selection"], help="what to time")
    parser.add_argument("--pool", type=int, default=50_000, help="pool size N")
    parser.add_argument("--dim", type=int, default=1024, help="feature dimension D")
    parser.add_argument("--classes", type=int, default=10, help="number of classes K")
    parser.add_argument("--budget", type=int, default=1000, help="batch size B")
    parser.add_argument("--labeled", type=int, default=None, help="labeled set size (default max(B, 10·K))")
    parser.add_argument("--strategy", default="ralif", help="strategy spec (see `ralif strategies`)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--features", default=None,
                        help="time on a real features .npz (its training split) instead of synthetic features; "
                             "--pool then takes the first N rows")
    parser.add_argument("--naive", type=int, default=0, metavar="S",
                        help="also time per-(sample, class) autograd influence on S pool samples and report "
                             "the speedup of the closed form")


def run(args: argparse.Namespace) -> int:
    from ralif.benchmarking import selection_benchmark

    result = selection_benchmark(
        pool=args.pool, dim=args.dim, classes=args.classes, budget=args.budget, labeled=args.labeled,
        strategy=args.strategy, device=args.device, seed=args.seed, naive=args.naive, features=args.features,
    )
    print(json.dumps(result, indent=2))
    return 0


