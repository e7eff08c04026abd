"""Map bulk labeling is reviewed, explicit and undoable: every selected image is shown and can be
left out, no class is prefilled, and Undo on the page puts back exactly what the bulk label changed."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
from streamlit.proto.WidgetStates_pb2 import WidgetState
from streamlit.testing.v1 import AppTest
from test_pages_map_progress_export import demo

from ralif.project import Project
from ralif.ui.state import PROJECT_KEY

__all__ = ["demo"]
PAGE = Path(__file__).resolve().parents[1] / "pages" / "2_Map.py"


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
    monkeypatch.setenv("RALIF_PROJECTS", str(demo.folder.parent))
    at = AppTest.from_file(str(PAGE), default_timeout=120)
    at.session_state[PROJECT_KEY] = str(demo.folder)
    at.run()
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    c_unl, unl = next((c, decode(t["customdata"])) for c, t in enumerate(fig["data"]) if t["name"] == "unlabeled")
    # 30 points: more than one review page (24), all unlabeled.
    points = [{"curve_number": c_unl, "point_index": i, "point_number": i, "customdata": int(unl[i])}
              for i in range(30)]
    ids = [int(unl[i]) for i in range(30)]
    before = {i: demo.label_of(i) for i in ids}
    at = run_selected(at, points)
    assert not at.exception, at.exception
    # The first page shows 24 pictures, each with its own tick box; no class is chosen for the user.
    boxes = [b for b in at.checkbox if b.key and b.key.startswith("map-keep-0-")]
    assert len(boxes) == 24 and all(b.value for b in boxes)
    assert at.selectbox(key="map-class-0").value is None
    # Clicking Label without a class writes nothing.
    at.button(key="map-apply-0").click()
    at = run_selected(at, points)
    assert any("Choose the class first" in e.value for e in at.error)
    assert all(demo.label_of(i).version == before[i].version for i in ids)
    # Two images are left out; the second page is reviewed too.
    left_out = ids[:2]
    for i in left_out:
        at.checkbox(key=f"map-keep-0-{i}").uncheck()
    at.number_input(key="map-page-0").set_value(2)
    at = run_selected(at, points)
    assert len([b for b in at.checkbox if b.key and b.key.startswith("map-keep-0-")]) == 6
    ship = next(c for c in demo.classes() if c.name == "ship")
    at.selectbox(key="map-class-0").set_value(ship.id)
    at = run_selected(at, points)
    assert at.button(key="map-apply-0").proto.label == "Label 28 images as ship"
    at.button(key="map-apply-0").click()
    at = run_selected(at, points)
    assert not at.exception, at.exception
    assert all(demo.label_of(i).class_id == ship.id for i in ids[2:])
    assert all(demo.label_of(i).state == "unlabeled" for i in left_out)
    # Undo on the same page: every image has what it had before.
    at.button(key="map-undo").click().run()
    assert not at.exception, at.exception
    assert all(demo.label_of(i).state == before[i].state for i in ids)
    assert any("Undone: 28 images" in s.value for s in at.success)
