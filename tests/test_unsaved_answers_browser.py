"""Answers given while the project cannot be written, in Chromium at 1280×720: the grid keeps them
and says why they wait (the disk is full), sends them again once it can, drops the failure message
once they are saved, puts the focus on the first image still without an answer when the page is
visited again (the next key must never overwrite an answer that waited), and a submit that
cannot be written leaves the batch and its grid on the page.

No disk is filled: a ``sitecustomize`` module on the app's path makes every database write of the
app process fail as a full disk does, for as long as a flag file exists. The test's own project
handle writes and reads as usual."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_e2e_browser import (
    GRID,
    click_until_done,
    page_idle,
    pytestmark,
    settle,
    wait_until,
)
from test_label_keys_browser import demo_label_page

from ralif.project import Project

__all__ = ["pytestmark"]

FLAG_ENV = "RALIF_TEST_FULL_DISK"
HOOK = f'''
import os

from ralif.project import store as _store
from ralif.project.dbfile import disk_full as _disk_full

_write = _store.Store.write


def _full_disk_write(self):
    if os.path.exists(os.environ["{FLAG_ENV}"]):
        raise _disk_full(str(self.folder))
    return _write(self)


_store.Store.write = _full_disk_write
'''


class Disk:
    """The app's disk: ``full()`` makes its writes fail, ``free()`` lets them through again."""

    def __init__(self, flag: Path) -> None:
        self.flag = flag

    def full(self) -> None:
        self.flag.touch()

    def free(self) -> None:
        self.flag.unlink(missing_ok=True)


