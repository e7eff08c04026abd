"""Class names that differ only in case, spaces or Unicode form name one class: a new or renamed
class that equals another that way is refused, naming the class that is there as it is written;
a class may still take another case of its own name."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
from test_project import _colors_folder

from ralif.project import Project, ProjectError
from ralif.project.classes import name_key


@pytest.fixture()
def project(tmp_path: Path) -> Project:
    return Project.create(tmp_path / "p", _colors_folder(tmp_path / "src", per_class=2), encoder="pixels:2",
                          classes=["red", "blue"])


def _names(project: Project) -> list[str]:
    return [c.name for c in project.classes()]


def test_name_key_ignores_case_spaces_and_unicode_form():
    nfd = unicodedata.normalize("NFD", "Café")
    assert nfd != "Café" and name_key(nfd) == name_key(" café ") == name_key("CAFÉ")
    assert name_key("Straße") == name_key("STRASSE")          # casefold, not lower
    assert name_key("cat") != name_key("cats")


@pytest.mark.parametrize("typed", [" Red ", "RED", "rEd", "red", "  red"])
def test_adding_another_case_of_a_class_is_refused_naming_it(project, typed):
    with pytest.raises(ProjectError) as err:
        project.add_class(typed)
    assert "a class named 'red' already exists" in str(err.value)
    if typed.strip() != "red":
        assert f"{typed.strip()!r} differs from it only in case or spaces" in str(err.value)
    assert _names(project) == ["red", "blue"]


def test_unicode_forms_are_one_name(project):
    project.add_class("café")
    with pytest.raises(ProjectError, match="a class named 'café' already exists"):
        project.add_class(unicodedata.normalize("NFD", "CAFÉ"))
    assert _names(project) == ["red", "blue", "café"]


def test_renaming_onto_another_class_up_to_case_is_refused(project):
    red, blue = project.class_id("red"), project.class_id("blue")
    with pytest.raises(ProjectError, match=r"a class named 'red' already exists .*; merge the two instead"):
        project.rename_class(blue, " Red")
    assert _names(project) == ["red", "blue"]
    # Its own name in another case is a rename like any other.
    project.rename_class(red, "Red")
    project.rename_class(blue, " BLUE ")
    assert _names(project) == ["Red", "BLUE"]
    with pytest.raises(ProjectError, match="a class named 'Red' already exists"):
        project.add_class("red")


def test_undoing_a_delete_is_refused_while_another_case_of_the_name_lives(project):
    blue = project.class_id("blue")
    project.delete_class(blue)
    project.add_class("Blue")
    action = project.recent_actions(("delete-class",), limit=1)[0]
    with pytest.raises(ProjectError, match="a class named 'Blue' exists again"):
        project.undo_action(action.id)


def test_the_classes_page_says_which_class_is_there(project, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from ralif.ui.state import PROJECT_KEY

    monkeypatch.setenv("RALIF_PROJECTS", str(project.folder.parent))
    page = Path(__file__).resolve().parents[1] / "views" / "5_Classes.py"
    at = AppTest.from_file(str(page), default_timeout=60)
    at.session_state[PROJECT_KEY] = str(project.folder)
    at.run()
    at.text_input(key="add_name").input(" Red ")
    at.button(key="FormSubmitter:add_class-Add class").click().run()
    assert not at.exception, at.exception
    shown = " ".join(e.value for e in at.error).replace("\\", "")
    assert "a class named 'red' already exists ('Red' differs from it only in case or spaces)" in shown
    assert not at.success and _names(project) == ["red", "blue"]
    at.text_input(key="add_name").input("  green   leaf ")
    at.button(key="FormSubmitter:add_class-Add class").click().run()
    assert "Added class 'green leaf'." in " ".join(e.value for e in at.success).replace("\\", "")


def test_imports_label_the_class_a_name_means_up_to_case(project, tmp_path):
    """A CSV's ' RED ' labels the class 'red', and folders 'Blue' and 'BLUE' added later label
    'blue': an import never makes a second class of a name that differs only in case or spaces."""
    from test_project import BLUE, RED, _png

    images = {r.path: r.image_id for r in project.images_page(limit=100)}
    first = sorted(images)[0]
    csv = tmp_path / "labels.csv"
    csv.write_text(f"path,label\n{first}, RED \n", encoding="utf-8")
    project.import_labels(csv)
    assert _names(project) == ["red", "blue"] and project.label_of(images[first]).class_name == "red"

    more = tmp_path / "more"
    _png(more / "Blue" / "x1.png", BLUE, 301)
    _png(more / "BLUE" / "x2.png", BLUE, 302)
    _png(more / "Green" / "g1.png", RED, 303)
    _png(more / "green " / "g2.png", RED, 304)
    report = project.add_images(more, add_unknown_classes=True)
    assert _names(project) == ["red", "blue", "Green"] and report.classes_added == ["Green"]
    added = {Path(r.path).name: r for r in project.images_page(limit=100) if r.path not in images}
    assert {n: r.label.class_name for n, r in added.items()} == {
        "x1.png": "blue", "x2.png": "blue", "g1.png": "Green", "g2.png": "Green"}


def test_the_preview_names_one_class_per_name_and_the_spelling_most_images_use(tmp_path):
    """Folders 'cat' (3 images) and 'Cat' (2): the plan counts one class 'cat' of 5, and the
    project created from it holds that class with every label."""
    from test_project import BLUE, RED, _png

    from ralif.folder_scan import build_plan, preview_source

    src = tmp_path / "src"
    for i in range(3):
        _png(src / "cat" / f"c{i}.png", RED, 400 + i)
    for i in range(2):
        _png(src / "Cat" / f"C{i}.png", RED, 410 + i)
    for i in range(3):
        _png(src / "dog" / f"d{i}.png", BLUE, 420 + i)
    plan = build_plan(preview_source(src, decode=False))
    assert plan.classes == ["cat", "dog"] and plan.labeled == 8
    project = Project.create(tmp_path / "p", plan.image_lists(), encoder="pixels:2")
    assert sorted(_names(project)) == ["cat", "dog"]
    counts = {c.name: c.count for c in project.classes()}
    assert counts == {"cat": 5, "dog": 3}
