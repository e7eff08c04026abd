#!/usr/bin/env bash
# Everything GPU-related in one run (under 8 minutes on one H100): CLIP ViT-B/16 extraction in bf16,
# ResNet18-CIFAR training throughput, selection at 50k (B = 1000) and 1M (D = 1024, B = 100).
# Without a GPU it falls back to the CPU at tiny sizes, so the script itself stays tested.
#
# Usage: bash benchmarks/gpu.sh [--small]      (--small: tiny sizes even on a GPU)
# Each step is capped (timeout) so one slow part cannot eat the others' time.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
SMALL=""
if [ "${1:-}" = "--small" ]; then SMALL="--small"; fi
if ! $PY -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "no CUDA device: CPU fallback at tiny sizes"
  SMALL="--small"
  DEVICE=cpu
else
  DEVICE=cuda
  $PY -c 'import torch; print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__)'
fi
for what in clip resnet selection; do
  limit=150
  if [ "$what" = selection ]; then limit=240; fi
  echo "== $what"
  timeout "$limit" $PY benchmarks/gpu_bench.py "$what" --device "$DEVICE" $SMALL
done
