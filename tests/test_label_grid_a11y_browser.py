"""The label grid for a person using a screen reader, in a plain page standing in for Streamlit
(see test_page_keys_browser.py): the tile with the ring is the one with the keyboard focus, and
says its number, its file and its answer; and a message of the grid goes once its cause is gone
(a key no class had, once the classes change; the "submit anyway?" question, once the batch is
answered from the page)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from test_e2e_browser import launch, pytestmark, sync_playwright, wait_until
from test_page_keys_browser import grid_args, host

__all__ = ["host", "pytestmark"]

FILES = ["dog_01.jpg", "cat_07.png", "bird_3.jpg", "fox 2.jpg", "owl.jpg", "eel.jpg"]


def _args(classes: list[dict[str, Any]], n: int = 6, answered: int = 0) -> dict[str, Any]:
    args = grid_args(7, "store-main")
    base = args["items"][0]
    args["items"] = [{**base, "id": 10 + i, "title": f"#{i + 1}", "rank": i + 1, "subtitle": FILES[i],
                      "alt": f"image {i + 1} of the batch", "tooltip": f"/data/pets/{FILES[i]}",
                      "state": "labeled" if i < answered else "unlabeled",
                      "class_id": classes[0]["id"] if i < answered else None,
                      "class_name": classes[0]["name"] if i < answered else None, "version": 0,
                      "predicted": "cat", "predicted_class_id": 1, "confidence": 0.6, "why": "far from every label"}
                     for i in range(n)]
    args["classes"] = classes
    return args


CAT = {"id": 1, "name": "cat", "count": 0, "key": "1", "color": "#cc3333"}
DOG = {"id": 2, "name": "dog", "count": 0, "key": "2", "color": "#3366cc"}


def _open(pw: Any, host: str, args: dict[str, Any]) -> tuple[Any, Any, Any]:
    browser = launch(pw)
    page = browser.new_context(viewport={"width": 1280, "height": 720}).new_page()
    page.goto(host)
    page.evaluate("(id) => window.addGrid(id)", "main")
    page.evaluate("() => { const f = document.getElementById('main'); f.width = 1200; f.height = 640; }")
    page.evaluate("([id, args]) => window.renderGrid(id, args)", ["main", args])
    frame = page.frame_locator("#main")
    frame.locator(".tile").first.wait_for(timeout=10_000)
    return browser, page, frame


def _render(page: Any, args: dict[str, Any]) -> None:
    page.evaluate("([id, args]) => window.renderGrid(id, args)", ["main", args])


def _focused(frame: Any) -> dict[str, Any]:
    """The frame's focused element and the tile with the ring."""
    return frame.locator("body").evaluate(
        """() => { const a = document.activeElement, r = document.querySelector('.tile.focus');
             return {active: a && a.dataset ? (a.dataset.imageId || a.tagName) : null,
                     ring: r ? r.dataset.imageId : null, name: a && a.getAttribute('aria-label'),
                     role: a && a.getAttribute('role'),
                     tabbable: Array.from(document.querySelectorAll('.tile[tabindex="0"]'))
                       .map(t => t.dataset.imageId)}; }""")


def _on(frame: Any, image_id: int, name: str) -> None:
    """The ring on ``image_id``, which has the keyboard focus and is named ``name``."""
    def ok() -> bool:
        f = _focused(frame)
        return f["ring"] == str(image_id) and f["active"] == str(image_id) and f["tabbable"] == [str(image_id)]
    try:
        wait_until(ok, 5, f"the keyboard focus on image {image_id}")
    except AssertionError:
        raise AssertionError(f"the keyboard focus is not on the tile with the ring: {_focused(frame)}") from None
    assert _focused(frame)["name"] == name
    # As assistive technology finds it: an option of the list of images, by that name, focused.
    option = frame.get_by_role("listbox").get_by_role("option", name=name, exact=True)
    assert option.count() == 1
    assert option.evaluate("t => t === document.activeElement")


