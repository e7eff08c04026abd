"""Map bulk labeling is reviewed, explicit and undoable: every selected image is shown and can be
left out, no class is prefilled, and Undo on the page puts back exactly what the bulk label changed.

A bulk label writes only images shown on a review page the user opened (a box around the whole map
once labeled all of it, pages never shown included), and never an image of the batch waiting on the
Label page (its audit images among them)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from streamlit.proto.WidgetStates_pb2 import WidgetState
from streamlit.testing.v1 import AppTest
from test_pages_map_progress_export import demo

from ralif.project import ClassInfo, LabelState, Project
from ralif.ui.state import PROJECT_KEY

__all__ = ["demo"]
PAGE = Path(__file__).resolve().parents[1] / "views" / "2_Map.py"


def decode(values: Any) -> np.ndarray:
    if isinstance(values, dict) and "bdata" in values:
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=np.dtype(values["dtype"]))
    return np.asarray(values)


def run_selected(at: AppTest, points: list[dict[str, Any]]) -> AppTest:
    """Rerun as the browser does after a lasso (AppTest has no plotly widget of its own)."""
    chart = at.get("plotly_chart")[0].proto
    states = at._tree.get_widget_states()
    value = {"selection": {"points": points, "point_indices": sorted({p["point_index"] for p in points}),
                           "box": [], "lasso": [{"xref": "x", "yref": "y", "x": [0, 1, 1], "y": [0, 0, 1]}]}}
    states.widgets.append(WidgetState(id=chart.id, string_value=json.dumps(value)))
    return at._run(states)


def test_review_deselect_label_undo(demo: Project, monkeypatch) -> None:
    # 30 points: more than one review page (24), all unlabeled, none of the batch to label now.
    lasso = lasso_unlabeled(demo, monkeypatch, 30)
    at, points, ids, before = lasso.at, lasso.points, lasso.ids, lasso.before
    assert not at.exception, at.exception
    # The first page shows 24 pictures, each with its own tick box; no class is chosen for the user.
    boxes = [b for b in at.checkbox if b.key and b.key.startswith("map-keep-0-")]
    assert len(boxes) == 24 and all(b.value for b in boxes)
    assert at.selectbox(key="map-class-0").value is None
    # Clicking Label without a class writes nothing.
    at = press_label(at, points)
    assert any("Choose the class first" in e.value for e in at.error)
    assert all(demo.label_of(i).version == before[i].version for i in ids)
    # Two images are left out; the second page is reviewed too.
    left_out = ids[:2]
    for i in left_out:
        at.checkbox(key=f"map-keep-0-{i}").uncheck()
    at.number_input(key="map-page-0").set_value(2)
    at = run_selected(at, points)
    assert len([b for b in at.checkbox if b.key and b.key.startswith("map-keep-0-")]) == 6
    at, ship = choose_class(at, demo, "ship", points)
    assert at.button(key="map-apply-0").proto.label == "Label as ship: the 28 unlabeled images reviewed on pages 1–2"
    at = press_label(at, points)
    assert not at.exception, at.exception
    assert all(demo.label_of(i).class_id == ship.id for i in ids[2:])
    assert all(demo.label_of(i).state == "unlabeled" for i in left_out)
    # Undo on the same page: every image has what it had before.
    at.button(key="map-undo").click().run()
    assert not at.exception, at.exception
    assert all(demo.label_of(i).state == before[i].state for i in ids)
    assert any("Undone: 28 images" in s.value for s in at.success)


def traces(at: AppTest) -> dict[str, tuple[int, np.ndarray]]:
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    return {t["name"]: (c, decode(t["customdata"])) for c, t in enumerate(fig["data"])}


def point(curve: int, index: int, ids: np.ndarray) -> dict[str, Any]:
    return {"curve_number": curve, "point_index": index, "point_number": index, "customdata": int(ids[index])}


def shown_ids(at: AppTest, gen: int = 0) -> list[int]:
    prefix = f"map-keep-{gen}-"
    return [int(b.key[len(prefix):]) for b in at.checkbox if b.key and b.key.startswith(prefix)]


def last_bulk(project: Project) -> list[int]:
    """The images the latest bulk label wrote, read from the database."""
    rows = project.store.query("SELECT image_id FROM label_history WHERE action_id ="
                               " (SELECT MAX(id) FROM actions WHERE kind = 'bulk') ORDER BY image_id")
    return [int(r[0]) for r in rows]


def open_page(project: Project, monkeypatch) -> AppTest:
    monkeypatch.setenv("RALIF_PROJECTS", str(project.folder.parent))
    at = AppTest.from_file(str(PAGE), default_timeout=120)
    at.session_state[PROJECT_KEY] = str(project.folder)
    at.run()
    assert not at.exception, at.exception
    return at


@dataclass
class Lasso:
    """The Map page after a lasso around unlabeled images, none of the batch to label now."""

    at: AppTest
    points: list[dict[str, Any]]
    ids: list[int]                      # in the order of the points
    batch: set[int]                     # the batch to label now when the page was opened
    before: dict[int, LabelState]       # each image's label before the lasso


def lasso_unlabeled(project: Project, monkeypatch, n: int) -> Lasso:
    """Open the Map page and lasso its first ``n`` unlabeled images outside the batch to label now."""
    at = open_page(project, monkeypatch)
    c_unl, unl = traces(at)["unlabeled"]
    batch = {b.image_id for b in project.pending_batch()}
    free = [i for i in range(len(unl)) if int(unl[i]) not in batch][:n]
    points = [point(c_unl, i, unl) for i in free]
    ids = [int(unl[i]) for i in free]
    before = {i: project.label_of(i) for i in ids}
    return Lasso(run_selected(at, points), points, ids, batch, before)


def choose_class(at: AppTest, project: Project, name: str,
                 points: list[dict[str, Any]]) -> tuple[AppTest, ClassInfo]:
    """Pick the class ``name`` in the panel: (the page rerun with the same selection, the class)."""
    chosen = next(c for c in project.classes() if c.name == name)
    at.selectbox(key="map-class-0").set_value(chosen.id)
    return run_selected(at, points), chosen


def press_label(at: AppTest, points: list[dict[str, Any]]) -> AppTest:
    """Press the panel's bulk-label button; the page rerun with the same selection."""
    at.button(key="map-apply-0").click()
    return run_selected(at, points)


