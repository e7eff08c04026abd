"""The map's layout: a fixed 2-D UMAP layout of a project's pool features, stored once.

The layout is computed once per (project, encoder id) in a background worker (:mod:`ralif.map.jobs`)
and stored as a small ``.npz`` under ``<project>/cache/projection/``; it is not refitted when labels
or rounds change, so a point stays where the eye last saw it. Large pools are handled by fitting UMAP
on a seeded subsample (at most ``fit_max`` points) and placing the rest in chunks, which bounds memory
and time whatever the pool size. The rest are placed as UMAP's ``transform`` places them (nearest
fitted points, weighted start, refinement epochs with the fitted points fixed), on every core, by
:mod:`ralif.map.placing`; ``placing="umap"`` runs ``transform`` itself, on one thread.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ralif.atomic import atomic_write
from ralif.map.placing import METRICS, NeighbourPlacer
from ralif.project import Project, ProjectError

FORMAT_VERSION = 1
PROJECTION_DIR = "projection"
DEFAULT_SEED = 0
# UMAP's cost grows faster than linearly in the fitted points; 20k already shows every cluster of
# a pool, and the rest are placed into that layout by transform.
DEFAULT_FIT_MAX = 20_000
# Rows placed per transform call: bounds the nearest-neighbour search's working set.
DEFAULT_CHUNK = 50_000
DEFAULT_N_NEIGHBORS = 15
DEFAULT_MIN_DIST = 0.1
PLACINGS = ("neighbours", "umap")
# Encoders give L2-normalised or ReLU features whose direction carries the meaning.
DEFAULT_METRIC = "cosine"
# Below this many points UMAP's graph is degenerate; a principal-component layout is used instead.
_MIN_UMAP_POINTS = 8

ProgressFn = Callable[[str, float, str], None]      # (phase, fraction 0..1, message)
StopFn = Callable[[], bool]


class FeaturesMissing(ProjectError):
    """The project's features cannot be read (not extracted yet, or the embeddings file is gone)."""


class ProjectionCancelled(Exception):
    """The projection was stopped on request; nothing was written."""


# ----------------------------------------------------------------------------- fitting


