"""benchmarks/collect_reliability.py: every group found in the output folder is summarised."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "collect_reliability.py"


def write(folder: Path, strategies: dict[str, float]) -> None:
    folder.mkdir()
    body = {name: {"auca_ratio": [r] * 5, "auca_ratio_mean": r, "auca_ratio_ci95": [r - 0.01, r + 0.01],
                   "seed_test": {"sign_flip": 0.0625}, "cycles_below_random": 1, "cycles_compared": 25}
            for name, r in strategies.items()}
    (folder / "results.json").write_text(json.dumps({"strategies": body}))


def test_known_groups_in_order_then_any_other_and_the_default_against_the_best_baseline(tmp_path: Path) -> None:
    write(tmp_path / "pixels-1000-base", {"random": 1.0, "margin": 1.008, "badge": 1.003})
    write(tmp_path / "pixels-1000-ralif", {"random": 1.0, "ralif": 0.998})
    write(tmp_path / "cifar-100-ralif", {"random": 1.0, "ralif": 1.015})
    write(tmp_path / "zebras-100-base", {"random": 1.0, "margin": 1.02})
    out = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True,
                         check=True).stdout
    settings = [line.split("|")[1].strip() for line in out.splitlines()[2:] if line.startswith("| ")]
    first = [s for i, s in enumerate(settings) if s not in settings[:i]]
    assert first[:3] == ["cifar-100", "pixels-1000", "zebras-100"]
    assert "| pixels-1000 | 0.998 | margin 1.008 | -0.010 | 1 of 25 |" in out
