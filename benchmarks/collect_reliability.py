"""Summary table of benchmarks/reliability.sh runs: one row per (setting, strategy).

    python benchmarks/collect_reliability.py OUT_DIR [DEFAULT_SPEC]

Reads OUT_DIR/<group>-base/results.json and OUT_DIR/<group>-ralif/results.json (either may be
missing), and prints Markdown: AUCA ratio mean with its 95 % interval over seeds, the exact sign-flip
p-value of the per-seed AUCA against Random, and (seed, cycle) pairs below Random; then, per setting,
the default's margin over the best baseline.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def groups_in(out: Path) -> list[str]:
    """The groups with a run in ``out``: reliability.sh's own, in its order, then any other, sorted."""
    script = (Path(__file__).with_name("reliability.sh")).read_text(encoding="utf-8")
    known = re.findall(r"^  ([a-z0-9-]+)\) sim ", script, flags=re.MULTILINE)
    found = {p.name.rsplit("-", 1)[0] for part in ("base", "ralif") for p in out.glob(f"*-{part}")}
    return [g for g in known if g in found] + sorted(found - set(known))


def main() -> int:
    out = Path(sys.argv[1])
    default = sys.argv[2] if len(sys.argv) > 2 else "ralif"
    print("| setting | strategy | seeds | AUCA ratio | 95 % CI | sign-flip p | below Random |")
    print("|---|---|---:|---:|---:|---:|---:|")
    verdicts = []
    for g in groups_in(out):
        rows = {}
        for part in ("base", "ralif"):
            path = out / f"{g}-{part}" / "results.json"
            if path.is_file():
                for name, s in json.loads(path.read_text())["strategies"].items():
                    rows.setdefault(name, (part, s))
        for name, (_, s) in rows.items():
            if name == "random":
                continue
            ci = s.get("auca_ratio_ci95") or [float("nan")] * 2
            p = (s.get("seed_test") or {}).get("sign_flip")
            print(f"| {g} | {name} | {len(s['auca_ratio'])} | {s['auca_ratio_mean']:.3f} | "
                  f"[{ci[0]:.3f}, {ci[1]:.3f}] | {'—' if p is None else f'{p:.3f}'} | "
                  f"{s['cycles_below_random']} of {s['cycles_compared']} |")
        base = {n: s for n, (part, s) in rows.items() if part == "base" and n != "random"}
        if default in rows and base:
            best = max(base, key=lambda n: base[n]["auca_ratio_mean"])
            d = rows[default][1]
            verdicts.append(f"| {g} | {d['auca_ratio_mean']:.3f} | {best} {base[best]['auca_ratio_mean']:.3f} | "
                            f"{d['auca_ratio_mean'] - base[best]['auca_ratio_mean']:+.3f} | "
                            f"{d['cycles_below_random']} of {d['cycles_compared']} |")
    if verdicts:
        print(f"\n| setting | {default} | best baseline | difference | {default} below Random |")
        print("|---|---:|---:|---:|---:|")
        print("\n".join(verdicts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