def _pca_layout(x: np.ndarray) -> np.ndarray:
    """First two principal components (zero-padded): a layout for pools too small for UMAP."""
    out = np.zeros((len(x), 2), dtype=np.float32)
    if len(x) < 2:
        return out
    centred = np.asarray(x, dtype=np.float64) - np.asarray(x, dtype=np.float64).mean(0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    k = min(2, len(s))
    out[:, :k] = (u[:, :k] * s[:k]).astype(np.float32)
    return out


def fit_projection(features: np.ndarray, *, seed: int = DEFAULT_SEED, fit_max: int = DEFAULT_FIT_MAX,
                   chunk: int = DEFAULT_CHUNK, n_neighbors: int = DEFAULT_N_NEIGHBORS,
                   min_dist: float = DEFAULT_MIN_DIST, metric: str = DEFAULT_METRIC,
                   placing: str = "neighbours", progress: ProgressFn | None = None,
                   should_stop: StopFn | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """2-D coordinates (N x 2 float32) of ``features`` (N x D, memory-mapped is fine) and the
    parameters used. UMAP is fitted on a seeded subsample of at most ``fit_max`` rows; the other
    rows are placed ``chunk`` rows at a time, by their nearest fitted neighbours (``placing=
    "neighbours"``, cosine and euclidean metrics) or by UMAP's ``transform`` (``"umap"``). The
    same seed gives the same coordinates."""
    report = progress or (lambda phase, fraction, message: None)
    stop = should_stop or (lambda: False)
    n = int(features.shape[0])
    if features.ndim != 2:
        raise ValueError(f"features must be a 2-D array (images x dimensions), got shape {features.shape}")
    if fit_max < 2 or chunk < 1:
        raise ValueError("fit_max must be at least 2 and chunk at least 1")
    if placing not in PLACINGS:
        raise ValueError(f"placing must be one of {PLACINGS}, not {placing!r}")
    if placing == "neighbours" and metric not in METRICS:
        placing = "umap"
    params: dict[str, Any] = {"method": "umap", "seed": int(seed), "fit_max": int(fit_max), "chunk": int(chunk),
                              "n_neighbors": int(n_neighbors), "min_dist": float(min_dist), "metric": metric,
                              "points": n, "placing": placing, "format": FORMAT_VERSION}
    coords = np.empty((n, 2), dtype=np.float32)
    rng = np.random.default_rng(int(seed))
    if n > fit_max:
        fit_rows = np.sort(rng.choice(n, fit_max, replace=False))
    else:
        fit_rows = np.arange(n)
    params["fit_points"] = len(fit_rows)
    if len(fit_rows) < _MIN_UMAP_POINTS:
        params["method"] = "pca"
        coords[:] = _pca_layout(np.asarray(features, dtype=np.float32))
        report("fitting", 1.0, f"{n} points: too few for UMAP, principal components instead")
        return coords, params

    report("fitting", 0.0, f"importing UMAP and fitting it on {len(fit_rows):,} of {n:,} points")
    import umap  # numba compiles on import: only the worker pays for it

    params["umap_version"] = getattr(umap, "__version__", "")
    k = int(min(n_neighbors, len(fit_rows) - 1))
    params["n_neighbors"] = k
    reducer = umap.UMAP(n_components=2, n_neighbors=k, min_dist=float(min_dist), metric=metric,
                        random_state=int(seed), transform_seed=int(seed), low_memory=True)
    with warnings.catch_warnings():
        # A fixed random_state makes UMAP single-threaded, which it announces on every call.
        warnings.simplefilter("ignore", UserWarning)
        coords[fit_rows] = np.asarray(reducer.fit_transform(np.asarray(features[fit_rows], np.float32)),
                                      dtype=np.float32)
        place = reducer.transform
        if placing == "neighbours":
            # The fitted curve of the layout (UMAP keeps it as _a, _b); UMAP's formula otherwise.
            a, b = getattr(reducer, "_a", None), getattr(reducer, "_b", None)
            if a is None or b is None:
                a, b = umap.umap_.find_ab_params(1.0, float(min_dist))
            place = NeighbourPlacer.fit(np.asarray(features[fit_rows], np.float32), coords[fit_rows], k=k,
                                        metric=metric, a=float(a), b=float(b), seed=int(seed)).place
        fitted = np.zeros(n, dtype=bool)
        fitted[fit_rows] = True
        left, placed = n - len(fit_rows), 0
        # Contiguous slices: a memory-mapped pool is read front to back, once.
        for start in range(0, n if left else 0, chunk):
            if stop():
                raise ProjectionCancelled("the projection was cancelled")
            report("placing", placed / left, f"placing {placed:,} of {left:,} remaining points")
            rows = start + np.flatnonzero(~fitted[start:start + chunk])
            if len(rows):
                block = np.asarray(features[start:start + chunk], np.float32)[rows - start]
                coords[rows] = np.asarray(place(block), dtype=np.float32)
            placed += len(rows)
    if not np.isfinite(coords).all():
        raise ValueError("UMAP produced non-finite coordinates (duplicate or all-zero features?)")
    report("placing", 1.0, f"{n:,} points placed")
    return coords, params


# ----------------------------------------------------------------------------- project features


def pool_images(project: Project) -> tuple[np.ndarray, list[str], list[str]]:
    """(image ids sorted, paths, content hashes) of the project's pool."""
    rows = project.store.query("SELECT id, path, content_hash FROM images WHERE split = 'pool' ORDER BY id")
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    return ids, [r[1] for r in rows], [r[2] for r in rows]


def load_pool_features(project: Project, progress: Callable[[int, int], None] | None = None,
                       extract: bool = False) -> tuple[np.ndarray, np.ndarray, str]:
    """(features N x D, image ids, encoder id) of the pool, read the way rounds read them.

    Features that need a model (CLIP, ResNet) come from the project's feature cache, which the
    first round fills; unless ``extract``, a cache that does not cover the pool raises
    :class:`FeaturesMissing` instead of silently starting a long extraction.
    """
    from ralif.project.rounds import encoder_id_for, features_for

    spec = project.encoder_spec
    ids, paths, hashes = pool_images(project)
    if not len(ids):
        raise FeaturesMissing("the project has no pool images, so there is nothing to map")
    cache_root = project.folder / "cache"
    kind = spec.partition(":")[0].lower()
    try:
        if kind not in ("precomputed", "pixels") and not extract:
            from ralif.feature_cache import FeatureCache

            enc_id = encoder_id_for(spec)
            cache = FeatureCache(cache_root, enc_id)
            missing = sum(h not in cache for h in hashes)
            if missing:
                raise FeaturesMissing(
                    f"features of {missing:,} of {len(ids):,} pool images are not extracted yet for encoder "
                    f"{enc_id}; the next round extracts them (or run `ralif embed`), then the map can be drawn")
        feats, enc_id = features_for(spec, paths, hashes, cache_root=cache_root, progress=progress)
    except FeaturesMissing:
        raise
    except (FileNotFoundError, ValueError) as exc:
        raise FeaturesMissing(f"the features of this project ({spec}) cannot be read: {exc}") from exc
    return feats, ids, enc_id


# ----------------------------------------------------------------------------- stored projections


@dataclass(frozen=True)
class Projection:
    """A stored layout: ``coords[i]`` is the position of image ``image_ids[i]`` (ids ascending)."""

    coords: np.ndarray
    image_ids: np.ndarray
    encoder_id: str
    encoder_spec: str
    params: dict[str, Any]
    path: Path | None = None

    def rows_of(self, image_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Row of each image id in this projection, -1 for ids it does not hold."""
        want = np.asarray(image_ids, dtype=np.int64).reshape(-1)
        pos = np.searchsorted(self.image_ids, want)
        pos = np.minimum(pos, max(0, len(self.image_ids) - 1))
        found = len(self.image_ids) > 0
        hit = (self.image_ids[pos] == want) if found else np.zeros(len(want), dtype=bool)
        return np.where(hit, pos, -1)


def projection_dir(project: Project) -> Path:
    return project.folder / "cache" / PROJECTION_DIR


def projection_path(project: Project, encoder_id: str) -> Path:
    """One file per encoder id (hashed: ids hold ':' and '/')."""
    return projection_dir(project) / f"umap-{hashlib.sha256(encoder_id.encode()).hexdigest()[:16]}.npz"


def save_projection(path: str | os.PathLike[str], coords: np.ndarray, image_ids: np.ndarray, encoder_id: str,
                    encoder_spec: str, params: Mapping[str, Any]) -> Path:
    """Write a projection atomically (a reader sees the old file or the complete new one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    order = np.argsort(image_ids, kind="stable")
    arrays: dict[str, Any] = {"coords": np.ascontiguousarray(coords[order], dtype=np.float32),
              "image_ids": np.asarray(image_ids, dtype=np.int64)[order],
              "encoder_id": np.array(encoder_id), "encoder_spec": np.array(encoder_spec),
              "params": np.array(json.dumps(dict(params), sort_keys=True))}
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def read_projection(path: str | os.PathLike[str]) -> Projection:
    with np.load(path, allow_pickle=False) as data:
        return Projection(coords=data["coords"], image_ids=data["image_ids"], encoder_id=str(data["encoder_id"]),
                          encoder_spec=str(data["encoder_spec"]), params=json.loads(str(data["params"])),
                          path=Path(path))


def find_projection_file(project: Project) -> Path | None:
    """The newest stored projection made from this project's encoder spec, without loading any
    features (cheap enough for every page run). The worker checks the encoder id itself."""
    folder = projection_dir(project)
    if not folder.is_dir():
        return None
    spec = project.encoder_spec
    best: tuple[float, Path] | None = None
    for path in folder.glob("umap-*.npz"):
        try:
            with np.load(path, allow_pickle=False) as data:
                if str(data["encoder_spec"]) != spec:
                    continue
            mtime = path.stat().st_mtime
        except (OSError, ValueError, KeyError):
            continue    # unreadable or foreign file: never chosen, recomputed instead
        if best is None or mtime > best[0]:
            best = (mtime, path)
    return None if best is None else best[1]


def load_projection(project: Project) -> Projection | None:
    path = find_projection_file(project)
    return None if path is None else read_projection(path)


def projection_staleness(project: Project, projection: Projection, missing: int = 0) -> str | None:
    """Why the stored map no longer fits the project (images added since, or the current model
    was trained on features of another encoder id), or None. Cheap: reads no features."""
    if missing:
        return f"{missing:,} pool images were added after the map was made and are not on it"
    weights = project.current_model_path()
    if weights is None:
        return None
    try:
        meta = json.loads(weights.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if meta.get("encoder_spec") == projection.encoder_spec and meta.get("encoder_id") not in (
            None, projection.encoder_id):
        return (f"the features changed since the map was made ({projection.encoder_id} then, "
                f"{meta['encoder_id']} now)")
    return None


def compute_project_projection(project: Project, *, force: bool = False, seed: int | None = None,
                               fit_max: int = DEFAULT_FIT_MAX, chunk: int = DEFAULT_CHUNK,
                               progress: ProgressFn | None = None, should_stop: StopFn | None = None,
                               extract: bool = False) -> Projection:
    """The project's stored projection, computed first when there is none for its encoder id
    (or with ``force``). A stored one is reused as long as it covers every pool image and was
    made with the same seed: labels and rounds never move the map."""
    report = progress or (lambda phase, fraction, message: None)
    seed = int(project.settings.get("seed", DEFAULT_SEED)) if seed is None else int(seed)
    report("loading features", 0.0, "reading the pool's features")

    def feature_progress(done: int, total: int) -> None:
        report("loading features", done / max(1, total), f"features of {done:,} of {total:,} images")

    feats, ids, enc_id = load_pool_features(project, feature_progress, extract=extract)
    path = projection_path(project, enc_id)
    if path.is_file() and not force:
        try:
            stored = read_projection(path)
        except (OSError, ValueError, KeyError):
            stored = None     # a damaged file is simply made again
        if stored is not None and stored.params.get("seed") == seed and \
                bool(np.isin(ids, stored.image_ids, assume_unique=True).all()):
            report("done", 1.0, "the stored map is up to date")
            return stored
    coords, params = fit_projection(feats, seed=seed, fit_max=fit_max, chunk=chunk, progress=progress,
                                    should_stop=should_stop)
    params["created_at"] = time.time()
    report("saving", 1.0, "saving the map")
    save_projection(path, coords, ids, enc_id, project.encoder_spec, params)
    return read_projection(path)
