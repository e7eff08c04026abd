"""Sharded (Dask) RALIF selection against the single-process path, on one machine.

    RALIF_THREADS=1 python benchmarks/sharded.py [--sizes 200000,1000000] [--dim 512] [--repeats 2]

Synthetic features are written once per size to a memory-mapped .npy in a temporary folder; the head
is trained once on it. Every case then runs in a fresh process (clean peak RSS) and the cases are
interleaved, repeat after repeat, so that load from other jobs on a shared machine falls on all of
them alike. Cases: the single-process strategy; the sharded one on a LocalCluster of 2 workers × 1
thread and of 1 worker × 1 thread; and, as a yardstick for what rounding alone does to the batch, the
single-process strategy with its pool passes cut into 32 MB chunks instead of 256 MB. The cluster's
start-up (worker processes importing torch) is timed apart from the selection. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

# case name -> (local worker processes, 0 = no Dask; pool chunk budget in MB, the library's is 256)
CASES = {"single": (0, 256), "dask-2x1": (2, 256), "dask-1x1": (1, 256), "single-32MB-chunks": (0, 32)}


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb() -> float:
    """This process's peak resident memory (VmHWM; getrusage's maxrss would carry over the peak of the
    parent this process was forked from). It counts the pages of the memory-mapped features the
    process touched, which are shared page cache rather than its own memory."""
    return _status_mb("VmHWM")


class _PrivatePeak(threading.Thread):
    """Samples RssAnon (the process's own memory, without file-backed pages) every 10 ms;
    the kernel keeps no peak of it."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0.0

    def run(self) -> None:
        while True:
            self.peak = max(self.peak, _status_mb("RssAnon"))
            time.sleep(0.01)


def _start_private_peak(dask_worker=None) -> None:
    poller = _PrivatePeak()
    poller.start()
    dask_worker.private_peak = poller  # the worker object outlives this call


def _private_peak(dask_worker=None) -> float:
    return round(dask_worker.private_peak.peak, 1)


def prepare(folder: Path, pool: int, dim: int, classes: int, budget: int, seed: int) -> dict:
    """Features (.npy), labeled/unlabeled indices and a trained head under ``folder``."""
    import torch

    from ralif.benchmarking import synthetic_features
    from ralif.head import Standardizer, fit_head

    x, y = synthetic_features(pool, dim, classes, seed)
    np.save(folder / "features.npy", x)
    del x
    feats = np.load(folder / "features.npy", mmap_mode="r")
    m = max(budget, 10 * classes)
    labeled = np.sort(np.random.default_rng(seed).choice(pool, m, replace=False))
    head = fit_head(feats, labeled, y[labeled], classes, standardizer=Standardizer.fit(feats), device="cpu")
    torch.save({"weight": head.weight, "mean": head.standardizer.mean, "scale": head.standardizer.scale,
                "l2": head.l2}, folder / "head.pt")
    np.save(folder / "labeled.npy", labeled)
    return {"pool": pool, "dim": dim, "classes": classes, "labeled": m, "budget": budget,
            "features_mb": round(pool * dim * 4 / 2**20, 1)}


def child(folder: Path, workers: int, chunk_mb: float, shards: int, budget: int, seed: int) -> dict:
    """One selection in this process; with ``workers`` > 0 through a LocalCluster of that many workers.

    ``chunk_mb`` other than the library's 256 re-chunks the single-process pool passes: only the float32
    summation order changes, which measures how much the batch moves from rounding alone.
    """
    import functools

    import psutil
    import torch

    import ralif.head
    from ralif.compute import chunk_size, configure_threads
    from ralif.head import LinearHead, Standardizer
    from ralif.strategies import make_strategy

    configure_threads()
    if chunk_mb != 256:
        ralif.head.chunk_size = functools.partial(chunk_size, budget_mb=chunk_mb)
    state = torch.load(folder / "head.pt", weights_only=False)
    head = LinearHead(state["weight"], Standardizer(state["mean"], state["scale"]), state["l2"], torch.device("cpu"))
    feats = np.load(folder / "features.npy", mmap_mode="r")
    labeled = np.load(folder / "labeled.npy")
    mask = np.ones(feats.shape[0], dtype=bool)
    mask[labeled] = False
    unlabeled = np.flatnonzero(mask)
    out: dict = {"threads": torch.get_num_threads()}
    client = None
    if workers:
        from ralif.sharded import get_client

        t0 = time.perf_counter()
        client = get_client("local", workers)
        # Workers import the library once when they start serving; that is start-up, not selection.
        client.run(lambda: __import__("ralif.sharded") and None)
        out["cluster_start_seconds"] = round(time.perf_counter() - t0, 3)
        spec = f"ralif(engine=dask,scheduler=local,workers={workers},shards={shards})"
    else:
        # The sharded engine has no least-sure gate: the single-process reference goes without it too.
        spec = "ralif(gate=none)"
    strategy = make_strategy(spec)
    # Imports (torch) and the cluster's client alone take a few hundred MB; the peak is read against it.
    out["driver_rss_before_select_mb"] = round(psutil.Process().memory_info().rss / 2**20, 1)
    out["driver_private_before_select_mb"] = round(_status_mb("RssAnon"), 1)
    poller = _PrivatePeak()
    poller.start()
    if client is not None:
        client.run(_start_private_peak)
    t0 = time.perf_counter()
    picked = strategy.select(head, feats, labeled, unlabeled, budget, np.random.default_rng(seed + 1))
    out["select_seconds"] = round(time.perf_counter() - t0, 3)
    info = strategy.last_info
    out["candidates_seconds"] = round(info["score_seconds"], 3)  # scores through the merged top 10%
    out["diversity_seconds"] = round(info["diversity_seconds"], 3)
    out["driver_peak_rss_mb"] = round(_peak_mb(), 1)
    out["driver_private_peak_mb"] = round(poller.peak, 1)
    if client is not None:
        out["worker_peak_rss_mb"] = [round(v, 1) for v in client.run(_peak_mb).values()]
        out["worker_private_peak_mb"] = list(client.run(_private_peak).values())
        out["shards"] = info["shards"]
        out["gathered_bytes"] = info["gathered_bytes"]
        out["features_via"] = info["features_via"]
    out["picked"] = np.sort(picked).tolist()
    out["candidates"] = np.asarray(info["candidates"]).tolist()
    return out


def run_child(folder: Path, case: str, shards: int, budget: int, seed: int) -> dict:
    workers, chunk_mb = CASES[case]
    cmd = [sys.executable, __file__, "--child", str(folder), "--workers", str(workers), "--chunk-mb", str(chunk_mb),
           "--shards", str(shards), "--budget", str(budget), "--seed", str(seed)]
    env = dict(os.environ)
    env.setdefault("RALIF_THREADS", "1")
    res = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(res.stdout)


def summarise(runs: dict[str, list[dict]]) -> dict:
    base = runs["single"]
    out: dict = {}
    for case, rs in runs.items():
        sel = [r["select_seconds"] for r in rs]
        cand = [r["candidates_seconds"] for r in rs]
        s = {"select_seconds": sel, "candidates_seconds": cand,
             "diversity_seconds": [r["diversity_seconds"] for r in rs],
             "driver_rss_before_select_mb": [r["driver_rss_before_select_mb"] for r in rs],
             "driver_peak_rss_mb": [r["driver_peak_rss_mb"] for r in rs],
             "driver_private_before_select_mb": [r["driver_private_before_select_mb"] for r in rs],
             "driver_private_peak_mb": [r["driver_private_peak_mb"] for r in rs]}
        if "shards" in rs[0]:
            s["worker_peak_rss_mb"] = [max(r["worker_peak_rss_mb"]) for r in rs]
            s["worker_private_peak_mb"] = [max(r["worker_private_peak_mb"]) for r in rs]
            s["cluster_start_seconds"] = [r["cluster_start_seconds"] for r in rs]
            s["shards"] = rs[0]["shards"]
            s["gathered_mb"] = round(rs[0]["gathered_bytes"] / 2**20, 3)
            s["features_via"] = rs[0]["features_via"]
        if case != "single":
            # Ratio within each repeat (the cases of a repeat ran back to back), then the median.
            s["select_ratio_vs_single"] = round(statistics.median(
                r["select_seconds"] / b["select_seconds"] for r, b in zip(rs, base)), 3)
            s["candidates_ratio_vs_single"] = round(statistics.median(
                r["candidates_seconds"] / b["candidates_seconds"] for r, b in zip(rs, base)), 3)
            s["same_batch_as_single"] = all(r["picked"] == b["picked"] for r, b in zip(rs, base))
            s["same_candidates_as_single"] = all(r["candidates"] == b["candidates"] for r, b in zip(rs, base))
            s["candidate_set_overlap"] = min(
                len(set(r["candidates"]) & set(b["candidates"])) / len(b["candidates"]) for r, b in zip(rs, base))
            s["candidate_order_agreement"] = min(
                float(np.mean(np.array(r["candidates"]) == np.array(b["candidates"]))) for r, b in zip(rs, base))
            s["batch_overlap_with_single"] = min(
                len(set(r["picked"]) & set(b["picked"])) / len(b["picked"]) for r, b in zip(rs, base))
        out[case] = s
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="200000,1000000", help="pool sizes, comma-separated")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--shards", type=int, default=0, help="row shards (0 = two per worker thread)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tmp", default=None, help="folder for the temporary feature files (default: system temp)")
    ap.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--chunk-mb", type=float, default=256, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.workers, args.chunk_mb, args.shards, args.budget, args.seed)))
        return 0
    report: dict = {
        "command": "RALIF_THREADS=1 python benchmarks/sharded.py " + " ".join(sys.argv[1:]),
        "cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)), "results": [],
    }
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
            folder = Path(tmp)
            t0 = time.perf_counter()
            setup = prepare(folder, size, args.dim, args.classes, args.budget, args.seed)
            setup["prepare_seconds"] = round(time.perf_counter() - t0, 1)
            runs: dict[str, list[dict]] = {c: [] for c in CASES}
            order = list(CASES)
            for rep in range(args.repeats):
                for case in order[rep % len(order):] + order[: rep % len(order)]:  # rotate the order
                    runs[case].append(run_child(folder, case, args.shards, args.budget, args.seed))
            report["results"].append({**setup, "repeats": args.repeats, "cases": summarise(runs)})
        print(json.dumps(report["results"][-1]), file=sys.stderr)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
