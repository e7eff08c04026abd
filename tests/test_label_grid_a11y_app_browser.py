"""The Label page's grid at 1280×720 in the app, for a person using a screen reader: keys move
the keyboard focus itself (the tile with the ring is the one a screen reader reports, named by its
number, file and answer), and the warning about a key no class has goes once classes are added
in the form above the grid. With ``RALIF_SCREENSHOTS=DIR`` the states are saved into DIR."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_e2e_browser import GRID, page_idle, pytestmark, settle, wait_until
from test_label_grid_a11y_browser import grid_message, window_shot
from test_label_keys_browser import demo_label_page

from ralif.project import Project

__all__ = ["pytestmark"]

# The grid frame's focused element, the tile with the ring, and the name of the focused element.
FOCUS = """() => { const a = document.activeElement, r = document.querySelector('.tile.focus');
  return {active: a.dataset.imageId || a.tagName, ring: r && r.dataset.imageId,
          name: a.getAttribute('aria-label')}; }"""


def test_the_label_page_keys_move_the_focus_and_added_classes_end_the_key_warning(tmp_path: Path) -> None:
    with demo_label_page(tmp_path) as (page, app):
        project = Project.open(app.projects / "demo")
        grid = page.frame_locator(GRID).first
        body = grid.locator("body")
        batch = project.pending_batch()
        settle(page)

        def on(index: int) -> dict[str, Any]:
            def ok() -> Any:
                f = body.evaluate(FOCUS)
                return f if f["ring"] == f["active"] == str(batch[index].image_id) else None
            try:
                return wait_until(ok, 10, f"the keyboard focus on image {index + 1}")
            except AssertionError:
                raise AssertionError(f"the ring and the keyboard focus part: {body.evaluate(FOCUS)}") from None

        name = on(0)["name"]
        assert name.startswith(f"Image 1 of {len(batch)}, {Path(batch[0].path).name}, "), name
        page.keyboard.press("ArrowRight")
        page.keyboard.press("ArrowRight")
        assert on(2)["name"] == f"Image 3 of {len(batch)}, {Path(batch[2].path).name}, no label yet"
        first = project.classes()[0]
        page.keyboard.press("1")
        wait_until(lambda: project.label_of(batch[2].image_id).class_id == first.id, 20, "the answer saved")
        on(3)
        assert grid.get_by_role("option", name=f"Image 3 of {len(batch)}, {Path(batch[2].path).name}, "
                                                f"labeled {first.name}", exact=True).count() == 1
        page_idle(page)
        window_shot(page, "label-focus-moved")

        # No classes: the form above the grid asks for some. A number key says no class has it.
        for c in project.classes():
            project.delete_class(c.id)
        page.reload()
        form = page.get_by_label("Class names, separated by commas")
        form.wait_for(timeout=60_000)
        grid.locator(".tile").first.wait_for(timeout=60_000)
        settle(page)
        page.keyboard.press("1")
        no_key = "No class has the key 1; press / to find a class."
        wait_until(lambda: grid_message(grid) == no_key, 10, "the warning")
        window_shot(page, "label-no-classes-key-1")
        form.fill("airplane, automobile")
        page.get_by_role("button", name="Add classes").click()
        grid.locator(".cls", has_text="airplane").wait_for(timeout=60_000)
        page_idle(page)
        window_shot(page, "label-classes-added")
        assert grid_message(grid) == "", f"the warning outlived its cause: {grid_message(grid)!r}"
        # The key does what the warning asked for now.
        settle(page)
        page.keyboard.press("1")
        wait_until(lambda: project.progress().pending_done == 1, 20, "an answer with the new class")
