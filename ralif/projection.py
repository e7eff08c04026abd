"""The map of a project's pool: a fixed 2-D UMAP layout of its features, and what is drawn on it.

The layout is computed once per (project, encoder id) in a background worker and stored as a small
``.npz`` under ``<project>/cache/projection/``; it is not refitted when labels or rounds change, so
a point stays where the eye last saw it. Large pools are handled by fitting UMAP on a seeded
subsample (at most ``fit_max`` points) and placing the rest with ``transform`` in chunks, which
bounds memory and time whatever the pool size.

Also here, because the Map and Progress pages need them and they are not page logic:

* per-image predictions (class, confidence, entropy) of the project's current model;
* the arrays the map draws (:func:`map_data`) and the plotly figure itself (:func:`map_figure`),
  kept out of the page so they can be tested and benchmarked;
* the Random reference curve of simulation mode (:func:`random_baseline`): a linear head trained on
  random subsets of the pool, answered by the hidden true labels, at the label counts of the
  project's own rounds, computed incrementally in the background.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ralif.atomic import atomic_write, atomic_write_json
from ralif.project.session import Project, ProjectError

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from ralif.worker import BackgroundJob, JobContext

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
# Encoders give L2-normalised or ReLU features whose direction carries the meaning.
DEFAULT_METRIC = "cosine"
# Below this many points UMAP's graph is degenerate; a principal-component layout is used instead.
_MIN_UMAP_POINTS = 8
# Points drawn in the browser (labeled and selected points always come on top of these).
DEFAULT_MAX_POINTS = 30_000

# Handles of the workers this process started, by status path.
# A worker that has not reported by then never will (the status file still says queued).
_WORKER_START_TIMEOUT_S = 120.0

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
                   progress: ProgressFn | None = None, should_stop: StopFn | None = None,
                   ) -> tuple[np.ndarray, dict[str, Any]]:
    """2-D coordinates (N x 2 float32) of ``features`` (N x D, memory-mapped is fine) and the
    parameters used. UMAP is fitted on a seeded subsample of at most ``fit_max`` rows; the other
    rows are placed with ``transform``, ``chunk`` rows at a time. The same seed gives the same
    coordinates."""
    report = progress or (lambda phase, fraction, message: None)
    stop = should_stop or (lambda: False)
    n = int(features.shape[0])
    if features.ndim != 2:
        raise ValueError(f"features must be a 2-D array (images x dimensions), got shape {features.shape}")
    if fit_max < 2 or chunk < 1:
        raise ValueError("fit_max must be at least 2 and chunk at least 1")
    params: dict[str, Any] = {"method": "umap", "seed": int(seed), "fit_max": int(fit_max), "chunk": int(chunk),
                              "n_neighbors": int(n_neighbors), "min_dist": float(min_dist), "metric": metric,
                              "points": n, "format": FORMAT_VERSION}
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
        rest = np.setdiff1d(np.arange(n), fit_rows, assume_unique=True)
        for start in range(0, len(rest), chunk):
            if stop():
                raise ProjectionCancelled("the projection was cancelled")
            done = start / max(1, len(rest))
            report("placing", done, f"placing {start:,} of {len(rest):,} remaining points")
            rows = rest[start:start + chunk]
            coords[rows] = np.asarray(reducer.transform(np.asarray(features[rows], np.float32)), dtype=np.float32)
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
    arrays = {"coords": np.ascontiguousarray(coords[order], dtype=np.float32),
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


# ----------------------------------------------------------------------------- background jobs


def _status_path(project: Project, name: str) -> Path:
    return project.folder / "jobs" / f"{name}.json"


def _job_status(project: Project, name: str) -> dict[str, Any] | None:
    from ralif.worker import job_for

    path = _status_path(project, name)
    if not path.is_file():
        return None
    try:
        # Through a handle, so a worker that died without a final state is reported as failed.
        status = job_for(path).status()
    except (OSError, ValueError):
        return None
    if status.get("state") == "queued" and status.get("pid") is None and \
            time.time() - float(status.get("created_at") or 0) > _WORKER_START_TIMEOUT_S:
        status.update(state="failed", error="the background worker never started")
    return status


def _start_once(project: Project, name: str, target: str, kwargs: dict[str, Any]) -> BackgroundJob:
    """Start ``target`` in a worker unless a job of that name is still running for the project."""
    from ralif.worker import FINAL_STATES, job_for, start_job

    path = _status_path(project, name)
    status = _job_status(project, name)
    if status is not None and status.get("state") not in FINAL_STATES:
        return job_for(path)
    return start_job(target, kwargs, path, job_id=name)


def projection_job(job: JobContext, folder: str, force: bool = False, extract: bool = False,
                   fit_max: int = DEFAULT_FIT_MAX, chunk: int = DEFAULT_CHUNK) -> dict[str, Any]:
    """Worker entry point: compute (or confirm) the project's projection, reporting progress."""
    from ralif.worker import JobCancelled

    project = Project.open(folder)

    def report(phase: str, fraction: float, message: str) -> None:
        # Overall fraction: features 0-10 %, UMAP fit 10-40 %, placing the rest 40-100 %.
        span = {"loading features": (0.0, 0.1), "fitting": (0.1, 0.4), "placing": (0.4, 1.0),
                "saving": (1.0, 1.0), "done": (1.0, 1.0)}.get(phase, (0.0, 1.0))
        overall = span[0] + (span[1] - span[0]) * min(1.0, max(0.0, fraction))
        job.report({"fraction": round(overall, 4)}, phase=phase, message=message)

    try:
        proj = compute_project_projection(project, force=force, progress=report, should_stop=job.should_stop,
                                          extract=extract, fit_max=fit_max, chunk=chunk)
    except ProjectionCancelled as exc:
        raise JobCancelled(str(exc)) from exc
    return {"path": str(proj.path), "points": len(proj.image_ids), "encoder_id": proj.encoder_id}


