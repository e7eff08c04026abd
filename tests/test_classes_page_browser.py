"""The Classes page in a real browser at 1280x720: the tab chosen stays chosen through the runs a
change makes (a message box that came and went at the top of the page used to send it back to
"Add", with the Merge question hidden in the Merge tab), the question is in view at once, the
class dropdowns show the current names and counts, and each outcome shows where the person is,
also with the page scrolled down.

Needs Chromium and Playwright, as tests/test_e2e_browser.py; with ``RALIF_SCREENSHOTS=DIR`` the
states are saved as pictures into DIR.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_e2e_browser import (
    Page,
    launch,
    page_idle,
    pytestmark,
    screenshot,
    sync_playwright,
    wait_until,
)

from ralif.project import Project
from ralif.ui.launch import AppServer

# The imported marks skip this module where Chromium or Playwright is missing.
__all__ = ["pytestmark"]

VIEW = {"width": 1280, "height": 720}


@pytest.fixture()
def classes_page(tmp_path: Path) -> Iterator[tuple[Page, Project]]:
    demo = Project.create_demo(tmp_path / "projects" / "demo", initial_labels=60, run_first_round=False)
    demo.rename_class(demo.class_id("airplane"), "**bold**")
    with AppServer(tmp_path / "projects", log=str(tmp_path / "app.log")) as app, sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_context(viewport=VIEW).new_page()
            page.goto(f"{app.url}/Classes?project=demo")
            page.get_by_role("tab", name="Merge").wait_for(timeout=60_000)
            page_idle(page)
            yield page, demo
        finally:
            browser.close()


def chosen_tab(page: Page) -> str:
    return page.locator("[role=tab][aria-selected=true]").inner_text().strip()


def in_view(page: Page, locator: Any) -> bool:
    """Shown, and wholly inside the window (not scrolled away above or below)."""
    if not locator.is_visible():
        return False
    box = locator.bounding_box()
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= VIEW["height"]


def shown_in(page: Page, box: str) -> str:
    """The text a class dropdown of the open tab shows chosen."""
    return page.get_by_role("combobox", name=box).input_value()


def open_tab(page: Page, name: str) -> None:
    page.get_by_role("tab", name=name).click()
    wait_until(lambda: chosen_tab(page) == name, 10, f"the {name} tab")
    page_idle(page)


def label(project: Project, name: str) -> str:
    c = next(c for c in project.classes() if c.name == name)
    return f"{c.name} ({c.count:,} labeled)"


def choose(page: Page, box: str, option: str) -> None:
    """Pick ``option`` in the class dropdown ``box`` of the open tab."""
    page.get_by_role("combobox", name=box).click()
    page.get_by_role("option", name=option, exact=True).click()
    wait_until(lambda: shown_in(page, box) == option, 10, f"{option} chosen")


def test_the_tab_stays_and_its_question_and_names_are_current(classes_page: tuple[Page, Project]) -> None:
    page, demo = classes_page
    # The Merge form sent once with dog: the box holds dog from then on.
    open_tab(page, "Merge")
    choose(page, "Move every label of", label(demo, "dog"))
    page.get_by_role("button", name="Merge", exact=True).click()
    wait_until(page.get_by_role("button", name="Cancel").is_visible, 30, "the merge question")
    page.get_by_role("button", name="Cancel").click()
    wait_until(lambda: not page.get_by_role("button", name="Cancel").is_visible(), 30, "the question gone")
    page_idle(page)

    open_tab(page, "Rename")
    choose(page, "Class", label(demo, "dog"))
    field = page.get_by_role("textbox", name="New name")
    field.fill("**doggo**")
    field.press("Enter")
    done = page.get_by_text("Renamed 'dog' to '**doggo**'")
    wait_until(done.is_visible, 30, "the rename's message")
    page_idle(page)
    assert chosen_tab(page) == "Rename", "the tabs went back to the first one"
    assert in_view(page, done)
    assert field.input_value() == "", "the field keeps the old text: Enter would rename again"
    screenshot(page, "classes-renamed", full=False)

    # The Merge tab shows the new name at once, not after one more run, and stays open when the
    # message above is gone.
    open_tab(page, "Merge")
    assert shown_in(page, "Move every label of") == label(demo, "**doggo**")
    page.get_by_role("button", name="Merge", exact=True).click()
    question = page.locator("[data-testid=stAlertContentWarning]").filter(has_text="Merge **doggo** into")
    wait_until(question.is_visible, 30, "the merge question")
    page_idle(page)
    assert chosen_tab(page) == "Merge", "the tabs went back to the first one"
    confirm = page.get_by_role("button", name="Merge: move 6 labels")
    assert in_view(page, question) and in_view(page, confirm)
    screenshot(page, "classes-merge-question", full=False)

    confirm.click()
    merged = page.get_by_text("Merged '**doggo**' into 'automobile'")
    wait_until(merged.is_visible, 30, "the merge's message")
    page_idle(page)
    assert chosen_tab(page) == "Merge" and in_view(page, merged)
    # The class merged into shows its new count, as the table does.
    assert shown_in(page, "into") == label(demo, "automobile") == "automobile (12 labeled)"
    assert shown_in(page, "Move every label of") != shown_in(page, "into")
    screenshot(page, "classes-merged", full=False)

    page.get_by_role("button", name="Undo").first.click()
    wait_until(page.get_by_text("Undone: the merge of class").is_visible, 30, "the undo's message")
    page_idle(page)
    assert chosen_tab(page) == "Merge"
    assert shown_in(page, "into") == "automobile (6 labeled)"

    # Delete asks first, in its tab, in view.
    open_tab(page, "Delete")
    page.get_by_role("button", name="Delete", exact=True).click()
    ask = page.locator("[data-testid=stAlertContentWarning]").filter(has_text="Tick the box")
    wait_until(ask.is_visible, 30, "the delete question")
    page_idle(page)
    assert chosen_tab(page) == "Delete" and in_view(page, ask)
    screenshot(page, "classes-delete-question", full=False)


def _enter(page: Page, box: str, text: str) -> None:
    field = page.get_by_role("textbox", name=box)
    field.fill(text)
    field.press("Enter")


def _message_in_view(page: Page, text: str) -> None:
    """The outcome's message appears and is in the window, wherever the page was scrolled."""
    message = page.get_by_text(text)
    wait_until(message.is_visible, 30, f"the message {text!r}")
    page_idle(page)
    assert in_view(page, message), f"the message is out of view: {message.bounding_box()}"


def test_each_outcome_shows_where_the_page_is_scrolled(classes_page: tuple[Page, Project]) -> None:
    page, demo = classes_page

    def scroll_to_tabs() -> None:
        # The tabs at the top of the window: the page's title and top are out of view.
        page.get_by_role("tablist").evaluate("e => e.scrollIntoView({block: 'start'})")
        page.wait_for_timeout(300)
        assert not in_view(page, page.get_by_role("heading", name="Change classes"))

    scroll_to_tabs()
    _enter(page, "New class name", "fox")
    _message_in_view(page, "Added class 'fox'.")
    screenshot(page, "classes-added-scrolled", full=False)

    open_tab(page, "Rename")
    scroll_to_tabs()
    _enter(page, "New name", "bold")
    _message_in_view(page, "Renamed '**bold**' to 'bold'")

    open_tab(page, "Delete")
    scroll_to_tabs()
    page.get_by_text("Its labeled images become unlabeled").click()
    page.get_by_role("button", name="Delete", exact=True).click()
    _message_in_view(page, "Deleted 'bold'")
    assert "bold" not in [c.name for c in demo.classes()]
    screenshot(page, "classes-deleted-scrolled", full=False)
