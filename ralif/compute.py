"""Where tensors live and in what precision: one place, so every module agrees."""

from __future__ import annotations

import os
from typing import Any, Protocol

import numpy as np
import torch

# Influence scores need float64: in float32 the rounding of a summed pool loss is as large as the
# spread of the influence term it is added to.
SCORE_DTYPE = torch.float64


class RowSource(Protocol):
    """What feature rows are read from: an array, a memory map, or a view that computes rows on access."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __getitem__(self, idx: Any) -> Any: ...


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """CUDA when present (or asked for), otherwise the CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CUDA was requested but no CUDA device is available; use --device cpu")
    return dev


def configure_threads(n: int | None = None) -> None:
    """One thread pool at a time: torch and a BLAS-backed numpy competing on few cores is several times slower."""
    n = n or int(os.environ.get("RALIF_THREADS") or 0) or os.cpu_count() or 1
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def rows(x: RowSource, idx: np.ndarray | slice, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Rows of a (possibly memory-mapped) array as a tensor, copied once."""
    block = np.asarray(x[idx])
    return torch.from_numpy(np.ascontiguousarray(block)).to(device=device, dtype=dtype)


def chunk_size(n_cols: int, budget_mb: float = 256.0, itemsize: int = 8) -> int:
    """Rows per chunk so that one chunk of ``n_cols`` values stays within ``budget_mb``."""
    return max(256, int(budget_mb * 2**20 // max(1, n_cols * itemsize)))


def as_index(a: np.ndarray | list | None) -> np.ndarray:
    arr = np.asarray([] if a is None else a)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError("indices must be integers")
    return arr.astype(np.int64, copy=False).reshape(-1)
