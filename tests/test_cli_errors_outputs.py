"""Output paths that cannot be written (``predict --out``, ``project export --out``, the export
functions): refused with one ``error:`` line before any work, never an IsADirectoryError traceback
after it; and ``cli.main`` turns any OSError a command raises into one line and exit code 1."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
from helpers import make_images

import ralif.project.exports as exports
import ralif.project.rounds as rounds
from ralif.cli import main
from ralif.project import DestinationExists, Project, ProjectError
from ralif.project.dbfile import ReadOnlyError


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    root = tmp_path_factory.mktemp("outputs")
    make_images(root / "src", per_class=4, classes=("cat", "dog"))
    project = Project.create(root / "p", root / "src", encoder="pixels:2", batch_size=2)
    assert project.run_round()["cold_start"] is False  # imported labels of two classes
    return project


def _one_error_line(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ralif {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


def _no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if predict loads its model or an export reads its labels."""
    def refuse(*args, **kwargs):
        raise AssertionError("the work started before the destination was checked")

    monkeypatch.setattr(rounds, "load_model", refuse)
    monkeypatch.setattr(exports, "label_rows", refuse)


def test_predict_refuses_a_folder_as_out_before_loading_the_model(project, tmp_path, capsys, monkeypatch):
    (tmp_path / "d").mkdir()
    _no_work(monkeypatch)
    argv = ["predict", "--model", str(project.folder), "--images", str(project.folder.parent / "src")]
    assert main([*argv, "--out", str(tmp_path / "d")]) == 1
    line = _one_error_line(capsys.readouterr().err, "predict")
    assert "is a folder" in line and str(tmp_path / "d") in line
    (tmp_path / "file").write_text("x")
    assert main([*argv, "--out", str(tmp_path / "file" / "preds.csv")]) == 1
    assert "is a file, not a folder" in _one_error_line(capsys.readouterr().err, "predict")


def test_predict_refuses_an_unwritable_folder_and_creates_missing_ones(project, tmp_path, capsys, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != locked and real_access(p, mode, **kw))
    argv = ["predict", "--model", str(project.folder), "--images", str(project.folder.parent / "src")]
    assert main([*argv, "--out", str(locked / "new" / "preds.csv")]) == 1
    assert "read-only" in _one_error_line(capsys.readouterr().err, "predict")
    # A missing parent under a writable folder is created, as before.
    out = tmp_path / "made" / "here" / "preds.csv"
    assert main([*argv, "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["out"] == str(out)
    assert len(list(csv.DictReader(out.open()))) == 8


def test_project_export_refuses_a_folder_as_out_before_the_work(project, tmp_path, capsys, monkeypatch):
    (tmp_path / "d").mkdir()
    _no_work(monkeypatch)
    for fmt in ("csv", "json"):
        assert main(["project", "export", str(project.folder), "--format", fmt, "--out", str(tmp_path / "d")]) == 1
        assert "is a folder" in _one_error_line(capsys.readouterr().err, "project")
    assert os.listdir(tmp_path / "d") == []


def test_export_functions_check_their_destination_first(project, tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    (tmp_path / "d").mkdir()
    copied: list[object] = []
    monkeypatch.setattr(exports.shutil, "copy2", lambda *a, **k: copied.append(a))
    with pytest.raises(ProjectError, match="is a file, and the ImageFolder export is a folder"):
        project.export_imagefolder(tmp_path / "file")
    with pytest.raises(DestinationExists, match="exists") as refused:
        project.export_imagefolder(tmp_path / "d")
    assert refused.value.path == str(tmp_path / "d") and isinstance(refused.value, FileExistsError)
    with pytest.raises(ProjectError, match="is a file, and the model export is a folder"):
        project.export_model(tmp_path / "file")
    with pytest.raises(ProjectError, match="is a file, not a folder"):
        project.export_model(tmp_path / "file" / "model")
    assert copied == []  # nothing was copied before the refusal
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != tmp_path and real_access(p, mode, **kw))
    with pytest.raises(ReadOnlyError, match="read-only"):
        project.export_csv(tmp_path / "labels.csv")
    with pytest.raises(ReadOnlyError, match="read-only"):
        project.export_json(tmp_path / "new" / "labels.json")


def test_main_turns_any_oserror_into_one_line(monkeypatch, capsys):
    import ralif.commands.strategies as strategies

    for exc in (IsADirectoryError(21, "Is a directory", "/x"), PermissionError(13, "Permission denied", "/y"),
                OSError(28, "No space left on device")):
        def fail(args, exc=exc):
            raise exc

        monkeypatch.setattr(strategies, "run", fail)
        assert main(["strategies"]) == 1
        line = _one_error_line(capsys.readouterr().err, "strategies")
        assert exc.strerror in line
