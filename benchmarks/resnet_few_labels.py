"""From-scratch ResNet18 (cifar variant) on a few labels: does training diverge, and which
learning-rate setup prevents it?  The project's round settings (30 epochs, batches of 64, SGD lr
0.1) on generated 32 px images of 10 classes, for each learning-rate setup and label count.

    RALIF_THREADS=1 python benchmarks/resnet_few_labels.py --labels 20 50 --seeds 0 1

Prints, per run, the first and highest epoch loss, the last one, held-out accuracy and the mean
confidence of the held-out predictions (a model that is sure and wrong is the failure to catch).
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch

from ralif.models.resnet import TrainConfig, train_resnet

SETUPS = {
    "as before (lr 0.1)": {"lr_scaling": "none", "warmup_steps": 0},
    "lr scaled to batch": {"lr_scaling": "batch", "warmup_steps": 0},
    "warm-up only": {"lr_scaling": "none", "warmup_steps": None},
    "clip 1.0 only": {"lr_scaling": "none", "warmup_steps": 0, "clip_grad_norm": 1.0},
    "scaled + warm-up": {"lr_scaling": "batch", "warmup_steps": None},
}


def generated_images(n: int, k: int, seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Images of k classes: a smooth class template (a 4x4 colour grid, upsampled) under a random
    brightness shift and strong pixel noise, so a class is learnable but not from one pixel."""
    templates = np.random.default_rng(12345).uniform(40, 215, (k, 4, 4, 3))
    templates = templates.repeat(size // 4, 1).repeat(size // 4, 2)
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    rng.shuffle(y)
    x = templates[y] + rng.normal(0, 25, (n, 1, 1, 1)) + rng.normal(0, 45, (n, size, size, 3))
    return np.clip(x, 0, 255).astype(np.uint8), y


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--labels", type=int, nargs="+", default=[20, 50])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--setups", nargs="+", default=list(SETUPS))
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("RALIF_THREADS", "1")))
    k = args.classes
    x_test, y_test = generated_images(300, k, seed=999)
    print(f"{'setup':<22} {'labels':>6} {'seed':>4} {'first':>6} {'peak':>6} {'last':>6} {'test acc':>8} "
          f"{'conf':>5} {'s':>5}")
    for name in args.setups:
        for n in args.labels:
            for seed in args.seeds:
                x, y = generated_images(n, k, seed=seed)
                cfg = TrainConfig(variant="cifar", epochs=args.epochs, batch_size=64, seed=seed,
                                  **SETUPS[name])
                losses: list[float] = []
                t0 = time.perf_counter()
                try:
                    model = train_resnet(x, y, k, cfg, device="cpu",
                                         progress=lambda r, out=losses: out.append(r["loss"]))
                    proba = model.predict_proba(x_test)
                    acc = float((proba.argmax(1) == y_test).mean())
                    conf = float(proba.max(1).mean())
                    note = ""
                except RuntimeError as exc:
                    acc, conf, note = math.nan, math.nan, f"  stopped: {exc}"
                print(f"{name:<22} {n:>6} {seed:>4} {losses[0]:>6.2f} {max(losses):>6.2f} {losses[-1]:>6.2f} "
                      f"{acc:>8.2f} {conf:>5.2f} {time.perf_counter() - t0:>5.0f}"
                      f"  [{' '.join(f'{v:.1f}' for v in losses)}]{note}", flush=True)


if __name__ == "__main__":
    main()
