"""ResNet18 trained end to end on the labeled images, in the paper's two variants.

* ``cifar``: torchvision's ResNet18 with a CIFAR-style stem (3x3 stride-1 first convolution, no
  max-pool) trained from scratch at 32 px; SGD lr 0.1, momentum 0.9, weight decay 5e-4, lr x0.1
  at 80% of the epochs; augmentation: random crop (padding 4) and horizontal flip.
* ``imagenet``: the standard 224 px ResNet18 fine-tuned from ImageNet weights; SGD lr 0.01 with a
  cosine schedule; augmentation: RandomResizedCrop and horizontal flip; evaluation on a
  Resize(256) + CenterCrop(224) view.

The trained network exposes what the influence engine needs: the 512-d penultimate features
(global average pool output) and the final linear layer.  Weights are never downloaded: ImageNet
weights are read from torch's hub cache or from a file the caller names.

The code lives in :mod:`ralif.models.resnet_model` (network, settings, trained model and its
files), :mod:`ralif.models.resnet_training` (the training loop) and
:mod:`ralif.models.resnet_data` (images, augmentation, normalisation); this module re-exports
what callers use.
"""

from __future__ import annotations

from ralif.models.resnet_data import ImageSource, load_image
from ralif.models.resnet_model import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    FEATURE_DIM,
    IMAGENET_WEIGHTS,
    VARIANTS,
    TrainConfig,
    TrainedResNet,
    build_resnet18,
    imagenet_weights_path,
)
from ralif.models.resnet_training import ProgressFn, TrainingCancelled, TrainingDiverged, train_resnet

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "FEATURE_DIM",
    "IMAGENET_WEIGHTS",
    "VARIANTS",
    "ImageSource",
    "ProgressFn",
    "TrainConfig",
    "TrainedResNet",
    "TrainingCancelled",
    "TrainingDiverged",
    "build_resnet18",
    "imagenet_weights_path",
    "load_image",
    "train_resnet",
]
