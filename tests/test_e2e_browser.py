"""The app in a real browser: first launch opens the demo, a batch is labeled with the keyboard
only, submitted, the next batch appears, and a reload shows every label again (checked in the
project database too).

Needs Chromium and Playwright (``apt-get install -y chromium``, ``pip install playwright``); the
test is skipped, saying which one is missing, without them. With ``RALIF_SCREENSHOTS=DIR`` it also
saves the pictures of the documentation (home, label, label-training, classes) into DIR.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ralif.project import Project
from ralif.ui.launch import AppServer

CHROMIUM = os.environ.get("RALIF_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
KEYS = "1234567890"
GRID = "iframe[title*='label_grid']"
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]

try:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import Page, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None  # type: ignore[assignment]
    Page = Any  # type: ignore[assignment,misc]
    PlaywrightError = Exception  # type: ignore[assignment,misc]

pytestmark = [
    pytest.mark.skipif(sync_playwright is None,
                       reason="playwright is not installed (pip install playwright)"),
    pytest.mark.skipif(not Path(CHROMIUM).is_file(),
                       reason=f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)"),
]


def launch(pw: Any) -> Any:
    """Headless Chromium as every browser test runs it."""
    return pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)


def wait_until(check: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def click_until_shown(target: Any, click: Callable[[], None], tries: int = 4, timeout_ms: int = 10_000) -> None:
    """Click until ``target`` is visible, looking before each click: a click that lands while the
    page reruns (a loaded machine) can be dropped, and a second click on an open expander would
    close it again."""
    for _ in range(tries):
        if not target.is_visible():
            click()
        try:
            target.wait_for(state="visible", timeout=timeout_ms)
            return
        except Exception:
            continue
    target.wait_for(state="visible", timeout=30_000)


def click_until_done(page: Page, click: Callable[[], None], done: Callable[[], Any], what: str,
                     tries: int = 3, timeout: float = 15) -> None:
    """Click until ``done()`` holds. A click is repeated only once the page is idle and ``done()``
    still fails, so the earlier click was dropped (it landed while the page reran), not slow: a
    button that acts again on a second click (Undo) never acts twice."""
    for _ in range(tries):
        click()
        try:
            wait_until(done, timeout, what)
            return
        except AssertionError:
            page_idle(page)
            if done():
                return
    wait_until(done, 30, what)


def page_idle(page: Page) -> None:
    """Wait until the page's runs are over: a key pressed while a run redraws the grid may land
    in a frame that is about to be replaced."""
    def idle() -> bool:
        return page.locator("[data-testid=stStatusWidget]").count() == 0

    for _ in range(2):
        wait_until(idle, 60, "the page idle", every=0.2)
        time.sleep(1.0)


def settle(page: Page) -> None:
    """The page idle and the grid holding the keys."""
    page_idle(page)
    page.frame_locator(GRID).first.locator(".tile.focus").wait_for(timeout=30_000)
    # The keys go to the grid once it has the focus (a reload leaves it on the page): give it, by
    # a click on the answered count, which holds no button or class chip.
    if not page.frame_locator(GRID).first.locator("body.active").count():
        page.frame_locator(GRID).first.locator("#status").click(position={"x": 2, "y": 2})
        page.frame_locator(GRID).first.locator("body.active").wait_for(timeout=10_000)


def focus_tile(page: Page, image_id: int) -> None:
    """Click an image of the grid: it gets the focus, and the grid the keys."""
    grid = page.frame_locator(GRID).first
    grid.locator(f".tile[data-image-id='{image_id}'] img").first.click()
    wait_until(lambda: grid.locator(f".tile.focus[data-image-id='{image_id}']").count() == 1, 10, "the focus")
    grid.locator("body.active").wait_for(timeout=10_000)


def tile_ids(page: Page) -> list[int]:
    frame = page.frame_locator(GRID).first
    try:
        return frame.locator(".tile").evaluate_all("ts => ts.map(t => +t.dataset.imageId)")
    except PlaywrightError:
        return []       # the grid was replaced while it was being read (a batch was submitted)


def tile_labels(page: Page) -> dict[int, str]:
    frame = page.frame_locator(GRID).first
    pairs = frame.locator(".tile").evaluate_all(
        "ts => ts.map(t => [+t.dataset.imageId, t.querySelector('.chip').textContent])")
    return {int(i): text for i, text in pairs}


def screenshot(page: Page, name: str, full: bool = True) -> None:
    """The whole page (Streamlit scrolls an inner pane, so the window grows to fit it first), or
    at once what the window shows (for a state that does not last)."""
    folder = os.environ.get("RALIF_SCREENSHOTS")
    if not folder:
        return
    page.mouse.move(2, 2)
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    if not full:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"))
        return
    height = page.evaluate(
        "() => { const m = document.querySelector('[data-testid=stMain]') || document.body;"
        " return Math.max(m.scrollHeight, 900); }")
    size = page.viewport_size or {"width": 1400, "height": 1000}
    page.set_viewport_size({"width": size["width"], "height": min(int(height) + 40, 4000)})
    time.sleep(0.8)
    Path(folder).mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(Path(folder) / f"{name}.png"))
    page.set_viewport_size(size)
    time.sleep(0.3)


@pytest.fixture()
def browser_page(tmp_path: Path) -> Iterator[tuple[Page, AppServer]]:
    # For the documentation pictures the temporary folder is the app's home, so paths read "~/...".
    env = {"HOME": str(tmp_path)} if os.environ.get("RALIF_SCREENSHOTS") else {}
    with AppServer(tmp_path / "projects", log=str(tmp_path / "app.log"), env=env) as app, \
            sync_playwright() as pw:
        browser = launch(pw)
        try:
            # One context, so a second page is a second tab of the same browser.
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            yield page, app
        finally:
            browser.close()


def test_label_a_batch_with_the_keyboard_submit_and_reload(browser_page: tuple[Page, AppServer]) -> None:
    page, app = browser_page
    started = time.monotonic()
    page.goto(app.url)
    # First launch: the demo is created and the Label page opens on its first batch.
    page.frame_locator(GRID).first.locator(".tile").first.wait_for(timeout=60_000)
    project = Project.open(app.projects / "demo")
    batch = project.pending_batch()
    assert len(batch) == 20 and tile_ids(page) == [b.image_id for b in batch]
    classes = [c.id for c in project.classes()]
    truth = dict(project.store.query("SELECT id, true_class_id FROM images"))

    def key_for(image_id: int) -> str:
        return KEYS[classes.index(truth[image_id])]

    def answered() -> int:
        return project.progress().pending_done

    # The first five by keyboard, each durable in the database.
    settle(page)
    for item in batch[:5]:
        page.keyboard.press(key_for(item.image_id))
    wait_until(lambda: answered() == 5, 15, "five labels in the database")
    # A reload in the middle of a batch shows every label given so far.
    page.reload()
    page.frame_locator(GRID).first.locator(".tile").first.wait_for(timeout=30_000)
    names = {c.id: c.name for c in project.classes()}

    def five_shown() -> dict[int, str] | None:
        shown = tile_labels(page)
        return shown if sum(v != "no label yet" for v in shown.values()) == 5 else None

    shown = wait_until(five_shown, 15, "five labels shown after the reload")
    assert all(shown[b.image_id] == names[truth[b.image_id]] for b in batch[:5])

    # Focus is on the first open image after the reload: skip it; then three at once (click,
    # shift+click, one key); the rest one key each.
    settle(page)
    page.keyboard.press("x")
    grid = page.frame_locator(GRID).first
    grid.locator(f".tile[data-image-id='{batch[6].image_id}'] .img").click()
    grid.locator(f".tile[data-image-id='{batch[8].image_id}'] .img").click(modifiers=["Shift"])
    page.keyboard.press("1")
    for item in batch[9:]:
        page.keyboard.press(key_for(item.image_id))
    wait_until(lambda: answered() == 20, 40, "the whole batch in the database")
    # Undo takes back the last answer, a key gives it again.
    page.keyboard.press("u")
    wait_until(lambda: project.label_of(batch[-1].image_id).state == "unlabeled", 10, "the undo")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("End")
    page.keyboard.press(key_for(batch[-1].image_id))
    wait_until(lambda: answered() == 20, 10, "the label given again")

    # An earlier image changed in the "relabel" panel (this tab's recent answers): skipped now.
    panel = page.locator("[data-testid=stExpander] iframe").first
    click_until_shown(panel, lambda: page.get_by_text("Relabel earlier images").click())
    recent = panel.content_frame
    # Newest first: once the last answer leads the list, no late redraw moves the pictures.
    recent.locator(f".tile[data-image-id='{batch[-1].image_id}']:first-child").wait_for(timeout=30_000)
    recent.locator(f".tile[data-image-id='{batch[9].image_id}'] .img").click()
    # The keys go to that grid once it has the focus (it marks itself active then).
    recent.locator("body.active").wait_for(timeout=10_000)
    page.keyboard.press("x")
    wait_until(lambda: project.label_of(batch[9].image_id).state == "unsure", 10, "the relabel")
    labels = {b.image_id: project.label_of(b.image_id) for b in batch}
    assert [labels[b.image_id].state for b in (batch[5], batch[9])] == ["unsure", "unsure"]
    assert all(labels[b.image_id].class_id == classes[0] and labels[b.image_id].source == "bulk"
               for b in batch[6:9])
    assert all(labels[b.image_id].class_id == truth[b.image_id] and labels[b.image_id].source == "user"
               for b in batch[:5] + batch[10:])
    # Back to the batch: a click on the page (outside any grid) gives the keys back to it.
    page_idle(page)
    page.get_by_text("images labeled").first.click()

    # Enter submits; the status panel says what the round does; the next batch replaces this one.
    page.keyboard.press("Enter")
    page.get_by_text("Training and selecting").first.wait_for(timeout=40_000)
    if os.environ.get("RALIF_SCREENSHOTS"):
        # The picture is taken once the submitted batch has left the page (one grid is left).
        with contextlib.suppress(AssertionError):
            wait_until(lambda: page.locator(GRID).count() == 1, 10, "the batch grid to go")
        screenshot(page, "label-training", full=False)
    old = {b.image_id for b in batch}

    def next_batch_shown() -> bool:
        ids = tile_ids(page)
        return len(ids) == 20 and not set(ids) & old

    wait_until(next_batch_shown, 75, "the next batch in the page", every=0.25)
    assert project.round_status()["status"] == "ready" and project.round_status()["round"] == 2
    assert project.progress().labeled == 18 and project.progress().unsure == 2

    # A reload keeps everything: the count in the page and the labels in the database.
    page.reload()
    page.get_by_text("18 of 2,000 images labeled").first.wait_for(timeout=30_000)
    assert all(Project.open(app.projects / "demo").label_of(i).version >= 1 for i in old)

    if os.environ.get("RALIF_SCREENSHOTS"):
        settle(page)
        for item in project.pending_batch()[:4]:
            page.keyboard.press(key_for(item.image_id))
        wait_until(lambda: answered() == 4, 10, "four labels")
        screenshot(page, "label")
        page.get_by_role("link", name="Projects").click()
        page.get_by_text("Create project").first.wait_for(timeout=20_000)
        screenshot(page, "home")
        page.get_by_role("link", name="Classes").click()
        page.get_by_text("Save settings").first.wait_for(timeout=20_000)
        screenshot(page, "classes")
    assert time.monotonic() - started < 120


def test_two_tabs_label_one_project(browser_page: tuple[Page, AppServer]) -> None:
    """Two tabs are two Streamlit sessions on one project: every answer of each is kept once, and
    an image both answer ends with the later answer, which the later tab is told replaced the other."""
    first, app = browser_page
    first.goto(app.url)
    first.frame_locator(GRID).first.locator(".tile").first.wait_for(timeout=60_000)
    second = first.context.new_page()
    second.goto(first.url)
    second.frame_locator(GRID).first.locator(".tile").first.wait_for(timeout=60_000)
    project = Project.open(app.projects / "demo")
    batch = [b.image_id for b in project.pending_batch()]
    classes = [c.id for c in project.classes()]
    page_idle(first)
    page_idle(second)

    def give(page: Page, image_id: int, k: int) -> None:
        page.frame_locator(GRID).first.locator(f".tile[data-image-id='{image_id}'] .img").click()
        page.keyboard.press(KEYS[k])

    # The tabs take turns, one image each, a few milliseconds apart.
    for i in range(5):
        give(first, batch[i], i)
        give(second, batch[10 + i], i + 1)
    wait_until(lambda: project.progress().pending_done == 10, 20, "ten answers from two tabs")
    for i in range(5):
        assert project.label_of(batch[i]).class_id == classes[i]
        assert project.label_of(batch[10 + i]).class_id == classes[i + 1]
    assert all(len(project.label_history(batch[i])) == 1 for i in (*range(5), *range(10, 15)))

    # Both answer image 16: the first tab, then the second, whose page still shows it unlabeled.
    contested = batch[16]
    give(first, contested, 2)
    wait_until(lambda: project.label_of(contested).class_id == classes[2], 10, "the first tab's answer")
    give(second, contested, 3)
    wait_until(lambda: project.label_of(contested).class_id == classes[3], 10, "the second tab's answer")
    second.get_by_text("changed elsewhere").first.wait_for(timeout=10_000)
    history = project.label_history(contested)
    assert [h["new_class_id"] for h in history] == [classes[2], classes[3]]
    assert project.progress().pending_done == 11


def test_classes_past_the_tenth_are_found_by_name_or_number(browser_page: tuple[Page, AppServer]) -> None:
    page, app = browser_page
    page.goto(app.url)
    page.frame_locator(GRID).first.locator(".tile").first.wait_for(timeout=60_000)
    project = Project.open(app.projects / "demo")
    koala, kiwi = project.add_class("koala"), project.add_class("kiwi")
    page.reload()
    grid = page.frame_locator(GRID).first
    grid.locator(f".cls[data-class-id='{kiwi}']").wait_for(timeout=30_000)
    settle(page)
    batch = [b.image_id for b in project.pending_batch()]

    page.keyboard.press("/")
    page.keyboard.type("koa")
    grid.locator(f".finder li.on[data-class-id='{koala}']").wait_for(timeout=5_000)
    page.keyboard.press("Enter")
    wait_until(lambda: project.label_of(batch[0]).class_id == koala, 10, "koala by name")
    # By number: the twelfth class; the focus moved on to the next image.
    page.keyboard.press("c")
    page.keyboard.type("12")
    page.keyboard.press("Enter")
    wait_until(lambda: project.label_of(batch[1]).class_id == kiwi, 10, "kiwi by number")
    # Esc leaves the finder without labeling; the number keys work again after it.
    page.keyboard.press("/")
    page.keyboard.type("zzz")
    grid.locator(".finder li.none").wait_for(timeout=5_000)
    page.keyboard.press("Escape")
    page.keyboard.press("1")
    wait_until(lambda: project.label_of(batch[2]).class_id == project.classes()[0].id, 10, "key 1 after Esc")
    assert project.label_of(batch[1]).class_id == kiwi
