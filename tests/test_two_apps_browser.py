"""Two app processes label one project at once, each in its own browser: every answer either of
them acknowledged is in the database with the class its key names, each page shows the other's
answers after a reload, and a batch submitted in one is replaced by the next in the other."""

from __future__ import annotations

from pathlib import Path

from test_e2e_browser import (
    GRID,
    focus_tile,
    launch,
    pytestmark,
    settle,
    sync_playwright,
    tile_ids,
    tile_labels,
    wait_until,
)

from ralif.project import Project
from ralif.ui.launch import AppServer

__all__ = ["pytestmark"]


def test_two_app_processes_label_one_project(tmp_path: Path) -> None:
    projects = tmp_path / "projects"
    with AppServer(projects, log=str(tmp_path / "a.log")) as app_a, sync_playwright() as pw:
        browser = launch(pw)
        try:
            page_a = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            page_a.goto(app_a.url)
            page_a.frame_locator(GRID).first.locator(".tile").first.wait_for(timeout=90_000)
            project = Project.open(projects / "demo", client="script")
            batch = [b.image_id for b in project.pending_batch()]
            keys = {c.hotkey: c.id for c in project.classes()}
            with AppServer(projects, log=str(tmp_path / "b.log")) as app_b:
                page_b = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
                # The same page of the same project (the address names it), from the second app.
                page_b.goto(page_a.url.replace(app_a.url, app_b.url))
                wait_until(lambda: sorted(tile_ids(page_b)) == sorted(batch), 90, "the same batch in the second app")
                wait_until(lambda: tile_ids(page_a) == batch, 30, "the batch in the first app")

                # A answers the first half with key 1 while B answers the second half with key 2,
                # one key each in turn.
                half = len(batch) // 2
                settle(page_a)
                settle(page_b)
                focus_tile(page_a, batch[0])
                focus_tile(page_b, batch[half])
                for _ in range(half):
                    page_a.keyboard.press("1")
                    page_b.keyboard.press("2")
                want = {i: keys["1"] for i in batch[:half]} | {i: keys["2"] for i in batch[half:]}
                wait_until(lambda: {i: project.label_of(i).class_id for i in batch} == want, 60,
                           "every answer of both apps in the database")
                # Each page says its own answers are saved, and after a reload shows the other's.
                for page in (page_a, page_b):
                    page.frame_locator(GRID).first.get_by_text("every answer saved").wait_for(timeout=30_000)
                    page.reload()
                    wait_until(lambda p=page: len(tile_labels(p)) == len(batch) and
                               "no label yet" not in tile_labels(p).values(), 60, "every answer in the page")

                # A submits; B, on its next run, has the next batch, and nothing was lost.
                number = project.pending_round()
                grid_a = page_a.frame_locator(GRID).first
                grid_a.get_by_role("button", name="Submit batch (Enter)").click()
                wait_until(lambda: project.pending_round() not in (None, number), 180, "the next batch",
                           every=0.25)
                nxt = [b.image_id for b in project.pending_batch()]
                page_b.reload()
                wait_until(lambda: sorted(tile_ids(page_b)) == sorted(nxt), 90, "the next batch in the second app")
                assert {i: project.label_of(i).class_id for i in batch} == want
                assert project.progress().labeled == len(batch)
        finally:
            browser.close()
