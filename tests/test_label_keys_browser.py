"""The Label page's keys in Chromium at 1280×720, as a person uses them: Enter on a grid button
reached with Tab presses that button only, the "submit anyway?" question holds for the very next
key only, the tile size slider gives the keys back, the page's keys keep working after a submit
and after a visit to another page, and accepting a guess or undoing an answer leaves the right
words on screen. A key typed in the panel below the batch never answers an image out of sight, and
the grid takes the keys from the sidebar link that led to the page."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_e2e_browser import (
    GRID,
    PlaywrightError,
    click_until_shown,
    launch,
    page_idle,
    pytestmark,
    sync_playwright,
    tile_ids,
    wait_until,
)

from ralif.project import Project
from ralif.ui.launch import AppServer

__all__ = ["pytestmark"]


@contextlib.contextmanager
def demo_label_page(tmp_path: Path, env: dict[str, str] | None = None, ready: Callable[[Any], None] = page_idle,
                    timeout_ms: int = 60_000) -> Iterator[tuple[Any, AppServer]]:
    """(page, app): the demo's Label page at 1280×720, its batch drawn and ``ready`` waited for."""
    with AppServer(tmp_path / "projects", log=str(tmp_path / "app.log"), env=env) as app, sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 720}).new_page()
            page.goto(app.url)
            page.frame_locator(GRID).first.locator(".tile").first.wait_for(timeout=timeout_ms)
            ready(page)
            yield page, app
        finally:
            browser.close()


@pytest.fixture()
def label_page(tmp_path: Path) -> Iterator[tuple[Any, AppServer, Project]]:
    with demo_label_page(tmp_path) as (page, app):
        yield page, app, Project.open(app.projects / "demo")


def _message(page: Any) -> str:
    return page.frame_locator(GRID).first.locator("#msg").evaluate(
        "m => m.classList.contains('show') ? m.innerText : ''")


def _answered(project: Project) -> int:
    return project.progress().pending_done


def _follow(page: Any, link: str, marker: Any) -> None:
    """Click a sidebar link until ``marker`` shows: a click that lands while the page reruns (a
    loaded machine) can be dropped."""
    for _ in range(3):
        page_idle(page)
        page.get_by_role("link", name=link).click()
        try:
            marker.wait_for(timeout=30_000)
            return
        except PlaywrightError:
            continue
    marker.wait_for(timeout=30_000)


def _slider_focused(page: Any) -> bool:
    return page.evaluate("() => document.activeElement.matches('input[type=range]')")


def test_grid_buttons_the_submit_question_and_the_tile_slider(label_page: tuple[Any, AppServer, Project]) -> None:
    page, _, project = label_page
    grid = page.frame_locator(GRID).first
    batch = project.pending_round()

    # Tab from the page into the grid, to its Keys button: Enter shows the keys, and only that.
    def keys_focused() -> bool:
        page.keyboard.press("Tab")
        return grid.locator("#keys").evaluate("b => document.activeElement === b")

    wait_until(keys_focused, 60, "the Keys button reached with Tab", every=0)
    page.keyboard.press("Enter")
    wait_until(lambda: grid.locator("#keys").get_attribute("aria-expanded") == "true", 10, "the keys shown")
    page.keyboard.press("Enter")
    wait_until(lambda: grid.locator("#keys").get_attribute("aria-expanded") == "false", 10, "the keys hidden")
    assert "no answer" not in _message(page) and project.pending_round() == batch and _answered(project) == 0

    # Six answers, Enter: the question. Three more answers withdraw it; the next Enter asks again
    # with the new count instead of submitting.
    grid.locator("#status").click(position={"x": 2, "y": 2})   # the grid's keys, off the button
    for _ in range(6):
        page.keyboard.press("1")
    wait_until(lambda: _answered(project) == 6, 20, "six answers")
    page.keyboard.press("Enter")
    wait_until(lambda: "14 of 20 images have no answer yet" in _message(page), 10, "the question")
    for _ in range(3):
        page.keyboard.press("1")
    wait_until(lambda: "no answer" not in _message(page), 10, "the question withdrawn")
    wait_until(lambda: _answered(project) == 9, 20, "nine answers")
    page.keyboard.press("Enter")
    wait_until(lambda: "11 of 20 images have no answer yet" in _message(page), 10, "the question again")
    assert project.pending_round() == batch

    # The tile size slider: a change by key ends with the keys back in the grid; so does Esc.
    page.keyboard.press("ArrowRight")  # the question withdrawn, not answered
    slider = page.get_by_role("slider", name="Tile size")
    slider.focus()
    page.keyboard.press("ArrowRight")
    wait_until(lambda: grid.locator(".tile .img").first.evaluate("b => b.offsetHeight") == 160, 30, "large tiles")
    wait_until(lambda: not _slider_focused(page), 20, "the slider let go after the change")
    page.keyboard.press("1")
    wait_until(lambda: _answered(project) == 10, 20, "an answer after the change")
    slider.focus()
    page.keyboard.press("Escape")
    wait_until(lambda: not _slider_focused(page), 10, "the slider let go on Esc")
    page.keyboard.press("1")
    wait_until(lambda: _answered(project) == 11, 20, "an answer after Esc")
    assert project.pending_round() == batch