@pytest.fixture()
def full_disk_app(tmp_path: Path) -> Iterator[tuple[Any, Project, Disk]]:
    """(page, project, disk): the Label page of the demo, in an app whose disk can fill up."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK)
    disk = Disk(tmp_path / "disk-full")
    path = os.pathsep.join(p for p in (str(hook), os.environ.get("PYTHONPATH", "")) if p)
    env = {"PYTHONPATH": path, FLAG_ENV: str(disk.flag)}
    with demo_label_page(tmp_path, env, ready=settle, timeout_ms=90_000) as (page, app):
        yield page, Project.open(app.projects / "demo"), disk


def _grid(page: Any) -> Any:
    return page.frame_locator(GRID).first


def _status(page: Any) -> str:
    return _grid(page).locator("#status").inner_text()


def _message(page: Any) -> str:
    return _grid(page).locator("#msg").evaluate("m => m.classList.contains('show') ? m.innerText : ''")


def _boxes(page: Any) -> str:
    return " ".join(page.locator("[data-testid=stAlert]").all_inner_texts())


def _focused(page: Any) -> int:
    return int(_grid(page).locator(".tile.focus").get_attribute("data-image-id"))


def _answer(page: Any, project: Project, key: str, n: int) -> None:
    """``n`` answers by key, each saved before the next key (the page idle after them)."""
    before = project.progress().pending_done
    for _ in range(n):
        page.keyboard.press(key)
    wait_until(lambda: project.progress().pending_done == before + n, 30, f"{n} answers saved")
    page_idle(page)


def _two_answers_kept(page: Any, project: Project, disk: Disk) -> None:
    """Two answers by key on a full disk: not saved, and kept by the grid."""
    before = project.progress().pending_done
    disk.full()
    page.keyboard.press("1")
    page.keyboard.press("1")
    wait_until(lambda: "Not saved yet (2 action(s)" in _boxes(page), 30, "the page's box about the two answers")
    wait_until(lambda: "not saved yet" in _status(page), 30, "the grid counting the answers that wait")
    assert project.progress().pending_done == before


def _visit(page: Any, link: str, marker: Any) -> None:
    click_until_done(page, lambda: page.get_by_role("link", name=link).click(), marker.is_visible,
                     f"the {link} page")


def test_the_next_key_after_answers_sent_again_answers_the_first_open_image(
        full_disk_app: tuple[Any, Project, Disk]) -> None:
    page, project, disk = full_disk_app
    batch = [b.image_id for b in project.pending_batch()]
    keys = {c.hotkey: c.id for c in project.classes()}
    _answer(page, project, "1", 3)
    _two_answers_kept(page, project, disk)
    # Away to Classes, space freed there, back to Label: the grid restores the two answers from
    # the tab's storage and sends them again.
    _visit(page, "Classes", page.get_by_text("Save settings").first)
    disk.free()
    _visit(page, "Label", _grid(page).locator("#submit"))
    wait_until(lambda: project.progress().pending_done == 5, 60, "the two kept answers saved")
    page_idle(page)
    assert [project.label_of(i).class_id for i in batch[:5]] == [keys["1"]] * 5
    # The focus is on #6, the first image without an answer, not on #4 which now has one.
    wait_until(lambda: _focused(page) == batch[5], 10, f"the focus on #6 (it is on image {_focused(page)})")
    settle(page)
    page.keyboard.press("2")
    wait_until(lambda: project.label_of(batch[5]).class_id == keys["2"], 30, "#6 answered by the next key")
    page_idle(page)
    assert [(project.label_of(i).class_id, project.label_of(i).version) for i in batch[3:5]] == \
        [(keys["1"], 1)] * 2, "an answer that waited was overwritten"
    assert project.progress().pending_done == 6


def test_the_grid_says_why_the_answers_wait(full_disk_app: tuple[Any, Project, Disk]) -> None:
    page, project, disk = full_disk_app
    _two_answers_kept(page, project, disk)
    # Not "waiting for the app": nothing is wrong with the app, and the person can free space.
    wait_until(lambda: "2 answers not saved yet: the disk is full; they are kept in this page and sent again "
                       "automatically" in _status(page), 15, f"the reason in the grid (it says {_status(page)!r})")
    page_idle(page)
    assert "waiting for the app" not in _status(page)


def test_the_failure_message_goes_once_the_kept_answers_are_saved(full_disk_app: tuple[Any, Project, Disk]) -> None:
    page, project, disk = full_disk_app
    _two_answers_kept(page, project, disk)
    assert "Not saved yet" in _message(page)
    # Space again, on the same page: the grid's next resend is saved, and no message says otherwise.
    disk.free()
    wait_until(lambda: project.progress().pending_done == 2, 60, "the two kept answers saved")
    wait_until(lambda: "every answer saved" in _status(page), 30, "the grid saying every answer is saved")
    wait_until(lambda: "Not saved" not in _message(page) + _boxes(page), 15, "the failure message gone")
    page_idle(page)
    assert "Not saved" not in _message(page) + _boxes(page)
    assert "every answer saved" in _status(page)


def test_a_submit_on_a_full_disk_keeps_the_batch_on_the_page(full_disk_app: tuple[Any, Project, Disk]) -> None:
    page, project, disk = full_disk_app
    number = project.pending_round()
    _answer(page, project, "1", 2)
    disk.full()
    # Enter asks (18 images have no answer), Enter again submits anyway.
    page.keyboard.press("Enter")
    wait_until(lambda: "have no answer yet" in _message(page), 10, "the submit question")
    page.keyboard.press("Enter")
    wait_until(lambda: "The batch was not submitted" in _boxes(page), 60, "the submit's error box")
    page_idle(page)
    assert "is full" in _boxes(page) and "could not be shown" not in _boxes(page)
    # The grid is still there with the batch and says what happened; nothing was lost.
    assert _grid(page).locator(".tile").count() == 20
    assert _message(page).startswith("The batch was not submitted: the disk is full.")
    assert project.pending_round() == number and project.progress().pending_done == 2
    # With space again, Enter (twice) submits the batch.
    disk.free()
    settle(page)
    page.keyboard.press("Enter")
    wait_until(lambda: "have no answer yet" in _message(page), 10, "the submit question again")
    page.keyboard.press("Enter")
    wait_until(lambda: project.pending_round() != number, 60, "the batch submitted")
