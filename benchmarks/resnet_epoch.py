"""Seconds per training epoch of the CIFAR-style ResNet18, per 1000 images.

Usage: python benchmarks/resnet_epoch.py DATA_DIR [--n 1000] [--epochs 2] [--batch-size 128]

DATA_DIR holds an ImageFolder tree, ``train/<class>/*.jpg`` (for instance the CIFAR-10 JPEGs).
The first ``n / classes`` images of every class (sorted by name) are decoded once into memory;
decoding is timed separately so the epoch times measure training alone.  The first epoch
includes one-off warm-up (kernel selection, allocator growth), so the last epoch is the
steady-state figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ralif.compute import resolve_device
from ralif.models.resnet import TrainConfig, train_resnet


def load_images(root: Path, n: int, size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    train = root / "train"
    classes = sorted(p.name for p in train.iterdir() if p.is_dir())
    if not classes:
        raise SystemExit(f"no class folders under {train}")
    per_class = max(1, n // len(classes))
    images, labels = [], []
    for k, name in enumerate(classes):
        files = sorted((train / name).glob("*.jpg"))[:per_class]
        for f in files:
            with Image.open(f) as im:
                images.append(np.asarray(im.convert("RGB").resize((size, size))))
            labels.append(k)
    return np.stack(images), np.asarray(labels), classes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("--n", type=int, default=1000, help="images to train on")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    images, labels, classes = load_images(args.data_dir, args.n, args.image_size)
    decode_s = time.perf_counter() - t0

    cfg = TrainConfig(variant="cifar", epochs=args.epochs, batch_size=args.batch_size,
                      image_size=args.image_size)
    device = resolve_device(args.device)
    epochs: list[dict] = []

    def show(p: dict) -> None:
        epochs.append(p)
        print(f"epoch {p['epoch']}/{p['epochs']}: {p['seconds']:.2f} s, "
              f"{p['images_per_s']:.1f} images/s, loss {p['loss']:.3f}", file=sys.stderr)

    train_resnet(images, labels, len(classes), cfg, device=device, progress=show)
    per_1000 = [p["seconds"] * 1000.0 / len(images) for p in epochs]
    result = {
        "benchmark": "resnet18_cifar_epoch",
        "images": len(images),
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "decode_s": round(decode_s, 3),
        "epoch_s": [round(p["seconds"], 3) for p in epochs],
        "s_per_epoch_per_1000_images": [round(s, 3) for s in per_1000],
        "steady_s_per_epoch_per_1000_images": round(per_1000[-1], 3),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
