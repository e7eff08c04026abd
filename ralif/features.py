"""Feature files for simulation: train/test feature matrices with their labels.

Two layouts are read: plain keys ``x_train``, ``y_train``, ``x_test``, ``y_test`` (float features), and
quantised embeddings ``emb_train_uint8`` / ``emb_test_uint8`` with ``quant_scale`` and
``quant_zero_point`` (float = (u8 − zero_point)·scale), optionally with ``classes`` and ``paths_*``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class _Checked:
    """Item access on an npz that names the file when an array holds Python objects."""

    def __init__(self, npz: np.lib.npyio.NpzFile, path: Path) -> None:
        self.npz, self.path = npz, path

    def __getitem__(self, key: str) -> np.ndarray:
        return read_npz_array(self.npz, key, self.path)


@dataclass
class FeatureSplits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def is_object_array_error(exc: BaseException) -> bool:
    """Whether numpy refused an array because it holds Python objects (it says so only in text)."""
    return isinstance(exc, ValueError) and "allow_pickle" in str(exc)


def object_array_message(path: str | Path, key: str | None) -> str:
    where = f"the array '{key}' in {path}" if key else f"{path}"
    return (f"{where} holds Python objects (dtype=object), which are refused: loading them would "
            f"need pickle, and a pickle can run any code. Save plain arrays instead (numbers, and "
            f"text as np.array(names, dtype=str)).")


def read_npz_array(data: np.lib.npyio.NpzFile, key: str, path: str | Path) -> np.ndarray:
    """``data[key]`` with numpy's bare object-array error replaced by one that names the file."""
    try:
        return data[key]
    except ValueError as exc:
        if is_object_array_error(exc):
            raise ValueError(object_array_message(path, key)) from exc
        raise


def _dequantize(u8: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return ((u8.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(np.float32)


def load_feature_splits(path: str | Path) -> FeatureSplits:
    """Read a features .npz; every problem is reported as a ValueError naming what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"features file not found: {path}")
    _require_npz(path)
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises several types for a damaged archive
        # numpy's own text may suggest allow_pickle, which would be unsafe advice: it is never shown.
        reason = "it is damaged or truncated" + ("" if is_object_array_error(exc) else f" ({exc})")
        raise ValueError(f"cannot read {path} as a NumPy .npz archive: {reason}") from exc
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"cannot read {path}: it is not a NumPy .npz archive. {_SAVE_HINT}")
    keys = set(data.files)
    with data:
        return _read_splits(path, data, keys)


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # an .npz is a zip archive (one with entries, or empty)
_NPY_MAGIC = b"\x93NUMPY"
_SAVE_HINT = "Save the features with np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"


def _require_npz(path: Path) -> None:
    """Refuse a file that is not a zip archive before numpy guesses it is a pickle."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if head.startswith(_ZIP_MAGIC):
        return
    if head.startswith(_NPY_MAGIC):
        what = "it is a single .npy array"
    elif not head:
        what = "it is empty"
    else:
        what = "it does not start like one (an .npz is a zip archive)"
    raise ValueError(f"cannot read {path}: it is not a NumPy .npz archive; {what}. {_SAVE_HINT}")


_PLAIN_KEYS = ("x_train", "y_train", "x_test", "y_test")
_QUANT_KEYS = ("emb_train_uint8", "y_train", "emb_test_uint8", "y_test", "quant_scale", "quant_zero_point")


def _layout_message(path: Path, keys: set[str]) -> str:
    """What a features file lacks for a simulation, and what it needs."""
    need = ("expected x_train, y_train, x_test, y_test (float features and integer class indices of a "
            "train pool and a test set), or the quantised emb_train_uint8/emb_test_uint8 with quant_scale "
            "and quant_zero_point plus y_train, y_test")
    if "features" in keys and not keys & {*_PLAIN_KEYS, "emb_train_uint8", "emb_test_uint8"}:
        # `ralif embed --output` writes features, paths and hashes: no labels, no split.
        return (f"{path} holds embeddings only (keys {', '.join(sorted(keys))}, as `ralif embed --output` "
                f"writes them): it has no labels (y_train, y_test) and no train/test split, which a "
                f"simulation needs; {need}. For a labeled ImageFolder (train/<class>/..., "
                f"test/<class>/...), run `ralif simulate --images FOLDER` instead: features are computed "
                f"once and cached")
    layout = _QUANT_KEYS if keys & {"emb_train_uint8", "emb_test_uint8"} else _PLAIN_KEYS
    missing = [k for k in layout if k not in keys]
    return f"{path} has keys {sorted(keys)} and lacks {', '.join(missing)}; {need}"


def _read_splits(path: Path, npz: np.lib.npyio.NpzFile, keys: set[str]) -> FeatureSplits:
    data = _Checked(npz, path)
    if set(_PLAIN_KEYS) <= keys:
        x_tr, x_te = data["x_train"].astype(np.float32), data["x_test"].astype(np.float32)
    elif set(_QUANT_KEYS) <= keys:
        scale, zp = float(data["quant_scale"]), int(data["quant_zero_point"])
        x_tr = _dequantize(data["emb_train_uint8"], scale, zp)
        x_te = _dequantize(data["emb_test_uint8"], scale, zp)
    else:
        raise ValueError(_layout_message(path, keys))
    y_tr = np.asarray(data["y_train"]).reshape(-1)
    y_te = np.asarray(data["y_test"]).reshape(-1)
    for name, x, y in (("train", x_tr, y_tr), ("test", x_te, y_te)):
        if x.ndim != 2:
            raise ValueError(f"{path}: x_{name} must be 2-D (samples × dimensions), got shape {x.shape}")
        if len(x) != len(y):
            raise ValueError(f"{path}: x_{name} has {len(x)} rows but y_{name} has {len(y)} labels")
        if len(x) == 0:
            raise ValueError(f"{path}: the {name} split is empty")
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{path}: y_{name} must hold integer class indices, got {y.dtype}")
        if not np.isfinite(x).all():
            bad = np.flatnonzero(~np.isfinite(x).all(1))
            shown = ", ".join(str(int(i)) for i in bad[:5]) + (", ..." if len(bad) > 5 else "")
            raise ValueError(f"{path}: x_{name} has {len(bad)} rows with NaN or inf values (rows {shown}); "
                             f"re-extract or drop them")
    if x_tr.shape[1] != x_te.shape[1]:
        raise ValueError(f"{path}: train features are {x_tr.shape[1]}-d but test features are "
                         f"{x_te.shape[1]}-d")
    if min(y_tr.min(), y_te.min()) < 0:
        raise ValueError(f"{path}: labels must be non-negative class indices")
    k = int(max(y_tr.max(), y_te.max())) + 1
    classes = [str(c) for c in data["classes"]] if "classes" in keys else [str(i) for i in range(k)]
    if len(classes) < k:
        raise ValueError(f"{path}: labels go up to {k - 1} but only {len(classes)} class names are given")
    return FeatureSplits(x_tr, y_tr.astype(np.int64), x_te, y_te.astype(np.int64), classes)
