"""Streaming passes over a (possibly memory-mapped) pool at the memory system's pace.

A pass reads the feature matrix once, in row blocks small enough to stay in the CPU cache between
the products made from them, and never writes a standardised copy: (x − μ)/σ is folded into the
K×(D+1) matrix the block is multiplied by,

    z̃ Mᵀ = x (M_w/σ)ᵀ + (M_b − (M_w/σ)·μ),

so a block costs one read of the raw rows. When the indices cover most of a contiguous row range
(the unlabeled pool is nearly every row), blocks are views of the array itself and the few rows not
asked for are dropped from the small N×K results; sparse indices are gathered into one reused buffer.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ralif.compute import SCORE_DTYPE, as_index

# Rows per block: 2048 rows of 1024 float32 are 8 MB, which the two products of the first pass
# share while the block is still in the last-level cache.
BLOCK_BYTES = 8 << 20
# Folding is exact algebra, but in float32 it cancels when a dimension's mean is many standard
# deviations from zero; past this offset the block is centred (into a reused buffer) first.
FOLD_MAX_OFFSET = 4.0
# Indices covering at least this share of their row span are read as views of contiguous ranges.
DENSE_SHARE = 0.5


def block_rows(dim: int, block_bytes: int = BLOCK_BYTES) -> int:
    return max(256, block_bytes // max(1, 4 * dim))


def as_float32_tensor(features: np.ndarray) -> torch.Tensor | None:
    """The whole matrix as a float32 tensor sharing its memory, or None when that needs a copy."""
    if not isinstance(features, np.ndarray) or features.dtype != np.float32 or features.ndim != 2:
        return None
    if not features.flags.c_contiguous:
        return None
    with warnings.catch_warnings():
        # A read-only memory map is shared, not written: torch warns about writability only.
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(features)


@dataclass
class Block:
    """Raw rows of one block and where their results go.

    ``rows`` (float32, on the device) may hold rows that were not asked for; ``keep`` (None = all)
    picks the asked-for ones out of the block's N×K results, and ``pos`` places those in the output.
    ``offset`` is what was already subtracted from the rows (zeros or μ in float32).
    """

    rows: torch.Tensor
    keep: torch.Tensor | None
    pos: torch.Tensor | slice


class PoolStream:
    """Blocks of ``features[idx]`` for one or more passes, with the standardisation folded in."""

    def __init__(self, features: np.ndarray, idx: np.ndarray | None, mean: np.ndarray, scale: np.ndarray,
                 device: torch.device, block: int | None = None) -> None:
        self.features = features
        n, d = int(features.shape[0]), int(features.shape[1])
        self.idx = np.arange(n) if idx is None else as_index(idx)
        self.device = device
        self.block = block or block_rows(d)
        self.mean = np.asarray(mean, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)
        ratio = np.abs(self.mean) / self.scale
        self.centre = bool(ratio.size and ratio.max() > FOLD_MAX_OFFSET)
        self._sub32: torch.Tensor | None = (
            torch.as_tensor(self.mean, dtype=torch.float32, device=device) if self.centre else None)
        # Offset still in the rows after what a block had subtracted (in float64, for the constants).
        sub = self._sub32.double().cpu().numpy() if self._sub32 is not None else np.zeros(d)
        self.residual_mean = torch.as_tensor(self.mean - sub, dtype=SCORE_DTYPE, device=device)
        self.inv_scale = torch.as_tensor(1.0 / self.scale, dtype=SCORE_DTYPE, device=device)
        self._whole = as_float32_tensor(features) if device.type == "cpu" else None
        self._buf: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.idx)

    # -- matrices ----------------------------------------------------------------------------------
    def fold(self, matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(float32 D×K weights, float64 K constants) so that rows @ w + c = z̃ Mᵀ for a K×(D+1) M."""
        m = matrix.to(device=self.device, dtype=SCORE_DTYPE)
        w = m[:, :-1] * self.inv_scale
        const = m[:, -1] - w @ self.residual_mean
        return w.T.to(torch.float32).contiguous(), const

    def unfold_grad(self, raw: torch.Tensor, rsum: torch.Tensor) -> torch.Tensor:
        """Σ r z̃ᵀ (K×(D+1)) from Σ r xᵀ over the blocks' rows (raw, float64) and Σ r (K)."""
        gw = (raw - rsum[:, None] * self.residual_mean[None, :]) * self.inv_scale
        return torch.cat([gw, rsum[:, None]], dim=1)

    # -- blocks ------------------------------------------------------------------------------------
    def _buffer(self, n: int, d: int) -> torch.Tensor:
        if self._buf is None or self._buf.shape[0] < n:
            self._buf = torch.empty(n, d, dtype=torch.float32, device=self.device)
        return self._buf[:n]

    def _range(self, lo: int, hi: int) -> torch.Tensor:
        if self._whole is not None:
            block = self._whole[lo:hi]
            if self._sub32 is None:
                return block
            return torch.sub(block, self._sub32, out=self._buffer(hi - lo, block.shape[1]))
        raw = np.asarray(self.features[lo:hi])
        out = self._buffer(hi - lo, raw.shape[1])
        out.copy_(torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32)))
        return out if self._sub32 is None else out.sub_(self._sub32)

    def _gather(self, rows: np.ndarray) -> torch.Tensor:
        d = int(self.features.shape[1])
        out = self._buffer(len(rows), d)
        if self._whole is not None:
            torch.index_select(self._whole, 0, torch.from_numpy(rows), out=out)
        else:
            out.copy_(torch.from_numpy(np.ascontiguousarray(np.asarray(self.features[rows]), dtype=np.float32)))
        return out if self._sub32 is None else out.sub_(self._sub32)

    def blocks(self) -> Iterator[Block]:
        idx = self.idx
        if len(idx) == 0:
            return
        order = None
        if np.any(idx[1:] < idx[:-1]):
            order = np.argsort(idx, kind="stable")
            idx = idx[order]
        span = int(idx[-1]) - int(idx[0]) + 1
        if len(idx) >= DENSE_SHARE * span:
            yield from self._dense_blocks(idx, order)
            return
        for start in range(0, len(idx), self.block):
            stop = min(len(idx), start + self.block)
            pos = slice(start, stop) if order is None else torch.from_numpy(order[start:stop])
            yield Block(self._gather(idx[start:stop]), None, pos)

    def _dense_blocks(self, idx: np.ndarray, order: np.ndarray | None) -> Iterator[Block]:
        lo_all, hi_all = int(idx[0]), int(idx[-1]) + 1
        bounds = np.searchsorted(idx, np.arange(lo_all, hi_all + self.block, self.block))
        for b, lo in enumerate(range(lo_all, hi_all, self.block)):
            hi = min(hi_all, lo + self.block)
            a, z = int(bounds[b]), int(bounds[b + 1])
            if a == z:
                continue
            keep = None if z - a == hi - lo else torch.from_numpy(idx[a:z] - lo).to(self.device)
            pos = slice(a, z) if order is None else torch.from_numpy(order[a:z])
            yield Block(self._range(lo, hi), keep, pos)


def pool_stream(head, features: np.ndarray, idx: np.ndarray | None = None) -> PoolStream:
    """A stream over ``features[idx]`` in ``head``'s standardised space (head: a LinearHead)."""
    head.check_features(features)
    st = head.standardizer
    return PoolStream(features, idx, st.mean, st.scale, head.device)
