"""On-disk feature cache keyed by (encoder id, sha256 of the image bytes).

Layout under the cache root, one folder per encoder::

    <root>/<safe encoder id>/meta.json            encoder id and feature size
    <root>/<safe encoder id>/<seq>-<token>.npy      features of one shard (rows x dim, float32)
    <root>/<safe encoder id>/<seq>-<token>.keys.npy content hashes of those rows (rows x 32 bytes)

Each file is written to a hidden temporary name, fsynced and renamed into place, and a shard's keys
file is written only after its features file is durable. The keys file is therefore the commit
marker: a shard without one (an extraction killed mid-write) is never read, and a killed
extraction resumes by recomputing only the images of uncommitted shards. What a killed writer
leaves (temporaries, features files never committed) is removed when the cache is next opened,
once its writer is known to be gone or it is an hour old.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ralif.atomic import atomic_write, sweep_temps
from ralif.encoders import Encoder, PrecomputedEmbeddings, iter_feature_batches, terminal_progress
from ralif.images import ImageList

CACHE_DIRNAME = ".ralif-cache"
DEFAULT_SHARD_SIZE = 256
_KEYS_SUFFIX = ".keys.npy"
_STALE_TMP_S = 3600.0
_FORMAT = 1

log = logging.getLogger(__name__)


def default_cache_root(project_dir: str | os.PathLike[str] | None = None) -> Path:
    """``<project_dir>/.ralif-cache``, the project folder defaulting to the working directory."""
    return Path(project_dir or Path.cwd()) / CACHE_DIRNAME


def safe_dirname(encoder_id: str) -> str:
    """A folder name for an encoder id; the hash suffix keeps ids that sanitise alike apart."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", encoder_id).strip("._-")[:80] or "encoder"
    return f"{readable}-{hashlib.sha256(encoder_id.encode()).hexdigest()[:10]}"


def _hex_to_keys(hashes: Sequence[str]) -> np.ndarray:
    if not len(hashes):
        return np.zeros((0, 32), dtype=np.uint8)
    return np.frombuffer(bytes.fromhex("".join(hashes)), dtype=np.uint8).reshape(len(hashes), 32)


def _keys_to_hex(keys: np.ndarray) -> list[str]:
    return [row.tobytes().hex() for row in keys]


