"""Switching a project's encoder after it has labels: every label is kept, the next round reads
features from the new encoder (computed once through the feature cache), and switching back
computes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_images

from ralif.project import Project, ProjectError


def _labels(project: Project) -> dict[int, int | None]:
    return {row.image_id: row.label.class_id for row in project.images_page("all", limit=10_000)}


def _answer_batch(project: Project, classes: dict[str, int]) -> None:
    for item in project.pending_batch():
        project.label(item.image_id, classes[Path(item.path).parent.name])


def test_switching_the_encoder_keeps_every_label_and_the_next_round_uses_it(tmp_path: Path) -> None:
    make_images(tmp_path / "imgs", per_class=10)
    project = Project.create(tmp_path / "proj", tmp_path / "imgs", model="clip-linear", encoder="pixels:4",
                             batch_size=6, known_labels="ignore", classes=["cat", "dog", "fox"])
    classes = {c.name: c.id for c in project.classes()}
    assert set(classes) == {"cat", "dog", "fox"}
    project.run_round()
    for _ in range(2):
        _answer_batch(project, classes)
        project.submit_batch()
        project.run_round()
    before = _labels(project)
    assert sum(v is not None for v in before.values()) == 12
    assert project.load_model().encoder_id == "pixels:4"

    project.update_settings(encoder="resnet18-32:none")
    assert project.encoder_spec == "resnet18-32:none"
    assert _labels(project) == before
    cache = project.folder / "cache"
    assert not any("resnet18" in p.name for p in cache.iterdir()) if cache.exists() else True

    _answer_batch(project, classes)
    project.submit_batch()
    project.run_round()
    model = project.load_model()
    assert model.encoder_id == "torchvision:resnet18:random0:32px"
    assert len(model.head.standardizer.mean) == 512   # the head reads 512-d ResNet18 features, not 48 pixels
    assert project.rounds()[-1]["labeled_count"] == 18
    after = _labels(project)
    assert {k: v for k, v in after.items() if before[k] is not None} == {
        k: v for k, v in before.items() if v is not None}
    assert any("resnet18" in p.name for p in cache.rglob("*")), "new features go through the cache"

    # Back to the first encoder and forth again: the cached features are reused, nothing recomputed.
    project.update_settings(encoder="pixels:4")
    project.update_settings(model="clip-linear", encoder="resnet18-32:none")
    files = {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()}
    project.submit_batch()
    project.run_round()
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()} == files
    assert sum(v is not None for v in _labels(project).values()) == 18


def test_bad_encoder_settings_are_refused_and_change_nothing(tmp_path: Path) -> None:
    make_images(tmp_path / "imgs", per_class=4)
    project = Project.create(tmp_path / "proj", tmp_path / "imgs", encoder="pixels:4", batch_size=4)
    with pytest.raises(ProjectError, match="unknown encoder spec"):
        project.update_settings(encoder="vgg:imagenet")
    with pytest.raises(ProjectError, match="embeddings file not found"):
        project.update_settings(encoder=f"precomputed:{tmp_path / 'missing.npz'}")
    with pytest.raises(ProjectError, match="model must be one of"):
        project.update_settings(model="svm")
    assert project.encoder_spec == "pixels:4" and project.model_kind == "clip-linear"
    # A new model without an encoder gets that model's default one.
    project.update_settings(model="resnet18")
    assert project.encoder_spec == "pixels:8"
