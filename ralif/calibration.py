"""Temperature scaling of the head's probabilities, fitted on held-out folds of the labels, and the
stratified folds themselves (``ralif.learners.cv_l2`` chooses the head's L2 on the same folds).

A head trained to convergence on few labels is rarely calibrated: on the CIFAR-10 embeddings at 100
and 1,000 labels its test cross-entropy is lowest with the logits divided by 1.3-1.5, on the 64-d
digits at 100 labels by about 0.75 (benchmarks/temperature.py). The
pseudo-labeled pool loss and the truncated label expectation both read these probabilities, so
``ralif(calibration=cv)`` scores with a tempered head (Guo et al. 2017): the temperature minimises the
cross-entropy of logits that each labeled image gets from a head fitted without it (k stratified
folds, the same L2 and standardisation as the head).
"""

from __future__ import annotations

import numpy as np
import torch

from ralif.head import LinearHead, Standardizer, fit_head

CALIBRATION_FOLDS = 3
# log-spaced candidates: from much sharper to much softer than the fitted head; the minimum over a
# fine grid is as good as a 1-D optimiser here and cannot fail to converge.
TEMPERATURE_GRID = np.exp(np.linspace(np.log(0.25), np.log(8.0), 121))


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """A fold number per label: within each class a seeded random order dealt round-robin over the folds."""
    labels = np.asarray(labels)
    n = len(labels)
    rng = np.random.default_rng([seed, 11])
    order = np.lexsort((rng.random(n), labels))
    sorted_y = labels[order]
    rank = np.arange(n) - np.searchsorted(sorted_y, sorted_y)
    fold = np.empty(n, dtype=np.int64)
    fold[order] = rank % folds
    return fold


def fold_logits(
    features: np.ndarray, labeled: np.ndarray, labels: np.ndarray, num_classes: int, *, l2: float,
    standardizer: Standardizer, folds: int = CALIBRATION_FOLDS, seed: int = 0, device: str | torch.device | None = None,
) -> torch.Tensor:
    """Logits (float64, on the CPU) of every labeled image from a head fitted on the other folds
    (``stratified_folds``), with the given L2 and standardisation."""
    labeled, labels = np.asarray(labeled), np.asarray(labels)
    fold = stratified_folds(labels, folds, seed)
    out = torch.empty(len(labeled), num_classes, dtype=torch.float64)
    for f in range(folds):
        train, held = fold != f, fold == f
        part = fit_head(features, labeled[train], labels[train], num_classes, l2=l2,
                        standardizer=standardizer, device=device)
        out[torch.from_numpy(np.flatnonzero(held))] = (part.design(features, labeled[held]) @ part.weight.T).cpu()
    return out


def held_out_logits(head: LinearHead, features: np.ndarray, folds: int = CALIBRATION_FOLDS,
                    seed: int = 0) -> tuple[torch.Tensor, np.ndarray] | None:
    """``fold_logits`` for the labels ``head`` was fitted on, with its L2 and standardisation, and the labels.

    None when the head does not know its labels (a wrapped layer, a loaded checkpoint) or there are
    too few to hold any out (fewer than two per fold, or one class)."""
    if head.trained_on is None:
        return None
    labeled, labels = head.trained_on
    if len(labeled) < 2 * folds or len(np.unique(labels)) < 2:
        return None
    logits = fold_logits(features, labeled, labels, head.num_classes, l2=head.l2, standardizer=head.standardizer,
                         folds=folds, seed=seed, device=head.device)
    return logits, labels


def best_temperature(logits: torch.Tensor, labels: np.ndarray,
                     grid: np.ndarray = TEMPERATURE_GRID) -> float:
    """The temperature of ``grid`` with the lowest mean cross-entropy of ``logits / T``."""
    t = torch.as_tensor(grid, dtype=torch.float64)
    scaled = logits.to(torch.float64)[None] / t[:, None, None]  # T × m × K: T and K are small
    y = torch.as_tensor(labels, dtype=torch.long)
    nll = -torch.log_softmax(scaled, dim=2)[:, torch.arange(len(y)), y].mean(1)
    return float(grid[int(torch.argmin(nll))])


def cv_temperature(head: LinearHead, features: np.ndarray, folds: int = CALIBRATION_FOLDS,
                   seed: int = 0) -> float | None:
    """The held-out temperature of ``head`` (None where it cannot be fitted: see ``held_out_logits``)."""
    held = held_out_logits(head, features, folds, seed)
    if held is None:
        return None
    return best_temperature(*held)
