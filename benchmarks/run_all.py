"""`make bench`: the quick speed benchmarks, then a short quality simulation when the shared
CIFAR-10 embeddings are available (pass a features file to use another data set).

    python benchmarks/run_all.py [FEATURES.npz]

The full figures in docs/BENCHMARKS.md come from the commands written there.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_FEATURES = HERE.parent.parent / "shared" / "data" / "cifar10_mobilenetv1_imagenet_emb1024.npz"


def main() -> int:
    subprocess.run([sys.executable, str(HERE / "speed.py"), "--quick"], check=True)
    features = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_FEATURES
    if not features.is_file():
        print(f"\nno features file at {features}: skipping the quality simulation")
        return 0
    subprocess.run([sys.executable, "-m", "ralif", "simulate", "--features", str(features),
                    "--strategies", "random,badge,ralif", "--initial", "100", "--budget", "100",
                    "--cycles", "3", "--seeds", "1", "--out", str(HERE.parent / "runs" / "bench-quick")], check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