def start_projection(project: Project, force: bool = False, extract: bool = False) -> BackgroundJob:
    """Compute the projection in a background worker (one at a time per project)."""
    return _start_once(project, "projection", "ralif.projection:projection_job",
                       {"folder": str(project.folder), "force": bool(force), "extract": bool(extract)})


def projection_status(project: Project) -> dict[str, Any] | None:
    """The last projection job's status (``state``, ``phase``, ``progress.fraction``, ``message``,
    ``error``), or None when none was started."""
    return _job_status(project, "projection")


# ----------------------------------------------------------------------------- predictions


@dataclass(frozen=True)
class PoolPredictions:
    """What the current model says about every pool image (arrays aligned with ``image_ids``)."""

    image_ids: np.ndarray
    class_ids: np.ndarray        # predicted class id
    confidence: np.ndarray       # probability of the predicted class
    entropy: np.ndarray          # predictive entropy (nats)
    round: int | None
    model_path: str


def predictions_from_proba(probs: np.ndarray, class_ids: Sequence[int]) -> tuple[np.ndarray, ...]:
    """(predicted class id, confidence, entropy) from probabilities N x K over ``class_ids``."""
    p = np.asarray(probs, dtype=np.float64)
    top = p.argmax(1)
    conf = p[np.arange(len(p)), top]
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=1)
    return np.asarray(class_ids, dtype=np.int64)[top], conf.astype(np.float32), ent.astype(np.float32)


def pool_predictions(project: Project) -> PoolPredictions | None:
    """Predictions of the project's current model on its pool; None before the first model."""
    path = project.current_model_path()
    if path is None:
        return None
    model = project.load_model()
    ids, paths, hashes = pool_images(project)
    probs = model.predict_proba(paths, cache_root=project.folder / "cache", hashes=hashes)
    class_ids = model.meta.get("class_ids") or [project.class_id(n) for n in model.class_names]
    pred, conf, ent = predictions_from_proba(probs, class_ids)
    rnd = model.meta.get("round")
    return PoolPredictions(ids, pred, conf, ent, None if rnd is None else int(rnd), str(path))


# ----------------------------------------------------------------------------- map data

