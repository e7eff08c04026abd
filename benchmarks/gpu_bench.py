"""GPU throughput figures: CLIP ViT-B/16 extraction in bf16, ResNet18-CIFAR training, selection.

Usage: python benchmarks/gpu_bench.py {clip,resnet,selection} [--small] [--device auto|cpu|cuda]

Every figure is printed as one JSON line naming the device. ``--small`` shrinks every size so the
CPU fallback finishes in seconds (the same code paths, tiny inputs). Images are synthetic tensors:
throughput does not depend on the pixels, and decoding is not what is measured. CLIP uses random
weights when no pretrained weights are cached (the cost per image does not depend on them).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time

import torch

from ralif.compute import configure_threads, resolve_device


def device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads)"


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def autocast(dev: torch.device):
    # bf16 autocast where the hardware has it; the CPU fallback runs float32 (CPU bf16 is emulated
    # on many hosts and would measure the emulation, not the model).
    if dev.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def report(**fields) -> None:
    print(json.dumps(fields), flush=True)


def bench_clip(dev: torch.device, small: bool) -> None:
    from ralif.encoders import OpenClipEncoder

    try:
        enc = OpenClipEncoder("ViT-B-16", pretrained="openai", device=dev)
        weights = "openai"
    except RuntimeError:
        enc = OpenClipEncoder("ViT-B-16", pretrained=None, device=dev)
        weights = "random (no cached weights)"
    if dev.type == "cuda":
        enc.model.to(memory_format=torch.channels_last)
    batch, steps = (4, 2) if small else (256, 20)
    x = torch.randn(batch, 3, 224, 224, device=dev)
    with torch.inference_mode(), autocast(dev):
        enc.encode(x)  # warm-up: kernel selection, allocator growth
        sync(dev)
        t0 = time.perf_counter()
        for _ in range(steps):
            enc.encode(x)
        sync(dev)
    dt = time.perf_counter() - t0
    report(bench="clip ViT-B/16 extraction", device=device_name(dev), dtype="bf16" if dev.type == "cuda"
           else "float32", weights=weights, batch=batch, images=batch * steps,
           images_per_s=round(batch * steps / dt, 1), seconds=round(dt, 3))


def bench_resnet(dev: torch.device, small: bool) -> None:
    from ralif.models.resnet import build_resnet18

    model = build_resnet18("cifar", 10).to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    batch, steps = (8, 2) if small else (256, 40)
    x = torch.randn(batch, 3, 32, 32, device=dev)
    if dev.type == "cuda":
        x = x.to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=dev)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast(dev):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    model.train()
    step()
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(dev)
    dt = time.perf_counter() - t0
    report(bench="resnet18-cifar training", device=device_name(dev),
           dtype="bf16 autocast" if dev.type == "cuda" else "float32", batch=batch, images=batch * steps,
           images_per_s=round(batch * steps / dt, 1), seconds=round(dt, 3))


def bench_selection(dev: torch.device, small: bool) -> None:
    from ralif.benchmarking import selection_benchmark

    cases = ([dict(pool=2000, dim=64, classes=10, budget=20), dict(pool=5000, dim=64, classes=10, budget=10)]
             if small else [dict(pool=50_000, dim=1024, classes=10, budget=1000),
                            dict(pool=1_000_000, dim=1024, classes=10, budget=100)])
    for case in cases:
        res = selection_benchmark(**case, device=str(dev))
        report(bench="selection", device=device_name(dev), **case, strategy=res["strategy"],
               fit_seconds=res["fit_seconds"], select_seconds=res["select_seconds"],
               standardize_seconds=res["standardize_seconds"], peak_rss_mb=res["peak_rss_mb"],
               info=res["info"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("clip", "resnet", "selection"))
    ap.add_argument("--small", action="store_true", help="tiny sizes (the CPU fallback)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    configure_threads()
    dev = resolve_device(args.device)
    {"clip": bench_clip, "resnet": bench_resnet, "selection": bench_selection}[args.what](dev, args.small)


if __name__ == "__main__":
    main()
