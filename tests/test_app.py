"""The app's pages with Streamlit's AppTest: first launch, the home page, the label page's event
path (what the keyboard grid sends, applied to the project database), submitting a batch, the
round status panel, and class management.

The grid is a custom component, which AppTest does not run; its events are put where the
browser would put them (the component's value in session state), so the page code that turns
them into labels is the one under test. The browser end to end is tests/test_e2e_browser.py.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from ralif.project import Project
from ralif.ui.grid import plain_reason, short_reason
from ralif.ui.round_panel import describe, summary

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "ralif/app/assets/demo"
TIMEOUT = 60


@pytest.fixture()
def projects_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "projects"
    monkeypatch.setenv("RALIF_PROJECTS", str(root))
    return root


@pytest.fixture()
def no_worker(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Background rounds are recorded instead of started (a worker process costs seconds)."""
    started: list[str] = []

    def fake_start(self: Project, threads: int | None = None, **kwargs: Any) -> None:
        started.append(str(self.folder))

    monkeypatch.setattr(Project, "start_round", fake_start)
    monkeypatch.setattr(Project, "ensure_round_server", lambda self: None)
    return started


@pytest.fixture()
def demo(projects_dir: Path) -> Project:
    return Project.create_demo(projects_dir / "demo", assets=DEMO)


def page(path: str, project: Project | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / path), default_timeout=TIMEOUT)
    if project is not None:
        at.session_state["ralif_project_dir"] = str(project.folder)
    return at


def send(at: AppTest, key: str, *events: dict[str, Any], seq: int = 1) -> AppTest:
    """What the grid component does: its whole outbox as its value, then a rerun."""
    at.session_state[key] = {"outbox": list(events), "seq": seq, "nonce": "test"}
    return at.run()


def grid_args(at: AppTest, key: str = "label_grid") -> dict[str, Any]:
    for el in at.get("component_instance"):
        args = json.loads(el.proto.json_args)
        if args.get("key") == key:
            return args
    raise AssertionError(f"no component {key!r} in the page")


def texts(at: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "caption", "success", "warning", "error", "info")
             for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


# ----------------------------------------------------------------------------- home


def test_first_launch_creates_the_demo_and_opens_its_batch(projects_dir: Path, no_worker: list[str]) -> None:
    at = page("app.py").run()
    assert not at.exception
    assert at.title[0].value == "Label · CIFAR-10 demo"
    project = Project.open(projects_dir / "demo")
    batch = project.pending_batch()
    assert len(batch) == 20
    args = grid_args(at)
    assert [i["id"] for i in args["items"]] == [b.image_id for b in batch]
    assert args["items"][0]["src"].startswith("data:image/jpeg;base64,")
    assert [c["name"] for c in args["classes"]][:2] == ["airplane", "automobile"]
    assert at.query_params["project"] in ("demo", ["demo"])

    # A second visitor finds the project in the list and opens it; no second demo is made.
    home = page("app.py").run()
    assert not home.exception and "CIFAR-10 demo" in texts(home)
    home.button(key="open-demo").click().run()
    assert home.title[0].value == "Label · CIFAR-10 demo"
    assert [p.name for p in projects_dir.iterdir()] == ["demo"]


