"""What ResNet18 from scratch needs, said before a project is created with it.

A from-scratch network learns every feature from the project's own labels. The paper runs it from
1,000 labels up; on a few dozen to 150 labels it gave confident nonsense (every image called the
same class, or a jacket an ankle boot at 99 %) while a pretrained encoder with a linear head is
useful from a few labels per class. Training cost on a CPU is the measured one of
docs/BENCHMARKS.md ("ResNet18, CIFAR stem, training"): 35-44 s per epoch per 1,000 images of
32 px on two CPU threads, and a pass over the pool for its features at about 74 images/s.
"""

from __future__ import annotations

from dataclasses import dataclass

# Below this many labeled images a from-scratch ResNet18 is not worth a round (the paper's
# smallest initial set for it).
SCRATCH_MIN_LABELS = 1000
# The paper's schedule (the ResNet18 defaults): 200 epochs from scratch each round.
PAPER_EPOCHS = 200
# Measured CPU costs (docs/BENCHMARKS.md, 2 threads, loaded machine), the slower of the two epochs.
CPU_SECONDS_PER_EPOCH_PER_1K = 44.0
CPU_FEATURE_IMAGES_PER_S = 74.0


@dataclass(frozen=True)
class ScratchAdvice:
    """``recommend_pretrained``: a pretrained encoder should be chosen instead; ``text``: what to
    show next to the choice."""

    recommend_pretrained: bool
    round_seconds_cpu: float | None     # the estimate for one round on the CPU, None without counts
    text: str


def duration(seconds: float) -> str:
    """A round's cost as a person reads it: seconds, minutes or hours, about."""
    if seconds < 90:
        return f"about {seconds:.0f} s"
    if seconds < 5400:
        return f"about {seconds / 60:.0f} min"
    return f"about {seconds / 3600:.1f} h"


def scratch_advice(labels: int | None = None, *, pool: int | None = None, epochs: int = PAPER_EPOCHS,
                   gpu: bool | None = None) -> ScratchAdvice:
    """The advice for ResNet18 from scratch with ``labels`` labeled images (None: not known yet),
    ``pool`` images in all, ``epochs`` per round, on a machine with (``gpu``) or without a CUDA GPU
    (None: look)."""
    if gpu is None:
        try:
            import torch

            gpu = bool(torch.cuda.is_available())
        except ImportError:
            gpu = False
    parts = [f"ResNet18 from scratch learns everything from your labels: it needs about "
             f"{SCRATCH_MIN_LABELS:,} labeled images before its guesses mean anything, and a GPU."]
    few = labels is None or labels < SCRATCH_MIN_LABELS
    if labels is not None and few:
        parts.append(f"With {labels:,} labels it will make confident but wrong guesses.")
    seconds: float | None = None
    if labels is not None:
        seconds = epochs * max(labels, 1) / 1000 * CPU_SECONDS_PER_EPOCH_PER_1K
        if pool:
            seconds += pool / CPU_FEATURE_IMAGES_PER_S
        where = "this machine has a CUDA GPU, which is much faster" if gpu else "this machine has no GPU"
        parts.append(f"On a CPU one round ({epochs} epochs over {labels:,} images"
                     + (f", then features for {pool:,}" if pool else "") + f") takes {duration(seconds)}; "
                     f"{where}.")
    elif not gpu:
        parts.append(f"This machine has no GPU: each epoch takes about {CPU_SECONDS_PER_EPOCH_PER_1K:.0f} s per "
                     f"1,000 labeled images on a CPU.")
    if few:
        parts.append("Choose a pretrained encoder (CLIP, or ResNet18 ImageNet with a linear head) instead: "
                     "it gives useful guesses from a few labels per class and runs a round in seconds.")
    return ScratchAdvice(few, seconds, " ".join(parts))
