"""The Random reference of the Progress page, like for like with the project's own curve.

Random here is the project's own labeling session replayed with random picks: it starts from the
very labeled set the project's first trained model used (same images, same labels), then adds
images drawn uniformly at random from the pool, answered by their hidden true labels, up to each
label count the project's rounds reached; each point is the same linear head (same features,
standardisation and L2 strength) scored on the same held-out images as the project's rounds. Its
first point is therefore the project's own, and the ratio of the areas measures what the picks
added. It needs hidden true labels for every pool image (the demo, or a project created with
``known_labels="truth"``) and a held-out set; otherwise :func:`reference_unavailable` says why.
Values are computed incrementally in a background worker and stored under
``<project>/cache/baseline/``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ralif.atomic import atomic_write_json
from ralif.map.jobs import job_status, start_once
from ralif.map.layout import FeaturesMissing, ProjectionCancelled, StopFn
from ralif.project import Project, ProjectError, auca_against_random

if TYPE_CHECKING:
    from ralif.worker import BackgroundJob, JobContext

BASELINE_SEEDS = (0, 1, 2, 3, 4)
# Stored values of an earlier way of computing the reference are never reused.
BASELINE_VERSION = 2


def _baseline_path(project: Project) -> Path:
    key = hashlib.sha256(project.encoder_spec.encode()).hexdigest()[:16]
    return project.folder / "cache" / "baseline" / f"random-{key}.json"


def _first_measured(project: Project) -> dict[str, Any] | None:
    return next((r for r in project.rounds() if r["accuracy"] is not None and r["labeled_count"] is not None
                 and r["started_at"] is not None), None)


def reference_unavailable(project: Project) -> str | None:
    """Why a like-for-like Random reference cannot be computed for this project, or None when it can."""
    if project.model_kind != "clip-linear":
        return ("the Random comparison is only available for linear-head projects: a ResNet trained again for "
                "every seed and round would cost more than the labeling it is meant to judge")
    # Trigger-kept counts: this runs on every Progress page run.
    sizes = project.store.image_counts()
    pool = sizes.get("pool")
    tests = sizes["test"].images if "test" in sizes else 0
    if pool is None or pool.truths < pool.images:
        have = 0 if pool is None else pool.truths
        total = 0 if pool is None else pool.images
        return (f"the Random comparison needs hidden true labels for every pool image, to answer the images "
                f"Random would have picked ({have:,} of {total:,} have one)")
    if tests < 1:
        return "the Random comparison needs a held-out set to score both curves on"
    return None


def simulation_reference(project: Project) -> dict[str, Any] | None:
    """The counts a Random reference is computed from, or None when it cannot be (see
    :func:`reference_unavailable` for why)."""
    if reference_unavailable(project) is not None:
        return None
    sizes = project.store.image_counts()
    return {"truths": sizes["pool"].truths, "tests": sizes["test"].images}


def _with_start(project: Project, ref: dict[str, Any]) -> dict[str, Any]:
    """``ref`` plus where Random starts: the round whose model was trained first, its label count and
    when it started (no trained round yet: from no labels)."""
    first = _first_measured(project)
    if first is None:
        return {**ref, "start_round": None, "start_count": 0, "start_at": None}
    return {**ref, "start_round": int(first["number"]), "start_count": int(first["labeled_count"]),
            "start_at": float(first["started_at"])}


def starting_set(project: Project, started_at: float) -> tuple[np.ndarray, np.ndarray]:
    """(image ids, class ids) of the pool images labeled when a round started at ``started_at``:
    each image's last label change before then, read from the label history."""
    rows = project.store.query(
        "SELECT h.image_id, h.new_state, h.new_class_id FROM label_history h JOIN ("
        " SELECT image_id, MAX(id) AS last FROM label_history WHERE created_at <= ? GROUP BY image_id) m"
        " ON h.id = m.last JOIN images i ON i.id = h.image_id"
        " WHERE i.split = 'pool' AND h.new_state = 'labeled' ORDER BY h.image_id", (float(started_at),))
    return (np.array([int(r[0]) for r in rows], dtype=np.int64),
            np.array([int(r[2]) for r in rows], dtype=np.int64))


@dataclass(frozen=True)
class BaselineInputs:
    x_pool: np.ndarray              # features of every pool image, by image id
    y_pool: np.ndarray              # class index: true labels, the starting set's own labels
    start: np.ndarray               # positions of the starting set in the pool
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    encoder_id: str


