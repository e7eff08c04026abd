"""The linear softmax head: multinomial logistic regression with L2 on fixed features.

The head sees standardised features plus a bias column, x̃ = [(φ(x) − μ)/σ; 1], and minimises
mean cross-entropy + λ/2‖W‖² to convergence with full-batch L-BFGS. The objective is strictly convex,
so the optimum (and every downstream selection) does not depend on initialisation or thread timing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ralif.compute import SCORE_DTYPE, as_index, chunk_size, resolve_device, rows
from ralif.streaming import as_float32_tensor

DEFAULT_L2 = 1e-2
# Multiply-adds of one objective evaluation (m·K·(D+1)) below which L-BFGS runs on the CPU even
# when the head will score on a GPU: its many small float64 steps are each a kernel launch and a
# host sync there, so a linear head on a few thousand labels fits faster on the CPU (5–6.6 s on an
# H100 against under 1 s on one CPU core, measured at 1000 labels × 1025 × 10).
GPU_FIT_MIN_WORK = 5e8


def head_fit_device(n_labeled: int, dim: int, num_classes: int, device: torch.device) -> torch.device:
    """Where to run the head's L-BFGS fit for a head that will live on ``device``."""
    if device.type == "cpu":
        return device
    return device if n_labeled * num_classes * (dim + 1) >= GPU_FIT_MIN_WORK else torch.device("cpu")


def nonfinite_rows_text(features: np.ndarray, show: int = 5, step: int = 65_536) -> str:
    """'N of M rows, e.g. rows 3, 17': where NaN or inf values are, for an error message.

    Reads the rows in bounded chunks, so a memory-mapped pool is never loaded whole.
    """
    n = features.shape[0]
    parts = [start + np.flatnonzero(~np.isfinite(np.asarray(features[start:start + step])).all(axis=1))
             for start in range(0, n, step)]
    bad = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    shown = ", ".join(str(int(i)) for i in bad[:show]) + (", ..." if len(bad) > show else "")
    return f"{len(bad)} of {n} rows, e.g. row{'s' if len(bad) > 1 else ''} {shown}"


# Rows read at a time by :func:`nonfinite_rows` (a bounded buffer over a memory-mapped pool).
_FINITE_STEP = 16_384


def _nonfinite_in(block: np.ndarray) -> np.ndarray:
    """Positions of the rows of ``block`` holding NaN or inf. A row's sum is finite only when every
    value in it is, so one cheap reduction finds the suspects (a sum that merely overflows is one
    too) and only those are looked at value by value."""
    if not np.issubdtype(block.dtype, np.inexact) or block.size == 0:
        return np.zeros(0, np.int64)   # integer features hold neither NaN nor inf
    with np.errstate(over="ignore", invalid="ignore"):
        sums = np.add.reduce(block.reshape(len(block), -1), axis=1)
    suspects = np.flatnonzero(~np.isfinite(sums))
    if suspects.size == 0:
        return suspects
    return suspects[~np.isfinite(block[suspects].reshape(len(suspects), -1)).all(axis=1)]


def nonfinite_rows(features: np.ndarray, rows: np.ndarray | None = None, step: int = _FINITE_STEP) -> np.ndarray:
    """The rows (sorted; of ``rows``, else of all of ``features``) that hold NaN or inf values.

    Vectorised over bounded blocks of rows; when ``rows`` covers at least half of the matrix the
    matrix is read in contiguous slices (no gather copy) and the other rows' results dropped."""
    n = int(features.shape[0])
    sel = None if rows is None else np.sort(as_index(rows))
    if sel is None or 2 * len(sel) >= n:
        parts = [start + _nonfinite_in(np.asarray(features[start:start + step])) for start in range(0, n, step)]
        bad = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        if sel is not None and len(sel) < n and bad.size:
            bad = bad[np.isin(bad, sel)]
        return bad
    parts = [sel[start:start + step][_nonfinite_in(np.asarray(features[sel[start:start + step]]))]
             for start in range(0, len(sel), step)]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def nonfinite_message(bad: np.ndarray, of: int, what: str, detail: str = "", show: int = 5) -> str:
    """``"features contain NaN or inf values in 3 of the 120 labeled rows (rows 4, 9, 17); ..."``."""
    shown = ", ".join(str(int(i)) for i in bad[:show]) + (", ..." if len(bad) > show else "")
    return (f"features contain NaN or inf values in {len(bad)} of the {of} {what} "
            f"(row{'s' if len(bad) > 1 else ''} {shown}{'; ' + detail if detail else ''}); "
            f"clean or re-extract them")


