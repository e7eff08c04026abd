"""One active-learning cycle on real images, phase by phase: decode, train, feature pass, select.

    python benchmarks/cycle.py IMAGEFOLDER --model resnet18 --pool 5000 --labeled 1000 --epochs 1
    python benchmarks/cycle.py IMAGEFOLDER --model clip-linear --encoder resnet18-32:none --pool 5000

IMAGEFOLDER has train/<class>/...; the pool is a seeded sample of N training images and the
labeled set a seeded sample of the pool. Prints JSON with seconds per phase.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("images", type=Path)
    ap.add_argument("--model", choices=["resnet18", "clip-linear"], default="resnet18")
    ap.add_argument("--encoder", default="clip:ViT-B-16:openai", help="clip-linear: encoder spec")
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--pool", type=int, default=5000)
    ap.add_argument("--labeled", type=int, default=1000)
    ap.add_argument("--budget", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--strategy", default="ralif")
    ap.add_argument("--device", default=None)
    args = ap.parse_args()

    from ralif.compute import configure_threads, resolve_device
    from ralif.head import fit_head
    from ralif.images import load_image_folder
    from ralif.strategies import make_strategy

    configure_threads()
    dev = resolve_device(args.device)
    t = {}
    t0 = time.perf_counter()
    train = load_image_folder(args.images / "train", decode=False)["all"]
    rng = np.random.default_rng(0)
    train = train.subset(np.sort(rng.choice(len(train), min(args.pool, len(train)), replace=False)))
    t["scan"] = time.perf_counter() - t0
    n = len(train)
    lab = np.sort(rng.choice(n, args.labeled, replace=False))
    unl = np.setdiff1d(np.arange(n), lab)
    y = train.labels
    k = len(train.classes)
    res = {"model": args.model, "device": str(dev), "pool": n, "labeled": len(lab), "budget": args.budget}
    if args.model == "resnet18":
        from ralif.head import LinearHead
        from ralif.learners import load_uint8_images
        from ralif.models.resnet import TrainConfig, train_resnet

        t0 = time.perf_counter()
        imgs = load_uint8_images(train.paths, 32)
        t["decode"] = time.perf_counter() - t0
        cfg = TrainConfig(variant="cifar", epochs=args.epochs)
        t0 = time.perf_counter()
        model = train_resnet(imgs[lab], y[lab], k, cfg, device=dev)
        t["train"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        feats, _ = model.features_and_proba(imgs)
        t["feature_pass"] = time.perf_counter() - t0
        w, b = model.final_layer()
        head = LinearHead.from_linear_layer(w, b, l2=float(cfg.weight_decay), device=dev)
        res.update(epochs=args.epochs, train_seconds_per_epoch=round(t["train"] / args.epochs, 3),
                   train_images_per_second=round(len(lab) * args.epochs / t["train"], 1))
    else:
        from ralif.encoders import build_encoder
        from ralif.feature_cache import fill_cache

        enc = build_encoder(args.encoder, device=args.device)
        t0 = time.perf_counter()
        r = fill_cache(enc, train, args.cache, device=args.device)
        t["features_through_cache"] = time.perf_counter() - t0
        feats = r.features
        t0 = time.perf_counter()
        head = fit_head(feats, lab, y[lab], k, device=dev)
        t["train"] = time.perf_counter() - t0
        res.update(encoder=enc.id, cache_hits=r.hits, cache_misses=r.misses)
    t0 = time.perf_counter()
    picked = make_strategy(args.strategy).select(head, feats, lab, unl, args.budget, np.random.default_rng(1))
    t["select"] = time.perf_counter() - t0
    assert len(picked) == args.budget
    res["seconds"] = {k2: round(v, 3) for k2, v in t.items()}
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
