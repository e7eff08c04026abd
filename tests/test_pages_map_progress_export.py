"""The Map, Progress and Export pages, run headless with Streamlit's AppTest on a demo project.

The demo has three trained rounds (the simulated oracle answers), a stored tiny projection (random
coordinates: these tests are about the pages, not UMAP) and a stored Random reference, so no page
run here starts a background worker.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.proto.WidgetStates_pb2 import WidgetState
from streamlit.testing.v1 import AppTest

from ralif import projection as proj
from ralif.project import Project
from ralif.project.rounds import encoder_id_for
from ralif.ui.common import display_path
from ralif.ui.state import PROJECT_KEY

PAGES = Path(__file__).resolve().parents[1] / "views"


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Project:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("projects")
    project = Project.create_demo(root / "demo", initial_labels=30)
    for _ in range(2):
        project.oracle_label_batch()
        project.submit_batch()
        project.run_round()
    ids, _, _ = proj.pool_images(project)
    coords = np.random.default_rng(0).normal(size=(len(ids), 2)).astype(np.float32)
    spec = project.encoder_spec
    proj.save_projection(proj.projection_path(project, encoder_id_for(spec)), coords, ids, encoder_id_for(spec),
                         spec, {"method": "test", "seed": 0, "fit_points": len(ids)})
    counts = [r["labeled_count"] for r in project.rounds() if r["accuracy"] is not None]
    proj.random_baseline(project, counts)
    yield project
    torch.set_num_threads(n)


def _page(name: str, project: Project, monkeypatch) -> AppTest:
    monkeypatch.setenv("RALIF_PROJECTS", str(project.folder.parent))
    at = AppTest.from_file(str(PAGES / name), default_timeout=120)
    at.session_state[PROJECT_KEY] = str(project.folder)
    return at.run()


def _decode(values: Any) -> np.ndarray:
    """An array from plotly's JSON, plain or typed ({"dtype", "bdata"})."""
    if isinstance(values, dict) and "bdata" in values:
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=np.dtype(values["dtype"]))
    return np.asarray(values)


def _run_with_selection(at: AppTest, points: list[dict[str, Any]]) -> AppTest:
    """Rerun as the browser does after a lasso: the chart's selection travels with the other
    widgets' states (AppTest has no plotly widget of its own, so the state is added here)."""
    chart = at.get("plotly_chart")[0].proto
    states = at._tree.get_widget_states()
    value = {"selection": {"points": points, "point_indices": sorted({p["point_index"] for p in points}),
                           "box": [], "lasso": [{"xref": "x", "yref": "y", "x": [0, 1, 1], "y": [0, 0, 1]}]}}
    states.widgets.append(WidgetState(id=chart.id, string_value=json.dumps(value)))
    return at._run(states)


def test_map_renders_the_projection(demo, monkeypatch):
    at = _page("2_Map.py", demo, monkeypatch)
    assert not at.exception, at.exception
    charts = at.get("plotly_chart")
    assert len(charts) == 1
    fig = json.loads(charts[0].proto.spec)
    names = [t["name"] for t in fig["data"]]
    assert "unlabeled" in names and any(n.startswith("to label now") for n in names)
    assert all(t["type"] == "scattergl" for t in fig["data"])
    drawn = np.unique(np.concatenate([_decode(t["customdata"]) for t in fig["data"]]))
    assert len(drawn) == 2000
    assert [r.value for r in at.radio] == ["labels"]
    assert set(at.radio[0].options) >= {"Labels", "True class", "Model's class", "Uncertainty"}


