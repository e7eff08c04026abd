"""The Classes page's answers, as the script gives them (the browser's side is in
tests/test_classes_page_browser.py): a rename to the name a class already has changes nothing and
says so, a rename clears the field, each change's outcome shows in the tab (or list) that made it,
and the class dropdowns send their current name and count whenever these change."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import Tab

from ralif.project import Project
from ralif.ui.state import PROJECT_KEY

PAGE = Path(__file__).resolve().parents[1] / "views" / "5_Classes.py"
TABS = ["Add", "Rename", "Merge", "Delete"]


@pytest.fixture()
def demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    project = Project.create_demo(tmp_path / "projects" / "demo", initial_labels=40, run_first_round=False)
    monkeypatch.setenv("RALIF_PROJECTS", str(tmp_path / "projects"))
    return project


def _page(project: Project) -> AppTest:
    at = AppTest.from_file(str(PAGE), default_timeout=60)
    at.session_state[PROJECT_KEY] = str(project.folder)
    at.run()
    assert not at.exception, at.exception
    return at


def _tab(at: AppTest, label: str) -> Tab:
    return at.tabs[TABS.index(label)]


def _texts(elements: Iterable[Any]) -> str:
    return " ".join(e.value for e in elements).replace("\\", "")


def _label(project: Project, cid: int) -> str:
    c = next(c for c in project.classes() if c.id == cid)
    return f"{c.name} ({c.count:,} labeled)"


def test_a_rename_to_the_same_name_changes_nothing_and_says_so(demo: Project) -> None:
    at = _page(demo)
    cat = demo.class_id("cat")
    # The name it has, spaces around it or not (Enter pressed again in the field): nothing
    # changes, and the page says why.
    at.selectbox(key="rename_which").set_value(cat)
    at.text_input(key="rename_to").input("  cat ")
    at.button(key="FormSubmitter:rename_class-Rename").click().run()
    assert not at.exception, at.exception
    assert not at.success, _texts(at.success)
    assert "'cat' already has that name; nothing changed." in _texts(_tab(at, "Rename").info)
    assert "cat" in [c.name for c in demo.classes()]

    at.text_input(key="rename_to").input("kitten")
    at.button(key="FormSubmitter:rename_class-Rename").click().run()
    assert "Renamed 'cat' to 'kitten'" in _texts(at.success)
    # The field is empty again: Enter pressed once more cannot rename a second time.
    assert at.text_input(key="rename_to").value == ""
    # Only the case differs: that is a rename.
    at.selectbox(key="rename_which").set_value(cat)
    at.text_input(key="rename_to").input("Kitten")
    at.button(key="FormSubmitter:rename_class-Rename").click().run()
    assert "Renamed 'kitten' to 'Kitten'" in _texts(at.success)
    assert "Kitten" in [c.name for c in demo.classes()]


def test_each_outcome_shows_beside_the_form_that_made_it(demo: Project) -> None:
    at = _page(demo)
    at.text_input(key="add_name").input("fox")
    at.button(key="FormSubmitter:add_class-Add class").click().run()
    assert "Added class 'fox'." in _texts(_tab(at, "Add").success)

    at.selectbox(key="rename_which").set_value(demo.class_id("fox"))
    at.text_input(key="rename_to").input("vixen")
    at.button(key="FormSubmitter:rename_class-Rename").click().run()
    assert "Renamed 'fox' to 'vixen'" in _texts(_tab(at, "Rename").success)
    assert not _tab(at, "Add").success

    dog, cat = demo.class_id("dog"), demo.class_id("cat")
    at.selectbox(key="merge_from").set_value(dog)
    at.selectbox(key="merge_into").set_value(cat)
    at.button(key="FormSubmitter:merge_class-Merge").click().run()
    assert "move to cat" in _texts(_tab(at, "Merge").warning)
    at.button(key="merge_confirm").click().run()
    assert "Merged 'dog' into 'cat'" in _texts(_tab(at, "Merge").success)

    at.selectbox(key="delete_which").set_value(demo.class_id("vixen"))
    at.checkbox(key="delete_sure").check()
    at.button(key="FormSubmitter:delete_class-Delete").click().run()
    assert "Deleted 'vixen'" in _texts(_tab(at, "Delete").success)
    # Only there: not also in the box at the top of the page, which may be out of view.
    assert len(at.success) == 1


def test_the_dropdowns_send_current_names_and_counts(demo: Project) -> None:
    at = _page(demo)
    dog, cat, horse = demo.class_id("dog"), demo.class_id("cat"), demo.class_id("horse")
    at.selectbox(key="delete_which").set_value(horse)
    at.button(key="FormSubmitter:delete_class-Delete").click().run()     # not ticked: asks first
    at.selectbox(key="merge_from").set_value(dog)
    at.selectbox(key="merge_into").set_value(cat)
    at.button(key="FormSubmitter:merge_class-Merge").click().run()
    at.button(key="merge_cancel").click().run()

    def sent(key: str) -> str | None:
        """The text the browser is told to show chosen (None: it keeps its own)."""
        proto = at.selectbox(key=key).proto
        return proto.raw_value if proto.set_value else None

    # A rename of the class chosen in the Merge tab: its box gets the new name.
    at.selectbox(key="rename_which").set_value(dog)
    at.text_input(key="rename_to").input("**doggo**")
    at.button(key="FormSubmitter:rename_class-Rename").click().run()
    assert sent("merge_from") == _label(demo, dog) and _label(demo, dog).startswith("**doggo** (")
    assert sent("merge_into") is None, "an unchanged text is not sent again"

    # A merge: the class merged into keeps its place with its new count; the class merged away
    # gives way to another class than the one merged into.
    at.button(key="FormSubmitter:merge_class-Merge").click().run()
    at.button(key="merge_confirm").click().run()
    assert at.selectbox(key="merge_into").value == cat
    assert sent("merge_into") == _label(demo, cat)
    assert at.selectbox(key="merge_from").value not in (dog, cat)
    assert at.selectbox(key="delete_which").value == horse

    # An undo: the counts go back, and the boxes say so.
    merge = demo.recent_actions(("merge",), limit=1)[0]
    at.button(key=f"undo_class_{merge.id}").click().run()
    assert not at.exception, at.exception
    assert "Undone" in _texts(at.success)
    assert sent("merge_into") == _label(demo, cat)


def test_the_counts_keep_their_place_beside_a_long_name(demo: Project) -> None:
    """The name column has a set width: however long a name, the counts stay in the table's
    width (296 pixels at a 1280x720 window), not pushed out of view by an autosized name."""
    demo.rename_class(demo.class_id("airplane"), "a very long class name " * 8)
    at = _page(demo)
    config = json.loads(at.dataframe[0].proto.columns)
    widths = [config.get(c, {}).get("width") for c in ("key", "class", "labeled")]
    assert all(isinstance(w, int) for w in widths), config
    assert sum(widths) <= 290, widths
    assert at.dataframe[0].value["labeled"].tolist()[0] == 4
