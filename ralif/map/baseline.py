"""The Random reference curve of simulation mode: a linear head trained on random subsets of the
pool, answered by the hidden true labels, at the label counts of the project's own rounds, computed
incrementally in a background worker and stored under ``<project>/cache/baseline/``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ralif.atomic import atomic_write_json
from ralif.map.jobs import job_status, start_once
from ralif.map.layout import FeaturesMissing, ProjectionCancelled, StopFn
from ralif.project import Project, ProjectError

if TYPE_CHECKING:
    from ralif.worker import BackgroundJob, JobContext

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
    """Compute the Random reference at ``label_counts`` in a background worker (one at a time)."""
    return start_once(project, "random-baseline", "ralif.map.baseline:random_baseline_job",
                      {"folder": str(project.folder), "label_counts": [int(n) for n in label_counts],
                       "seeds": [int(s) for s in seeds]})


def random_baseline_status(project: Project) -> dict[str, Any] | None:
    """The last Random-reference job's status, or None when none was started."""
    return job_status(project, "random-baseline")
