"""The query-strategy interface shared by RALIF and every baseline.

A strategy is one small class with one method: given the trained head, the feature matrix of the
whole data set, the labeled and unlabeled indices, a batch size and a random generator, it returns
indices into the whole data set. Scoring (a number per sample) is kept apart from ranking and
diversity so each can be swapped and tested alone.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np
import torch

from ralif.compute import as_index
from ralif.head import LinearHead, nonfinite_message, nonfinite_rows


@dataclass
class Strategy:
    """Base class; subclasses are dataclasses whose fields are their options."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    needs_model: ClassVar[bool] = True
    option_help: ClassVar[dict[str, str]] = {}
    # Filled by select(): diagnostics of the last call (scores of the picks, solver iterations, ...).
    last_info: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def select(
        self, head: LinearHead | None, features: np.ndarray, labeled: np.ndarray, unlabeled: np.ndarray,
        budget: int, rng: np.random.Generator | int,
    ) -> np.ndarray:
        """``budget`` indices of ``unlabeled`` (into ``features``) to label next. ``budget`` may be an
        integral float (``10.0``); ``rng`` a numpy Generator or an int seed."""
        rng = as_generator(rng)
        labeled, unlabeled = check_request(features, labeled, unlabeled, budget)
        budget = as_budget(budget)
        if self.needs_model and head is None:
            raise ValueError(f"strategy {self.name!r} needs a trained model; train the head first")
        self.last_info = {}
        if budget == len(unlabeled):
            return np.sort(unlabeled)
        picked = as_index(self._select(head, features, labeled, unlabeled, budget, rng))
        _check_result(picked, unlabeled, budget, self.name)
        return picked

    def _select(
        self, head: LinearHead | None, features: np.ndarray, labeled: np.ndarray, unlabeled: np.ndarray,
        budget: int, rng: np.random.Generator,
    ) -> np.ndarray:
        raise NotImplementedError

    def options(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}

    def spec(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in self.options().items())
        return f"{self.name}({opts})" if opts else self.name

    @staticmethod
    def device_of(head: LinearHead | None) -> torch.device:
        return head.device if head is not None else torch.device("cpu")


def as_budget(budget: Any) -> int:
    """A batch size as an int: an integer, or a float holding a whole number (``10.0``);
    ``ValueError`` for anything else (``2.5``, ``0``, ``True``, ``"10"``)."""
    if not isinstance(budget, (bool, np.bool_)):
        try:
            value = operator.index(budget)
        except TypeError:
            whole = isinstance(budget, (float, np.floating)) and float(budget).is_integer()
            value = int(budget) if whole else 0
        if value >= 1:
            return value
    raise ValueError(f"batch size must be a positive integer, got {budget}")


def as_generator(rng: Any) -> np.random.Generator:
    """``rng`` itself, or a Generator seeded with the int ``rng``; ``TypeError`` for anything else."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, (bool, np.bool_)):
        if rng < 0:
            raise ValueError(f"rng: a seed must be non-negative, got {rng}")
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy Generator (np.random.default_rng(seed)) or an int seed, "
                    f"not {type(rng).__name__}")


def check_request(
    features: np.ndarray, labeled: np.ndarray, unlabeled: np.ndarray, budget: int
) -> tuple[np.ndarray, np.ndarray]:
    """Validated int64 ``(labeled, unlabeled)``; ``ValueError`` for indices out of range, repeated or
    in both sets, a batch size that is not a positive integer or exceeds the pool, and NaN or inf
    values in the rows a strategy reads (the labeled and unlabeled ones)."""
    labeled, unlabeled = as_index(labeled), as_index(unlabeled)
    n = features.shape[0]
    if features.ndim != 2:
        raise ValueError(f"features must be a 2-D array (samples × dimensions), got shape {features.shape}")
    # Counting over the index range, not sorting: these checks run on every call, over up to the
    # whole pool (a sort of 1M indices costs a quarter of a second each time).
    for what, idx in (("labeled", labeled), ("unlabeled", unlabeled)):
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"{what} indices out of range for {n} samples")
        if idx.size and np.bincount(idx, minlength=n).max() > 1:
            raise ValueError(f"{what} indices contain duplicates")
    if labeled.size and unlabeled.size:
        is_labeled = np.zeros(n, dtype=bool)
        is_labeled[labeled] = True
        if is_labeled[unlabeled].any():
            raise ValueError("an index is both labeled and unlabeled")
    budget = as_budget(budget)
    if budget > len(unlabeled):
        raise ValueError(f"batch size {budget} exceeds the {len(unlabeled)} unlabeled samples")
    used = len(labeled) + len(unlabeled)
    # One vectorised pass over the rows read (all of them for a whole pool, without a gather).
    bad = nonfinite_rows(features, None if used == n else np.concatenate([labeled, unlabeled]))
    if bad.size:
        in_labeled = int(np.isin(bad, labeled).sum()) if labeled.size else 0
        raise ValueError(nonfinite_message(bad, used, "rows the selection reads",
                                           f"{in_labeled} labeled, {len(bad) - in_labeled} unlabeled"))
    return labeled, unlabeled


def _check_result(picked: np.ndarray, unlabeled: np.ndarray, budget: int, name: str) -> None:
    # A strategy bug must never reach the user as a silently wrong batch.
    picked = np.asarray(picked)
    # The membership test by table (linear in the pool), not by sorting the pool on every call.
    valid = (len(picked) == budget and np.issubdtype(picked.dtype, np.integer) and len(unlabeled) > 0
             and np.unique(picked).size == budget and bool(np.isin(picked, unlabeled, kind="table").all()))
    if not valid:
        raise RuntimeError(f"strategy {name!r} returned an invalid batch")