class FeatureCache:
    """Features of one encoder, looked up by image content hash (sha256 hex)."""

    def __init__(self, root: str | os.PathLike[str], encoder_id: str, dim: int | None = None,
                 shard_size: int = DEFAULT_SHARD_SIZE) -> None:
        self.root = Path(root)
        self.encoder_id = encoder_id
        self.dir = self.root / safe_dirname(encoder_id)
        self.shard_size = int(shard_size)
        self.dim = dim
        self._meta_checked = False
        self._shards: list[str] = []
        self._arrays: list[np.ndarray] = []
        self._index: dict[str, tuple[int, int]] = {}
        self._read_meta()
        self.refresh()

    def _read_meta(self) -> None:
        meta_path = self.dir / "meta.json"
        if not meta_path.is_file():
            return
        meta = json.loads(meta_path.read_text())
        if meta.get("encoder_id") != self.encoder_id:
            raise ValueError(f"feature cache {self.dir} belongs to encoder {meta.get('encoder_id')!r}, "
                             f"not {self.encoder_id!r}")
        if self.dim is not None and int(meta["dim"]) != self.dim:
            raise ValueError(f"feature cache {self.dir} holds {meta['dim']}-d features but the encoder "
                             f"gives {self.dim}-d; remove the folder to rebuild it")
        self.dim = int(meta["dim"])
        self._meta_checked = True

    def _write_meta(self) -> None:
        if self._meta_checked:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = {"encoder_id": self.encoder_id, "dim": self.dim, "format": _FORMAT}
        atomic_write(self.dir / "meta.json", lambda f: f.write(json.dumps(meta, indent=1).encode()))
        self._meta_checked = True

    def _load_shard(self, name: str) -> tuple[np.ndarray, np.ndarray] | None:
        try:
            keys = np.load(self.dir / (name + _KEYS_SUFFIX), allow_pickle=False)
            feats = np.load(self.dir / (name + ".npy"), mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            log.warning("ignoring unreadable feature shard %s: %s", self.dir / name, exc)
            return None
        ok = (keys.dtype == np.uint8 and keys.ndim == 2 and keys.shape[1] == 32
              and feats.dtype == np.float32 and feats.ndim == 2 and feats.shape[0] == keys.shape[0]
              and (self.dim is None or feats.shape[1] == self.dim))
        if not ok:
            log.warning("ignoring inconsistent feature shard %s", self.dir / name)
            return None
        return keys, feats

    def refresh(self) -> None:
        """Re-read the committed shards (e.g. after another process added some)."""
        self._shards, self._arrays, self._index = [], [], {}
        if not self.dir.is_dir():
            return
        sweep_temps(self.dir, max_age_s=_STALE_TMP_S)
        now = time.time()
        entries = sorted(os.scandir(self.dir), key=lambda e: e.name)
        names = {e.name for e in entries}
        for entry in entries:
            if entry.name.startswith("."):
                continue   # a temporary: never read
            if not entry.name.endswith(_KEYS_SUFFIX):
                stem = entry.name[: -len(".npy")]
                if entry.name.endswith(".npy") and stem + _KEYS_SUFFIX not in names:
                    # Features whose keys were never written (a writer killed in between). A live
                    # writer commits within moments, so an hour-old one is abandoned.
                    try:
                        if now - entry.stat().st_mtime > _STALE_TMP_S:
                            os.unlink(entry.path)
                    except OSError:
                        pass
                continue
            name = entry.name[: -len(_KEYS_SUFFIX)]
            loaded = self._load_shard(name)
            if loaded is None:
                continue
            keys, feats = loaded
            if self.dim is None:
                self.dim = int(feats.shape[1])
            shard_id = len(self._shards)
            self._shards.append(name)
            self._arrays.append(feats)
            for row, h in enumerate(_keys_to_hex(keys)):
                self._index.setdefault(h, (shard_id, row))

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, content_hash: str) -> bool:
        return content_hash in self._index

    @property
    def shards(self) -> list[str]:
        return list(self._shards)

    def get_many(self, hashes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(features N x dim float32, missing mask N); rows of missing hashes are zero."""
        n = len(hashes)
        out = np.zeros((n, self.dim or 0), dtype=np.float32)
        loc = np.array([self._index.get(h, (-1, -1)) for h in hashes], dtype=np.int64).reshape(n, 2)
        missing = loc[:, 0] < 0
        found = np.flatnonzero(~missing)
        if found.size:
            # Grouping by shard, rows in file order, keeps reads sequential within each file.
            order = found[np.lexsort((loc[found, 1], loc[found, 0]))]
            shard_ids = loc[order, 0]
            bounds = np.flatnonzero(np.diff(shard_ids)) + 1
            for group in np.split(order, bounds):
                out[group] = self._arrays[loc[group[0], 0]][loc[group, 1]]
        return out, missing

    def put_many(self, hashes: Sequence[str], features: np.ndarray) -> int:
        """Store features of hashes not cached yet, in shards of ``shard_size`` rows.

        Returns the number of rows written.
        """
        feats = np.asarray(features, dtype=np.float32)
        if feats.ndim != 2 or feats.shape[0] != len(hashes):
            raise ValueError(f"expected {len(hashes)} feature rows, got shape {feats.shape}")
        if self.dim is None:
            self.dim = int(feats.shape[1])
        elif feats.shape[1] != self.dim:
            raise ValueError(f"expected {self.dim}-d features, got {feats.shape[1]}-d")
        seen: set[str] = set()
        keep = []
        for i, h in enumerate(hashes):
            if h not in self._index and h not in seen:
                seen.add(h)
                keep.append(i)
        if not keep:
            return 0
        self._write_meta()
        new_hashes = [hashes[i] for i in keep]
        new_feats = feats[keep]
        for start in range(0, len(keep), self.shard_size):
            self._write_shard(new_hashes[start:start + self.shard_size],
                              new_feats[start:start + self.shard_size])
        return len(keep)

    def _write_shard(self, hashes: Sequence[str], feats: np.ndarray) -> None:
        name = f"{int(time.time() * 1e6):016x}-{secrets.token_hex(4)}"
        arr = np.ascontiguousarray(feats, dtype=np.float32)
        atomic_write(self.dir / (name + ".npy"), lambda f: np.save(f, arr, allow_pickle=False))
        keys = _hex_to_keys(hashes)
        atomic_write(self.dir / (name + _KEYS_SUFFIX), lambda f: np.save(f, keys, allow_pickle=False))
        shard_id = len(self._shards)
        self._shards.append(name)
        self._arrays.append(arr)
        for row, h in enumerate(hashes):
            self._index.setdefault(h, (shard_id, row))


@dataclass
class CacheResult:
    """Features in image-list order plus what it took to get them."""

    features: np.ndarray
    hits: int
    misses: int
    computed: int
    seconds: float


def fill_cache(encoder: Encoder, images: ImageList,
               cache_root: str | os.PathLike[str] | None = None, batch_size: int = 64,
               progress: Callable[[int, int], None] | None = None, num_workers: int | None = None,
               device: str | torch.device | None = None,
               shard_size: int = DEFAULT_SHARD_SIZE) -> CacheResult:
    """Cached features for every image, computing and storing the missing ones.

    Identical files are encoded once. Shards are committed every ``shard_size`` new images, so
    an interrupted run loses at most one shard of work. ``progress(done, total)`` counts images.
    """
    start = time.perf_counter()
    total = len(images)
    if isinstance(encoder, PrecomputedEmbeddings):
        return CacheResult(encoder.features_for(images), total, 0, 0, time.perf_counter() - start)
    cache = FeatureCache(cache_root if cache_root is not None else default_cache_root(),
                         encoder.id, dim=encoder.dim, shard_size=shard_size)
    feats, missing = cache.get_many(images.hashes)
    miss_idx = np.flatnonzero(missing)
    hits = total - miss_idx.size
    computed = 0
    report = progress or (terminal_progress(total, "features") if miss_idx.size else None)
    if report:
        report(hits, total)
    if miss_idx.size:
        miss_hashes = np.array([images.hashes[i] for i in miss_idx])
        _, first, inverse = np.unique(miss_hashes, return_index=True, return_inverse=True)
        todo = np.sort(miss_idx[first])
        pending_rows: list[np.ndarray] = []
        pending_feats: list[np.ndarray] = []

        def flush(limit: int | None) -> None:
            rows = np.concatenate(pending_rows) if pending_rows else np.zeros(0, dtype=np.int64)
            vals = np.concatenate(pending_feats) if pending_feats else feats[:0]
            cut = len(rows) if limit is None else (len(rows) // limit) * limit
            if cut:
                cache.put_many([images.hashes[i] for i in rows[:cut]], vals[:cut])
            pending_rows[:] = [rows[cut:]] if cut < len(rows) else []
            pending_feats[:] = [vals[cut:]] if cut < len(rows) else []

        try:
            for idx, batch_feats in iter_feature_batches(encoder, images.subset(todo), batch_size,
                                                         num_workers, device):
                rows = todo[idx]
                feats[rows] = batch_feats
                pending_rows.append(rows)
                pending_feats.append(batch_feats)
                computed += len(rows)
                if sum(len(r) for r in pending_rows) >= cache.shard_size:
                    flush(cache.shard_size)
                if report:
                    report(hits + computed, total)
        finally:
            # Whatever was computed before an interruption is kept for the next run.
            flush(None)
        # Duplicate files share the features of their first occurrence.
        firsts = miss_idx[first]
        feats[miss_idx] = feats[firsts][inverse]
        if report:
            report(total, total)
    return CacheResult(feats, hits, int(miss_idx.size), computed, time.perf_counter() - start)


def cached_features(encoder: Encoder, images: ImageList,
                    cache_root: str | os.PathLike[str] | None = None, batch_size: int = 64,
                    progress: Callable[[int, int], None] | None = None,
                    num_workers: int | None = None,
                    device: str | torch.device | None = None) -> np.ndarray:
    """Features (N x dim, float32) in image-list order, through the on-disk cache."""
    return fill_cache(encoder, images, cache_root, batch_size, progress, num_workers, device).features
