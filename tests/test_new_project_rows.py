"""The new-project preview as a person reads it (Streamlit's AppTest): each folder's row and its
"Import as" box, folders that make one class, a name too long for a class, an image a manifest lists
under two labels."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_app_new_project import decision_boxes, home, no_worker, projects_dir, scan, texts  # noqa: F401
from test_project import BLUE, RED, _png

from ralif.project.validation import MAX_CLASS_NAME
from ralif.ui.text import lit

LONG = "w" * (MAX_CLASS_NAME + 12)
# Projects go to a temporary folder; a created project's first round is recorded, not run.
pytestmark = pytest.mark.usefixtures("projects_dir", "no_worker")


def _folders(root: Path, names: dict[str, int]) -> Path:
    n = 0
    for name, count in names.items():
        for i in range(count):
            _png(root / name / f"{i}.png", RED if n % 2 else BLUE, n)
            n += 1
    return root


def test_rows_name_their_folder_in_bold(tmp_path: Path) -> None:
    src = _folders(tmp_path / "src", {" lead trail ": 2, "cat_a": 2, "dog*": 2})
    at = scan(home(), "Rows", src)
    assert not at.exception, at.exception
    markdown = [e.value for e in at.markdown]
    assert any(m.startswith("**lead trail** · 2 images") for m in markdown), markdown
    assert not any("** lead" in m for m in markdown), "bold around a space shows its asterisks"
    # The exact name, its spaces kept.
    assert any("“\u00a0lead\u00a0trail\u00a0”" in c.value for c in at.caption)


def test_each_import_as_box_names_its_folder(tmp_path: Path) -> None:
    src = _folders(tmp_path / "src", {" lead trail ": 2, "cat_a (wild)": 2, "dog*": 2})
    at = scan(home(), "Rows", src)
    # What a screen reader announces for each box: an everyday name exactly as written (a backslash
    # would be read out), only a character Markdown would act on escaped.
    labels = [b.label for b in decision_boxes(at)]
    assert labels == ["Import cat_a (wild) as", "Import dog\\* as", "Import lead trail as"]


def test_folders_that_make_one_class_are_named_in_the_preview(tmp_path: Path) -> None:
    src = _folders(tmp_path / "src", {"Dog": 1, "dog": 3, "cat": 2})
    at = scan(home(), "Merge", src)
    shown = texts(at)
    assert "3 class folders" in shown and "2 classes, 6 labeled images" in shown
    assert ("Folders 'Dog' (1 image) and 'dog' (3 images) are one class, 'dog' (the spelling most of their "
            "images use)") in shown


def test_a_name_too_long_for_a_class_is_flagged_on_its_row_and_create_is_off(tmp_path: Path) -> None:
    src = _folders(tmp_path / "src", {LONG: 2, "cat": 2, "dog": 2})
    at = scan(home(), "Long", src)
    at.radio(key="new_encoder").set_value("spec").run()
    at.text_input(key="new_encoder_spec").input("pixels:4").run()
    errors = [e.value for e in at.error]
    limit = f"the name has {len(LONG)} characters; a class name can have at most {MAX_CLASS_NAME}"
    assert any(e.startswith(f"This folder cannot be a class: {lit(limit)}") for e in errors), errors
    assert any(e.startswith(f"The folder {lit(repr(LONG))} cannot be a class") for e in errors), errors
    assert at.button(key="new_create").disabled
    assert "Create project is off until the problem" in texts(at)
    # Taking its images unlabeled clears the way.
    long_box = next(b for b in decision_boxes(at) if LONG in b.label)
    long_box.set_value("unlabeled").run()
    assert not at.error and not at.button(key="new_create").disabled
    at.button(key="new_create").click().run()
    assert not at.exception, at.exception
    assert "Created **long**" in texts(at)


def test_folders_that_make_one_class_are_named_while_another_row_blocks_the_plan(tmp_path: Path) -> None:
    src = _folders(tmp_path / "src", {LONG: 1, "Dog": 1, "dog": 3})
    at = scan(home(), "Both", src)
    assert at.button(key="new_create").disabled
    assert "Folders 'Dog' (1 image) and 'dog' (3 images) are one class" in texts(at)


def test_an_image_listed_under_two_labels_is_a_conflict_not_an_unreadable_file(tmp_path: Path) -> None:
    for i, name in enumerate(("truck/0021.png", "truck/0022.png", "car/0001.png", "car/0002.png")):
        _png(tmp_path / name, RED if i < 2 else BLUE, i)
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\ntruck/0021.png,<i>it</i>\ntruck/0022.png,truck\ncar/0001.png,car\n"
                   "car/0002.png,car\ntruck/0021.png,other\ncar/0002.png,car\n")
    at = scan(home(), "Rows", csv)
    assert not at.exception, at.exception
    titles = [e.label for e in at.expander]
    assert not any("cannot be read" in t for t in titles), titles
    assert "1 image under two different labels (imported once, without a label)" in titles
    shown = texts(at)
    assert "1 row repeats an image listed before (imported once)" in shown
    assert "2 classes, 3 labeled images, 1 unlabeled" in shown
