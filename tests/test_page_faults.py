"""The Label page under faults of its surroundings, with Streamlit's AppTest: a project folder
replaced under the open page (restored from a backup) or deleted, a full disk while answers are
sent, and a read-only project. The grid's events are sent as in tests/test_app.py."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from test_app import demo, no_worker, page, projects_dir, send, texts  # noqa: F401

from ralif.project import Project
from ralif.project import store as store_mod
from ralif.project.store import DB_NAME, DiskFullError, Store, release


def _label_in_file(db: Path, image_id: int) -> int | None:
    conn = sqlite3.connect(db)
    try:
        row = conn.execute("SELECT class_id FROM labels WHERE image_id = ? AND state = 'labeled'",
                           (image_id,)).fetchone()
    finally:
        conn.close()
    return None if row is None else int(row[0])


def test_a_folder_replaced_under_the_page_is_reopened_and_answers_go_to_it(
        demo: Project, no_worker: list[str], tmp_path: Path) -> None:  # noqa: F811
    at = page("views/1_Label.py", demo).run()
    assert not at.exception
    a, b = (x.image_id for x in demo.pending_batch()[:2])
    cat = demo.class_id("cat")
    backup = tmp_path / "backup"
    shutil.copytree(demo.folder, backup)
    send(at, "label_grid", {"id": "r-1", "type": "label", "image_id": a, "class_id": cat, "version": 0})
    assert _label_in_file(demo.folder / DB_NAME, a) == cat
    # rm -rf folder && cp -a backup folder, with the page open.
    shutil.rmtree(demo.folder)
    shutil.copytree(backup, demo.folder)
    send(at, "label_grid", {"id": "r-2", "type": "label", "image_id": b, "class_id": cat, "version": 0}, seq=2)
    assert not at.exception
    # The answer given after the restore is in the file now at the path, not in the deleted one.
    assert _label_in_file(demo.folder / DB_NAME, b) == cat
    assert _label_in_file(demo.folder / DB_NAME, a) is None     # the backup predates it


def test_a_deleted_project_folder_gets_a_clear_box_and_nothing_is_written(
        demo: Project, no_worker: list[str]) -> None:  # noqa: F811
    at = page("views/1_Label.py", demo).run()
    assert not at.exception
    shutil.rmtree(demo.folder)
    at.run()
    assert not at.exception
    boxes = " ".join(e.value for e in at.error)
    assert "can no longer be used" in boxes and "is gone" in boxes and "ralif-app.log" in boxes
    assert not demo.folder.exists(), "something was written where the project was"


def test_an_answer_sent_on_a_full_disk_is_saved_when_space_returns(
        demo: Project, no_worker: list[str], monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    at = page("views/1_Label.py", demo).run()
    a = demo.pending_batch()[0].image_id
    cat = demo.class_id("cat")
    real_write = Store.write

    def full(self: Store):
        raise DiskFullError(f"the disk holding the project folder {self.folder} is full: this change was not "
                            f"saved (everything saved before it is kept). Free some space and try again")

    monkeypatch.setattr(Store, "write", full)
    event = {"id": "f-1", "type": "label", "image_id": a, "class_id": cat, "version": 0}
    send(at, "label_grid", event)
    assert demo.label_of(a).state == "unlabeled"
    monkeypatch.setattr(Store, "write", real_write)
    # The grid resends what was not acknowledged; with space again it is saved, once.
    send(at, "label_grid", event, seq=2)
    assert not at.exception
    assert demo.label_of(a).class_name == "cat" and demo.label_of(a).version == 1


def test_a_full_disk_on_the_label_page_shows_a_box_not_an_exception(
        demo: Project, no_worker: list[str], monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    at = page("views/1_Label.py", demo).run()
    a = demo.pending_batch()[0].image_id

    def full(self: Store):
        raise DiskFullError(f"the disk holding the project folder {self.folder} is full")

    monkeypatch.setattr(Store, "write", full)
    send(at, "label_grid", {"id": "f-1", "type": "label", "image_id": a, "class_id": demo.class_id("cat"),
                            "version": 0})
    assert not at.exception
    assert "is full" in texts(at)


def test_a_read_only_project_shows_its_pages_and_starts_no_round(
        demo: Project, no_worker: list[str], monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    # As in test_store_safety: the permission check is replaced, since root may write anyway.
    demo.submit_batch()     # a queued round, which a writable project's page would start
    release(demo.folder / DB_NAME)
    monkeypatch.setattr(store_mod, "writable", lambda path: False)
    at = page("views/1_Label.py", demo).run()
    assert not at.exception
    assert no_worker == [], "a round was started on a read-only project"
    export = page("views/4_Export.py", demo).run()
    assert not export.exception
    assert "open read-only" in texts(export)
    for path in ("views/2_Map.py", "views/3_Progress.py"):
        other = page(path, demo).run()
        assert not other.exception, path
