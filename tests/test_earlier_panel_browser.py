"""The "Relabel earlier images" panel on a project with every pool image labeled, in Chromium at
1280×720: the page says there is no batch, the panel is open (or opened by a click) and it stays
open while the page runs again by itself."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_e2e_browser import launch, page_idle, pytestmark, sync_playwright, wait_until

from ralif.project import Project
from ralif.ui import round_panel
from ralif.ui.launch import AppServer

__all__ = ["pytestmark"]


def _all_labeled(folder: Path) -> None:
    """The demo with every pool image labeled with its true class and the last batch submitted."""
    project = Project.create_demo(folder)
    by_class: dict[int, list[int]] = {}
    for image_id, class_id in project.store.query("SELECT id, true_class_id FROM images WHERE split = 'pool'"):
        by_class.setdefault(class_id, []).append(image_id)
    for class_id, ids in by_class.items():
        project.bulk_label(ids, class_id)
    project.submit_and_start(allow_unanswered=True)
    wait_until(lambda: project.round_status().get("status") not in round_panel.ACTIVE, 120, "the last round")
    assert not project.pending_batch()


@pytest.fixture()
def done_page(tmp_path: Path) -> Iterator[Any]:
    _all_labeled(tmp_path / "projects" / "demo")
    with AppServer(tmp_path / "projects", log=str(tmp_path / "app.log")) as app, sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 720}).new_page()
            page.goto(f"{app.url}/Label?project=demo")
            page.get_by_text("There is no batch to label").wait_for(timeout=90_000)
            yield page
        finally:
            browser.close()


def test_the_panel_stays_open_when_there_is_no_batch(done_page: Any) -> None:
    page = done_page
    page_idle(page)
    browse = page.get_by_text("Browse all")
    if not browse.is_visible():
        page.get_by_text("Relabel earlier images").click()
    browse.wait_for(timeout=10_000)
    for _ in range(10):
        time.sleep(0.5)
        assert browse.is_visible(), "the panel closed by itself"
    assert page.get_by_text("There is no batch to label").is_visible()


def test_a_panel_left_open_does_not_open_itself_in_the_next_project(tmp_path: Path) -> None:
    projects = tmp_path / "projects"
    for name in ("first", "second"):
        Project.create_demo(projects / name)
    with AppServer(projects, log=str(tmp_path / "app.log")) as app, sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 720}).new_page()
            page.goto(f"{app.url}/Label?project=first")
            page_idle(page)
            page.get_by_text("Relabel earlier images").click()
            page.get_by_text("Browse all").wait_for(timeout=10_000)
            # To the other project the way a person goes, in the same session.
            page.get_by_role("link", name="Projects").click()
            page.get_by_role("button", name="Open", exact=True).first.click()
            # Both are demos with one name: the sidebar's folder tells them apart.
            wait_until(lambda: "second" in page.locator("[data-testid=stSidebar]").inner_text()
                       and "Label ·" in page.locator("[data-testid=stMain]").inner_text(), 90,
                       "the second project's Label page")
            page_idle(page)
            time.sleep(1.0)
            assert page.get_by_text("Relabel earlier images").is_visible()
            assert not page.get_by_text("Browse all").is_visible(), "the first project's open panel carried over"
        finally:
            browser.close()
