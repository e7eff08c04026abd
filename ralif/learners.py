"""What a simulation cycle trains, and what the selection engine gets from it.

A learner is trained on the labeled set, reports which test samples it gets right, and hands the
strategy a linear head plus the features that head acts on:
- ``LinearProbeLearner``: a frozen encoder's features (or any features file) + the linear head.
- ``ResNetLearner``: ResNet18 trained end to end; its penultimate features and final layer feed the
  same closed-form influence engine (the paper's choice for CNNs).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from ralif.calibration import fold_logits
from ralif.compute import resolve_device
from ralif.features import FeatureSplits
from ralif.head import DEFAULT_L2, LinearHead, Standardizer, fit_head

if TYPE_CHECKING:
    from ralif.models.resnet import TrainedResNet


class Learner(Protocol):
    num_classes: int

    def fit(self, labeled: np.ndarray, labels: np.ndarray, seed: int) -> None: ...

    def test_correct(self) -> np.ndarray: ...

    def selection_inputs(self) -> tuple[LinearHead, np.ndarray]: ...


# Candidate L2 strengths for ``l2="cv"``: a decade either side of the default and one more above,
# where few labels in many dimensions need the most shrinkage.
L2_GRID = (1e-3, 1e-2, 1e-1, 1.0)
CV_FOLDS = 3


def cv_l2(
    features: np.ndarray, labeled: np.ndarray, labels: np.ndarray, num_classes: int, standardizer: Standardizer,
    *, grid: tuple[float, ...] = L2_GRID, folds: int = CV_FOLDS, seed: int = 0, device: str | None = None,
) -> float:
    """The L2 strength of ``grid`` with the lowest held-out cross-entropy over ``folds`` stratified folds of
    the labeled set. Too few labels to hold any out (fewer than two per fold) gives DEFAULT_L2."""
    labeled, labels = np.asarray(labeled), np.asarray(labels)
    n = len(labeled)
    if n < 2 * folds or len(np.unique(labels)) < 2:
        return DEFAULT_L2
    loss = np.zeros(len(grid))
    for i, lam in enumerate(grid):
        logits = fold_logits(features, labeled, labels, num_classes, l2=lam, standardizer=standardizer,
                             folds=folds, seed=seed, device=device)
        logp = torch.log_softmax(logits, dim=1)[torch.arange(n), torch.as_tensor(labels, dtype=torch.long)]
        loss[i] = -float(logp.clamp(min=math.log(1e-12)).sum())
    return float(grid[int(np.argmin(loss))])


class LinearProbeLearner:
    """Linear softmax head on fixed features (standardised with pool statistics fitted once).

    ``l2="cv"`` chooses the head's L2 strength from the labels at every fit (``cv_l2``): it shapes every
    learning curve, and the right amount shrinks as labels accumulate.
    """

    def __init__(self, data: FeatureSplits, l2: float | str = DEFAULT_L2, device: str | None = None):
        if isinstance(l2, str) and l2 != "cv":
            raise ValueError(f"l2 must be a positive number or 'cv', got {l2!r}")
        self.data = data
        self.l2 = l2
        self.device = resolve_device(device)
        self.num_classes = data.num_classes
        self.standardizer = Standardizer.fit(data.x_train)
        self.head: LinearHead | None = None
        self.chosen_l2: list[float] = []

    def fit(self, labeled: np.ndarray, labels: np.ndarray, seed: int) -> None:
        if self.l2 == "cv":
            lam = cv_l2(self.data.x_train, labeled, labels, self.num_classes, self.standardizer, seed=seed,
                        device=str(self.device))
        else:
            lam = float(self.l2)
        self.chosen_l2.append(lam)
        self.head = fit_head(self.data.x_train, labeled, labels, self.num_classes, l2=lam,
                             standardizer=self.standardizer, device=self.device)

    def _fitted(self) -> LinearHead:
        if self.head is None:
            raise RuntimeError("fit() the learner before using it")
        return self.head

    def test_correct(self) -> np.ndarray:
        return self._fitted().predict(self.data.x_test) == self.data.y_test

    def selection_inputs(self) -> tuple[LinearHead, np.ndarray]:
        return self._fitted(), self.data.x_train


class ResNetLearner:
    """ResNet18 retrained from its initial weights every cycle on the labeled images."""

    def __init__(
        self, train_images, test_images, y_test: np.ndarray, num_classes: int, config=None,
        device: str | None = None, progress: Callable[[dict], None] | None = None,
    ):
        from ralif.models.resnet import TrainConfig

        self.train_images, self.test_images = train_images, test_images
        self.y_test = np.asarray(y_test)
        self.num_classes = num_classes
        self.config = config or TrainConfig()
        self.device = device
        self.progress = progress
        self.model: TrainedResNet | None = None
        self._features: np.ndarray | None = None
        self._head: LinearHead | None = None

    def _take(self, idx: np.ndarray):
        imgs = self.train_images
        return imgs[idx] if isinstance(imgs, np.ndarray) else [imgs[i] for i in idx]

    def fit(self, labeled: np.ndarray, labels: np.ndarray, seed: int) -> None:
        from ralif.models.resnet import train_resnet
        from ralif.models.resnet_model import required

        cfg = replace(self.config, seed=int(seed))
        model = train_resnet(self._take(labeled), labels, self.num_classes, cfg, device=self.device,
                             progress=self.progress)
        self.model = model
        feats, _ = model.features_and_proba(self.train_images)
        w, b = model.final_layer()
        # SGD weight decay wd on the mean loss is the L2 term (wd/2)‖W‖²: the same λ for the Hessian.
        self._head = LinearHead.from_linear_layer(w, b, l2=float(required(cfg.weight_decay)), device=self.device)
        self._features = feats

    def test_correct(self) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("fit() the learner before using it")
        return self.model.predict(self.test_images) == self.y_test

    def selection_inputs(self) -> tuple[LinearHead, np.ndarray]:
        if self._head is None or self._features is None:
            raise RuntimeError("fit() the learner before using it")
        return self._head, self._features


def load_uint8_images(paths: list[str], size: int) -> np.ndarray:
    """Decode images once into an N×size×size×3 uint8 array (resized, any mode → RGB)."""
    from PIL import Image

    from ralif.images import load_rgb

    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, p in enumerate(paths):
        im = load_rgb(p)
        if im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.BICUBIC)
        out[i] = np.asarray(im, dtype=np.uint8)
    return out