def test_keys_after_a_submit_and_a_visit_to_another_page(label_page: tuple[Any, AppServer, Project]) -> None:
    page, _, project = label_page
    grid = page.frame_locator(GRID).first
    first = project.pending_round()
    page.get_by_role("button", name="Fill the rest with true labels").click()
    wait_until(lambda: _answered(project) == 20, 30, "the batch answered")
    page_idle(page)
    grid.locator("#status").click(position={"x": 2, "y": 2})
    page.keyboard.press("Enter")
    wait_until(lambda: project.pending_round() not in (None, first), 120, "the next batch", every=0.25)
    batch = project.pending_batch()
    wait_until(lambda: set(tile_ids(page)) == {b.image_id for b in batch}, 60, "the next batch in the page")
    page_idle(page)

    # No click: the page's keys reach the new grid.
    page.keyboard.press("ArrowRight")
    wait_until(lambda: grid.locator(".tile.focus").get_attribute("data-image-id") == str(batch[1].image_id), 10,
               "the focus moved by key after the submit")
    audit = project.audit_images()
    plain = next(b for b in batch[1:] if b.image_id not in audit and b.predicted_class_id is not None)
    for _ in range(batch.index(plain) - 1):
        page.keyboard.press("ArrowRight")
    wait_until(lambda: grid.locator(".tile.focus").get_attribute("data-image-id") == str(plain.image_id), 10,
               "the focus on an image with a guess")
    assert project.accept_policy().mode == "confirm"
    page.keyboard.press("a")
    wait_until(lambda: f'Accept "{plain.predicted_class}"' in _message(page), 10, "the accept question")
    page.keyboard.press("a")
    wait_until(lambda: project.label_of(plain.image_id).class_id == plain.predicted_class_id, 20, "the guess taken")
    # The focus moved on: the question about the image before is gone.
    wait_until(lambda: "Accept" not in _message(page), 10, "the question gone once answered")

    # Undo names the tile as the page does, and says what it is left with.
    page.keyboard.press("u")
    wait_until(lambda: project.label_of(plain.image_id).state == "unlabeled", 20, "the undo")
    wait_until(lambda: _message(page).endswith(
        f'Undone: #{plain.rank} is no longer "{plain.predicted_class}"; it has no answer now.'), 20, "the undo notice")

    # Another page, then Label again from the sidebar: the keys still reach the grid.
    for link, marker in (("Classes", page.get_by_text("Save settings")), ("Label", grid.locator("#submit"))):
        _follow(page, link, marker.first)
    page_idle(page)
    before = _answered(project)
    page.keyboard.press("1")
    wait_until(lambda: _answered(project) == before + 1, 20, "an answer by key after the sidebar")


