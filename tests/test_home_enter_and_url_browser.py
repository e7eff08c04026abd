"""The Projects page in a real browser: Enter in "Open a project folder elsewhere" opens the folder
(as the button does; a bad path gets its clear box), and the URL /projects shows the Projects page
(it is served at /) without a "Page not found" dialog, from a new server's first request on."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_images
from test_e2e_browser import launch, page_idle, pytestmark, sync_playwright

from ralif.project import Project
from ralif.ui.launch import AppServer

# The imported marks skip this module where Chromium or Playwright is missing.
__all__ = ["pytestmark"]


@pytest.fixture()
def app(tmp_path: Path):
    make_images(tmp_path / "imgs", per_class=3)
    # One project in the projects folder (so the first launch makes no demo), one elsewhere.
    Project.create(tmp_path / "projects" / "here", tmp_path / "imgs", encoder="pixels:2", batch_size=3)
    Project.create(tmp_path / "elsewhere" / "shop", tmp_path / "imgs", encoder="pixels:2", batch_size=3)
    with AppServer(tmp_path / "projects") as server, sync_playwright() as pw:
        browser = launch(pw)
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 900}), server, tmp_path
        finally:
            browser.close()


def test_enter_opens_the_folder_and_projects_url_is_the_home_page(app) -> None:
    page, server, tmp_path = app
    # The server's very first request.
    page.goto(f"{server.url}/projects")
    page.get_by_text("Open a project folder elsewhere").wait_for(timeout=60_000)
    page_idle(page)
    assert page.locator("[role=dialog]").count() == 0, page.locator("[role=dialog]").first.inner_text()
    assert page.url.rstrip("/") == server.url

    page.get_by_text("Open a project folder elsewhere").click()
    field = page.get_by_label("Project folder")
    field.fill(str(tmp_path / "nowhere"))
    field.press("Enter")
    box = page.locator("[data-testid=stAlert]").filter(has_text="Cannot open")
    box.wait_for(timeout=30_000)
    assert "no ralif project" in box.inner_text()

    field.fill(str(tmp_path / "elsewhere" / "shop"))
    field.press("Enter")
    page.get_by_text("Label · shop").wait_for(timeout=60_000)
    assert "elsewhere/shop" in page.locator("[data-testid=stSidebar]").inner_text()


def test_a_new_servers_first_page_has_the_apps_navigation(app) -> None:
    """Streamlit lists a folder named pages beside the entry script by itself, and a new server would
    show that listing (an "app" link, "Page not found" for /projects) until a run reaches the
    app's st.navigation; the app's pages are in views/ so that it never does."""
    page, server, _ = app
    # A tab that was on the Label page reconnects to a restarted server.
    page.goto(f"{server.url}/Label")
    page.locator("[data-testid=stSidebarNavLink]").first.wait_for(timeout=60_000)
    page_idle(page)
    links = [a.inner_text() for a in page.locator("[data-testid=stSidebarNavLink]").all()]
    dialogs = page.locator("[role=dialog]").count()
    page.goto(f"{server.url}/projects")
    page.locator("[data-testid=stSidebarNavLink]").first.wait_for(timeout=60_000)
    page_idle(page)
    dialogs += page.locator("[role=dialog]").count()
    assert not any(link.strip() == "app" for link in links) and any("Projects" in link for link in links), links
    assert dialogs == 0
