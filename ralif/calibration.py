"""Temperature scaling of the head's probabilities, fitted on held-out folds of the labels.

A head trained to convergence on a few hundred labels is overconfident: on the CIFAR-10 embeddings
at 100-1,000 labels its test cross-entropy is lowest with the logits divided by about 1.5. The
pseudo-labeled pool loss and the truncated label expectation both read these probabilities, so
``ralif(calibration=cv)`` scores with a tempered head (Guo et al. 2017): the temperature minimises the
cross-entropy of logits that each labeled image gets from a head fitted without it (k stratified
folds, the same L2 and standardisation as the head).
"""

from __future__ import annotations

import numpy as np
import torch

from ralif.head import LinearHead, fit_head

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


def held_out_logits(head: LinearHead, features: np.ndarray, folds: int = CALIBRATION_FOLDS,
                    seed: int = 0) -> tuple[torch.Tensor, np.ndarray] | None:
    """Logits of every labeled image from a head refitted without its fold, with the labels.

    None when the head does not know its labels (a wrapped layer, a loaded checkpoint) or there are
    too few to hold any out (fewer than two per fold, or one class)."""
    if head.trained_on is None:
        return None
    labeled, labels = head.trained_on
    if len(labeled) < 2 * folds or len(np.unique(labels)) < 2:
        return None
    fold = stratified_folds(labels, folds, seed)
    out = torch.empty(len(labeled), head.num_classes, dtype=torch.float64)
    for f in range(folds):
        train, held = fold != f, fold == f
        part = fit_head(features, labeled[train], labels[train], head.num_classes, l2=head.l2,
                        standardizer=head.standardizer, device=head.device)
        out[torch.from_numpy(np.flatnonzero(held))] = (part.design(features, labeled[held]) @ part.weight.T).cpu()
    return out, labels


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