def test_lasso_selection_labels_those_images_from_the_map(demo, monkeypatch):
    at = _page("2_Map.py", demo, monkeypatch)
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    traces = {t["name"]: (c, _decode(t["customdata"])) for c, t in enumerate(fig["data"])}
    c_unl, unl_ids = traces["unlabeled"]
    c_pend, pend_ids = next(v for k, v in traces.items() if k.startswith("to label now"))
    # Points of two traces with the same in-trace indices, plus a pending point that is also drawn
    # (as an unlabeled point) in the trace underneath: the ids, not the indices, must come back.
    under = int(np.flatnonzero(unl_ids == pend_ids[0])[0])
    points = [{"curve_number": c_unl, "point_index": i, "point_number": i, "customdata": int(unl_ids[i])}
              for i in (0, 1, 2)]
    points += [{"curve_number": c_pend, "point_index": i, "point_number": i, "customdata": int(pend_ids[i])}
               for i in (0, 1)]
    points.append({"curve_number": c_unl, "point_index": under, "point_number": under,
                   "customdata": int(unl_ids[under])})
    selected = sorted({int(unl_ids[i]) for i in (0, 1, 2)} | {int(pend_ids[0]), int(pend_ids[1])})
    # The batch to label now is answered on the Label page only (its audit images must be).
    batch = {int(i) for i in pend_ids}
    want = [i for i in selected if i not in batch]
    at = _run_with_selection(at, points)
    assert not at.exception, at.exception
    assert any(f"**{len(selected)} selected**" in m.value for m in at.markdown)
    target = next(c for c in demo.classes() if c.name == "ship")
    at.selectbox(key="map-class-0").set_value(target.id)
    at.button(key="map-apply-0").click()
    at = _run_with_selection(at, points)
    assert not at.exception, at.exception
    for image_id in want:
        label = demo.label_of(image_id)
        assert (label.state, label.class_id, label.source) == ("labeled", target.id, "map")
    assert all(demo.label_of(i).state == "unlabeled" for i in batch & set(selected))
    # The page reran at once with a new chart (an empty selection) and says what it did.
    assert at.session_state["map_gen"] == 1
    assert any(f"Labeled {len(want)} images as ship" in s.value for s in at.success)
    assert any("Pick points on the map" in m.value for m in at.markdown)


def test_map_is_computed_in_the_background_while_the_page_waits(tmp_path, monkeypatch):
    images = tmp_path / "images"
    for i, color in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)] * 2):
        (images / f"c{i % 3}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((6, 6, 3), color, np.uint8) + np.uint8(i)).save(images / f"c{i % 3}" / f"{i}.png")
    project = Project.create(tmp_path / "small", images, encoder="pixels:2", known_labels="ignore")
    at = _page("2_Map.py", project, monkeypatch)
    assert not at.exception, at.exception
    assert not at.get("plotly_chart")
    assert any("Computing the map" in p.proto.text for p in at.get("progress"))
    # Six images: too few for UMAP, so the worker lays them out at once (principal components).
    status = proj.start_projection(project).wait(120)
    assert status["state"] == "done", status
    at.run()
    assert not at.exception, at.exception
    assert len(at.get("plotly_chart")) == 1


def test_progress_page_shows_accuracy_against_random(demo, monkeypatch):
    at = _page("3_Progress.py", demo, monkeypatch)
    assert not at.exception, at.exception
    charts = at.get("plotly_chart")
    assert len(charts) == 3
    accuracy = json.loads(charts[0].proto.spec)
    assert {t["name"] for t in accuracy["data"]} >= {"Random (mean)", "this project (ralif)"}
    ratio = next(m for m in at.metric if m.label == "AUCA ratio against Random")
    assert 0.5 < float(ratio.value) < 2.0
    assert len(at.dataframe) == 1


def test_export_page_writes_files(demo, monkeypatch):
    at = _page("4_Export.py", demo, monkeypatch)
    assert not at.exception, at.exception
    at.button(key="export_csv").click().run()
    at.button(key="export_json").click().run()
    at.radio(key="export_mode").set_value("symlink")
    at.button(key="export_imagefolder").click().run()
    at.button(key="export_model").click().run()
    assert not at.exception, at.exception
    written = {k: Path(v) for k, v in at.session_state[f"export_done:{demo.folder}"].items()}
    assert set(written) == {"CSV", "JSON", "ImageFolder", "Model"}
    assert written["CSV"].read_text().startswith("path,label,round,time,source,split,image_id")
    assert len(json.loads(written["JSON"].read_text())["labels"]) == demo.progress().labeled
    links = [p for p in written["ImageFolder"].rglob("*") if (p.is_file() or p.is_symlink())
             and p != written["ImageFolder"] / "labels.csv"]
    assert links and all(p.is_symlink() for p in links)
    assert sorted(p.suffix for p in written["Model"].iterdir()) == [".json", ".safetensors"]
    assert all(str(demo.folder / "exports") in str(p) for p in written.values())
    assert sum(f"`{display_path(written['CSV'])}`" in s.value for s in at.success) == 1
