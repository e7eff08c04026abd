"""benchmarks/below_random.py: paired differences to Random, the pairs below it and the normal model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from scipy.stats import norm

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "below_random.py"


def test_counts_pairs_below_random_and_the_gain_none_below_would_need(tmp_path: Path) -> None:
    rows = ["strategy,seed,cycle,accuracy,select_seconds"]
    gains = {(0, 1): 1.0, (0, 2): 1.0, (1, 1): -1.0, (1, 2): 3.0}
    for seed in (0, 1):
        for cycle in (0, 1, 2):
            base = 0.5 + 0.01 * cycle
            rows.append(f"random,{seed},{cycle},{base},")
            # The initial set (cycle 0) is not a pick: a difference there must not count.
            rows.append(f"ralif,{seed},{cycle},{base + gains.get((seed, cycle), -5.0) / 100},")
    (tmp_path / "results.csv").write_text("\n".join(rows) + "\n")
    out = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True,
                         check=True).stdout
    row = next(line for line in out.splitlines() if "| ralif |" in line).strip("|").split("|")
    d = np.array(list(gains.values()))
    sd = d.std(ddof=1)
    assert [c.strip() for c in row[4:]] == [
        "4", "+1.00", f"{sd:.2f}", "1", f"{4 * norm.cdf(-1 / sd):.1f}", f"{sd * norm.ppf(1 - 0.5 / 4):.2f}"]
    assert row[2].strip() == "2"


def test_merged_runs_pair_strategies_by_seed_and_refuse_a_random_that_differs(tmp_path: Path) -> None:
    def run(name: str, strategy: str, gain: float, seeds: tuple[int, ...], random_shift: float = 0.0) -> Path:
        rows = ["strategy,seed,cycle,accuracy,select_seconds"]
        for seed in seeds:
            for cycle in (0, 1, 2):
                base = 0.5 + 0.01 * cycle + 0.001 * seed
                rows.append(f"random,{seed},{cycle},{base + random_shift},")
                rows.append(f"{strategy},{seed},{cycle},{base + (gain + 0.001 * seed) * (cycle > 0)},")
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.csv").write_text("\n".join(rows) + "\n")
        return tmp_path / name

    a, b = run("a", "ralif", 0.01, (0, 1, 2)), run("b", "margin", 0.0, (0, 1, 2))
    out = subprocess.run([sys.executable, str(SCRIPT), "--merge", "--against", "ralif", str(a), str(b)],
                         capture_output=True, text=True, check=True).stdout
    margin = next(line for line in out.splitlines() if "| margin |" in line)
    assert margin.startswith("| a + b | margin | 3 |")
    # Margin is 0.01 behind on every cycle after the first of each seed: AUCA ratio about 0.02 lower.
    diff = float(margin.rstrip(" |").split("|")[-1].split("[")[0])
    assert -0.025 < diff < -0.015
    bad = run("c", "badge", 0.0, (1,), random_shift=0.01)
    res = subprocess.run([sys.executable, str(SCRIPT), "--merge", str(a), str(bad)], capture_output=True, text=True)
    assert res.returncode != 0 and "random seed 1 cycle 0" in res.stderr