def test_home_explains_a_bad_path_and_previews_bad_and_duplicate_files(
        projects_dir: Path, tmp_path: Path, no_worker: list[str]) -> None:
    """The scan explains a bad path and lists unreadable and duplicate files, writing nothing (the
    creation from the preview's plan is tested in test_app_new_project.py)."""
    at = page("app.py")
    at.session_state["ralif_demo_tried"] = True
    at.run()
    assert "No project yet" in texts(at)
    at.text_input(key="new_name").input("Colours")
    at.text_input(key="new_source").input(str(tmp_path / "nowhere"))
    at.button(key="new_scan").click().run()
    assert "Nothing found at" in texts(at)
    assert not projects_dir.exists() or not list(projects_dir.iterdir())

    source = tmp_path / "colours"
    rng = np.random.default_rng(0)
    for cls in ("red", "blue"):
        (source / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(source / cls / f"{i}.png")
    (source / "red" / "broken.png").write_bytes(b"not an image")
    (source / "blue" / "copy.png").write_bytes((source / "red" / "0.png").read_bytes())
    (source / "blue" / "notes.txt").write_text("shot on a grey day")
    at.text_input(key="new_source").input(str(source))
    at.button(key="new_scan").click().run()
    assert not at.exception
    shown = texts(at)
    assert "1 unreadable" in shown
    labels = [e.label for e in at.expander]
    assert "1 file cannot be read and will be skipped" in labels
    assert "1 group of identical files (the first copy is kept)" in labels
    assert "1 file is not an image and will be skipped" in labels
    assert at.dataframe[0].value["file"].tolist() == ["broken.png"]
    assert at.dataframe[1].value["reason"].tolist() == ["not an image file (.txt files are not read)"]
    assert not projects_dir.exists() or not list(projects_dir.iterdir())
    assert no_worker == []


# ----------------------------------------------------------------------------- label page


def test_label_events_are_written_once_and_conflicts_are_shown(demo: Project, no_worker: list[str]) -> None:
    at = page("views/1_Label.py", demo).run()
    assert not at.exception
    assert "**0** of 2,000 images labeled" in texts(at)
    batch = demo.pending_batch()
    cat, dog = demo.class_id("cat"), demo.class_id("dog")
    a, b, c = (x.image_id for x in batch[:3])

    label_a = {"id": "k-1", "type": "label", "image_id": a, "class_id": cat, "version": 0}
    send(at, "label_grid", label_a)
    assert demo.label_of(a).class_name == "cat" and demo.label_of(a).source == "user"
    assert "**1** of 2,000 images labeled" in texts(at)
    assert "k-1" in grid_args(at)["acked"]

    # The component resends its outbox until acknowledged: a resent event is applied once.
    skip_b = {"id": "k-2", "type": "label", "image_id": b, "class_id": None, "version": 0}
    send(at, "label_grid", label_a, skip_b, seq=2)
    assert demo.label_of(a).version == 1 and demo.label_of(b).state == "unsure"

    # A key pressed twice on one image before the page answered: not a conflict with oneself.
    again = {"id": "k-3", "type": "label", "image_id": a, "class_id": dog, "version": 0}
    send(at, "label_grid", again, seq=3)
    assert demo.label_of(a).class_name == "dog" and not at.warning

    # Another tab changes c; this tab's answer wins, and the page says what it replaced.
    other = Project.open(demo.folder, client="other-tab")
    other.label(c, cat)
    mine = {"id": "k-4", "type": "label", "image_id": c, "class_id": dog, "version": 0}
    send(at, "label_grid", mine, seq=4)
    assert demo.label_of(c).class_name == "dog"
    assert "changed elsewhere" in at.warning[0].value and "'cat'" in at.warning[0].value

    # Undo takes back this tab's last answer only, and the grid is told where to put the focus.
    send(at, "label_grid", {"id": "k-5", "type": "undo"}, seq=5)
    assert demo.label_of(c).class_name == "cat"
    assert grid_args(at)["focus_hint"] == {"event": "k-5", "image_id": c}

    # Bulk: several selected images get one class in one action.
    ids = [x.image_id for x in batch[3:8]]
    send(at, "label_grid", {"id": "k-6", "type": "bulk", "image_ids": ids, "class_id": cat}, seq=6)
    assert all(demo.label_of(i).class_name == "cat" and demo.label_of(i).source == "bulk" for i in ids)
    assert "batch: 8 of 20 answered" in texts(at)

    # Events of a grid drawn for another project (the tab switched projects) are not applied here.
    at.session_state["label_grid"] = {"outbox": [{"id": "x-1", "type": "label", "image_id": b, "class_id": cat,
                                                  "version": 1}], "store": "ralif-outbox:/elsewhere:label_grid"}
    at.run()
    assert demo.label_of(b).state == "unsure"

    # Replays after a reload never overwrite a newer label.
    other.label(a, cat)
    send(at, "label_grid", {"id": "old-1", "type": "label", "image_id": a, "class_id": dog, "version": 1,
                            "replay": True}, seq=7)
    assert demo.label_of(a).class_name == "cat"


def test_submit_needs_every_image_then_starts_the_round(demo: Project, no_worker: list[str]) -> None:
    at = page("views/1_Label.py", demo).run()
    batch = demo.pending_batch()
    send(at, "label_grid", {"id": "s-1", "type": "submit", "round": 1})
    assert "20 of 20 images of the batch still need a label or a skip" in at.warning[0].value
    assert demo.round_status()["status"] == "ready" and no_worker == []

    # The simulated oracle button answers the batch; submitting then queues and starts round 2.
    at.button(key="oracle_fill").click().run()
    assert demo.progress().pending_done == 20
    send(at, "label_grid", {"id": "s-2", "type": "submit", "round": 1}, seq=2)
    assert not at.exception
    # (The stand-in worker never claims the round, so the page asks again for the queued round.)
    assert demo.round_status()["round"] == 2 and set(no_worker) == {str(demo.folder)}
    assert "round 2 has started" in at.success[-1].value
    assert not any(el.proto.json_args and json.loads(el.proto.json_args).get("key") == "label_grid"
                   for el in at.get("component_instance"))
    # Earlier images stay editable while the round runs.
    assert grid_args(at, "browse_grid")["mode"] == "browse" and demo.progress().labeled == len(batch)


def test_round_panel_says_what_the_round_does(demo: Project, monkeypatch: pytest.MonkeyPatch,
                                              no_worker: list[str]) -> None:
    demo.oracle_label_batch()
    demo.submit_batch()
    running = {**demo.round_status(), "status": "running", "phase": "training", "started_at": time.time() - 3,
               "progress": {"epoch": 4, "epochs": 30, "fraction": 0.1, "loss": 1.234},
               "job_path": str(demo.folder / "jobs" / "round-0002-test.json")}
    monkeypatch.setattr(Project, "round_status", lambda self: running)
    cancelled: list[bool] = []
    monkeypatch.setattr(Project, "cancel_round", lambda self: cancelled.append(True) or running)
    at = page("views/1_Label.py", demo).run()
    assert not at.exception
    panel = next(m.value for m in at.markdown if "Training and selecting" in m.value)
    assert re.search(r"Round 2: training the model, epoch 4 of 30, loss 1\.234 · [3-9] s", panel), panel
    assert 35 < at.get("progress")[0].proto.value < 45       # percent of the whole round
    at.button(key="round_cancel").click().run()
    assert cancelled == [True]


def test_a_failed_round_shows_the_reason_and_a_retry(demo: Project, monkeypatch: pytest.MonkeyPatch,
                                                      no_worker: list[str]) -> None:
    demo.oracle_label_batch()
    demo.submit_batch()

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("ralif.head.fit_head", broken)
    with pytest.raises(RuntimeError):
        demo.run_round()
    at = page("views/1_Label.py", demo).run()
    assert "Round 2 failed: RuntimeError: disk on fire" in at.error[0].value
    at.button(key="round_retry").click().run()
    assert no_worker == [str(demo.folder)]


def test_texts_of_the_status_panel_and_tiles() -> None:
    running = {"round": 3, "phase": "training", "progress": {"epoch": 2, "epochs": 30, "loss": 0.5}}
    assert describe(running, "ralif") == "Round 3: training the model, epoch 2 of 30, loss 0.500"
    extracting = {"round": 1, "phase": "extracting", "progress": {"done": 512, "total": 2000}}
    assert describe(extracting, "ralif") == "Round 1: computing image features (512 / 2,000 images)"
    done = {"round": 2, "seconds": 1.25, "labeled_count": 40, "accuracy": 0.5, "test_count": 500,
            "strategy": "ralif", "cold_start": 0}
    assert summary(done) == ("Round 2: model trained on 40 labels in 1.2 s · held-out accuracy 50.0% "
                             "(500 images) · batch chosen by ralif")
    assert short_reason("influence rank 8 of 198 candidates, k-means pick 1 of 20; model guess: cat (35%)") \
        == "influence #8/198 · diverse pick 1/20"
    typical = ("typicality pick 3 of 20: the most typical unlabeled image of a cluster with few labels "
               "(cold start: 1.0 labels per class, fewer than 3); model guess: cat (35%)")
    assert short_reason(typical) == "typical pick 3/20, few labels yet"
    assert plain_reason(typical).startswith("chosen as a typical image") and "3 of 20" in plain_reason(typical)
    coverage = "influence rank 40 of 1,240 candidates, k-center pick 2 of 20"
    assert short_reason(coverage) == "influence #40/1,240 · coverage pick 2/20"
    assert "far from every labeled image" in plain_reason(coverage) and "2 of 20" in plain_reason(coverage)
    gated = ("influence rank 8 of 198 candidates among the 10% of images the model is least sure of, "
             "k-means pick 1 of 20; model guess: cat (35%)")
    assert short_reason(gated) == "influence #8/198 in the least-sure 10% · diverse pick 1/20"
    assert plain_reason(gated) == ("chosen because the model is unsure of it and labeling it should help the "
                                   "model most; 1 of 20 diverse picks")
    big = "influence rank 4 of 12,000 candidates, k-means pick 1234 of 2000"  # a batch of 2,000
    assert plain_reason(big).endswith("; 1,234 of 2,000 diverse picks")


# ----------------------------------------------------------------------------- classes page


def test_classes_page_renames_merges_and_saves_settings(demo: Project) -> None:
    demo.oracle_label_batch()
    counts = {c.name: c.count for c in demo.classes()}
    at = page("views/5_Classes.py", demo).run()
    assert not at.exception
    cat = demo.class_id("cat")
    at.selectbox(key="rename_which").set_value(cat)
    at.text_input(key="rename_to").input("kitten")
    at.button(key="FormSubmitter:rename_class-Rename").click().run()
    assert "Renamed 'cat' to 'kitten'" in at.success[0].value
    assert {c.name: c.count for c in demo.classes()}["kitten"] == counts["cat"]

    at.selectbox(key="merge_from").set_value(demo.class_id("dog"))
    at.selectbox(key="merge_into").set_value(demo.class_id("kitten"))
    at.button(key="FormSubmitter:merge_class-Merge").click().run()
    assert {c.name: c.count for c in demo.classes()}["kitten"] == counts["cat"], "merge before confirming"
    at.button(key="merge_confirm").click().run()
    assert {c.name: c.count for c in demo.classes()}["kitten"] == counts["cat"] + counts["dog"]
    assert "dog" not in [c.name for c in demo.classes()]

    at.text_input(key="add_name").input("  fox ")
    at.button(key="FormSubmitter:add_class-Add class").click().run()
    assert "fox" in [c.name for c in demo.classes()]
    horse = demo.class_id("horse")
    at.selectbox(key="delete_which").set_value(horse)
    at.button(key="FormSubmitter:delete_class-Delete").click().run()
    assert "Tick the box" in at.warning[0].value and "horse" in [c.name for c in demo.classes()]
    at.checkbox(key="delete_sure").check()
    at.button(key="FormSubmitter:delete_class-Delete").click().run()
    assert "horse" not in [c.name for c in demo.classes()]
    n = counts["horse"]
    assert f"{n:,} image{'s' if n != 1 else ''} {'are' if n != 1 else 'is'} unlabeled again" in at.success[0].value

    at.number_input(key="set_batch").set_value(7)
    at.selectbox(key="set_strategy").set_value("uncertainty")
    at.toggle(key="set_oracle").set_value(False)
    at.button(key="FormSubmitter:settings-Save settings").click().run()
    assert demo.batch_size == 7 and demo.strategy == "uncertainty" and not demo.settings["simulated_oracle"]

    # Options typed for the chosen strategy are kept; options left over from another one are not used.
    at.selectbox(key="set_strategy").set_value("ralif")
    at.text_input(key="set_spec").input("ralif(rule=single)")
    at.button(key="FormSubmitter:settings-Save settings").click().run()
    assert demo.strategy.startswith("ralif(") and "rule=single" in demo.strategy
    at.selectbox(key="set_strategy").set_value("badge")
    at.text_input(key="set_spec").input("ralif(rule=single)")
    at.button(key="FormSubmitter:settings-Save settings").click().run()
    assert demo.strategy == "badge" and "for another strategy" in at.warning[-1].value