def _grid_has_keys(page: Any) -> bool:
    return page.evaluate("(grid) => document.activeElement === document.querySelector(grid)", GRID)


def _main_tile_in_view(page: Any) -> bool:
    box = page.frame_locator(GRID).first.locator(".tile.focus").bounding_box()
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= 720


def test_a_key_typed_below_the_batch_never_answers_an_image_out_of_sight(
        label_page: tuple[Any, AppServer, Project]) -> None:
    page, _, project = label_page
    grid = page.frame_locator(GRID).first
    # Below the batch: "Relabel earlier images", "Browse all", the help of its image id box.
    click_until_shown(page.get_by_text("Browse all"),
                      lambda: page.get_by_text("Relabel earlier images").first.click())
    jump = page.get_by_role("spinbutton", name="Go to image id")
    click_until_shown(jump, lambda: page.get_by_text("Browse all").click())
    page_idle(page)
    jump.focus()
    page.keyboard.press("Shift+Tab")
    wait_until(lambda: page.evaluate("() => document.activeElement.getAttribute('aria-label')")
               == "Help for Go to image id", 10, "the help button focused")
    wait_until(lambda: not _main_tile_in_view(page), 20, "the batch scrolled out of sight")
    first = grid.locator(".tile.focus").get_attribute("data-image-id")
    page.keyboard.type("12")
    wait_until(lambda: "Keys go to the batch: #1 is focused" in _message(page), 20, "the notice")
    wait_until(lambda: _main_tile_in_view(page), 20, "the batch's focused image in view")
    wait_until(lambda: _grid_has_keys(page), 10, "the keys in the batch")
    page_idle(page)
    assert _answered(project) == 0
    # The same from the expander's header.
    header = page.locator("[data-testid=stExpander] summary").first
    header.focus()
    jump.evaluate("j => j.scrollIntoView({block: 'center'})")
    wait_until(lambda: not _main_tile_in_view(page), 20, "the batch out of sight again")
    assert header.evaluate("h => document.activeElement === h")
    page.keyboard.press("3")
    wait_until(lambda: _main_tile_in_view(page) and _grid_has_keys(page), 20, "the batch in view with the keys")
    page_idle(page)
    assert _answered(project) == 0
    # Once in view, the next key answers the image the person sees.
    wait_until(lambda: grid.locator("body").evaluate("() => Date.now() > S.heldUntil"), 10, "the pause")
    page.keyboard.press("1")
    wait_until(lambda: _answered(project) == 1, 20, "the answer")
    assert project.label_of(int(first)).state == "labeled"


def test_label_reached_from_the_sidebar_takes_the_keys(label_page: tuple[Any, AppServer, Project]) -> None:
    page, _, project = label_page
    first = project.pending_round()
    page.get_by_role("button", name="Fill the rest with true labels").click()
    wait_until(lambda: _answered(project) == 20, 30, "the batch answered")
    grid = page.frame_locator(GRID).first
    _follow(page, "Classes", page.get_by_text("Save settings").first)
    # Label again by key, from its sidebar link: the grid takes the keys from the link.
    for _ in range(3):
        page_idle(page)
        page.get_by_role("link", name="Label").focus()
        page.keyboard.press("Enter")
        try:
            grid.locator("#submit").wait_for(timeout=30_000)
            break
        except PlaywrightError:
            continue
    wait_until(lambda: _grid_has_keys(page), 30, "the keys in the grid after the sidebar")
    page_idle(page)
    # Esc on a link of the page gives the keys back to the grid too.
    page.get_by_role("link", name="Label").focus()
    page.keyboard.press("Escape")
    wait_until(lambda: _grid_has_keys(page), 10, "the keys back after Esc")
    page.keyboard.press("Enter")
    wait_until(lambda: project.pending_round() not in (None, first), 120, "the batch submitted by Enter", every=0.25)