UNLABELED, LABELED, UNSURE = 0, 1, 2


@dataclass
class MapData:
    """Everything the map draws, aligned with the projection's rows."""

    image_ids: np.ndarray
    x: np.ndarray
    y: np.ndarray
    state: np.ndarray            # UNLABELED, LABELED or UNSURE
    class_id: np.ndarray         # current label's class id, -1 if none
    true_class_id: np.ndarray    # hidden true class id (demos, simulations), -1 if unknown
    selections: dict[int, np.ndarray] = field(default_factory=dict)   # round -> rows it picked
    missing: int = 0             # pool images the projection does not hold (added after it was made)

    @property
    def has_truth(self) -> bool:
        return bool((self.true_class_id >= 0).any())


def pool_truth(project: Project, projection: Projection) -> np.ndarray:
    """Hidden true class id of every projected image (-1 where unknown). Changes only when
    classes are merged, so callers may keep it longer than the labels."""
    with project.store.read() as conn:
        cur = conn.cursor()
        # Plain tuples: numpy converts them about three times faster than sqlite3.Row objects,
        # which matters at a million pool images.
        cur.row_factory = None
        rows = cur.execute("SELECT id, true_class_id FROM images WHERE split = 'pool'"
                           " AND true_class_id IS NOT NULL").fetchall()
    table = np.array(rows, dtype=np.int64).reshape(-1, 2)
    truth = np.full(len(projection.image_ids), -1, dtype=np.int64)
    at = projection.rows_of(table[:, 0])
    truth[at[at >= 0]] = table[at >= 0, 1]
    return truth


def map_data(project: Project, projection: Projection, truth: np.ndarray | None = None) -> MapData:
    """Label state and class of every projected pool image, each round's picks, and (unless
    given) the true classes. Reads the labels table, not the images: its size follows the labels
    made, so a million-image pool costs little more than a small one."""
    with project.store.read() as conn:
        cur = conn.cursor()
        # Plain tuples, not sqlite3.Row: this runs after every label, over every label.
        cur.row_factory = None
        labels = cur.execute(
            "SELECT image_id, COALESCE(class_id, -1), CASE state WHEN 'labeled' THEN 1 WHEN 'unsure' THEN 2"
            " ELSE 0 END FROM labels WHERE state != 'cleared'").fetchall()
        picks = cur.execute("SELECT round, image_id FROM selections ORDER BY round, rank").fetchall()
        sizes = project.store.image_counts(conn)
        pool = sizes["pool"].images if "pool" in sizes else 0
    n = len(projection.image_ids)
    table = np.array(labels, dtype=np.int64).reshape(-1, 3)
    state = np.zeros(n, dtype=np.int8)
    class_id = np.full(n, -1, dtype=np.int64)
    at = projection.rows_of(table[:, 0])     # held-out images are not on the map: -1, dropped
    ok = at >= 0
    state[at[ok]] = table[ok, 2]
    class_id[at[ok]] = np.where(table[ok, 2] == LABELED, table[ok, 1], -1)
    selections: dict[int, np.ndarray] = {}
    if picks:
        pk = np.array(picks, dtype=np.int64)
        prow = projection.rows_of(pk[:, 1])
        for rnd in np.unique(pk[:, 0]):
            sel = (pk[:, 0] == rnd) & (prow >= 0)
            selections[int(rnd)] = prow[sel]
    truth = pool_truth(project, projection) if truth is None else truth
    # Images are never removed from a project, so pool images beyond the mapped ones are new ones.
    return MapData(projection.image_ids, projection.coords[:, 0], projection.coords[:, 1], state, class_id, truth,
                   selections, missing=max(0, pool - n))


def display_rows(n: int, keep: np.ndarray, max_points: int = DEFAULT_MAX_POINTS, seed: int = 0) -> np.ndarray:
    """Rows to draw: every row in ``keep`` (a boolean mask: labeled, selected) plus a fixed random
    sample of the others, up to ``max_points`` in all. The sample depends only on the seed and on
    which rows are kept, so points do not jump between page runs."""
    keep = np.asarray(keep, dtype=bool)
    others = np.flatnonzero(~keep)
    room = max(0, int(max_points) - int(keep.sum()))
    if len(others) > room:
        priority = np.random.default_rng(seed).random(n)[others]
        others = np.sort(others[np.argpartition(priority, room)[:room]]) if room else others[:0]
    return np.union1d(np.flatnonzero(keep), others)