def _baseline_inputs(project: Project, ref: dict[str, Any]) -> BaselineInputs:
    from ralif.project.rounds import features_for

    classes = [c.id for c in project.classes()]
    index = {c: k for k, c in enumerate(classes)}
    rows = project.store.query(
        "SELECT i.id, i.path, i.content_hash, i.split, t.live_id, l.state, l.class_id FROM images i"
        " LEFT JOIN labels l ON l.image_id = i.id"
        " LEFT JOIN class_truth t ON t.class_id = i.true_class_id ORDER BY i.id")
    pool = [r for r in rows if r[3] == "pool"]
    if any(r[4] not in index for r in pool):
        raise ProjectError("the Random reference needs a live true class for every pool image (a class was "
                           "deleted?)")
    # A held-out image's reference is its label when it has one, else its true label (as rounds do).
    test = [(r, r[6] if r[5] == "labeled" and r[6] in index else r[4]) for r in rows if r[3] == "test"]
    test = [(r, y) for r, y in test if y in index]
    if len(pool) < 2 or not test:
        raise ProjectError("the Random reference needs pool images with true labels and a labeled held-out set")
    if ref["start_at"] is None:
        start_ids, start_classes = np.zeros(0, np.int64), np.zeros(0, np.int64)
    else:
        start_ids, start_classes = starting_set(project, ref["start_at"])
    if len(start_ids) != ref["start_count"]:
        raise ProjectError(f"the labels round {ref['start_round']} trained on cannot be read back from the label "
                           f"history ({len(start_ids)} found, {ref['start_count']} used)")
    cache_root = project.folder / "cache"
    try:
        x_pool, enc_id = features_for(project.encoder_spec, [r[1] for r in pool], [r[2] for r in pool], cache_root)
        x_test, _ = features_for(project.encoder_spec, [r[1] for r, _ in test], [r[2] for r, _ in test], cache_root)
    except (FileNotFoundError, ValueError) as exc:
        raise FeaturesMissing(f"the features of this project cannot be read: {exc}") from exc
    pool_ids = np.array([r[0] for r in pool], dtype=np.int64)
    y_pool = np.array([index[r[4]] for r in pool], dtype=np.int64)
    start = np.searchsorted(pool_ids, start_ids)
    # The starting set keeps the labels the project's model was trained on (a class deleted since
    # falls back to the true label).
    y_pool[start] = np.array([index.get(int(c), int(y)) for c, y in zip(start_classes, y_pool[start])],
                             dtype=np.int64)
    y_test = np.array([index[y] for _, y in test], dtype=np.int64)
    return BaselineInputs(x_pool, y_pool, start, x_test, y_test, len(classes), enc_id)


def _baseline_key(project: Project, ref: dict[str, Any]) -> dict[str, Any]:
    settings = project.settings
    return {"version": BASELINE_VERSION, "encoder_spec": project.encoder_spec, "l2": float(settings.get("l2", 1e-2)),
            "tests": int(ref["tests"]), "classes": [c.id for c in project.classes()],
            "start_round": ref["start_round"], "start_count": ref["start_count"], "start_at": ref["start_at"]}


def random_order(start: np.ndarray, pool_size: int, seed: int) -> np.ndarray:
    """The order in which Random labels the pool for ``seed``: the starting set first, then every
    other pool position in a uniformly random order; its first n entries are Random's n labels."""
    rng = np.random.default_rng([int(seed), 7919])
    rest = np.setdiff1d(np.arange(pool_size), start)
    return np.concatenate([rng.permutation(np.asarray(start, dtype=np.int64)), rng.permutation(rest)])


def read_random_baseline(project: Project, label_counts: Sequence[int],
                         seeds: Sequence[int] = BASELINE_SEEDS) -> dict[str, Any] | None:
    """The stored Random accuracies at ``label_counts`` for every seed, or None when some are not
    computed yet: ``{"counts": [...], "accuracy": [[per count] per seed], "seeds": [...], "start": n}``."""
    base = simulation_reference(project)
    path = _baseline_path(project)
    if base is None or not path.is_file():
        return None
    ref = _with_start(project, base)
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if stored.get("key") != _baseline_key(project, ref):
        return None
    acc = stored.get("accuracy", {})
    try:
        curves = [[float(acc[f"{s}:{int(n)}"]) for n in label_counts] for s in seeds]
    except KeyError:
        return None
    return {"counts": [int(n) for n in label_counts], "accuracy": curves, "seeds": list(seeds),
            "encoder_id": stored.get("encoder_id"), "start": ref["start_count"], "start_round": ref["start_round"]}


