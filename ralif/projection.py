"""The map of a project's pool: the names the Map and Progress pages use, re-exported from
:mod:`ralif.map` (layout, background jobs, predictions, drawn arrays, figure, Random reference).

The layout is a fixed 2-D UMAP of the pool's features, computed once per (project, encoder id) in a
background worker and never refitted when labels or rounds change, so a point stays where the eye
last saw it.
"""

from __future__ import annotations

from ralif.map.baseline import (
    BASELINE_SEEDS,
    random_baseline,
    random_baseline_job,
    random_baseline_status,
    read_random_baseline,
    simulation_reference,
    start_random_baseline,
)
from ralif.map.data import (
    DEFAULT_MAX_POINTS,
    LABELED,
    UNLABELED,
    UNSURE,
    MapData,
    align_ids,
    display_rows,
    map_data,
    pool_truth,
    selected_image_ids,
)
from ralif.map.figure import COLOR_MODES, GREY, PENDING, class_palette, map_figure
from ralif.map.jobs import job_status, projection_job, projection_status, start_once, start_projection
from ralif.map.layout import (
    DEFAULT_CHUNK,
    DEFAULT_FIT_MAX,
    DEFAULT_METRIC,
    DEFAULT_MIN_DIST,
    DEFAULT_N_NEIGHBORS,
    DEFAULT_SEED,
    FORMAT_VERSION,
    PROJECTION_DIR,
    FeaturesMissing,
    ProgressFn,
    Projection,
    ProjectionCancelled,
    StopFn,
    compute_project_projection,
    find_projection_file,
    fit_projection,
    load_pool_features,
    load_projection,
    pool_images,
    projection_dir,
    projection_path,
    projection_staleness,
    read_projection,
    save_projection,
)
from ralif.map.predictions import PoolPredictions, pool_predictions, predictions_from_proba

__all__ = [
    "BASELINE_SEEDS", "COLOR_MODES", "DEFAULT_CHUNK", "DEFAULT_FIT_MAX", "DEFAULT_MAX_POINTS", "DEFAULT_METRIC",
    "DEFAULT_MIN_DIST", "DEFAULT_N_NEIGHBORS", "DEFAULT_SEED", "FORMAT_VERSION", "GREY", "LABELED", "PENDING",
    "PROJECTION_DIR", "UNLABELED", "UNSURE", "FeaturesMissing", "MapData", "PoolPredictions", "ProgressFn",
    "Projection", "ProjectionCancelled", "StopFn", "align_ids", "class_palette", "compute_project_projection",
    "display_rows", "find_projection_file", "fit_projection", "job_status", "load_pool_features",
    "load_projection", "map_data", "map_figure", "pool_images", "pool_predictions", "pool_truth",
    "predictions_from_proba", "projection_dir", "projection_job", "projection_path", "projection_staleness",
    "projection_status", "random_baseline", "random_baseline_job", "random_baseline_status",
    "read_projection", "read_random_baseline", "save_projection", "selected_image_ids", "simulation_reference",
    "start_once", "start_projection", "start_random_baseline",
]