def selected_image_ids(selection: Mapping[str, Any] | None) -> np.ndarray:
    """Image ids of the points in a plotly selection event, read from each point's customdata.

    Point indices are not used: they count within a trace, and with several traces (one per
    class, overlays) the same index names different images.
    """
    if not selection:
        return np.zeros(0, dtype=np.int64)
    ids = []
    for point in selection.get("points", []) or []:
        data = point.get("customdata")
        if isinstance(data, (list, tuple)):
            data = data[0] if data else None
        if data is None:
            continue
        try:
            ids.append(int(data))
        except (TypeError, ValueError):
            continue
    return np.unique(np.asarray(ids, dtype=np.int64))


# ----------------------------------------------------------------------------- the figure

GREY = "#b9bec7"
PENDING = "#ff7f0e"
COLOR_MODES = ("labels", "truth", "predicted", "entropy")


def class_palette(n: int) -> list[str]:
    """n distinct colours: Plotly's 10, then its light 24, then repeated."""
    from plotly.colors import qualitative

    base = list(qualitative.Plotly) + [c for c in qualitative.Light24 if c not in qualitative.Plotly]
    return [base[i % len(base)] for i in range(max(n, 1))]


def map_figure(data: MapData, class_ids: Sequence[int], class_names: Sequence[str], *, color_by: str = "labels",
               predictions: PoolPredictions | None = None, pending_round: int | None = None,
               highlight_round: int | None = None, max_points: int = DEFAULT_MAX_POINTS, seed: int = 0,
               height: int = 620) -> go.Figure:
    """The map as a WebGL scatter. Each point's customdata is its image id (what a selection
    returns); every trace holds only ids, so selected points map back to images unambiguously.

    ``color_by``: ``labels`` (unlabeled grey, labeled by class), ``truth`` (hidden true class),
    ``predicted`` (current model's class) or ``entropy`` (current model's uncertainty).
    """
    import plotly.graph_objects as go

    if color_by not in COLOR_MODES:
        raise ValueError(f"color_by must be one of {', '.join(COLOR_MODES)}, not {color_by!r}")
    if color_by in ("predicted", "entropy") and predictions is None:
        raise ValueError(f"coloring by {color_by} needs the current model's predictions")
    n = len(data.image_ids)
    palette = class_palette(len(class_ids))
    position = {int(c): k for k, c in enumerate(class_ids)}
    # Class id -> position in the palette; ids of deleted classes map to -1 (drawn grey).
    lut_size = int(max([0, *class_ids])) + 1
    lut = np.full(lut_size, -1, dtype=np.int64)
    for c, k in position.items():
        lut[c] = k

    def class_pos(ids: np.ndarray) -> np.ndarray:
        ok = (ids >= 0) & (ids < lut_size)
        return np.where(ok, lut[np.clip(ids, 0, lut_size - 1)], -1)

    pending = data.selections.get(pending_round, np.zeros(0, np.int64)) if pending_round else np.zeros(0, np.int64)
    earlier = data.selections.get(highlight_round, np.zeros(0, np.int64)) if highlight_round else np.zeros(0, np.int64)
    keep = data.state != UNLABELED
    keep[pending] = True
    keep[earlier] = True
    rows = display_rows(n, keep, max_points, seed)

    names = np.asarray(list(class_names) + ["—"], dtype=object)
    label_pos = class_pos(data.class_id)
    state_text = np.where(data.state[rows] == LABELED, names[label_pos[rows]],
                          np.where(data.state[rows] == UNSURE, "unsure (skipped)", "unlabeled"))
    hover = "image %{customdata}<br>%{text}<extra></extra>"
    if predictions is not None:
        pred_at = align_ids(predictions.image_ids, data.image_ids)
        ok = pred_at >= 0
        pred_pos = np.full(n, -1, dtype=np.int64)
        pred_pos[ok] = class_pos(predictions.class_ids[pred_at[ok]])
        entropy = np.full(n, np.nan, dtype=np.float32)
        entropy[ok] = predictions.entropy[pred_at[ok]]
        conf = np.full(n, np.nan, dtype=np.float32)
        conf[ok] = predictions.confidence[pred_at[ok]]
        guess = np.char.add(np.char.add(np.char.add(np.asarray(names[pred_pos[rows]], dtype=str), " ("),
                                        np.char.mod("%.0f", 100 * np.nan_to_num(conf[rows]))), "%)")
        text = np.char.add(np.char.add(np.asarray(state_text, dtype=str), "<br>model: "), guess)
        text = np.char.add(np.char.add(text, "<br>entropy "), np.char.mod("%.2f", np.nan_to_num(entropy[rows])))
    else:
        text = np.asarray(state_text, dtype=str)
    fig = go.Figure()

    def add(name: str, sel: np.ndarray, **marker: Any) -> None:
        if not len(sel):
            return
        # Every drawn row is in ``rows`` (sorted), so its hover text is found by bisection.
        t = text[np.searchsorted(rows, sel)]
        fig.add_trace(go.Scattergl(x=data.x[sel], y=data.y[sel], mode="markers", name=name,
                                   customdata=data.image_ids[sel], text=t, hovertemplate=hover, marker=marker))

    if color_by == "labels":
        base = rows[data.state[rows] != LABELED]
        unsure = base[data.state[base] == UNSURE]
        add("unlabeled", base[data.state[base] == UNLABELED], color=GREY, size=4, opacity=0.55)
        add("unsure (skipped)", unsure, color="#7f7f7f", size=5, symbol="x", opacity=0.8)
        labeled = rows[data.state[rows] == LABELED]
        lp = label_pos[labeled]
        for k, name in enumerate(class_names):
            add(str(name), labeled[lp == k], color=palette[k], size=7, line={"width": 0.5, "color": "white"})
        add("deleted class", labeled[lp < 0], color="#444", size=6)
    elif color_by in ("truth", "predicted"):
        pos = class_pos(data.true_class_id) if color_by == "truth" else pred_pos
        rp = pos[rows]
        add("unknown", rows[rp < 0], color=GREY, size=4, opacity=0.55)
        for k, name in enumerate(class_names):
            add(str(name), rows[rp == k], color=palette[k], size=5, opacity=0.85)
    else:
        ent = entropy[rows]
        add("entropy", rows, color=np.nan_to_num(ent), colorscale="Viridis", size=5, opacity=0.9,
            cmin=0.0, cmax=float(np.log(max(2, len(class_ids)))),
            colorbar={"title": {"text": "entropy"}, "thickness": 12})
    if len(earlier):
        # Open symbols are drawn in the marker colour: a dark ring around the point underneath.
        add(f"picked in round {highlight_round}", np.intersect1d(earlier, rows), color="#222", size=13,
            symbol="circle-open", line={"width": 2})
    if len(pending):
        pr = np.intersect1d(pending, rows)
        fill = np.where(data.state[pr] == LABELED, np.asarray(palette + [GREY], dtype=object)[label_pos[pr]], PENDING)
        add(f"to label now (round {pending_round})", pr, color=fill.tolist(), size=12, symbol="star",
            line={"width": 1.5, "color": "#222"})
    fig.update_layout(
        height=height, margin={"l": 10, "r": 10, "t": 10, "b": 10}, dragmode="lasso", hovermode="closest",
        legend={"itemsizing": "constant", "orientation": "h", "y": -0.02, "yanchor": "top", "x": 0},
        plot_bgcolor="white", uirevision="map",
        xaxis={"visible": False}, yaxis={"visible": False, "scaleanchor": "x", "scaleratio": 1})
    return fig


