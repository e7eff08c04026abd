"""The new-project form with Streamlit's AppTest: scan and preview (nothing written before the
confirmation), a decision per top folder, the encoder choice, weights downloaded in the page from
a local server standing in for the hub, the offline message and its fixes, and switching the
encoder of an existing project with every label kept."""

from __future__ import annotations

import io
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest
from test_weights import TINY, closed_port, hosts, register_tag, safetensors_bytes, tiny_model  # noqa: F401

from ralif.folder_scan import build_plan, preview_source
from ralif.project import ImportReport, Project
from ralif.ui import new_project

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 120


@pytest.fixture()
def projects_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "projects"
    monkeypatch.setenv("RALIF_PROJECTS", str(root))
    return root


@pytest.fixture()
def no_worker(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Background rounds are recorded instead of started (a worker process costs seconds)."""
    started: list[str] = []
    monkeypatch.setattr(Project, "start_round", lambda self, *a, **k: started.append(str(self.folder)))
    monkeypatch.setattr(Project, "ensure_round_server", lambda self: None)
    return started


def mixed_folder(root: Path, classes: tuple[str, ...] = ("boot", "coat", "shirt"), per_class: int = 5,
                 unlabeled: int = 12) -> Path:
    """Class subfolders, an ``unlabeled/`` folder, an unreadable file and a duplicate."""
    rng = np.random.default_rng(0)
    for c in (*classes, "unlabeled"):
        (root / c).mkdir(parents=True)
        for i in range(unlabeled if c == "unlabeled" else per_class):
            Image.fromarray(rng.integers(0, 255, (28, 28, 3), dtype=np.uint8)).save(root / c / f"{c}_{i}.png")
    (root / classes[0] / "broken.png").write_bytes(b"not an image")
    (root / "unlabeled" / "again.png").write_bytes((root / classes[1] / f"{classes[1]}_0.png").read_bytes())
    return root


def home() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.session_state["ralif_demo_tried"] = True
    return at.run()


def texts(at: AppTest) -> str:
    """The page's text as read (Markdown escapes removed)."""
    kinds = ("markdown", "caption", "success", "warning", "error", "info")
    return re.sub(r"\\(.)", r"\1", "\n".join(e.value for kind in kinds for e in getattr(at, kind)))


def decision_boxes(at: AppTest) -> list[Any]:
    return [s for s in at.selectbox if str(s.key).startswith("new_dec_")]


def scan(at: AppTest, name: str, source: Path) -> AppTest:
    at.text_input(key="new_name").input(name)
    at.text_input(key="new_source").input(str(source))
    return at.button(key="new_scan").click().run()


def test_preview_shows_what_was_found_and_writes_nothing_until_confirmed(
        projects_dir: Path, tmp_path: Path, no_worker: list[str]) -> None:
    source = mixed_folder(tmp_path / "photos")
    at = home()
    assert not at.exception
    assert not [b for b in at.button if b.key == "new_create"], "nothing to create before a scan"
    at = scan(at, "Products", source)
    assert not at.exception, at.exception
    shown = texts(at)
    assert "3 class folders plus 1 folder that looks unlabeled" in shown
    assert "**unlabeled** · 13 images" in shown and "says these images have no label" in shown
    assert len(decision_boxes(at)) == 4
    assert [b.value for b in decision_boxes(at)] == ["class", "class", "class", "unlabeled"]
    # The copy in unlabeled/ of a coat image is counted once, as the import will count it.
    assert "3 classes, 15 labeled images, 12 unlabeled, 0 ignored, 1 identical copy skipped" in shown
    assert len(at.get("image")) == 4, "thumbnails for every group"
    assert any("cannot be read" in e.label for e in at.expander)
    assert any("identical files" in e.label for e in at.expander)
    assert not projects_dir.exists() or not any(projects_dir.iterdir()), "the scan wrote something"

    # The user decides: one class folder ignored; the plan follows before anything is written.
    decision_boxes(at)[2].set_value("ignore").run()
    assert "2 classes, 10 labeled images, 12 unlabeled, 5 ignored, 1 identical copy skipped" in texts(at)
    at.radio(key="new_encoder").set_value("spec").run()
    at.text_input(key="new_encoder_spec").input("pixels:4").run()
    assert not projects_dir.exists() or not any(projects_dir.iterdir())
    at.button(key="new_create").click().run()
    assert not at.exception, at.exception
    project = Project.open(projects_dir / "products")
    assert [c.name for c in project.classes()] == ["boot", "coat"]
    prog = project.progress()
    assert prog.labeled == 10 and prog.pool == 10 + 12     # what the preview said, the duplicate once
    assert project.encoder_spec == "pixels:4" and project.model_kind == "clip-linear"
    assert no_worker == [str(project.folder)]
    assert "Created **products**" in texts(at)


def test_a_new_attempt_clears_the_report_of_the_project_made_before(
        projects_dir: Path, tmp_path: Path, no_worker: list[str]) -> None:
    source = mixed_folder(tmp_path / "photos")
    at = scan(home(), "Shapes", source)
    at.radio(key="new_encoder").set_value("spec").run()
    at.text_input(key="new_encoder_spec").input("pixels:4").run()
    at.button(key="new_create").click().run()
    assert "Created **shapes**" in texts(at)
    # The same name again: the scan clears the report of the project made before ...
    at.button(key="new_scan").click().run()
    assert "Created" not in texts(at)
    at.radio(key="new_encoder").set_value("spec").run()
    at.text_input(key="new_encoder_spec").input("pixels:4").run()
    # ... and so does pressing Create (here with the report put back by hand), which fails.
    at.session_state[new_project.REPORT_KEY] = {"folder": str(projects_dir / "shapes"), "error": None,
                                                "report": asdict(ImportReport())}
    at.button(key="new_create").click().run()
    assert not at.exception, at.exception
    shown = texts(at)
    assert "The project was not created: a project named 'shapes' already exists" in shown
    assert "Created" not in shown


def test_a_folder_named_unlabeled_can_still_be_made_a_class(projects_dir: Path, tmp_path: Path,
                                                          no_worker: list[str]) -> None:
    at = scan(home(), "Kept", mixed_folder(tmp_path / "photos"))
    decision_boxes(at)[3].set_value("class").run()
    # The coat image and its copy in unlabeled/ now carry two labels: imported once, without one.
    assert "4 classes, 26 labeled images, 1 unlabeled, 0 ignored, 1 identical copy skipped" in texts(at)
    # A stale preview is never used: a new path entered is scanned at once (Enter scans it), and an
    # emptied path asks for a new scan and hides the form.
    at.text_input(key="new_source").input(str(tmp_path)).run()
    assert "**photos** · 28 images" in texts(at) and "press Scan and preview again" not in texts(at)
    at.text_input(key="new_source").input("").run()
    assert "press Scan and preview again" in texts(at)
    assert not [b for b in at.button if b.key == "new_create"]
    assert not projects_dir.exists() or not any(projects_dir.iterdir())


def test_weights_download_in_the_page_then_the_project_uses_them_offline(
        projects_dir: Path, tmp_path: Path, hosts: Any, tiny_model: torch.nn.Module,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch, no_worker: list[str]) -> None:
    data = safetensors_bytes(tiny_model)
    hosts.add_hub_file("example/tiny-page", "open_clip_model.safetensors", data)
    register_tag(monkeypatch, "example/tiny-page")
    at = scan(home(), "Tiny", mixed_folder(tmp_path / "photos"))
    at.radio(key="new_encoder").set_value("clip").run()
    at.selectbox(key="new_clip_model").set_value(TINY).run()
    at.selectbox(key="new_clip_tag").set_value("testtag").run()
    assert not at.exception, at.exception
    assert "weights not on this machine: download" in texts(at)
    at.button(key="new_download").click().run()
    assert not at.exception, at.exception
    assert "weights on this machine" in texts(at)
    assert [r for r in hosts.requests if r[0] == "GET"], "nothing was downloaded"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    at.button(key="new_create").click().run()
    assert not at.exception, at.exception
    project = Project.open(projects_dir / "tiny")
    assert project.encoder_spec == f"clip:{TINY}:testtag"
    project.run_round()
    project.label(project.pending_batch()[0].image_id, project.classes()[0].id)
    project.submit_batch()
    project.run_round()
    assert project.load_model().encoder_id == f"open_clip:{TINY}:testtag"


def test_offline_says_so_with_fixes_and_a_file_path_fixes_it(
        projects_dir: Path, tmp_path: Path, hosts: Any, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
        no_worker: list[str]) -> None:
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    at = scan(home(), "Offline", mixed_folder(tmp_path / "photos"))
    at.radio(key="new_encoder").set_value("clip").run()
    at.selectbox(key="new_clip_model").set_value("ViT-B-32").run()
    at.selectbox(key="new_clip_tag").set_value("openai").run()
    at.button(key="new_create").click().run()
    assert not at.exception, at.exception
    shown = texts(at)
    assert "seems to be offline" in shown and "cannot be reached" in shown
    assert "choose another encoder above" in shown and "Local checkpoint file" in shown
    assert "The project was not created" in shown
    assert not projects_dir.exists() or not any(projects_dir.iterdir())

    # The fix from the page: a weights file the user has (random ResNet18 weights stand in).
    from torchvision.models import resnet18

    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.save(resnet18(weights=None).state_dict(), buf)
    weights = tmp_path / "my-resnet18.pth"
    weights.write_bytes(buf.getvalue())
    at.radio(key="new_encoder").set_value("checkpoint").run()
    at.text_input(key="new_ckpt_path").input(str(weights)).run()
    assert "no download needed" in texts(at)
    at.button(key="new_create").click().run()
    assert not at.exception, at.exception
    project = Project.open(projects_dir / "offline")
    assert project.encoder_spec == f"resnet18:{weights}"


def test_switching_the_encoder_in_the_settings_keeps_every_label(
        projects_dir: Path, tmp_path: Path, no_worker: list[str]) -> None:
    source = mixed_folder(tmp_path / "photos")
    plan = build_plan(preview_source(source))
    project = Project.create(projects_dir / "shop", plan.image_lists(), encoder="pixels:4", batch_size=5)
    project.run_round()
    project.label(project.pending_batch()[0].image_id, project.classes()[1].id)
    labels_before = {r.image_id: r.label.class_id for r in project.images_page("all", limit=1000)}
    assert sum(v is not None for v in labels_before.values()) == 16
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.session_state["ralif_demo_tried"] = True
    at.session_state["ralif_project_dir"] = str(project.folder)
    at.run()
    assert any("Encoder and model of" in e.label for e in at.expander)
    at.radio(key="settings_encoder").set_value("spec").run()
    at.text_input(key="settings_encoder_spec").input("resnet18-32:none").run()
    at.button(key="settings_apply").click().run()
    assert not at.exception, at.exception
    again = Project.open(project.folder)
    assert again.encoder_spec == "resnet18-32:none"
    assert {r.image_id: r.label.class_id for r in again.images_page("all", limit=1000)} == labels_before
    assert "all 16 labels are kept" in texts(at)