def random_baseline(project: Project, label_counts: Sequence[int], seeds: Sequence[int] = BASELINE_SEEDS,
                    progress: Callable[[int, int], None] | None = None, should_stop: StopFn | None = None,
                    ) -> dict[str, Any]:
    """Test accuracy of the project's linear head trained on Random's first n labels (see
    :func:`random_order`) for each n in ``label_counts`` and each seed. The sets are nested, as when
    Random adds a batch per cycle. Values already stored are reused; new ones are added to the store."""
    from ralif.head import Standardizer, fit_head

    why = reference_unavailable(project)
    base = simulation_reference(project)
    if why is not None or base is None:
        raise ProjectError(why or "the Random reference cannot be computed")
    ref = _with_start(project, base)
    path = _baseline_path(project)
    key = _baseline_key(project, ref)
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
        data = _baseline_inputs(project, ref)
        if acc and stored.get("encoder_id") != data.encoder_id:
            acc = {}     # the features changed under the same spec: earlier values do not apply
            todo = [(int(s), int(n)) for s in seeds for n in dict.fromkeys(int(c) for c in label_counts)]
        enc_id = data.encoder_id
        # The rounds standardise with the whole pool's statistics; so does Random.
        st = Standardizer.fit(data.x_pool)
        orders = {s: random_order(data.start, len(data.y_pool), s) for s in dict.fromkeys(s for s, _ in todo)}
        for j, (s, n) in enumerate(todo):
            if should_stop is not None and should_stop():
                break
            take = np.sort(orders[s][:min(n, len(orders[s]))])
            if np.unique(data.y_pool[take]).size < 2:
                # One class seen: any classifier predicts it everywhere (none seen: nothing is right).
                value = float(np.mean(data.y_test == data.y_pool[take[0]])) if len(take) else 0.0
            else:
                head = fit_head(data.x_pool, take, data.y_pool[take], data.num_classes, l2=key["l2"], standardizer=st)
                value = float(np.mean(head.predict(data.x_test) == data.y_test))
            acc[f"{s}:{n}"] = value
            if progress is not None:
                progress(j + 1, len(todo))
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {"key": key, "encoder_id": enc_id, "accuracy": acc}, indent=1)
    out = read_random_baseline(project, label_counts, seeds)
    if out is None:
        raise ProjectionCancelled("the Random reference was stopped before it finished")
    return out


# Two-sided 97.5 % points of Student's t for 1..9 degrees of freedom (more seeds: the normal's).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262)


@dataclass(frozen=True)
class RandomComparison:
    """This project's AUCA over Random's: against Random's mean curve, per seed, and a 95 %
    interval for the ratio over Random's seeds (Student's t on the per-seed ratios)."""

    ratio: float
    per_seed: list[float]
    low: float
    high: float
    seeds: int
    rounds: int
    start: int                      # labels of the shared starting set

    @property
    def verdict(self) -> str:
        if self.low > 1.0:
            return "better than random picking"
        if self.high < 1.0:
            return "worse than random picking"
        return "not distinguishable from random picking yet"


def compare_with_random(accuracy: Sequence[float], reference: dict[str, Any]) -> RandomComparison | None:
    """The comparison of this project's measured accuracies with :func:`read_random_baseline`'s
    curves at the same label counts; None while there are too few rounds for an AUCA."""
    summary = auca_against_random(accuracy, reference["accuracy"])
    if summary is None:
        return None
    per = np.asarray(summary.per_seed, dtype=float)
    k = len(per)
    if k > 1:
        t = _T975[k - 2] if k - 2 < len(_T975) else 1.96
        half = t * float(per.std(ddof=1)) / math.sqrt(k)
    else:
        half = math.inf
    mean = float(per.mean())
    return RandomComparison(summary.mean_ratio, [float(v) for v in per], mean - half, mean + half, k,
                            len(accuracy), int(reference.get("start", 0)))


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
    """Compute the Random reference at ``label_counts`` in a background worker (one at a time)."""
    return start_once(project, "random-baseline", "ralif.map.baseline:random_baseline_job",
                      {"folder": str(project.folder), "label_counts": [int(n) for n in label_counts],
                       "seeds": [int(s) for s in seeds]})


def random_baseline_status(project: Project) -> dict[str, Any] | None:
    """The last Random-reference job's status, or None when none was started."""
    return job_status(project, "random-baseline")
