"""The Map never shows the model's guess for the batch waiting on the Label page: its audit images
must be answered without it (the Progress page promises the answer is the user's alone), and hiding
the guess for the audit images alone would tell which ones they are. So every image of the pending
batch is drawn as "to label now", with no guess, confidence or uncertainty in hover text or colour;
the other images keep theirs."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from test_map_review import decode, open_page, point, run_selected
from test_pages_map_progress_export import demo

from ralif import projection as proj
from ralif.map.figure import HIDDEN_GUESS
from ralif.project import Project

__all__ = ["demo"]
GUESS_WORDS = ("model:", "entropy", "%")


def small_map(n: int = 300, seed: int = 0) -> proj.MapData:
    """Rows 0-39 labeled; round 1 picked rows 40-59 (submitted), round 2's batch (rows 100-119,
    two of them labeled already) waits."""
    rng = np.random.default_rng(seed)
    state = np.zeros(n, dtype=np.int8)
    state[:40] = proj.LABELED
    state[[100, 101]] = proj.LABELED
    class_id = np.where(state == proj.LABELED, rng.integers(1, 4, n), -1)
    return proj.MapData(image_ids=np.arange(1000, 1000 + n), x=rng.normal(size=n).astype(np.float32),
                        y=rng.normal(size=n).astype(np.float32), state=state, class_id=class_id,
                        true_class_id=rng.integers(1, 4, n),
                        selections={1: np.arange(40, 60), 2: np.arange(100, 120)}, pending_round=2)


def predictions(data: proj.MapData) -> proj.PoolPredictions:
    probs = np.random.default_rng(1).dirichlet(np.ones(3), len(data.image_ids))
    cls, conf, ent = proj.predictions_from_proba(probs, [1, 2, 3])
    return proj.PoolPredictions(data.image_ids, cls, conf, ent, 2, "m")


def points(fig: Any) -> list[tuple[str, int, str, Any]]:
    """(trace name, image id, hover text, colour) of every drawn point, from plotly's JSON."""
    out = []
    for t in fig["data"]:
        ids = decode(t["customdata"])
        colour = (t.get("marker") or {}).get("color")
        colours = decode(colour) if isinstance(colour, (list, dict)) else [colour] * len(ids)
        out += [(t["name"], int(i), str(s), c) for i, s, c in zip(ids, t["text"], colours)]
    return out


@pytest.mark.parametrize("mode", proj.COLOR_MODES)
def test_the_pending_batch_carries_no_guess_in_any_colour_mode(mode: str) -> None:
    data = small_map()
    pred = predictions(data)
    fig = json.loads(proj.map_figure(data, [1, 2, 3], ["a", "b", "c"], color_by=mode, predictions=pred).to_json())
    batch = set(data.image_ids[100:120].tolist())
    drawn = points(fig)
    star = [p for p in drawn if p[0] == "to label now (round 2)"]
    assert {p[1] for p in star} == batch
    # Not in a colour of the model's: the batch is only in the star trace, or a trace of the user's
    # labels (labels mode) or of the true class (truth mode).
    model_traces = {"a", "b", "c", "unknown", "entropy"} if mode in ("predicted", "entropy") else set()
    assert not [p for p in drawn if p[1] in batch and p[0] in model_traces]
    for name, image_id, text, _ in drawn:
        if image_id in batch:
            assert text.endswith(HIDDEN_GUESS) and not any(w in text for w in GUESS_WORDS), (name, text)
        else:
            # Every other point, the earlier round's picks among them, still says what the model thinks.
            assert "model:" in text and "entropy" in text, (name, text)
    if mode == "predicted":
        # The other unlabeled points are coloured by the model's class, as before.
        guessed = {p[1] for p in drawn if p[0] in {"a", "b", "c"}}
        assert len(guessed) == len(data.image_ids) - len(batch)


def test_the_batch_named_by_the_caller_wins_and_none_is_hidden_without_one() -> None:
    data = small_map()
    pred = predictions(data)
    fig = json.loads(proj.map_figure(data, [1, 2, 3], ["a", "b", "c"], color_by="predicted", predictions=pred,
                                     pending_round=1).to_json())
    drawn = points(fig)
    hidden = {p[1] for p in drawn if p[2].endswith(HIDDEN_GUESS)}
    assert hidden == set(data.image_ids[40:60].tolist())
    data.pending_round, data.selections = None, {1: np.arange(40, 60)}
    fig = json.loads(proj.map_figure(data, [1, 2, 3], ["a", "b", "c"], color_by="predicted",
                                     predictions=pred).to_json())
    assert all("model:" in p[2] for p in points(fig))


def test_map_data_reads_the_pending_round_with_the_picks(demo: Project) -> None:
    path = proj.find_projection_file(demo)
    assert path is not None
    data = proj.map_data(demo, proj.read_projection(path))
    assert data.pending_round == demo.pending_round() is not None
    batch = {b.image_id for b in demo.pending_batch()}
    assert set(data.image_ids[data.pending_rows()].tolist()) == batch


def test_the_map_page_hides_the_guess_of_the_whole_batch(demo: Project, monkeypatch) -> None:
    batch = {b.image_id for b in demo.pending_batch()}
    audits = demo.audit_images()
    assert audits and audits < batch
    at = open_page(demo, monkeypatch)
    for mode in ("labels", "predicted", "entropy"):
        at.radio(key="map_color").set_value(mode).run()
        assert not at.exception, at.exception
        drawn = points(json.loads(at.get("plotly_chart")[0].proto.spec))
        mine = [p for p in drawn if p[1] in batch]
        assert {p[1] for p in mine} == batch
        assert all(p[2].endswith(HIDDEN_GUESS) and "model:" not in p[2] for p in mine), mode
        assert all(p[0].startswith("to label now") or p[0] == "unlabeled" for p in mine), mode
        others = [p for p in drawn if p[1] not in batch]
        assert others and all("model:" in p[2] for p in others), mode
    # A selection of batch images only gives no suggestion from the model.
    tr = {t["name"]: (c, decode(t["customdata"]))
          for c, t in enumerate(json.loads(at.get("plotly_chart")[0].proto.spec)["data"])}
    c_pend, pend = next(v for k, v in tr.items() if k.startswith("to label now"))
    at = run_selected(at, [point(c_pend, i, pend) for i in range(len(pend))])
    assert not at.exception, at.exception
    said = " ".join([c.value for c in at.caption] + [m.value for m in at.markdown] + [i.value for i in at.info])
    assert "Suggestion" not in said and "No image of this selection can be labeled" in said
