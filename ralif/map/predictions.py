"""What the project's current model predicts about every pool image (class, confidence, entropy):
colours and hover text of the map, read by the Map page."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ralif.map.layout import pool_images
from ralif.project import Project


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