def _ax_focus(page: Any) -> tuple[str, str]:
    """(role, name) of the focused node of the grid's frame in Chromium's own accessibility tree."""
    cdp = page.context.new_cdp_session(page)
    tree = cdp.send("Page.getFrameTree")["frameTree"]
    frame_id = next(c["frame"]["id"] for c in tree.get("childFrames", []) if c["frame"]["url"].endswith("index.html"))
    nodes = cdp.send("Accessibility.getFullAXTree", {"frameId": frame_id})["nodes"]
    cdp.detach()
    # The document of a focused frame counts as focused too: the element is the one inside it.
    focused = [(n["role"]["value"], n.get("name", {}).get("value", "")) for n in nodes
               if any(p["name"] == "focused" and p["value"]["value"] for p in n.get("properties", []))]
    inside = [f for f in focused if f[0] != "RootWebArea"]
    return inside[-1] if inside else ("", "")


def window_shot(page: Any, name: str) -> None:
    """With ``RALIF_SCREENSHOTS=DIR``, what the window shows, into DIR."""
    folder = os.environ.get("RALIF_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"))


def grid_message(frame: Any) -> str:
    return frame.locator("#msg").evaluate("m => m.classList.contains('show') ? m.innerText : ''")


def test_the_tile_with_the_ring_has_the_keyboard_focus_and_says_what_it_shows(host: str) -> None:
    with sync_playwright() as pw:
        browser, page, frame = _open(pw, host, _args([CAT, DOG]))
        # The grid takes the page's keys when drawn: the first image has them, and says so.
        _on(frame, 10, "Image 1 of 6, dog_01.jpg, no label yet")
        assert _ax_focus(page) == ("option", "Image 1 of 6, dog_01.jpg, no label yet")
        page.keyboard.press("2")
        _on(frame, 11, "Image 2 of 6, cat_07.png, no label yet")
        assert frame.get_by_role("option", name="Image 1 of 6, dog_01.jpg, labeled dog", exact=True).count() == 1
        page.keyboard.press("ArrowRight")
        _on(frame, 12, "Image 3 of 6, bird_3.jpg, no label yet")
        page.keyboard.press("x")
        _on(frame, 13, "Image 4 of 6, fox 2.jpg, no label yet")
        assert frame.get_by_role("option", name="Image 3 of 6, bird_3.jpg, skipped", exact=True).count() == 1
        page.keyboard.press("ArrowLeft")
        page.keyboard.press("ArrowLeft")
        _on(frame, 11, "Image 2 of 6, cat_07.png, no label yet")
        page.keyboard.press("End")
        _on(frame, 15, "Image 6 of 6, eel.jpg, no label yet")
        page.keyboard.press("Home")
        _on(frame, 10, "Image 1 of 6, dog_01.jpg, labeled dog")
        assert _ax_focus(page) == ("option", "Image 1 of 6, dog_01.jpg, labeled dog")
        # The model's guess is its description.
        assert "model: cat 60%" in frame.locator(".tile.focus").evaluate(
            "t => t.getAttribute('aria-describedby').split(' ').map(i => document.getElementById(i).textContent)"
            ".join(' ')")

        # Selected images (ctrl+click) are the selected options; the clicked one has the focus.
        frame.locator(".tile[data-image-id='14'] img").click(modifiers=["Control"])
        _on(frame, 14, "Image 5 of 6, owl.jpg, no label yet")
        assert frame.get_by_role("option", selected=True).evaluate_all("ts => ts.map(t => t.dataset.imageId)") == ["14"]
        assert frame.get_by_role("listbox").get_attribute("aria-multiselectable") == "true"
        page.keyboard.press("Escape")
        assert frame.get_by_role("option", selected=True).count() == 0

        # Tab leaves the grid for its buttons and comes back to the tile with the ring; a key
        # pressed on a button (Enter, Space) still presses the button, and leaves its focus there.
        frame.locator("#keys").focus()
        page.keyboard.press("Enter")
        assert frame.locator("#keys").evaluate("b => b === document.activeElement")
        page.keyboard.press("Tab")
        _on(frame, 14, "Image 5 of 6, owl.jpg, no label yet")

        # A render of the app (the answers saved, one changed since) keeps the focus where it is.
        saved = {**_args([CAT, DOG], answered=1), "acked": frame.locator("body").evaluate(
            "() => S.outbox.map((e) => e.id)")}
        _render(page, saved)
        wait_until(lambda: frame.get_by_role("option", name="Image 1 of 6, dog_01.jpg, labeled cat",
                                             exact=True).count() == 1, 5, "the render")
        _on(frame, 14, "Image 5 of 6, owl.jpg, no label yet")
        browser.close()


