"""Training a ResNet18 end to end on the labeled images (:func:`train_resnet`): SGD with the
variant's schedule, augmentation drawn from its own seeded generator, progress per epoch or batch,
cancellation between batches."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from ralif.compute import resolve_device
from ralif.models.resnet_data import (
    EvalView,
    ImageSet,
    ImageSource,
    Normalizer,
    as_labels,
    crop_flip,
    gather_images,
    random_flip,
    source_len,
)
from ralif.models.resnet_model import (
    AUTO_WARMUP_FRACTION,
    AUTO_WARMUP_MAX,
    TrainConfig,
    TrainedResNet,
    build_resnet18,
    required,
)

ProgressFn = Callable[[dict], None]

# Step decay for the cifar variant happens once, at this fraction of the epochs.
_STEP_AT = 0.8


class TrainingCancelled(Exception):
    """Raised by :func:`train_resnet` when ``should_stop()`` returned true."""


class TrainingDiverged(RuntimeError):
    """Raised by :func:`train_resnet` when an epoch's loss is not finite or has risen far above
    the loss the run started from: the weights are no longer worth keeping."""


# Two epochs in a row with a loss above this many times the start's (the first epoch's, at least
# ln K: a uniform guess) are a diverging run.  In benchmarks/resnet_few_labels.py healthy runs never
# went above 1.02x their start while diverging ones reached 3.7-4.1x (the field report: 11.5
# against 2.3); one epoch alone is not enough, as a short run on noise can spike once and recover.
DIVERGENCE_FACTOR = 3.0


def check_divergence(losses: Sequence[float], num_classes: int) -> str | None:
    """Why the epoch losses so far (first to last) show a diverging run, or None."""
    last = losses[-1]
    if not math.isfinite(last):
        return f"the loss became {last}"
    if len(losses) < 3:
        return None
    start = max(losses[0], math.log(num_classes))
    if min(losses[-2:]) > DIVERGENCE_FACTOR * start:
        return f"the loss rose to {losses[-2]:.3g} then {last:.3g} from {losses[0]:.3g} at the start"
    return None


def _amp_settings(device: torch.device, enabled: bool) -> tuple[bool, torch.dtype | None]:
    if not enabled or device.type != "cuda":
        return False, None
    if torch.cuda.is_bf16_supported():
        return True, torch.bfloat16
    return True, torch.float16


def _lr_factor(variant: str, epochs: int, steps_per_epoch: int, warmup: int = 0) -> Callable[[int], float]:
    total = max(1, epochs * steps_per_epoch)
    if variant == "cifar":
        milestone = max(1, round(_STEP_AT * epochs)) * steps_per_epoch

        def schedule(it: int) -> float:
            return 0.1 if it >= milestone else 1.0
    else:
        def schedule(it: int) -> float:
            return 0.5 * (1.0 + math.cos(math.pi * min(it, total) / total))
    if warmup <= 0:
        return schedule
    # Linear ramp: step ``it`` runs at (it + 1) / (warmup + 1) of the scheduled rate.
    return lambda it: schedule(it) * min(1.0, (it + 1) / (warmup + 1))


def warmup_steps(cfg: TrainConfig, total_steps: int) -> int:
    """Steps of linear learning-rate warm-up for a run of ``total_steps``."""
    if cfg.warmup_steps is not None:
        return int(cfg.warmup_steps)
    return min(AUTO_WARMUP_MAX, int(AUTO_WARMUP_FRACTION * total_steps))


def base_lr(cfg: TrainConfig, n: int) -> float:
    """The learning rate of a full batch for ``n`` labeled images (see ``TrainConfig.lr_scaling``)."""
    lr, bs = float(required(cfg.lr)), int(required(cfg.batch_size))
    if cfg.lr_scaling == "batch" and n < bs:
        return lr * n / bs
    return lr


def train_resnet(
    images: ImageSource,
    labels: Sequence[int] | np.ndarray | None,
    num_classes: int,
    config: TrainConfig | None = None,
    device: str | torch.device | None = None,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    *,
    class_names: Sequence[str] | None = None,
    progress_every: int = 0,
) -> TrainedResNet:
    """Train a ResNet18 on labeled images and return it in eval mode.

    ``images``: a list of image file paths, an NxHxWx3 uint8 array, an Nx3xHxW uint8 tensor, or
    a map-style Dataset yielding images or ``(image, label)`` pairs (then ``labels`` may be None).
    ``progress`` gets ``{epoch, epochs, loss, accuracy, images_per_s, lr, seconds}`` after each
    epoch, and every ``progress_every`` batches the same keys plus ``batch`` and ``batches``
    (running means over the epoch so far).  ``should_stop`` is polled before every batch; when
    it returns true :class:`TrainingCancelled` is raised.  On the CPU, equal seeds give identical
    weights.  The caller's torch random state is left as it was.
    """
    cfg = config or TrainConfig()
    dev = resolve_device(device)
    on_cuda = dev.type == "cuda"
    n = source_len(images)
    if n < 2:
        raise ValueError("need at least 2 labeled images to train")
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
    y_all = as_labels(labels, n, num_classes)
    fork_devices: list[int] = []
    if on_cuda:
        fork_devices = [dev.index if dev.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(cfg.seed)
        model = build_resnet18(cfg.variant, num_classes, weights=cfg.weights)
        history = _fit(model, images, y_all, n, num_classes, cfg, dev, progress, should_stop,
                       progress_every)
    return TrainedResNet(
        model,
        variant=cfg.variant,
        num_classes=num_classes,
        image_size=int(required(cfg.image_size)),
        config=cfg,
        class_names=class_names,
        history=history,
        device=dev,
    )


def _fit(
    model: nn.Module,
    images: ImageSource,
    y_all: np.ndarray | None,
    n: int,
    num_classes: int,
    cfg: TrainConfig,
    dev: torch.device,
    progress: ProgressFn | None,
    should_stop: Callable[[], bool] | None,
    progress_every: int,
) -> list[dict]:
    on_cuda = dev.type == "cuda"
    size, bs, epochs = int(required(cfg.image_size)), int(required(cfg.batch_size)), int(required(cfg.epochs))
    channels_last = on_cuda and cfg.channels_last
    use_amp, amp_dtype = _amp_settings(dev, cfg.amp)
    # Augmentation and shuffling draw from their own CPU generator, so the sequence of batches
    # does not depend on the device or on anything else touching the global RNG.
    gen = torch.Generator().manual_seed(cfg.seed)
    norm = Normalizer(cfg.variant, dev, channels_last)

    model.to(dev)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()

    # A trailing batch of one image would leave BatchNorm nothing to normalise over.
    steps = n // bs + (1 if n % bs > 1 else 0)
    used = min(n, steps * bs)

    if cfg.variant == "cifar":
        data, targets = gather_images(images, y_all, EvalView("cifar", size), cfg.num_workers)
        if on_cuda and data.numel() <= 2 << 30:
            data, targets = data.to(dev), targets.to(dev)
        pad = max(1, round(size / 8))

        def epoch_batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            perm = torch.randperm(n, generator=gen)[:used].to(data.device)
            for s in range(steps):
                idx = perm[s * bs : (s + 1) * bs]
                x = data[idx].to(dev, non_blocking=True)
                yield crop_flip(x, pad, gen), targets[idx].to(dev, non_blocking=True)
    else:
        crop = v2.RandomResizedCrop(size, antialias=True)
        loader = DataLoader(
            ImageSet(images, y_all, crop),
            batch_size=bs,
            shuffle=True,
            drop_last=n % bs == 1,
            num_workers=cfg.num_workers,
            pin_memory=on_cuda,
            generator=torch.Generator().manual_seed(cfg.seed + 1),
            persistent_workers=cfg.num_workers > 0,
        )

        def epoch_batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for x, y in loader:
                if bool((y < 0).any()):
                    raise ValueError(
                        "labels are required: pass labels= or a Dataset of (image, label)"
                    )
                if int(y.max()) >= num_classes:
                    raise ValueError(f"labels must lie in [0, {num_classes})")
                x = x.to(dev, non_blocking=True)
                yield random_flip(x, gen), y.to(dev, non_blocking=True)

    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=base_lr(cfg, used),
        momentum=float(required(cfg.momentum)),
        weight_decay=float(required(cfg.weight_decay)),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_factor(cfg.variant, epochs, steps, warmup_steps(cfg, epochs * steps))
    )
    clip = None if cfg.clip_grad_norm is None else float(cfg.clip_grad_norm)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    criterion = nn.CrossEntropyLoss()
    bench = torch.backends.cudnn.flags(enabled=True, benchmark=True) if on_cuda else None

    history: list[dict] = []
    with bench or contextlib.nullcontext():
        for epoch in range(epochs):
            t0 = time.perf_counter()
            loss_sum = torch.zeros((), device=dev)
            correct = torch.zeros((), device=dev, dtype=torch.long)
            seen = 0
            for b, (x, y) in enumerate(epoch_batches()):
                if should_stop is not None and should_stop():
                    raise TrainingCancelled(f"training cancelled in epoch {epoch + 1}/{epochs}")
                x = norm(x)
                with torch.autocast(dev.type, dtype=amp_dtype, enabled=use_amp):
                    logits = model(x)
                    loss = criterion(logits, y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if clip is not None:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
                scaler.step(optimizer)
                scaler.update()
                lr_used = optimizer.param_groups[0]["lr"]
                scheduler.step()
                loss_sum += loss.detach().float() * y.shape[0]
                correct += (logits.detach().argmax(1) == y).sum()
                seen += int(y.shape[0])
                if progress is not None and progress_every > 0 and (b + 1) % progress_every == 0:
                    dt = time.perf_counter() - t0
                    progress({
                        "epoch": epoch + 1,
                        "epochs": epochs,
                        "batch": b + 1,
                        "batches": steps,
                        "loss": float(loss_sum) / seen,
                        "accuracy": float(correct) / seen,
                        "images_per_s": seen / dt if dt > 0 else 0.0,
                        "lr": lr_used,
                        "seconds": dt,
                    })
            if seen == 0:
                raise ValueError("no training batches: too few images for the batch size")
            epoch_loss = float(loss_sum) / seen  # one device sync per epoch
            dt = time.perf_counter() - t0
            why = check_divergence([*(r["loss"] for r in history), epoch_loss], num_classes)
            if why is not None:
                raise TrainingDiverged(
                    f"training diverged in epoch {epoch + 1} of {epochs}: {why} (learning rate "
                    f"{base_lr(cfg, used):.3g} for {used} labeled images per epoch). Lower the ResNet "
                    "learning rate (lr), label more images, or use a pretrained encoder."
                )
            record = {
                "epoch": epoch + 1,
                "epochs": epochs,
                "loss": epoch_loss,
                "accuracy": float(correct) / seen,
                "images_per_s": seen / dt if dt > 0 else 0.0,
                "lr": lr_used,
                "seconds": dt,
            }
            history.append(record)
            if progress is not None:
                progress(dict(record))
    model.eval()
    return history
