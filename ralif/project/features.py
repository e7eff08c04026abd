"""Image features for a project's rounds: precomputed embedding tables, pixel thumbnails, any
encoder through the feature cache, and the per-process memo of the pool's features.

Encoder specs:


* ``precomputed:FILE.npz``: rows looked up by image path (``features`` + ``paths``, or the
  quantised ``emb_*_uint8`` layout with ``paths_train``/``paths_test``);
* ``pixels`` / ``pixels:N``: N x N RGB thumbnails (default 8), a model-free stand-in used for the
  cold start of ResNet18 projects and for quick checks;
* any spec of :func:`ralif.encoders.build_encoder`, through the project's feature cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

PIXELS_DEFAULT = 8


def _sha256_prefix(path: str, n: int = 16) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()[:n]


class EmbeddingTable:
    """Precomputed embeddings with the image path of every row.

    Reads an .npz holding ``features`` (N x D) and ``paths``, or the quantised layout
    (``emb_train_uint8``/``emb_test_uint8``, ``paths_train``/``paths_test``, ``quant_scale``,
    ``quant_zero_point``). Relative paths are taken from the file's folder.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.path.abspath(os.fspath(path))
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"embeddings file not found: {self.path}")
        with np.load(self.path, allow_pickle=False) as data:
            keys = set(data.files)
            if "features" in keys:
                if "paths" not in keys:
                    raise ValueError(f"{self.path} has features but no 'paths' array, so its rows cannot "
                                     f"be matched to image files")
                feats = np.asarray(data["features"], dtype=np.float32)
                paths = [str(p) for p in data["paths"].reshape(-1)]
            elif {"quant_scale", "quant_zero_point"} <= keys and any(k.startswith("emb_") for k in keys):
                scale = np.float32(data["quant_scale"])
                zero = np.float32(data["quant_zero_point"])
                parts, paths = [], []
                for split in ("train", "val", "test"):
                    if f"emb_{split}_uint8" not in keys:
                        continue
                    if f"paths_{split}" not in keys:
                        raise ValueError(f"{self.path} has emb_{split}_uint8 but no paths_{split}")
                    parts.append((data[f"emb_{split}_uint8"].astype(np.float32) - zero) * scale)
                    paths += [str(p) for p in data[f"paths_{split}"].reshape(-1)]
                feats = np.concatenate(parts).astype(np.float32, copy=False)
            else:
                raise ValueError(f"{self.path} holds {sorted(keys)}; expected 'features' and 'paths', or "
                                 f"quantised emb_<split>_uint8 arrays with paths_<split>")
        if feats.ndim != 2 or len(feats) != len(paths):
            raise ValueError(f"{self.path}: {len(paths)} paths for feature array of shape {feats.shape}")
        self.features = feats
        base = os.path.dirname(self.path)
        self.paths = [os.path.normpath(os.path.join(base, p)) for p in paths]
        self.dim = int(feats.shape[1])
        self.id = f"precomputed:sha256-{_sha256_prefix(self.path)}"

    def rows_for(self, paths: Sequence[str]) -> np.ndarray:
        import pandas as pd

        index = self.__dict__.get("_index")
        if index is None:
            index = pd.Index(self.paths)
            if not index.is_unique:
                index = index.drop_duplicates(keep="first")
            self._index = index
        rows = index.get_indexer([os.path.normpath(p) for p in paths])
        miss = np.flatnonzero(rows < 0)
        if miss.size:
            # Symbolic links or a moved folder: match the resolved paths before giving up.
            real = pd.Index([os.path.realpath(p) for p in self.paths])
            real = real.drop_duplicates(keep="first") if not real.is_unique else real
            found = real.get_indexer([os.path.realpath(paths[i]) for i in miss.tolist()])
            ok = found >= 0
            rows[miss[ok]] = index.get_indexer(np.asarray(self.paths, dtype=object)[found[ok]])
            miss = miss[~ok]
        if miss.size:
            shown = ", ".join(paths[i] for i in miss[:3])
            raise ValueError(f"{miss.size} of {len(paths)} images have no row in {self.path}, e.g. {shown}")
        return rows

    def features_for(self, paths: Sequence[str]) -> np.ndarray:
        feats = self.features[self.rows_for(paths)]
        # Checked here, where the file and the images are known, rather than deep in training.
        bad = np.flatnonzero(~np.isfinite(feats).all(axis=1))
        if bad.size:
            shown = ", ".join(paths[i] for i in bad[:3])
            raise ValueError(f"{self.path} holds NaN or inf values for {bad.size} of {len(paths)} images, "
                             f"e.g. {shown}; re-extract those embeddings")
        return feats


_TABLES: dict[tuple[Any, ...], EmbeddingTable] = {}


def embedding_table(path: str | os.PathLike[str]) -> EmbeddingTable:
    """The table at ``path``, read once per process while the file stays the same (reading and
    dequantising 60k rows takes seconds, and every round needs the pool's and the held-out rows)."""
    full = os.path.abspath(os.fspath(path))
    try:
        info = os.stat(full)
    except OSError:
        return EmbeddingTable(full)  # its own clear error
    key = (full, info.st_size, info.st_mtime_ns, info.st_ino)
    table = _TABLES.get(key)
    if table is None:
        table = EmbeddingTable(full)
        _TABLES.clear()  # one table at a time: they can be large
        _TABLES[key] = table
    return table


def pixel_size(spec: str) -> int:
    _, _, rest = spec.partition(":")
    size = int(rest) if rest.strip() else PIXELS_DEFAULT
    if not 1 <= size <= 64:
        raise ValueError(f"encoder spec {spec!r}: the thumbnail size must be between 1 and 64")
    return size


