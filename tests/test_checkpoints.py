"""Model sidecars are validated before anything is read: every message names the file, the
weights path stays beside the sidecar, and a model without classes is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ralif.cli import main as cli_main
from ralif.project import Project, load_model

DEMO = Path(__file__).resolve().parents[1] / "ralif/app/assets/demo"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ckpt")
    project = Project.create_demo(root / "p", assets=DEMO, initial_labels=10)
    return project.export_model(root / "model")


def _copy(model_dir: Path, tmp_path: Path) -> tuple[Path, dict]:
    dest = tmp_path / "model"
    shutil.copytree(model_dir, dest)
    sidecar = next(dest.glob("*.json"))
    return sidecar, json.loads(sidecar.read_text())


def test_the_exported_model_loads(model_dir):
    model = load_model(model_dir)
    assert model.kind == "linear" and len(model.class_names) >= 2


@pytest.mark.parametrize(("text", "why"), [
    ("", "invalid JSON"),
    ("{not json", "invalid JSON"),
    ("[1, 2]", "a JSON object was expected"),
])
def test_garbage_sidecar_is_named(model_dir, tmp_path, text, why):
    sidecar, _ = _copy(model_dir, tmp_path)
    sidecar.write_text(text)
    with pytest.raises(ValueError, match=why) as info:
        load_model(sidecar)
    assert str(sidecar) in str(info.value)


@pytest.mark.parametrize("names", [[], None])
def test_a_model_without_classes_is_refused(model_dir, tmp_path, capsys, names):
    sidecar, meta = _copy(model_dir, tmp_path)
    if names is None:
        meta.pop("class_names")
    else:
        meta["class_names"] = names
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="the model has no classes") as info:
        load_model(sidecar.parent)
    assert str(sidecar) in str(info.value)
    image = next((DEMO).rglob("*.jpg"), None) or next(DEMO.rglob("*.png"))
    assert cli_main(["predict", "--model", str(sidecar.parent), "--images", str(image)]) == 1
    err = capsys.readouterr().err
    assert "no classes" in err and "IndexError" not in err


@pytest.mark.parametrize("name", ["../../../../etc/passwd", "/etc/passwd", "sub/round.safetensors", "..", ""])
def test_weights_outside_the_models_folder_are_refused(model_dir, tmp_path, name):
    sidecar, meta = _copy(model_dir, tmp_path)
    meta["weights_file"] = name
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="weights_file") as info:
        load_model(sidecar)
    assert str(sidecar) in str(info.value)


def test_a_link_to_a_file_elsewhere_is_refused(model_dir, tmp_path):
    sidecar, meta = _copy(model_dir, tmp_path)
    outside = tmp_path / "elsewhere.safetensors"
    weights = sidecar.parent / meta["weights_file"]
    shutil.copy(weights, outside)
    weights.unlink()
    weights.symlink_to(outside)
    with pytest.raises(ValueError, match="leads outside"):
        load_model(sidecar)
