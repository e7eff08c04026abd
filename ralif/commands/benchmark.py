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
    parser.add_argument("--warm", action="store_true",
                        help="first run the strategy once on a tiny problem, as the app's round server does on "
                             "start, so one-off costs (lazy torch set-up) are reported apart (warmup_seconds)")
    parser.add_argument("--engine", choices=["single", "dask"], default="single",
                        help="dask: score over row shards on a Dask cluster (ralif strategies only; "
                             "docs/distributed.md)")
    parser.add_argument("--scheduler", default="local",
                        help="with --engine dask: local | threads | tcp://host:port")
    parser.add_argument("--workers", type=int, default=0,
                        help="with --engine dask and a local scheduler: worker processes (0 = one per core)")
    parser.add_argument("--shards", type=int, default=0, help="with --engine dask: row shards (0 = automatic)")


def with_options(spec: str, **options: object) -> str:
    """``spec`` with ``options`` appended to its option list."""
    extra = ",".join(f"{k}={v}" for k, v in options.items())
    spec = spec.strip()
    return f"{spec[:-1]},{extra})" if spec.endswith(")") else f"{spec}({extra})"


def run(args: argparse.Namespace) -> int:
    from ralif.benchmarking import selection_benchmark

    strategy, start_seconds = args.strategy, None
    if args.engine == "dask":
        import time

        from ralif.sharded import get_client

        strategy = with_options(strategy, engine="dask", scheduler=args.scheduler, workers=args.workers,
                                shards=args.shards)
        # The cluster starts once per process; its start-up is reported apart from the selection.
        t0 = time.perf_counter()
        get_client(args.scheduler, args.workers)
        start_seconds = round(time.perf_counter() - t0, 4)
    result = selection_benchmark(
        pool=args.pool, dim=args.dim, classes=args.classes, budget=args.budget, labeled=args.labeled,
        strategy=strategy, device=args.device, seed=args.seed, naive=args.naive, features=args.features,
        warm=args.warm,
    )
    if start_seconds is not None:
        result["cluster_start_seconds"] = start_seconds
    print(json.dumps(result, indent=2))
    return 0


