"""Exports after class edits: an exported model (and ``ralif predict`` on it) speaks the project's
current classes (renamed, merged, deleted), the Label grid shows a merged-away class's guess as its
merge target, and an ImageFolder export keeps the real class names in its ``labels.csv``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from ralif.cli import main as cli_main
from ralif.project import Project, ProjectError, load_model
from ralif.project.exports import IMAGEFOLDER_MANIFEST, model_classes_note
from ralif.ui.grid import batch_items

DEMO = Path(__file__).resolve().parents[1] / "ralif/app/assets/demo"


@pytest.fixture()
def trained(tmp_path: Path) -> Project:
    """A demo project whose first round trained a model on all ten classes."""
    return Project.create_demo(tmp_path / "p", assets=DEMO, initial_labels=40)


def _edit_classes(project: Project) -> None:
    project.rename_class(project.class_id("dog"), "**bold** [x](http://e.com)")
    project.merge_classes(project.class_id("ship"), project.class_id("airplane"))
    project.delete_class(project.class_id("cat"))


def _pool_paths(project: Project, n: int = 40) -> list[str]:
    return [r.path for r in project.images_page(limit=n)]


def test_exported_model_speaks_the_current_classes(trained: Project, tmp_path: Path, capsys) -> None:
    project = trained
    raw_model = project.load_model()  # the round's checkpoint, columns as trained
    assert {"dog", "ship", "cat"} <= set(raw_model.class_names)
    assert model_classes_note(project) is None
    paths = _pool_paths(project)
    raw = raw_model.predict_proba(paths)
    col = {n: k for k, n in enumerate(raw_model.class_names)}

    _edit_classes(project)
    note = model_classes_note(project)
    assert note is not None and "trained before the latest class changes" in note

    exported = project.export_model(tmp_path / "model")
    meta = json.loads(next(exported.glob("*.json")).read_text(encoding="utf-8"))
    current = [c.name for c in project.classes()]
    assert meta["class_names"] == current and meta["format_version"] == 2
    assert meta["trained_class_names"] == raw_model.class_names

    model = load_model(exported)
    assert model.class_names == current
    assert not {"dog", "ship", "cat"} & set(model.class_names)
    probs = model.predict_proba(paths)
    out = {n: k for k, n in enumerate(model.class_names)}
    kept = 1.0 - raw[:, col["cat"]]  # the deleted class's share is left out, the rest renormalised
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-9)
    np.testing.assert_allclose(probs[:, out["airplane"]], (raw[:, col["airplane"]] + raw[:, col["ship"]]) / kept,
                               rtol=1e-6)
    np.testing.assert_allclose(probs[:, out["**bold** [x](http://e.com)"]], raw[:, col["dog"]] / kept, rtol=1e-6)
    np.testing.assert_allclose(probs[:, out["frog"]], raw[:, col["frog"]] / kept, rtol=1e-6)

    # The command line, on the export and on the project folder itself.
    manifest = tmp_path / "imgs.csv"
    manifest.write_text("path\n" + "".join(f"{p}\n" for p in paths), encoding="utf-8")
    for source in (exported, project.folder):
        out_csv = tmp_path / f"preds-{source.name}.csv"
        assert cli_main(["predict", "--model", str(source), "--images", str(manifest), "--out", str(out_csv),
                         "--probabilities"]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["classes"] == current and summary["trained_classes"] == raw_model.class_names
        rows = list(csv.DictReader(out_csv.open(encoding="utf-8")))
        assert [r["prediction"] for r in rows] == [model.class_names[k] for k in probs.argmax(1)]
        assert {r["prediction"] for r in rows} <= set(current)
        np.testing.assert_allclose([float(r["confidence"]) for r in rows], probs.max(1), atol=1e-4)


def test_an_export_without_class_changes_is_the_checkpoint(trained: Project, tmp_path: Path) -> None:
    project = trained
    weights = project.current_model_path()
    exported = project.export_model(tmp_path / "model")
    assert (exported / weights.with_suffix(".json").name).read_bytes() == weights.with_suffix(".json").read_bytes()
    assert load_model(exported).column_map is None
    # A class added since: the export still maps nothing, the page says the model cannot predict it.
    project.add_class("zebra")
    note = model_classes_note(project)
    assert note is not None and "the one added since, which it cannot predict" in note


def test_a_model_whose_classes_are_gone_is_not_exported(trained: Project, tmp_path: Path) -> None:
    project = trained
    keep = project.class_id("frog")
    for c in project.classes():
        if c.id != keep:
            project.delete_class(c.id)
    with pytest.raises(ProjectError, match=r"cannot be exported.*'frog'"):
        project.export_model(tmp_path / "model")
    assert not (tmp_path / "model").exists()
    assert "cannot be exported" in (model_classes_note(project) or "")
    project.delete_class(keep)
    project.add_class("new")
    with pytest.raises(ProjectError, match="every class the model was trained on has been deleted"):
        project.export_model(tmp_path / "model")


def test_grid_shows_a_merged_away_guess_as_its_target(trained: Project, tmp_path: Path) -> None:
    project = trained
    batch = project.pending_batch()
    guessed = [b for b in batch if b.predicted_class_id is not None]
    assert guessed, "the model made no guesses"
    source = guessed[0].predicted_class_id
    others = [b.predicted_class_id for b in guessed if b.predicted_class_id != source]
    target = next(c.id for c in project.classes() if c.id != source)
    project.merge_classes(source, target)
    deleted = next((c for c in others if c != target), None)
    if deleted is not None:
        project.delete_class(deleted)
    target_name = next(c.name for c in project.classes() if c.id == target)
    items = {it["id"]: it for it in batch_items(project.pending_batch(), 32, project.classes(),
                                                 truth=project.truth_map())}
    for b in guessed:
        it = items[b.image_id]
        if b.predicted_class_id == source:
            assert it["predicted_class_id"] == target and it["predicted"] == target_name
            assert it["guess_gone"] is None and it["confidence"] == b.confidence and it["confidence_floor"]
        else:
            assert not it["confidence_floor"]
        if b.predicted_class_id == deleted:
            assert it["predicted_class_id"] is None and it["no_prediction"] == "no guess: its class was removed"


def test_imagefolder_export_keeps_the_real_class_names(tmp_path: Path) -> None:
    project = Project.create_demo(tmp_path / "p", assets=DEMO, run_first_round=False)
    ids = [r.image_id for r in project.images_page(limit=6)]
    names = ["**bold**", "a/b", IMAGEFOLDER_MANIFEST]
    for i, name in enumerate(names):
        cid = project.class_id(["cat", "dog", "frog"][i])
        project.rename_class(cid, name)
        project.bulk_label(ids[2 * i:2 * i + 2], cid, source="user")
    for split in (False, True):
        dest = project.export_imagefolder(tmp_path / f"tree-{split}", split_folders=split)
        manifest = dest / IMAGEFOLDER_MANIFEST
        assert manifest.is_file()
        rows = list(csv.DictReader(manifest.open(encoding="utf-8")))
        assert len(rows) == 6 and {r["label"] for r in rows} == set(names)
        assert all((dest / r["path"]).is_file() for r in rows)
        assert {Path(r["path"]).parts[-2] for r in rows} != set(names)  # the folders have safe names
    # Importing the manifest gives back the classes as they were named.
    again = Project.create(tmp_path / "again", tmp_path / "tree-False" / IMAGEFOLDER_MANIFEST, encoder="pixels:2")
    assert {c.name for c in again.classes()} >= set(names)
    assert again.progress().labeled == 6


@pytest.mark.parametrize(("change", "why"), [
    ({"column_map": [0, 99]}, "column_map must give one class per column"),
    ({"trained_class_names": None}, "needs trained_class_names"),
    ({"column_map": "all"}, "column_map must give one class per column"),
])
def test_a_broken_column_map_is_refused_naming_the_file(trained: Project, tmp_path: Path, change: dict,
                                                         why: str) -> None:
    project = trained
    project.merge_classes(project.class_id("ship"), project.class_id("airplane"))
    exported = project.export_model(tmp_path / "model")
    sidecar = next(exported.glob("*.json"))
    meta = json.loads(sidecar.read_text(encoding="utf-8"))
    assert meta["column_map"].count(meta["class_names"].index("airplane")) == 2
    meta.update(change)
    sidecar.write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ValueError, match=why) as info:
        load_model(exported)
    assert str(sidecar) in str(info.value)


def test_export_page_says_the_model_predates_the_class_changes(trained: Project, monkeypatch) -> None:
    from streamlit.testing.v1 import AppTest

    from ralif.ui.state import PROJECT_KEY

    def page() -> AppTest:
        monkeypatch.setenv("RALIF_PROJECTS", str(trained.folder.parent))
        at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "views" / "4_Export.py"),
                               default_timeout=120)
        at.session_state[PROJECT_KEY] = str(trained.folder)
        return at.run()

    def notes(at: AppTest) -> list[str]:
        return [i.value for i in at.info if "class changes" in i.value]

    at = page()
    assert not at.exception and notes(at) == []
    _edit_classes(trained)
    at = page()
    assert not at.exception
    assert notes(at) == ["The model was trained before the latest class changes: the export maps its predictions "
                         "to the current classes, and the next round trains a model on them."]
    at.button(key="export_model").click().run()
    assert not at.exception and at.success
