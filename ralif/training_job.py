"""The background job that trains a ResNet18 (run by :func:`ralif.worker.start_job`)."""

from __future__ import annotations

import os
from typing import Any

from ralif.worker import JobCancelled, JobContext


def train_resnet_job(
    job: JobContext,
    *,
    images: Any,
    labels: Any,
    num_classes: int,
    output_path: str,
    class_names: list[str] | None = None,
    config: dict[str, Any] | Any | None = None,
    device: str | None = None,
    progress_every: int = 0,
    threads: int | None = None,
) -> str:
    """Train a ResNet18 and save it to ``output_path``; returns that path.

    ``images``: a list of image paths, an NxHxWx3 uint8 array, or the path of a ``.npy`` file
    holding one (cheaper than sending a large array to the worker).  ``config``: a
    ``TrainConfig`` or a dict of its fields.  ``threads`` caps torch's CPU threads, leaving
    cores to the rest of the application.
    """
    import numpy as np
    import torch

    from ralif.models.resnet import TrainConfig, TrainingCancelled, train_resnet
    from ralif.models.resnet_model import required

    if threads:
        torch.set_num_threads(int(threads))

    job.report(phase="loading images")
    if isinstance(images, (str, os.PathLike)) and os.fspath(images).endswith(".npy"):
        images = np.load(os.fspath(images), mmap_mode="r", allow_pickle=False)
    if config is None:
        cfg = TrainConfig()
    elif isinstance(config, dict):
        cfg = TrainConfig.from_dict(config)
    else:
        cfg = config

    def on_progress(p: dict[str, Any]) -> None:
        epochs = max(1, int(p.get("epochs", 1)))
        done = p["epoch"] - 1 + (p["batch"] / p["batches"] if "batch" in p else 1.0)
        job.report({**p, "fraction": min(1.0, done / epochs)}, phase="training",
                   force="batch" not in p)

    job.report({"epoch": 0, "epochs": int(required(cfg.epochs)), "fraction": 0.0}, phase="training")
    try:
        model = train_resnet(
            images,
            labels,
            num_classes,
            cfg,
            device=device,
            progress=on_progress,
            should_stop=job.should_stop,
            class_names=class_names,
            progress_every=progress_every,
        )
    except TrainingCancelled as exc:
        raise JobCancelled(str(exc)) from exc
    job.report(phase="saving")
    path = model.save(output_path)
    return str(path)
