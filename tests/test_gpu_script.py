"""benchmarks/gpu.sh runs end to end on a machine without a GPU (its CPU fallback at tiny sizes)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the script runs full sizes")
def test_gpu_script_cpu_fallback_prints_every_figure():
    env = dict(os.environ, PYTHON=sys.executable, RALIF_THREADS="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--small"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=420)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "CPU fallback" in out.stdout
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    benches = [r["bench"] for r in rows]
    assert benches == ["clip ViT-B/16 extraction", "resnet18-cifar training", "selection", "selection"]
    assert all(r["device"].startswith("CPU") for r in rows)
    assert rows[0]["images_per_s"] > 0 and rows[1]["images_per_s"] > 0
    assert all(r["select_seconds"] > 0 for r in rows[2:])
