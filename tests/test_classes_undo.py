"""The Classes page: a merge and a delete are each one history action with an Undo button there,
which also works after a reload (it reads the project's history), and keys stay with classes."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from ralif.project import Project
from ralif.ui.state import PROJECT_KEY

PAGE = Path(__file__).resolve().parents[1] / "views" / "5_Classes.py"


def _page(folder: Path) -> AppTest:
    at = AppTest.from_file(str(PAGE), default_timeout=60)
    at.session_state[PROJECT_KEY] = str(folder)
    at.run()
    assert not at.exception, at.exception
    return at


def test_merge_then_undo_on_the_classes_page(tmp_path: Path, monkeypatch) -> None:
    demo = Project.create_demo(tmp_path / "projects" / "demo")
    demo.oracle_label_batch()
    monkeypatch.setenv("RALIF_PROJECTS", str(tmp_path / "projects"))
    before = {c.name: (c.count, c.hotkey, c.color) for c in demo.classes()}
    dog, cat = demo.class_id("dog"), demo.class_id("cat")
    at = _page(demo.folder)
    assert [r for r in at.dataframe[0].value["key"]] == [before[n][1] for n in at.dataframe[0].value["class"]]
    at.selectbox(key="merge_from").set_value(dog)
    at.selectbox(key="merge_into").set_value(cat)
    at.button(key="FormSubmitter:merge_class-Merge").click().run()
    at.button(key="merge_confirm").click().run()
    assert "dog" not in [c.name for c in demo.classes()]
    # Another session (a reload) finds the merge in the history and undoes it.
    again = _page(demo.folder)
    merge = demo.recent_actions(("merge", "delete-class"), limit=1)[0]
    assert merge.kind == "merge"
    again.button(key=f"undo_class_{merge.id}").click().run()
    assert not again.exception, again.exception
    assert {c.name: (c.count, c.hotkey, c.color) for c in demo.classes()} == before
    assert "Class back: 'dog'" in again.success[0].value.replace("\\", "")
    assert not demo.recent_actions(("merge", "delete-class"))


def test_keys_shown_stay_with_their_classes_after_a_delete(tmp_path: Path, monkeypatch) -> None:
    demo = Project.create_demo(tmp_path / "projects" / "demo", run_first_round=False)
    monkeypatch.setenv("RALIF_PROJECTS", str(tmp_path / "projects"))
    keys = {c.name: c.hotkey for c in demo.classes()}
    demo.delete_class(demo.class_id("automobile"))
    at = _page(demo.folder)
    table = at.dataframe[0].value
    shown = dict(zip(table["class"], table["key"]))
    assert shown == {n: k for n, k in keys.items() if n != "automobile"}
    assert shown["truck"] == "0" and shown["bird"] == "3"