def align_ids(ids: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Position of each id of ``want`` in the ascending ``ids``, -1 where absent."""
    if not len(ids):
        return np.full(len(want), -1, dtype=np.int64)
    pos = np.minimum(np.searchsorted(ids, want), len(ids) - 1)
    return np.where(ids[pos] == want, pos, -1)


# ----------------------------------------------------------------------------- Random reference


BASELINE_SEEDS = (0, 1, 2)


def _baseline_path(project: Project) -> Path:
    key = hashlib.sha256(project.encoder_spec.encode()).hexdigest()[:16]
    return project.folder / "cache" / "baseline" / f"random-{key}.json"


def simulation_reference(project: Project) -> dict[str, Any] | None:
    """Whether a Random reference can be computed: a linear-head project with hidden true labels
    (the simulated oracle's answers) in its pool and a held-out set with reference labels.
    Returns the counts, or None when it cannot."""
    if project.model_kind != "clip-linear":
        return None
    # Trigger-kept counts: this runs on every Progress page run, and summing over the images
    # table read every image row (0.1-0.25 s at a million images).
    sizes = project.store.image_counts()
    truths = sizes["pool"].truths if "pool" in sizes else 0
    tests = sizes["test"].images if "test" in sizes else 0
    if truths < 2 or tests < 1:
        return None
    return {"truths": truths, "tests": tests}


def _baseline_inputs(project: Project) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, str]:
    """(pool features of images with a true label, their class index, test features, test class
    index, number of classes, encoder id)."""
    from ralif.project.rounds import features_for

    classes = [c.id for c in project.classes()]
    index = {c: k for k, c in enumerate(classes)}
    rows = project.store.query(
        "SELECT i.id, i.path, i.content_hash, i.split, i.true_class_id, l.state, l.class_id FROM images i"
        " LEFT JOIN labels l ON l.image_id = i.id ORDER BY i.id")
    pool = [r for r in rows if r[3] == "pool" and r[4] in index]
    # A held-out image's reference is its label when it has one, else its true label (as rounds do).
    test = [(r, r[6] if r[5] == "labeled" and r[6] in index else r[4]) for r in rows if r[3] == "test"]
    test = [(r, y) for r, y in test if y in index]
    if len(pool) < 2 or not test:
        raise ProjectError("the Random reference needs pool images with true labels and a labeled held-out set")
    cache_root = project.folder / "cache"
    try:
        x_pool, enc_id = features_for(project.encoder_spec, [r[1] for r in pool], [r[2] for r in pool], cache_root)
        x_test, _ = features_for(project.encoder_spec, [r[1] for r, _ in test], [r[2] for r, _ in test], cache_root)
    except (FileNotFoundError, ValueError) as exc:
        raise FeaturesMissing(f"the features of this project cannot be read: {exc}") from exc
    y_pool = np.array([index[r[4]] for r in pool], dtype=np.int64)
    y_test = np.array([index[y] for _, y in test], dtype=np.int64)
    return x_pool, y_pool, x_test, y_test, len(classes), enc_id


def _baseline_key(project: Project, tests: int) -> dict[str, Any]:
    settings = project.settings
    return {"encoder_spec": project.encoder_spec, "l2": float(settings.get("l2", 1e-2)), "tests": int(tests),
            "classes": [c.id for c in project.classes()]}


def read_random_baseline(project: Project, label_counts: Sequence[int],
                         seeds: Sequence[int] = BASELINE_SEEDS) -> dict[str, Any] | None:
    """The stored Random accuracies at ``label_counts`` for every seed, or None when some are not
    computed yet: ``{"counts": [...], "accuracy": [[per count] per seed], "seeds": [...]}``."""
    ref = simulation_reference(project)
    path = _baseline_path(project)
    if ref is None or not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if stored.get("key") != _baseline_key(project, ref["tests"]):
        return None
    acc = stored.get("accuracy", {})
    try:
        curves = [[float(acc[f"{s}:{int(n)}"]) for n in label_counts] for s in seeds]
    except KeyError:
        return None
    return {"counts": [int(n) for n in label_counts], "accuracy": curves, "seeds": list(seeds),
            "encoder_id": stored.get("encoder_id")}


def random_baseline(project: Project, label_counts: Sequence[int], seeds: Sequence[int] = BASELINE_SEEDS,
                    progress: Callable[[int, int], None] | None = None, should_stop: StopFn | None = None,
                    ) -> dict[str, Any]:
    """Test accuracy of a linear head trained on n random pool images (true labels as answers),
    for each n in ``label_counts`` and each seed: the simulation protocol's Random, at the label
    counts the project actually reached. Each seed draws one random order of the pool and takes
    its first n images, so the sets are nested as when Random adds a batch per cycle. Values
    already stored are reused; new ones are added to the store."""
    from ralif.head import Standardizer, fit_head

    ref = simulation_reference(project)
    if ref is None:
        raise ProjectError("a Random reference needs a linear-head project with hidden true labels and a "
                           "held-out set (the demo, or a project created with known_labels='truth')")
    path = _baseline_path(project)
    key = _baseline_key(project, ref["tests"])
    stored: dict[str, Any] = {}
    if path.is_file():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            stored = {}
    acc: dict[str, float] = dict(stored.get("accuracy", {})) if stored.get("key") == key else {}
    todo = [(int(s), int(n)) for s in seeds for n in dict.fromkeys(int(c) for c in label_counts)
            if f"{int(s)}:{int(n)}" not in acc]
    enc_id = stored.get("encoder_id") if acc else None
    if todo:
        x_pool, y_pool, x_test, y_test, k, enc_id = _baseline_inputs(project)
        if acc and stored.get("encoder_id") != enc_id:
            acc = {}     # the features changed under the same spec: earlier values do not apply
            todo = [(int(s), int(n)) for s in seeds for n in dict.fromkeys(int(c) for c in label_counts)]
        st = Standardizer.fit(x_pool)
        l2 = key["l2"]
        for j, (s, n) in enumerate(todo):
            if should_stop is not None and should_stop():
                break
            order = np.random.default_rng([s, 7919]).permutation(len(y_pool))
            take = order[:min(n, len(order))]
            if np.unique(y_pool[take]).size < 2:
                # One class seen: any classifier predicts it everywhere (none seen: nothing is right).
                value = float(np.mean(y_test == y_pool[take[0]])) if len(take) else 0.0
            else:
                head = fit_head(x_pool, np.sort(take), y_pool[np.sort(take)], k, l2=l2, standardizer=st)
                value = float(np.mean(head.predict(x_test) == y_test))
            acc[f"{s}:{n}"] = value
            if progress is not None:
                progress(j + 1, len(todo))
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {"key": key, "encoder_id": enc_id, "accuracy": acc}, indent=1)
    out = read_random_baseline(project, label_counts, seeds)
    if out is None:
        raise ProjectionCancelled("the Random reference was stopped before it finished")
    return out


def random_baseline_job(job: JobContext, folder: str, label_counts: list[int],
                        seeds: list[int] | None = None) -> dict[str, Any]:
    """Worker entry point for :func:`random_baseline`."""
    from ralif.worker import JobCancelled

    project = Project.open(folder)

    def report(done: int, total: int) -> None:
        job.report({"fraction": done / max(1, total), "done": done, "total": total}, phase="training",
                   message=f"{done} of {total} Random models trained")

    job.report({"fraction": 0.0}, phase="loading features", message="reading features")
    try:
        out = random_baseline(project, label_counts, tuple(seeds or BASELINE_SEEDS), report, job.should_stop)
    except ProjectionCancelled as exc:
        raise JobCancelled(str(exc)) from exc
    return {"counts": out["counts"]}


def start_random_baseline(project: Project, label_counts: Sequence[int],
                          seeds: Sequence[int] = BASELINE_SEEDS) -> BackgroundJob:
    return _start_once(project, "random-baseline", "ralif.projection:random_baseline_job",
                       {"folder": str(project.folder), "label_counts": [int(n) for n in label_counts],
                        "seeds": [int(s) for s in seeds]})


def random_baseline_status(project: Project) -> dict[str, Any] | None:
    return _job_status(project, "random-baseline")