def pixel_features(paths: Sequence[str], size: int = PIXELS_DEFAULT,
                   progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """size x size RGB thumbnails scaled to [0, 1], flattened (N x 3·size²)."""
    from PIL import Image

    from ralif.images import load_rgb

    out = np.empty((len(paths), size * size * 3), dtype=np.float32)
    for i, p in enumerate(paths):  # one decode per file: the work is I/O and decoding, not arithmetic
        im = load_rgb(p, min_side=size).resize((size, size), Image.Resampling.BILINEAR)
        out[i] = np.asarray(im, dtype=np.float32).reshape(-1) / 255.0
        if progress is not None and (i + 1) % 256 == 0:
            progress(i + 1, len(paths))
    if progress is not None:
        progress(len(paths), len(paths))
    return out


def encoder_id_for(spec: str) -> str:
    """The id under which features of ``spec`` are stored (cheap for precomputed and pixels)."""
    kind = spec.partition(":")[0].lower()
    if kind == "precomputed":
        return embedding_table(spec.partition(":")[2]).id
    if kind == "pixels":
        return f"pixels:{pixel_size(spec)}"
    from ralif.encoders import build_encoder

    return build_encoder(spec, device="cpu").id


def features_for(spec: str, paths: Sequence[str], hashes: Sequence[str] | None = None,
                 cache_root: str | os.PathLike[str] | None = None, device: str | None = None,
                 progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, str]:
    """(features N x D float32, encoder id) of the images at ``paths`` under encoder ``spec``."""
    kind, _, rest = spec.partition(":")
    kind = kind.lower()
    if kind == "precomputed":
        table = embedding_table(rest)
        return table.features_for(paths), table.id
    if kind == "pixels":
        size = pixel_size(spec)
        return pixel_features(paths, size, progress), f"pixels:{size}"
    from ralif.encoders import build_encoder, extract_features
    from ralif.feature_cache import fill_cache
    from ralif.images import ImageList, hash_file

    encoder = build_encoder(spec, device=device)
    if hashes is None:
        hashes = [hash_file(p) for p in paths]
    images = ImageList(paths=list(paths), labels=np.full(len(paths), -1), classes=[], hashes=list(hashes))
    if cache_root is None:
        return extract_features(encoder, images, progress=progress), encoder.id
    return fill_cache(encoder, images, cache_root=cache_root, progress=progress).features, encoder.id


class PoolMemo:
    """The last pool's features and standardizer, kept by a process that runs many rounds.

    A pool's features never change for the same encoder and the same files, and the round server
    runs round after round on one pool: reloading them (and refitting the standardizer, a full
    pass over the pool) every round would be most of a small round's time.
    """

    def __init__(self) -> None:
        self._key: tuple[Any, ...] | None = None
        self._value: tuple[np.ndarray, str] | None = None
        self._standardizer: Any = None

    @staticmethod
    def _key_for(spec: str, paths: Sequence[str], hashes: Sequence[str] | None,
                 cache_root: str | os.PathLike[str] | None) -> tuple[Any, ...]:
        digest = hashlib.blake2b(digest_size=16)
        digest.update("\n".join(paths).encode("utf-8", "surrogateescape"))
        digest.update(b"\0" + "\n".join(hashes or ()).encode("ascii", "replace"))
        source: tuple[Any, ...] = ()
        if spec.partition(":")[0].lower() == "precomputed":
            # A replaced embedding file must not be served from memory.
            with contextlib.suppress(OSError):
                info = os.stat(spec.partition(":")[2])
                source = (info.st_size, info.st_mtime_ns, info.st_ino)
        return (spec, source, str(cache_root), len(paths), digest.hexdigest())

    def features(self, spec: str, paths: Sequence[str], hashes: Sequence[str] | None,
                 cache_root: str | os.PathLike[str] | None, device: str | None,
                 progress: Callable[[int, int], None] | None) -> tuple[np.ndarray, str]:
        key = self._key_for(spec, paths, hashes, cache_root)
        if key != self._key or self._value is None:
            self._key, self._value, self._standardizer = None, None, None
            value = features_for(spec, paths, hashes, cache_root, device, progress)
            self._key, self._value = key, value
        elif progress is not None:
            progress(len(paths), len(paths))
        return self._value

    def standardizer(self, feats: np.ndarray, fit: Callable[[np.ndarray], Any]) -> Any:
        if self._value is None or self._value[0] is not feats:
            return fit(feats)
        if self._standardizer is None:
            self._standardizer = fit(feats)
        return self._standardizer

    def clear(self) -> None:
        self._key, self._value, self._standardizer = None, None, None


POOL_MEMO = PoolMemo()
# The held-out images with a reference label: the same few thousand rows read every round.
HELD_OUT_MEMO = PoolMemo()


def round_threads(settings: dict[str, Any]) -> int | None:
    """Torch threads for a project's rounds: its ``threads`` setting when it has one; one for a
    linear head, which gains nothing from more on a few thousand labels, while on a busy machine
    threads waiting on each other made a demo round about five times slower
    (benchmarks/app_latency.py); otherwise None (torch's default, every core)."""
    if settings.get("threads"):
        return int(settings["threads"])
    return 1 if settings.get("model", "clip-linear") == "clip-linear" else None


_DEFAULT_THREADS: list[int] = []


def apply_round_threads(settings: dict[str, Any]) -> None:
    """Set torch's threads for the next round of a project with ``settings``."""
    import torch

    if not _DEFAULT_THREADS:
        _DEFAULT_THREADS.append(torch.get_num_threads())
    want = round_threads(settings) or _DEFAULT_THREADS[0]
    if torch.get_num_threads() != want:
        torch.set_num_threads(want)