def test_a_message_about_the_keys_goes_when_the_classes_change(host: str) -> None:
    with sync_playwright() as pw:
        browser, page, frame = _open(pw, host, _args([]))
        page.keyboard.press("1")
        no_key = "No class has the key 1; press / to find a class."
        wait_until(lambda: grid_message(frame) == no_key, 5, "the message")
        window_shot(page, "grid-no-key-before")
        # Classes added in the form above the grid: the message about the keys goes with the old ones.
        airplane = {"id": 5, "name": "airplane", "count": 0, "key": "1", "color": "#1f77b4"}
        _render(page, _args([airplane]))
        frame.locator(".cls", has_text="airplane").wait_for(timeout=5_000)
        try:
            wait_until(lambda: grid_message(frame) == "", 3, "the message gone")
        except AssertionError:
            window_shot(page, "grid-no-key-stale")
            raise AssertionError(f"the message outlived its cause: {grid_message(frame)!r}") from None
        window_shot(page, "grid-no-key-after")

        # A key still without a class: the message stays through a render that changes no class
        # (an answer saved: a count changes), and goes once a class has that key.
        page.keyboard.press("2")
        wait_until(lambda: grid_message(frame) == "No class has the key 2; press / to find a class.", 5, "the message")
        _render(page, _args([{**airplane, "count": 1}], answered=1))
        wait_until(lambda: frame.locator(".tile .chip", has_text="airplane").count() == 1, 5, "the render")
        assert grid_message(frame).startswith("No class has the key 2")
        _render(page, _args([{**airplane, "count": 1}, {**DOG, "id": 6, "name": "bird"}], answered=1))
        wait_until(lambda: grid_message(frame) == "", 3, "the message gone once a class has the key 2")

        # The class finder lists the classes the grid has now, and its "no match" goes with them.
        page.keyboard.press("/")
        page.keyboard.type("tru")
        page.keyboard.press("Enter")
        wait_until(lambda: grid_message(frame).startswith("No class matches"), 5, "no match")
        _render(page, _args([{**airplane, "count": 1}, {**DOG, "id": 6, "name": "bird"},
                             {"id": 7, "name": "truck", "count": 0, "key": "3", "color": "#2ca02c"}], answered=1))
        wait_until(lambda: frame.locator("#finder li", has_text="truck").count() == 1, 3, "the new class in the finder")
        wait_until(lambda: grid_message(frame) == "", 3, "no match gone")
        browser.close()


def test_the_submit_question_goes_once_the_batch_is_answered_from_the_page(host: str) -> None:
    with sync_playwright() as pw:
        browser, page, frame = _open(pw, host, _args([CAT, DOG]))
        page.keyboard.press("Enter")
        wait_until(lambda: "6 of 6 images have no answer yet" in grid_message(frame), 5, "the question")
        # "Fill the rest with true labels", a button of the page: every image has its answer now.
        _render(page, _args([CAT, DOG], answered=6))
        wait_until(lambda: "6 of 6 answered" in frame.locator("#status").inner_text(), 5, "the render")
        wait_until(lambda: "no answer" not in grid_message(frame), 3, "the question gone")
        browser.close()
