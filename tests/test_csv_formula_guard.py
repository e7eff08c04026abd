"""CSV exports are opened in spreadsheets, which run a cell starting with =, +, -, @ (or a tab or a
carriage return before one) as a formula: a class named ``=HYPERLINK(...)`` would be a live formula
in the labels export. Such text cells are written with a leading ``'`` (shown as text), and the
value is given back exactly by ``from_spreadsheet_cell``; the JSON export keeps the names as they
are."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from helpers import make_images

from ralif.project import Project

NAMES = ["=1+2", "+cmd", "-5", "@SUM(A1)", "'=quoted", "plain"]


@pytest.fixture()
def labeled(tmp_path: Path) -> Project:
    make_images(tmp_path / "imgs", per_class=2, classes=NAMES)
    project = Project.create(tmp_path / "proj", tmp_path / "imgs", encoder="pixels:4", batch_size=4)
    assert {c.name for c in project.classes()} == set(NAMES)
    assert project.progress().labeled == 12
    return project


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_cells_a_spreadsheet_would_run_get_a_quote_and_come_back_exactly() -> None:
    from ralif.csv_cells import from_spreadsheet_cell, spreadsheet_cell

    cases = {"=1+2": "'=1+2", "+x": "'+x", "-x": "'-x", "@x": "'@x", "\t=x": "'\t=x", "\r=x": "'\r=x",
             "'=x": "''=x", "''": "'''", "'x": "'x", "'": "'", "": "", "x=1": "x=1", "/data/a.png": "/data/a.png"}
    for value, cell in cases.items():
        assert spreadsheet_cell(value) == cell, value
        assert from_spreadsheet_cell(cell) == value, value
    assert spreadsheet_cell(-3) == -3 and spreadsheet_cell(None) is None


def test_the_labels_csv_has_no_formula_cells_and_the_json_keeps_the_names(labeled: Project) -> None:
    rows = _rows(labeled.export_csv())
    assert len(rows) == 12
    for row in rows:
        for value in row.values():
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), row
    assert {r["label"] for r in rows} == {"'=1+2", "'+cmd", "'-5", "'@SUM(A1)", "''=quoted", "plain"}
    doc = json.loads(labeled.export_json().read_text(encoding="utf-8"))
    assert {r["label"] for r in doc["labels"]} == set(NAMES)


def test_the_written_cells_read_back_as_the_names(labeled: Project) -> None:
    from ralif.csv_cells import from_spreadsheet_cell

    rows = _rows(labeled.export_csv())
    by_path = {from_spreadsheet_cell(r["path"]): from_spreadsheet_cell(r["label"]) for r in rows}
    truth = {r.path: r.label.class_name for r in labeled.images_page("all", limit=100)}
    assert by_path == truth


# The app reads its own labels export back: a new project from it as a CSV manifest, or
# ``import_labels``.
def test_a_project_made_from_the_export_has_the_same_classes(labeled: Project, tmp_path: Path) -> None:
    again = Project.create(tmp_path / "again", labeled.export_csv(), encoder="pixels:4", batch_size=4)
    assert {c.name for c in again.classes()} == set(NAMES)
    assert again.progress().labeled == 12


def test_import_labels_takes_the_export_back(labeled: Project, tmp_path: Path) -> None:
    again = Project.create(tmp_path / "again", tmp_path / "imgs", encoder="pixels:4", batch_size=4,
                           known_labels="ignore", classes=NAMES)
    assert again.progress().labeled == 0
    again.import_labels(labeled.export_csv())
    assert again.progress().labeled == 12


def test_predictions_csv_has_no_formula_cells(tmp_path: Path) -> None:
    from ralif.cli import main as cli_main

    make_images(tmp_path / "imgs", per_class=4, classes=["=1+2", "-plain"])
    project = Project.create(tmp_path / "proj", tmp_path / "imgs", encoder="pixels:2", batch_size=2)
    assert project.run_round()["cold_start"] is False
    out = tmp_path / "preds.csv"
    assert cli_main(["predict", "--model", str(project.folder), "--images", str(tmp_path / "imgs"),
                     "--out", str(out), "--probabilities"]) == 0
    rows = _rows(out)
    assert len(rows) == 8
    for row in rows:
        for value in [*row, *row.values()]:
            assert not value.startswith(("=", "+", "-", "@")), row
    assert {r["prediction"] for r in rows} <= {"'=1+2", "'-plain"}
