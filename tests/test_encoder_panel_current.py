"""The project's encoder panel (home page) names the encoder as the choice does ("ResNet18 from
scratch", not its internal spec ``pixels:8``) in its title and in the message after a switch, and
opens on the project's own choice instead of the recommended one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import make_images
from streamlit.testing.v1 import AppTest

from ralif.project import Project
from ralif.ui import common
from ralif.ui.encoder_picker import TITLES

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 120


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    monkeypatch.setenv("RALIF_PROJECTS", str(tmp_path / "projects"))
    monkeypatch.setattr(Project, "start_round", lambda self, *a, **k: None)
    make_images(tmp_path / "imgs", per_class=4)
    return Project.create(tmp_path / "projects" / "shop", tmp_path / "imgs", encoder="pixels:4", batch_size=4)


def _app(project: Project) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.session_state["ralif_demo_tried"] = True
    at.session_state["ralif_project_dir"] = str(project.folder)
    return at.run()


def _panel_title(at: AppTest) -> str:
    return next(e.label for e in at.expander if "Encoder and model of" in e.label)


def _shown(at: AppTest) -> str:
    return re.sub(r"\\(.)", r"\1", "\n".join(e.value for e in [*at.success, *at.markdown]))


def test_switching_to_resnet18_from_scratch_says_so_and_reopens_on_it(project: Project) -> None:
    at = _app(project)
    assert not at.exception, at.exception
    assert at.radio(key="settings_encoder").value == "spec"
    assert at.text_input(key="settings_encoder_spec").value == "pixels:4"
    at.radio(key="settings_encoder").set_value("resnet18-scratch").run()
    at.button(key="settings_apply").click().run()
    assert not at.exception, at.exception
    assert Project.open(project.folder).encoder_spec == "pixels:8"
    shown = _shown(at)
    assert "Encoder changed to ResNet18 from scratch;" in shown and "pixels:8" not in shown
    assert _panel_title(at).endswith(": ResNet18 from scratch")

    # A new visit opens the panel on the project's choice, not on the recommended CLIP.
    again = _app(project)
    assert again.radio(key="settings_encoder").value == "resnet18-scratch"
    assert "pixels" not in _panel_title(again)


def test_the_panel_follows_the_open_project(project: Project, tmp_path: Path) -> None:
    other = Project.create(tmp_path / "projects" / "other", tmp_path / "imgs", model="resnet18", batch_size=4,
                           resnet={"variant": "imagenet"})
    at = _app(project)
    assert at.radio(key="settings_encoder").value == "spec"
    at.session_state["ralif_project_dir"] = str(other.folder)
    at.run()
    assert not at.exception, at.exception
    assert at.radio(key="settings_encoder").value == "resnet18-imagenet-finetune"
    assert _panel_title(at).endswith(": ResNet18 ImageNet, fine-tuned every round")


@pytest.mark.parametrize(("model", "spec", "resnet", "key", "label"), [
    ("resnet18", "pixels:8", {"variant": "cifar"}, "resnet18-scratch", "ResNet18 from scratch"),
    ("resnet18", "pixels:8", {"variant": "imagenet"}, "resnet18-imagenet-finetune",
     "ResNet18 ImageNet, fine-tuned every round"),
    ("resnet18", "resnet18-32:none", {"variant": "cifar"}, "spec", "ResNet18 from scratch"),
    ("clip-linear", "clip:ViT-B-16:openai", {}, "clip", "CLIP ViT-B-16 (openai)"),
    ("clip-linear", "resnet18:imagenet", {}, "resnet18-imagenet-frozen", "ResNet18 ImageNet, frozen + linear head"),
    ("clip-linear", "precomputed:/data/x/emb.npz", {}, "precomputed", "precomputed embeddings (emb.npz)"),
    ("clip-linear", "resnet18:/data/w/r18.pth", {}, "checkpoint", "ResNet18, weights from r18.pth"),
    ("clip-linear", "clip:ViT-B-32:/data/w/c.pt", {}, "checkpoint", "CLIP ViT-B-32, weights from c.pt"),
    ("clip-linear", "pixels:4", {}, "spec", "pixels:4"),
])
def test_each_setting_maps_to_its_choice_and_name(model: str, spec: str, resnet: dict, key: str, label: str) -> None:
    from ralif.ui.encoder_picker import current_choice

    assert current_choice(model, spec, resnet).key == key
    assert common.encoder_label(spec, model, resnet) == label
    if key in ("resnet18-scratch", "resnet18-imagenet-frozen"):
        assert label == TITLES[key]
