"""Merging and deleting a class ask first, with the numbers of labels they move or remove."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from ralif.project import Project
from ralif.ui.state import PROJECT_KEY
from ralif.ui.text import counted

PAGE = Path(__file__).resolve().parents[1] / "views" / "5_Classes.py"


def test_merge_and_delete_confirm_with_counts(tmp_path: Path, monkeypatch) -> None:
    demo = Project.create_demo(tmp_path / "projects" / "demo")
    demo.oracle_label_batch()
    counts = {c.name: c.count for c in demo.classes()}
    dog, cat, horse = demo.class_id("dog"), demo.class_id("cat"), demo.class_id("horse")
    monkeypatch.setenv("RALIF_PROJECTS", str(tmp_path / "projects"))
    at = AppTest.from_file(str(PAGE), default_timeout=60)
    at.session_state[PROJECT_KEY] = str(demo.folder)
    at.run()
    at.selectbox(key="merge_from").set_value(dog)
    at.selectbox(key="merge_into").set_value(cat)
    at.button(key="FormSubmitter:merge_class-Merge").click().run()
    # Asked, with the counts; nothing changed yet.
    moves = "moves" if counts["dog"] == 1 else "move"
    assert any(f"{counted(counts['dog'], 'label')} {moves} to cat" in w.value for w in at.warning)
    assert "dog" in [c.name for c in demo.classes()]
    # Cancel leaves everything as it was.
    at.button(key="merge_cancel").click().run()
    assert not at.warning and "dog" in [c.name for c in demo.classes()]
    at.button(key="FormSubmitter:merge_class-Merge").click().run()
    at.button(key="merge_confirm").click().run()
    assert not at.exception, at.exception
    assert {c.name: c.count for c in demo.classes()}["cat"] == counts["cat"] + counts["dog"]
    assert f"{counted(counts['dog'], 'label')} moved" in at.success[0].value

    at.selectbox(key="delete_which").set_value(horse)
    at.button(key="FormSubmitter:delete_class-Delete").click().run()
    assert f"removes {counted(counts['horse'], 'label')}" in at.warning[0].value
    assert "horse" in [c.name for c in demo.classes()]