def test_a_box_over_many_pages_labels_only_the_page_shown_and_never_the_batch(demo: Project, monkeypatch) -> None:
    """The audit's reproduction: a box around many pages of images and the whole batch to label now."""
    at = open_page(demo, monkeypatch)
    tr = traces(at)
    c_unl, unl = tr["unlabeled"]
    c_pend, pend = next(v for k, v in tr.items() if k.startswith("to label now"))
    batch = {b.image_id for b in demo.pending_batch()}
    audits = demo.audit_images()
    assert audits and audits <= batch and set(pend.tolist()) == batch
    points = [point(c_unl, i, unl) for i in range(100)] + [point(c_pend, i, pend) for i in range(len(pend))]
    selected = sorted({int(p["customdata"]) for p in points})
    before = {i: demo.label_of(i) for i in selected}
    free = [i for i in selected if i not in batch and before[i].state not in ("labeled", "unsure")]
    assert len(free) > 2 * 24
    at = run_selected(at, points)
    assert not at.exception, at.exception
    said = [m.value for m in at.markdown] + [c.value for c in at.caption]
    page_label = at.number_input(key="map-page-0").label
    page1 = shown_ids(at)
    at, ship = choose_class(at, demo, "ship", points)
    button = at.button(key="map-apply-0").proto.label
    at = press_label(at, points)
    assert not at.exception, at.exception
    # The database first: exactly the 24 images shown were written; the pages never opened and the
    # batch (its audit images among them) are as they were.
    assert last_bulk(demo) == sorted(page1)
    assert len(page1) == 24 and set(page1) <= set(free)
    after = {i: demo.label_of(i) for i in selected}
    changed = sorted(i for i in selected if after[i].version != before[i].version)
    assert changed == sorted(page1)
    assert all((after[i].state, after[i].class_id, after[i].source) == ("labeled", ship.id, "map") for i in page1)
    assert all(after[i] == before[i] for i in batch | audits)
    # What the panel said before the click: the batch left out, the pages not opened, the count.
    assert f"**{len(selected)} selected**" in " ".join(said)
    assert any(f"{len(batch)} selected image(s) of the batch to label now" in t for t in said)
    assert any(f"{len(free) - 24} image(s) on review pages you have not opened" in t for t in said)
    assert page_label == f"Review page (of {-(-len(free) // 24)})"
    assert button == "Label as ship: the 24 unlabeled images shown"
    assert any("Labeled 24 images as ship" in s.value for s in at.success)


def test_only_the_review_pages_opened_are_labeled(demo: Project, monkeypatch) -> None:
    lasso = lasso_unlabeled(demo, monkeypatch, 60)
    at, points, ids, before = lasso.at, lasso.points, sorted(lasso.ids), lasso.before
    page1 = shown_ids(at)
    # Page 2 is skipped: page 3 is opened straight from page 1, and one image on it left out.
    at.number_input(key="map-page-0").set_value(3)
    at = run_selected(at, points)
    page3 = shown_ids(at)
    assert len(page1) == 24 and len(page3) == 12
    at.checkbox(key=f"map-keep-0-{page3[0]}").uncheck()
    at = run_selected(at, points)
    at, _ = choose_class(at, demo, "airplane", points)
    button = at.button(key="map-apply-0").proto.label
    at = press_label(at, points)
    assert not at.exception, at.exception
    want = sorted(page1 + page3[1:])
    assert last_bulk(demo) == want
    assert sorted(i for i in ids if demo.label_of(i).version != before[i].version) == want
    assert button == "Label as airplane: the 35 unlabeled images reviewed on pages 1, 3"
    # Undo takes back exactly those 35.
    at.button(key="map-undo").click().run()
    assert all(demo.label_of(i).state == before[i].state for i in ids)
    assert any("Undone: 35 images" in s.value for s in at.success)
