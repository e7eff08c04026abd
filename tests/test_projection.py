"""The pool map: UMAP fit on a subsample, the rest placed by neighbours or transform, determinism, the
on-disk cache, clear errors, the background job, what the map draws, and the Random reference of simulation mode.

UMAP runs on a few hundred synthetic points (numba compiles once per test process, about ten
seconds); the worker test uses a pool too small for UMAP so it never pays that cost in a child.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import blobs
from PIL import Image

from ralif import projection as proj
from ralif.map import layout
from ralif.map.placing import memberships, refine
from ralif.project import Project, ProjectError


def _clusters(n: int = 300, dim: int = 16, seed: int = 0) -> np.ndarray:
    return blobs(n, dim, 3, seed, spread=4.0)[0]


def _images(root: Path, per_class: int, seed: int = 0) -> Path:
    """Small PNGs of random colours in two class folders (every file distinct)."""
    rng = np.random.default_rng(seed)
    for cls in ("red", "blue"):
        for i in range(per_class):
            arr = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
            (root / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(root / cls / f"{cls}{i:03d}.png")
    return root


def _pixels_project(tmp_path: Path, per_class: int = 20) -> Project:
    return Project.create(tmp_path / "project", _images(tmp_path / "images", per_class), encoder="pixels:4",
                          known_labels="ignore")


# ----------------------------------------------------------------------------- fitting


def test_subsample_fit_then_transform_places_every_point():
    x = _clusters(300)
    coords, params = proj.fit_projection(x, seed=1, fit_max=120, chunk=70)
    assert coords.shape == (300, 2) and coords.dtype == np.float32
    assert np.isfinite(coords).all()
    assert params["method"] == "umap" and params["fit_points"] == 120 and params["points"] == 300
    # Points placed by transform land among the fitted ones, not at some far-away default.
    lo, hi = coords.min(0), coords.max(0)
    assert (hi - lo > 0).all()


def test_same_seed_same_coordinates():
    x = _clusters(200, seed=2)
    a, _ = proj.fit_projection(x, seed=3, fit_max=100, chunk=60)
    b, _ = proj.fit_projection(x, seed=3, fit_max=100, chunk=60)
    np.testing.assert_array_equal(a, b)


def _knn_majority(fit_xy: np.ndarray, fit_y: np.ndarray, xy: np.ndarray, y: np.ndarray, k: int = 10) -> float:
    d = ((xy[:, None, :] - fit_xy[None, :, :]) ** 2).sum(2)
    votes = fit_y[np.argsort(d, axis=1)[:, :k]]
    return float((np.array([np.bincount(v).argmax() for v in votes]) == y).mean())


@pytest.mark.parametrize("placing", ["neighbours", "umap"])
def test_placed_points_land_among_their_own_cluster(placing):
    x, y = blobs(500, 16, 4, 5, spread=4.0)
    coords, params = proj.fit_projection(x, seed=0, fit_max=200, chunk=90, placing=placing)
    assert params["placing"] == placing
    fit = np.sort(np.random.default_rng(0).choice(500, 200, replace=False))
    rest = np.setdiff1d(np.arange(500), fit)
    assert _knn_majority(coords[fit], y[fit], coords[rest], y[rest]) >= 0.95


def test_neighbour_memberships_are_umaps():
    # transform's memberships: exp(-d / sigma) (local connectivity 0), sigma solved so that they sum
    # to log2(k); nearer neighbours weigh more.
    dist = torch.sort(torch.rand(50, 15, generator=torch.Generator().manual_seed(0)) * 3, 1).values
    w = memberships(dist)
    torch.testing.assert_close(w.sum(1), torch.full((50,), float(np.log2(15))))
    assert (w[:, 1:] <= w[:, :-1] + 1e-7).all() and (w <= 1).all()


def test_refinement_pulls_towards_neighbours_and_is_seeded():
    # One point started away from its two fitted neighbours ends nearer them; the same seed gives
    # the same path, and no epochs leave the start as it is.
    anchors = torch.tensor([[0.0, 0.0], [1.0, 0.0], [50.0, 50.0], [-50.0, 50.0]])
    start = torch.tensor([[10.0, 10.0]])
    nb, w = torch.tensor([[0, 1]]), torch.tensor([[1.0, 0.8]])

    def run(epochs: int, seed: int) -> torch.Tensor:
        return refine(start, nb, w, anchors, 1.577, 0.895, epochs, seed)

    moved = run(100, 0)
    middle = torch.tensor([0.5, 0.0])
    assert float((moved - middle).norm()) < float((start - middle).norm()) - 2.0
    torch.testing.assert_close(moved, run(100, 0))
    torch.testing.assert_close(run(0, 0), start)


def test_neighbour_placing_reads_a_memory_map_and_falls_back_for_other_metrics(tmp_path):
    x = _clusters(240, seed=4).astype(np.float32)
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=x.shape)
    mm[:] = x
    mm.flush()
    a, params = proj.fit_projection(x, seed=2, fit_max=100, chunk=50, metric="euclidean")
    b, _ = proj.fit_projection(np.load(tmp_path / "x.npy", mmap_mode="r"), seed=2, fit_max=100, chunk=50,
                               metric="euclidean")
    assert params["placing"] == "neighbours"
    np.testing.assert_array_equal(a, b)
    _, other = proj.fit_projection(x, seed=2, fit_max=100, chunk=50, metric="manhattan")
    assert other["placing"] == "umap"
    with pytest.raises(ValueError, match="placing must be one of"):
        proj.fit_projection(x, placing="nearest")


def test_tiny_pool_uses_principal_components():
    coords, params = proj.fit_projection(_clusters(5), seed=0)
    assert params["method"] == "pca" and coords.shape == (5, 2) and np.isfinite(coords).all()


# ----------------------------------------------------------------------------- project cache


def test_cache_hit_returns_the_stored_layout_without_refitting(tmp_path, monkeypatch):
    project = _pixels_project(tmp_path)
    calls = []
    real_fit = proj.fit_projection

    def counting_fit(*args, **kwargs):
        calls.append(1)
        return real_fit(*args, **kwargs)

    # compute_project_projection looks fit_projection up in its own module.
    monkeypatch.setattr(layout, "fit_projection", counting_fit)
    first = proj.compute_project_projection(project)
    second = proj.compute_project_projection(project)
    assert len(calls) == 1
    np.testing.assert_array_equal(first.coords, second.coords)
    assert first.path == second.path == proj.find_projection_file(project)
    ids, _, _ = proj.pool_images(project)
    np.testing.assert_array_equal(first.image_ids, ids)
    assert first.encoder_id == "pixels:4" and first.params["seed"] == 0
    with np.load(first.path, allow_pickle=False) as stored:
        assert {"coords", "image_ids", "encoder_id", "encoder_spec", "params"} <= set(stored.files)
        assert stored["coords"].dtype == np.float32
    proj.compute_project_projection(project, force=True)
    assert len(calls) == 2


def test_missing_embeddings_file_gives_a_clear_error(tmp_path):
    images = _images(tmp_path / "images", 4)
    paths = sorted(str(p) for p in images.rglob("*.png"))
    emb = tmp_path / "emb.npz"
    np.savez(emb, features=np.random.default_rng(0).normal(size=(len(paths), 8)).astype(np.float32),
             paths=np.array(paths))
    project = Project.create(tmp_path / "p", images, encoder=f"precomputed:{emb}", known_labels="ignore")
    emb.unlink()
    with pytest.raises(proj.FeaturesMissing, match=r"cannot be read.*embeddings file not found"):
        proj.compute_project_projection(project)


def test_features_not_extracted_yet_gives_a_clear_error(tmp_path, monkeypatch):
    from ralif.project import rounds

    project = Project.create(tmp_path / "p", _images(tmp_path / "images", 3), encoder="clip:ViT-B-16:openai",
                             known_labels="ignore")
    # The cache check needs only the encoder's id; building the real encoder would load its weights.
    monkeypatch.setattr(rounds, "encoder_id_for", lambda spec: "open_clip:test:none")
    with pytest.raises(proj.FeaturesMissing, match=r"6 of 6 pool images are not extracted yet.*next round"):
        proj.load_pool_features(project)


def test_projection_job_runs_in_a_worker_even_from_a_page_script(tmp_path, monkeypatch):
    project = _pixels_project(tmp_path, per_class=3)
    # Streamlit runs pages as a spec-less __main__; a worker must not run that script again.
    page = tmp_path / "page.py"
    page.write_text("raise SystemExit('the page ran inside the worker')\n")
    fake_main = types.ModuleType("__main__")
    fake_main.__file__ = str(page)
    monkeypatch.setitem(sys.modules, "__main__", fake_main)
    job = proj.start_projection(project)
    status = job.wait(120)
    assert status["state"] == "done", status.get("error") or status
    assert proj.projection_status(project)["state"] == "done"
    found = proj.load_projection(project)
    assert found is not None and len(found.image_ids) == 6 and found.params["method"] == "pca"


# ----------------------------------------------------------------------------- what the map draws


def _map(n: int = 400, seed: int = 0) -> proj.MapData:
    rng = np.random.default_rng(seed)
    state = np.zeros(n, dtype=np.int8)
    state[:60] = proj.LABELED
    class_id = np.where(state == proj.LABELED, rng.integers(1, 4, n), -1)
    return proj.MapData(image_ids=np.arange(1000, 1000 + n), x=rng.normal(size=n).astype(np.float32),
                        y=rng.normal(size=n).astype(np.float32), state=state, class_id=class_id,
                        true_class_id=rng.integers(1, 4, n), selections={1: np.arange(50, 70), 2: np.arange(300, 310)})


def test_selection_maps_back_to_image_ids_across_traces():
    data = _map()
    fig = proj.map_figure(data, [1, 2, 3], ["a", "b", "c"], pending_round=2, highlight_round=1)
    assert len(fig.data) >= 5
    # What the browser sends: per point its trace, its index in that trace, and its customdata.
    points = [{"curve_number": c, "point_index": i, "customdata": int(fig.data[c].customdata[i])}
              for c in range(len(fig.data)) for i in (0, 1)]
    want = sorted({p["customdata"] for p in points})
    np.testing.assert_array_equal(proj.selected_image_ids({"points": points}), want)
    # Point indices alone repeat across traces and cannot name images.
    assert len({p["point_index"] for p in points}) < len(want)
    # The overlay repeats points of the trace below; the ids are not counted twice.
    overlay = fig.data[-1]
    dup = [{"customdata": int(overlay.customdata[0])}, {"customdata": [int(overlay.customdata[0])]}]
    assert len(proj.selected_image_ids({"points": dup})) == 1
    assert len(proj.selected_image_ids(None)) == 0


def test_large_pools_draw_a_sample_plus_every_labeled_and_picked_point():
    data = _map(5000)
    fig = proj.map_figure(data, [1, 2, 3], ["a", "b", "c"], pending_round=2, highlight_round=1, max_points=1000)
    drawn = np.concatenate([np.asarray(t.customdata) for t in fig.data])
    kept = data.image_ids[np.r_[np.flatnonzero(data.state != proj.UNLABELED), 300:310, 50:70]]
    assert np.isin(kept, drawn).all()
    assert len(np.unique(drawn)) == 1000
    again = proj.map_figure(data, [1, 2, 3], ["a", "b", "c"], pending_round=2, highlight_round=1, max_points=1000)
    np.testing.assert_array_equal(np.sort(drawn), np.sort(np.concatenate([np.asarray(t.customdata)
                                                                          for t in again.data])))


def test_colour_modes_and_predictions():
    data = _map()
    n = len(data.image_ids)
    probs = np.random.default_rng(1).dirichlet(np.ones(3), n)
    cls, conf, ent = proj.predictions_from_proba(probs, [1, 2, 3])
    np.testing.assert_array_equal(cls, np.array([1, 2, 3])[probs.argmax(1)])
    np.testing.assert_allclose(ent, -(probs * np.log(probs)).sum(1), rtol=1e-5)
    pred = proj.PoolPredictions(data.image_ids, cls, conf, ent, 3, "m")
    for mode in proj.COLOR_MODES:
        fig = proj.map_figure(data, [1, 2, 3], ["a", "b", "c"], color_by=mode, predictions=pred)
        assert sum(len(t.x) for t in fig.data) == n
    with pytest.raises(ValueError, match="predictions"):
        proj.map_figure(data, [1, 2, 3], ["a", "b", "c"], color_by="entropy")


# ----------------------------------------------------------------------------- Random reference


def test_random_reference_is_stored_and_extended_incrementally(tmp_path, monkeypatch):
    import ralif.head

    project = Project.create_demo(tmp_path / "demo", run_first_round=False)
    assert proj.simulation_reference(project) == {"truths": 2000, "tests": 500}
    assert proj.read_random_baseline(project, [20, 40]) is None
    fits = []
    real = ralif.head.fit_head

    def counting(*args, **kwargs):
        fits.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(ralif.head, "fit_head", counting)
    first = proj.random_baseline(project, [20, 40], seeds=(0, 1))
    assert len(fits) == 4 and np.shape(first["accuracy"]) == (2, 2)
    assert all(0.0 < a < 1.0 for row in first["accuracy"] for a in row)
    more = proj.random_baseline(project, [20, 40, 60], seeds=(0, 1))
    assert len(fits) == 6
    assert [row[:2] for row in more["accuracy"]] == first["accuracy"]
    assert proj.read_random_baseline(project, [20, 40, 60], seeds=(0, 1)) == more


def test_random_reference_needs_true_labels(tmp_path):
    project = _pixels_project(tmp_path)
    assert proj.simulation_reference(project) is None
    with pytest.raises(ProjectError, match="hidden true labels"):
        proj.random_baseline(project, [4])


def test_the_map_draws_each_class_in_its_stored_colour():
    data = _map()
    stored = ["#123456", "#abcdef", "#fedcba"]
    fig = proj.map_figure(data, [1, 2, 3], ["a", "b", "c"], class_colors=stored)
    drawn = {t.name: t.marker.color for t in fig.data if t.name in ("a", "b", "c")}
    assert drawn == {"a": "#123456", "b": "#abcdef", "c": "#fedcba"}
    default = proj.map_figure(data, [1, 2, 3], ["a", "b", "c"])
    assert {t.marker.color for t in default.data if t.name in ("a", "b", "c")}.isdisjoint(stored)
