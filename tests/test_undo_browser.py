"""In Chromium at 1280×720: class keys stay with their classes after a delete and a merge, undo
after a reload (shown with the image and its label), a merge undone from the Classes page, Enter
with unanswered images, and the class finder at 1,000 classes.

With ``RALIF_SCREENSHOTS=DIR`` the undo notice is saved as DIR/undo-notice.png."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_e2e_browser import (
    GRID,
    click_until_done,
    launch,
    pytestmark,
    settle,
    sync_playwright,
    wait_until,
)

from ralif.project import Project
from ralif.ui.launch import AppServer

__all__ = ["pytestmark"]

BAR = "bar => Array.from(bar.querySelectorAll('.cls')).map(b => [b.lastChild.textContent, " \
      "b.querySelector('.k').textContent, getComputedStyle(b.querySelector('.k')).backgroundColor])"


@pytest.fixture()
def app_page(tmp_path: Path) -> Iterator[tuple[object, AppServer]]:
    with AppServer(tmp_path / "projects", log=str(tmp_path / "app.log")) as app, sync_playwright() as pw:
        browser = launch(pw)
        try:
            yield browser.new_context(viewport={"width": 1280, "height": 720}).new_page(), app
        finally:
            browser.close()


def _grid(page):
    return page.frame_locator(GRID).first


def _bar(page) -> dict[str, tuple[str, str]]:
    return {name: (key, colour) for name, key, colour in _grid(page).locator("#bar").evaluate(BAR)}


def _settle(page) -> None:
    settle(page)


def _focused(page) -> int:
    return int(_grid(page).locator(".tile.focus").get_attribute("data-image-id"))


def _message(page) -> str:
    return _grid(page).locator("#msg").inner_text()


def test_keys_undo_after_reload_merge_undo_and_enter(app_page: tuple[object, AppServer]) -> None:
    page, app = app_page
    page.goto(app.url)
    _grid(page).locator(".tile").first.wait_for(timeout=90_000)
    project = Project.open(app.projects / "demo", client="script")
    keys = wait_until(lambda: _bar(page), 20, "the class bar")
    assert [k for k, _ in keys.values()] == list("1234567890")

    # Keys and colours stay with their classes after a delete and a merge (made elsewhere).
    project.delete_class(project.class_id("automobile"))
    project.merge_classes(project.class_id("dog"), project.class_id("cat"))
    page.reload()
    _grid(page).locator(".tile").first.wait_for(timeout=60_000)
    after = wait_until(lambda: _bar(page), 20, "the class bar after the edits")
    assert after == {n: v for n, v in keys.items() if n not in ("automobile", "dog")}

    # Label one image with the key "1" (airplane), reload, undo: the undo reaches it from the history.
    _settle(page)
    target = _focused(page)
    page.keyboard.press("1")
    wait_until(lambda: project.label_of(target).class_name == "airplane", 20, "the label saved")
    page.reload()
    _grid(page).locator(".tile").first.wait_for(timeout=60_000)
    _settle(page)
    page.keyboard.press("u")
    try:
        wait_until(lambda: project.label_of(target).state == "unlabeled", 20, "the undo after a reload")
    except AssertionError:
        raise AssertionError(f"not undone; the grid says {_message(page)!r}; history "
                             f"{[tuple(r) for r in project.store.query('SELECT * FROM actions')]}") from None
    wait_until(lambda: "Undone:" in _message(page), 20, "the undo notice")
    notice = _grid(page).locator("#msg")
    assert notice.locator("figure img").get_attribute("src").startswith("data:image/jpeg")
    tile = _grid(page).locator(f'.tile[data-image-id="{target}"]')
    assert notice.locator("figcaption").inner_text() == f"{tile.locator('.ttl').first.inner_text()}: airplane"
    if os.environ.get("RALIF_SCREENSHOTS"):
        folder = Path(os.environ["RALIF_SCREENSHOTS"])
        folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(folder / "undo-notice.png"))

    # Enter with unanswered images: the first Enter says how many and submits nothing; the second
    # submits, and the page says they stay unlabeled.
    batch = project.pending_round()
    left = project.unanswered()[0]
    assert left > 0
    _settle(page)
    page.keyboard.press("Enter")
    wait_until(lambda: "have no answer yet" in _message(page), 20, "the unanswered warning")
    assert f"{left} of" in _message(page)
    time.sleep(1.0)
    assert project.pending_round() == batch
    page.keyboard.press("Enter")
    wait_until(lambda: project.pending_round() != batch, 90, "the batch submitted", every=0.25)
    wait_until(lambda: page.get_by_text(f"{left} unanswered images stay unlabeled").count() > 0, 30,
               "the page naming the unanswered images")

    # Merge, then undo it on the Classes page.
    page.goto(f"{app.url}/Classes?project=demo")
    page.get_by_role("tab", name="Merge").click()
    page.get_by_role("button", name="Merge", exact=True).click()
    click_until_done(page, lambda: page.get_by_role("button", name="Merge: move").click(),
                     lambda: len(project.classes()) == 7, "the merge")
    click_until_done(page, lambda: page.get_by_role("button", name="Undo").first.click(),
                     lambda: len(project.classes()) == 8, "the merge undone")
    wait_until(lambda: page.get_by_text("Class back").count() > 0, 30, "the undo message")


def test_class_finder_at_a_thousand_classes(tmp_path: Path) -> None:
    projects = tmp_path / "projects"
    demo = Project.create_demo(projects / "many")
    with demo.store.write() as conn:
        conn.executemany("INSERT INTO classes(name, position, created_at) VALUES (?, ?, 0)",
                         [(f"species {k:04d}", 10 + k) for k in range(990)])
    assert len(demo.classes()) == 1000
    with AppServer(projects, log=str(tmp_path / "app.log")) as app, sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 720}).new_page()
            page.goto(f"{app.url}/Label?project=many")
            grid = _grid(page)
            grid.locator(".tile").first.wait_for(timeout=90_000)
            _settle(page)
            # The bar keeps to the ten keyed classes plus the finder button: the grid stays on screen.
            assert grid.locator("#bar .cls").count() == 10
            assert "1,000 classes" in grid.locator("#more-classes").inner_text()
            head = grid.locator("#head").bounding_box()
            assert head is not None and head["height"] < 200
            target = _focused(page)
            started = time.monotonic()
            page.keyboard.press("/")
            page.keyboard.type("ies 0742")
            wait_until(lambda: grid.locator("#finder li.on").count() == 1, 10, "the finder's match")
            assert grid.locator("#finder li.on").inner_text().endswith("species 0742")
            page.keyboard.press("Enter")
            wait_until(lambda: demo.label_of(target).class_name == "species 0742", 20, "the label by the finder")
            assert time.monotonic() - started < 15
            # The page still answers the keys: the next image gets a keyed class.
            nxt = _focused(page)
            assert nxt != target
            page.keyboard.press("2")
            wait_until(lambda: demo.label_of(nxt).class_id is not None, 20, "the next label")
        finally:
            browser.close()
