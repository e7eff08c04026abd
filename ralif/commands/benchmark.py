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
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the synthetic features, the labeled set and the selection (default: 0)")
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


def _features_size(path: str) -> tuple[int, int] | None:
    """(training rows, classes) of a features .npz from its labels alone (cheap), or None when it
    cannot be read that way; the loader then says what is wrong with it."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as data:
            y = np.asarray(data["y_train"]).reshape(-1)
            y_test = np.asarray(data["y_test"]).reshape(-1)
            k = int(max(y.max(), y_test.max())) + 1 if len(y) and len(y_test) else 0
            if "classes" in data.files:
                k = max(k, len(data["classes"]))
            return len(y), k
    except Exception:  # any problem is reported, better, by load_feature_splits
        return None


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse arguments the benchmark cannot run with, in the options' own words, before any work."""
    for option, value, least in (("--pool", args.pool, 2), ("--dim", args.dim, 1), ("--classes", args.classes, 2),
                                 ("--budget", args.budget, 1), ("--seed", args.seed, 0), ("--naive", args.naive, 0),
                                 ("--workers", args.workers, 0), ("--shards", args.shards, 0)):
        if value < least:
            raise ValueError(f"{option} must be at least {least}, not {value}")
    if args.labeled is not None and args.labeled < 1:
        raise ValueError(f"--labeled must be at least 1, not {args.labeled}")
    pool, classes, where = args.pool, args.classes, f"--pool {args.pool}"
    if args.features:
        size = _features_size(args.features)
        if size is None:
            return
        pool, classes = min(args.pool, size[0]), size[1]
        if pool < args.pool:
            where = f"the {size[0]} training rows of {args.features}"
    labeled = args.labeled or max(args.budget, 10 * classes)
    origin = "--labeled" if args.labeled else f"the default labeled set, max(--budget, 10 x {classes} classes)"
    if labeled + args.budget > pool:
        raise ValueError(
            f"{where} is too small for {labeled} labeled samples ({origin}) plus a batch of "
            f"--budget {args.budget}: the pool needs at least {labeled + args.budget} rows; give a larger "
            f"--pool or a smaller --budget or --labeled")


def run(args: argparse.Namespace) -> int:
    from ralif.benchmarking import selection_benchmark

    check_arguments(args)

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


