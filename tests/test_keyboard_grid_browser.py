"""Keyboard-only labeling at 1280×720: after every move the focused tile is on screen (Streamlit
scrolls its main section, so the grid must scroll that, not the window), the class bar stays in
view while the grid scrolls, and at least ten whole tiles fit on the first screen."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_e2e_browser import (
    GRID,
    KEYS,
    launch,
    pytestmark,
    settle,
    sync_playwright,
    tile_ids,
    wait_until,
)

from ralif.project import Project
from ralif.ui.launch import AppServer

__all__ = ["pytestmark"]

# Where the focused tile, the class bar and every whole tile lie in the page's coordinates; the
# visible band starts below Streamlit's header bar.
VIEW = """() => {
  const f = document.querySelector("iframe[title*='label_grid']");
  if (!f || !f.contentDocument) return null;
  const fr = f.getBoundingClientRect();
  const hd = document.querySelector('[data-testid=stHeader]');
  const top = hd ? hd.getBoundingClientRect().bottom : 0;
  const doc = f.contentDocument;
  const foc = doc.querySelector('.tile.focus');
  const head = doc.getElementById('head');
  if (!foc || !head) return null;
  const tiles = Array.from(doc.querySelectorAll('.tile')).map(t => t.getBoundingClientRect());
  const r = foc.getBoundingClientRect(), h = head.getBoundingClientRect();
  return {id: +foc.dataset.imageId, top: fr.top + r.top, bottom: fr.top + r.bottom, band: [top, innerHeight],
          head: [fr.top + h.top, fr.top + h.bottom],
          whole: tiles.filter(t => fr.top + t.top >= top - 0.5 && fr.top + t.bottom <= innerHeight + 0.5).length};
}"""


def focus_in_view(page) -> dict | None:
    v = page.evaluate(VIEW)
    if not v:
        return None
    lo, hi = v["band"]
    # Below the header, not hidden under the class bar when that is stuck at the top, and whole.
    covered = v["head"][1] if v["head"][0] <= lo + 1 else lo
    return v if v["top"] >= max(lo, covered) - 0.5 and v["bottom"] <= hi + 0.5 else None


@pytest.fixture()
def small_window(tmp_path: Path) -> Iterator[tuple[object, AppServer]]:
    with AppServer(tmp_path / "projects", log=str(tmp_path / "app.log")) as app, sync_playwright() as pw:
        browser = launch(pw)
        try:
            yield browser.new_context(viewport={"width": 1280, "height": 720}).new_page(), app
        finally:
            browser.close()


def test_three_batches_by_keyboard_keep_the_focus_in_view(small_window: tuple[object, AppServer]) -> None:
    page, app = small_window
    page.goto(app.url)
    page.frame_locator(GRID).first.locator(".tile").first.wait_for(timeout=60_000)
    project = Project.open(app.projects / "demo")
    classes = [c.id for c in project.classes()]
    truth = dict(project.store.query("SELECT id, true_class_id FROM images"))
    first = wait_until(lambda: focus_in_view(page), 15, "the grid drawn")
    assert first["whole"] >= 10, f"only {first['whole']} whole tiles on the first screen at 1280x720"
    if os.environ.get("RALIF_SCREENSHOTS"):
        Path(os.environ["RALIF_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(os.environ["RALIF_SCREENSHOTS"]) / "label-grid-1280x720.png"))

    def moved(key: str) -> dict:
        page.keyboard.press(key)
        # Smooth scrolling takes a few frames; the tile must be in view once it has settled.
        return wait_until(lambda: focus_in_view(page), 3, f"the focused tile in view after {key}", every=0.05)

    seen: set[int] = set()
    for number in range(3):
        settle(page)
        batch = [b.image_id for b in project.pending_batch()]
        assert len(batch) == 20 and not set(batch) & seen
        seen |= set(batch)
        for key in ("ArrowDown", "ArrowDown", "ArrowDown", "ArrowRight", "ArrowUp", "ArrowUp", "ArrowUp",
                    "End", "Home"):
            moved(key)
        moved("End")
        # The bar sticks once the smooth scroll has settled (a few frames more on a loaded machine).
        try:
            wait_until(lambda: (v := focus_in_view(page)) and v["head"][0] <= v["band"][0] + 1, 3, "the bar")
        except AssertionError:
            stuck = focus_in_view(page) or {"head": [float("inf")], "band": [0]}
            raise AssertionError(f"the class bar left the screen at the end of the grid: {stuck}") from None
        moved("Home")
        for i, _ in enumerate(batch):
            try:
                v = wait_until(lambda: focus_in_view(page), 3, "the focused tile in view", every=0.05)
            except AssertionError:
                # What the page held instead (null: no grid frame, focused tile or class bar), for the log.
                raise AssertionError(f"batch {number + 1}, label {i + 1}: the focused tile not in view within "
                                     f"3 s; the page: {page.evaluate(VIEW)}") from None
            page.keyboard.press(KEYS[classes.index(truth[v["id"]])])
            time.sleep(0.05)
        wait_until(lambda: project.progress().pending_done == 20, 20, f"batch {number + 1} in the database")
        wait_until(lambda: focus_in_view(page), 3, "the focus in view after the last label")
        page.keyboard.press("Enter")
        wait_until(lambda n=number: project.pending_round() not in (None, n + 1), 90, f"batch {number + 2}",
                   every=0.25)
        wait_until(lambda: set(tile_ids(page)) == {b.image_id for b in project.pending_batch()},
                   60, "the next batch in the page", every=0.25)
    assert project.progress().labeled == 60
