"""The ``a`` key (accept the model's guess) in a real browser follows the project's rule: while
the model's accuracy is unmeasured it asks first (a second ``a`` writes the guess), once training
has diverged it refuses, and for an image drawn at random to measure the model the guess is
neither shown nor accepted."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from test_e2e_browser import (
    GRID,
    focus_tile,
    launch,
    page_idle,
    pytestmark,
    screenshot,
    sync_playwright,
    wait_until,
)

from ralif.project import Project
from ralif.project.store import DB_NAME
from ralif.ui.launch import AppServer

__all__ = ["pytestmark"]


def test_a_asks_refuses_and_skips_audit_images(tmp_path: Path) -> None:
    with AppServer(tmp_path / "projects", log=str(tmp_path / "app.log")) as app, sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            page.goto(app.url)
            grid = page.frame_locator(GRID).first
            grid.locator(".tile").first.wait_for(timeout=60_000)
            project = Project.open(app.projects / "demo")
            # The demo starts cold (no labels, no model, nothing to audit): one batch answered by
            # its simulated oracle brings a model and a batch with audit images.
            first = project.pending_round()
            page.get_by_role("button", name="Fill the rest with true labels").click()
            wait_until(lambda: project.progress().pending_done == project.progress().pending, 30, "the answers")
            grid.get_by_role("button", name="Submit batch (Enter)").click()
            wait_until(lambda: project.pending_round() not in (None, first), 180, "the next batch", every=0.25)
            wait_until(lambda: grid.locator(".tile").count() == len(project.pending_batch())
                       and "guess hidden" in grid.locator("body").inner_text(), 60, "the batch in the page")
            page_idle(page)
            batch = project.pending_batch()
            audit = project.audit_images()
            assert audit and audit < {b.image_id for b in batch}
            assert project.accept_policy().mode == "confirm"
            order = [b.image_id for b in batch]

            def state(image_id: int) -> int | None:
                rows = project.store.query("SELECT class_id FROM labels WHERE image_id = ?", (image_id,))
                return rows[0][0] if rows else None

            def message() -> str:
                return grid.locator("#msg").inner_text()

            # Unmeasured: the first `a` asks, the second writes the guess.
            plain = next(b for b in batch if b.image_id not in audit and b.predicted_class_id is not None)
            focus_tile(page, plain.image_id)
            page.keyboard.press("a")
            wait_until(lambda: "Press a again" in message(), 10, "the question")
            screenshot(page, "label-accept-confirm", full=False)
            assert "not measured yet" in message() and state(plain.image_id) is None
            page.keyboard.press("a")
            wait_until(lambda: state(plain.image_id) == plain.predicted_class_id, 20, "the guess written")

            # An audit image: its guess is hidden and `a` does not take it.
            shot = next(i for i in order if i in audit)
            tile = grid.locator(f".tile[data-image-id='{shot}']")
            assert "guess hidden" in tile.inner_text() and "model:" not in tile.inner_text()
            focus_tile(page, shot)
            page.keyboard.press("a")
            wait_until(lambda: "measure the model" in message(), 10, "the refusal")
            page.keyboard.press("a")
            page.wait_for_timeout(1_500)
            assert state(shot) is None

            # Training diverged (a NaN loss recorded for the round): `a` is off.
            number = project.pending_round()
            with sqlite3.connect(project.folder / DB_NAME) as conn:
                conn.execute("INSERT OR REPLACE INTO round_losses(round, losses) VALUES (?, ?)",
                             (number, "[1.5, null]"))
            assert project.accept_policy().mode == "off"
            page.reload()
            grid.locator(".tile").first.wait_for(timeout=60_000)
            page_idle(page)
            other = next(b for b in batch if b.image_id not in audit and b.image_id != plain.image_id
                         and b.predicted_class_id is not None)
            focus_tile(page, other.image_id)
            for _ in range(2):
                page.keyboard.press("a")
            wait_until(lambda: "off for now" in message(), 10, "the refusal")
            assert "diverged" in message()
            page.wait_for_timeout(1_500)
            assert state(other.image_id) is None
        finally:
            browser.close()