def class_indices(labels: np.ndarray) -> np.ndarray:
    """``labels`` as int64 class indices: integers, or floats holding whole numbers (``y + 0.5`` is
    refused, not truncated); ``ValueError`` for anything else."""
    y = np.asarray(labels).reshape(-1)
    if np.issubdtype(y.dtype, np.integer):
        return y.astype(np.int64, copy=False)
    if not np.issubdtype(y.dtype, np.floating):
        raise ValueError(f"labels must be integer class indices, got an array of {y.dtype}")
    whole = np.isfinite(y) & (y == np.floor(y))
    if not whole.all():
        bad = np.flatnonzero(~whole)
        raise ValueError(f"labels must be integer class indices; {len(bad)} of {len(y)} are not whole numbers "
                         f"(the first, at position {bad[0]}, is {y[bad[0]]!r})")
    return y.astype(np.int64)


@dataclass
class Standardizer:
    """Per-dimension centring and scaling, fitted once on the whole pool (no labels needed)."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray, max_rows: int = 200_000, seed: int = 0) -> Standardizer:
        n = features.shape[0]
        if n == 0:
            raise ValueError("cannot standardise an empty feature matrix")
        # A sample is enough for first and second moments and keeps memory-mapped pools cheap.
        idx = (np.sort(np.random.default_rng(seed).choice(n, max_rows, replace=False)) if n > max_rows
               else np.arange(n))
        d = int(features.shape[1])
        # One pass over row blocks gathered into reused buffers and summed in float64 by torch's
        # thread pool: moments of x − c with c the first block's mean, so the variance does not
        # cancel, without a float64 copy of the sample (800 MB for 200k × 1024).
        step = max(1, (8 << 20) // (8 * max(1, d)))
        whole = as_float32_tensor(features)
        buf32 = torch.empty(min(step, len(idx)), d, dtype=torch.float32) if whole is not None else None
        buf = torch.empty(min(step, len(idx)), d, dtype=torch.float64)
        s1, s2 = torch.zeros(d, dtype=torch.float64), torch.zeros(d, dtype=torch.float64)
        shift = None
        for start in range(0, len(idx), step):
            sel = idx[start:start + step]
            block = buf[:len(sel)]
            if whole is not None and buf32 is not None:
                block.copy_(torch.index_select(whole, 0, torch.from_numpy(sel), out=buf32[:len(sel)]))
            else:
                block.copy_(torch.from_numpy(np.asarray(features[sel], dtype=np.float64)))
            if shift is None:
                shift = block.mean(0)
            block.sub_(shift)
            s1 += block.sum(0)
            s2 += block.square_().sum(0)
        if shift is None:  # unreachable: n > 0 gives at least one block
            raise ValueError("cannot standardise an empty feature matrix")
        m = len(idx)
        mean1, mean2 = (s1 / m).numpy(), (s2 / m).numpy()
        if not (np.isfinite(mean1).all() and np.isfinite(mean2).all()):
            # NaN or inf propagates into the sums; counted on every row so the numbers point into the
            # caller's matrix.
            raise ValueError(f"features contain NaN or inf values ({nonfinite_rows_text(features)}); "
                             f"clean or re-extract them")
        mean = shift.numpy() + mean1
        scale = np.sqrt(np.maximum(mean2 - mean1 * mean1, 0.0))
        scale[scale < 1e-12] = 1.0
        return cls(mean=mean, scale=scale)

    @classmethod
    def identity(cls, dim: int) -> Standardizer:
        return cls(mean=np.zeros(dim), scale=np.ones(dim))


class LinearHead:
    """Softmax head W ∈ R^{K×(D+1)} (last column = bias) over standardised features."""

    def __init__(self, weight: torch.Tensor, standardizer: Standardizer, l2: float, device: torch.device):
        self.weight = weight.to(device=device, dtype=SCORE_DTYPE)
        self.standardizer = standardizer
        self.l2 = float(l2)
        self.device = device
        self._mean = torch.as_tensor(standardizer.mean, dtype=SCORE_DTYPE, device=device)
        self._scale = torch.as_tensor(standardizer.scale, dtype=SCORE_DTYPE, device=device)
        self._mean32 = self._mean.to(torch.float32)
        self._inv_scale32 = (1.0 / self._scale).to(torch.float32)
        # The labeled rows and labels it was fitted on (set by fit_head; None for a wrapped layer or a
        # loaded checkpoint): what a calibration step refits on, held out fold by fold.
        self.trained_on: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def num_classes(self) -> int:
        return int(self.weight.shape[0])

    @property
    def dim(self) -> int:
        return int(self.weight.shape[1] - 1)

    # -- design matrices -------------------------------------------------------------------------
    def check_features(self, features: np.ndarray) -> None:
        """A clear error for features of another size than the head was trained on, which is what
        a checkpoint from another encoder (or an embeddings file replaced since) gives."""
        shape: tuple[int, ...] = tuple(getattr(features, "shape", ()))
        if len(shape) != 2 or int(shape[1]) != self.dim:
            raise ValueError(
                f"the features have shape {tuple(shape)} but this model expects {self.dim} values per "
                f"image, so they come from another encoder than the one it was trained with; use that "
                f"encoder, or train a new model")

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        return (x.to(SCORE_DTYPE) - self._mean) / self._scale

    def design(self, features: np.ndarray, idx: np.ndarray | slice) -> torch.Tensor:
        """x̃ rows for ``features[idx]``: standardised plus a bias column (float64; for the labeled set)."""
        self.check_features(features)
        z = self.standardize(rows(features, idx, self.device, SCORE_DTYPE))
        return torch.cat([z, torch.ones(z.shape[0], 1, dtype=z.dtype, device=z.device)], dim=1)

    def chunks(self, features: np.ndarray, idx: np.ndarray | None = None) -> Iterator[tuple[slice, torch.Tensor]]:
        """Standardised float32 rows of ``features[idx]`` in bounded chunks, with their positions in idx.

        Pool-sized products (N·K·D) run in float32 on standardised values, which are O(1) so nothing
        cancels; their N×K results are promoted to float64 before any score arithmetic.
        """
        self.check_features(features)
        idx = np.arange(features.shape[0]) if idx is None else as_index(idx)
        step = chunk_size(self.dim, itemsize=4)
        for start in range(0, len(idx), step):
            sl = idx[start : start + step]
            z = rows(features, sl, self.device, torch.float32)
            z.sub_(self._mean32).mul_(self._inv_scale32)
            yield slice(start, start + len(sl)), z

    def standardized_rows(self, features: np.ndarray, idx: np.ndarray) -> torch.Tensor:
        """(φ(x) − μ)/σ for ``features[idx]`` as one float32 tensor: a parallel gather and two in-place
        operations, with no float64 copy (the diversity step's candidates, 400 MB at 100k × 1024)."""
        self.check_features(features)
        idx = as_index(idx)
        whole = as_float32_tensor(features) if self.device.type == "cpu" else None
        if whole is not None:
            out = torch.index_select(whole, 0, torch.from_numpy(idx))
        else:
            out = rows(features, idx, self.device, torch.float32)
        return out.sub_(self._mean32).mul_(self._inv_scale32)

    def project(self, z: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
        """z̃ Mᵀ for float32 standardised rows z and a K×(D+1) matrix M, returned in float64."""
        m32 = matrix.to(torch.float32)
        return (z @ m32[:, :-1].T).to(SCORE_DTYPE) + matrix[:, -1].to(SCORE_DTYPE)

    # -- prediction ------------------------------------------------------------------------------
    def predict_proba(self, features: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
        """Class probabilities (N×K float64) for ``features[idx]`` (all rows when idx is None)."""
        return self.predict_proba_tensor(features, idx).cpu().numpy()

    def predict_proba_tensor(self, features: np.ndarray, idx: np.ndarray | None = None) -> torch.Tensor:
        n = features.shape[0] if idx is None else len(as_index(idx))
        out = torch.empty(n, self.num_classes, dtype=SCORE_DTYPE, device=self.device)
        for pos, z in self.chunks(features, idx):
            out[pos] = torch.softmax(self.project(z, self.weight), dim=1)
        return out

    def predict(self, features: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
        return self.predict_proba_tensor(features, idx).argmax(1).cpu().numpy()

    def tempered(self, temperature: float) -> LinearHead:
        """The same head with its logits divided by ``temperature`` (the same predictions, softer or
        sharper probabilities)."""
        if not temperature > 0:
            raise ValueError("temperature must be positive")
        out = LinearHead(self.weight / float(temperature), self.standardizer, self.l2, self.device)
        out.trained_on = self.trained_on
        return out

    @classmethod
    def from_linear_layer(
        cls, weight: np.ndarray, bias: np.ndarray, l2: float = DEFAULT_L2, device: str | torch.device | None = None
    ) -> LinearHead:
        """Wrap an existing final layer (e.g. a ResNet's fc) acting on raw penultimate features."""
        dev = resolve_device(device)
        w = np.concatenate([np.asarray(weight, np.float64), np.asarray(bias, np.float64)[:, None]], axis=1)
        return cls(torch.from_numpy(w), Standardizer.identity(w.shape[1] - 1), l2, dev)


def fit_head(
    features: np.ndarray,
    labeled: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    l2: float = DEFAULT_L2,
    standardizer: Standardizer | None = None,
    device: str | torch.device | None = None,
    max_iter: int = 500,
    tol: float = 1e-7,
    fit_device: str | torch.device | None = "auto",
) -> LinearHead:
    """Train the head on ``features[labeled]`` with integer ``labels`` in [0, num_classes).

    Full-batch L-BFGS (strong Wolfe) in float64 from zero: deterministic; it stops when the largest
    gradient entry is below ``tol`` or the objective stops changing at float64 resolution.
    The head is returned on ``device``; the fit itself runs on ``fit_device`` ("auto":
    ``head_fit_device``, the CPU unless the problem is large enough for a GPU to be faster).
    """
    dev = resolve_device(device)
    labeled = as_index(labeled)
    y = class_indices(labels)
    if len(labeled) == 0:
        raise ValueError("cannot train the head without labeled samples")
    if len(y) != len(labeled):
        raise ValueError(f"{len(labeled)} labeled indices but {len(y)} labels")
    if num_classes < 1:
        raise ValueError("num_classes must be at least 1")
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}); got range [{y.min()}, {y.max()}]")
    if l2 <= 0:
        raise ValueError("l2 must be positive (the influence engine needs a positive-definite Hessian)")
    bad = nonfinite_rows(features, labeled)
    if bad.size:
        raise ValueError(nonfinite_message(bad, len(labeled), "labeled rows"))
    standardizer = standardizer or Standardizer.fit(features)
    if fit_device == "auto":
        fdev = head_fit_device(len(labeled), int(features.shape[1]), num_classes, dev)
    else:
        fdev = resolve_device(fit_device)
    head = LinearHead(torch.zeros(num_classes, features.shape[1] + 1), standardizer, l2, fdev)
    x = head.design(features, labeled)
    if not torch.isfinite(x).all():
        raise ValueError("labeled features contain NaN or inf values")
    target = torch.as_tensor(y, dtype=torch.long, device=fdev)
    w = torch.zeros(num_classes, x.shape[1], dtype=SCORE_DTYPE, device=fdev, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w], lr=1.0, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-14,
        history_size=20, line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ w.T, target) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    fitted = LinearHead(w.detach(), standardizer, l2, dev)
    fitted.trained_on = (labeled.copy(), y.astype(np.int64))
    return fitted
