"""Selection speed and memory on synthetic features, one fresh process per case (clean peak RSS).

    python benchmarks/speed.py [--quick] [--device cpu|cuda] [--out DIR]

Prints a Markdown table; with --out also writes speed.json there.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CASES = [
    # (label, pool, dim, classes, budget, strategy, extra args)
    ("50k pool, B=1000", 50_000, 1024, 10, 1000, "ralif", []),
    ("50k pool, B=1000, closed form vs autograd", 50_000, 1024, 10, 1000, "ralif", ["--naive", "100"]),
    ("1M pool, D=512, B=100", 1_000_000, 512, 10, 100, "ralif", []),
    ("1M pool, D=1024, B=100", 1_000_000, 1024, 10, 100, "ralif", []),
    ("50k pool, B=1000, badge", 50_000, 1024, 10, 1000, "badge", []),
    ("50k pool, B=1000, coreset", 50_000, 1024, 10, 1000, "coreset", []),
]
QUICK = [c for c in CASES if c[1] <= 50_000][:2]


def run_case(case, device: str | None) -> dict:
    label, pool, dim, classes, budget, strategy, extra = case
    cmd = [sys.executable, "-m", "ralif", "benchmark", "selection", "--pool", str(pool), "--dim", str(dim),
           "--classes", str(classes), "--budget", str(budget), "--strategy", strategy, *extra]
    if device:
        cmd += ["--device", device]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    res = json.loads(out)
    res["case"] = label
    res["command"] = "python -m ralif " + " ".join(cmd[3:])
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only the 50k cases")
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    results = [run_case(c, args.device) for c in (QUICK if args.quick else CASES)]
    print("| case | strategy | device | fit s | select s | total s | features MB | peak RSS MB |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['case']} | {r['strategy'].split('(')[0]} | {r['device']} | {r['fit_seconds']:.2f} | "
              f"{r['select_seconds']:.2f} | {r['seconds']:.2f} | {r['features_mb']:.0f} | {r['peak_rss_mb']:.0f} |")
    for r in results:
        if "naive" in r:
            n = r["naive"]
            print(f"\nclosed form vs per-(sample, class) autograd ({n['samples']} samples × {r['classes']} classes): "
                  f"{n['speedup']:.0f}× (whole closed form incl. pool pass and solve), "
                  f"{n['speedup_scoring_product_only']:.0f}× (scoring product only); "
                  f"max |difference| {n['max_abs_difference']:.1e} of max |value| {n['max_abs_value']:.1e}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "speed.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
