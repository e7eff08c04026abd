"""A project whose held-out share was set aside from an unlabeled folder: the Progress page says
that the held-out images have no labels (not that a model or a held-out set is missing), and its
button opens the Label page's browser on exactly those images."""

from __future__ import annotations

from pathlib import Path

from test_e2e_browser import launch, pytestmark, sync_playwright, wait_until
from test_project import BLUE, RED, _png

from ralif.project import Project
from ralif.project.records import Progress
from ralif.ui.launch import AppServer
from ralif.ui.quality_panel import no_accuracy_reason
from ralif.ui.text import JOINER

# The imported marks skip this module where Chromium or Playwright is missing.
__all__ = ["pytestmark"]


def _progress(test: int, test_labeled: int) -> Progress:
    return Progress(pool=40, labeled=4, unsure=0, unlabeled=36, test=test, test_labeled=test_labeled, round=1,
                    round_status="ready", pending=0, pending_done=0, per_class={})


def test_the_reason_names_what_is_missing() -> None:
    assert "sets no images aside" in no_accuracy_reason(_progress(0, 0))
    assert "none of the 10 held-out images has a label" in no_accuracy_reason(_progress(10, 0))
    assert "the held-out image has no label" in no_accuracy_reason(_progress(1, 0))
    assert "measured on the 3 labeled held-out images" in no_accuracy_reason(_progress(10, 3))


def test_progress_leads_to_the_unlabeled_held_out_images(tmp_path: Path) -> None:
    src = tmp_path / "images"
    for i in range(40):
        _png(src / f"img_{i:02d}.png", RED if i % 2 else BLUE, i)
    projects = tmp_path / "projects"
    project = Project.create(projects / "flat", src, encoder="pixels:2", batch_size=4, test=0.25)
    held_out = {r.image_id for r in project.images_page("unlabeled", split="test", limit=100)}
    assert len(held_out) == 10
    with AppServer(projects, log=str(tmp_path / "app.log")) as app, sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 720}).new_page()
            page.goto(f"{app.url}/Progress?project=flat")

            def text() -> str:
                return page.locator("[data-testid=stMain]").first.inner_text().replace(JOINER, "")

            wait_until(lambda: "none of the 10 held-out images has a label" in text(), 90, "the reason")
            assert "Traceback" not in text()
            page.get_by_role("button", name="Label the held-out images").click()
            # The Label page, its panel open on Browse all, the test split, unlabeled images: the ten
            # held-out ones.
            wait_until(lambda: "Label · flat" in text() and "Page 1 · images" in text(), 90,
                       "the Label page's browser of earlier images")
            caption = page.get_by_text("Page 1 · images").first.inner_text()
            first, last = (int(x) for x in caption.split("images ")[1].split(" to "))
            assert (first, last) == (min(held_out), max(held_out)), caption
            assert "ralif_earlier_view" not in text(), "no warning about the view's start value"
        finally:
            browser.close()
