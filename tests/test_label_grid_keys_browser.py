"""The label grid's keys in a plain page standing in for Streamlit (see test_page_keys_browser.py):
a grid drawn after an earlier grid's frame was removed still hears the page's keys, Enter and
Space on a focused control press that control only, the "submit anyway?" and "accept?" questions
hold for the very next key only, Esc (or a finished change) on a page slider, link or button gives
the keys back to the grid, an answer key never goes to an image out of sight, and a grid drawn
while a sidebar link has the focus takes the keys."""

from __future__ import annotations

from typing import Any

from test_e2e_browser import launch, pytestmark, sync_playwright, wait_until
from test_page_keys_browser import grid_args, host

__all__ = ["host", "pytestmark"]


def _open(pw: Any, url: str) -> tuple[Any, Any]:
    browser = launch(pw)
    page = browser.new_page()
    page.goto(url)
    return browser, page


def _unanswered(batch: int, store: str, n: int = 4, accept: str | None = None) -> dict[str, Any]:
    """Arguments for a grid of ``n`` images without an answer, each with a guess of class 1."""
    args = grid_args(batch, store)
    args["items"] = [{**grid_args(batch, store)["items"][0], "id": i, "title": f"#{i}", "rank": i,
                      "state": "unlabeled", "class_id": None, "class_name": None, "version": 0,
                      "predicted": "cat", "predicted_class_id": 1, "confidence": 0.6}
                     for i in range(1, n + 1)]
    if accept:
        args["accept"] = {"mode": accept, "reason": "the model's accuracy is not measured yet"}
    return args


def _draw(page: Any, grid: str, args: dict[str, Any]) -> Any:
    page.evaluate("(id) => window.addGrid(id)", grid)
    page.evaluate("([id, args]) => window.renderGrid(id, args)", [grid, args])
    frame = page.frame_locator(f"#{grid}")
    frame.locator(".tile").first.wait_for(timeout=10_000)
    return frame


# A page that scrolls the grid far out of sight to reach its controls lower down, as the Label
# page does with the "Relabel earlier images" panel under the batch.
BELOW = ("() => { const d = document.createElement('div'); d.id = 'below'; d.style.marginTop = '2500px';"
         " d.innerHTML = '<button id=help>?</button><details><summary id=more>More</summary></details>'"
         " + '<input id=jump><select id=pick><option>0</option><option>1</option></select>';"
         " document.body.append(d); }")


def _open_grid(pw: Any, host: str, args: dict[str, Any] | None = None, *, below: bool = False) -> tuple[Any, Any, Any]:
    """(browser, page, frame): a page with the grid "main" (``args``; by default four unanswered
    images of batch 7), and with ``below`` the page's controls far under it (:data:`BELOW`)."""
    browser, page = _open(pw, host)
    frame = _draw(page, "main", args or _unanswered(7, "store-main"))
    if below:
        page.evaluate(BELOW)
    return browser, page, frame


def _events(page: Any, kind: str) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for sent in page.evaluate("() => window.sent"):
        for ev in sent["outbox"]:
            if ev.get("type") == kind:
                seen[ev["id"]] = ev
    return list(seen.values())


def _submits(page: Any) -> list[tuple[str, int]]:
    """(the frame that sent it, its round) of every submit sent, once each."""
    seen = {ev["id"]: (sent["from"], ev.get("round")) for sent in page.evaluate("() => window.sent")
            for ev in sent["outbox"] if ev.get("type") == "submit"}
    return list(seen.values())


def _message(frame: Any) -> str:
    return frame.locator("#msg").evaluate("m => m.classList.contains('show') ? m.innerText : ''")


def test_a_grid_drawn_after_the_first_frame_was_removed_gets_the_page_keys(host: str) -> None:
    # After a submit (or a visit to another page) Streamlit removes the grid's frame and draws a
    # new one: the page's keys must reach the new grid, however many times this happens.
    with sync_playwright() as pw:
        browser, page = _open(pw, host)
        for n, grid in enumerate(("first", "second", "third")):
            _draw(page, grid, grid_args(6 + n, f"store-{grid}"))
            page.evaluate("() => { window.sent = []; }")
            page.keyboard.press("Enter")
            assert wait_until(lambda: _submits(page), 10, f"the submit of grid {grid}") == [(grid, 6 + n)]
            page.evaluate("(id) => document.getElementById(id).remove()", grid)
        # No listener of a removed frame is left behind on the page.
        _draw(page, "last", grid_args(9, "store-last"))
        assert page.evaluate("() => window.__ralifGridKeys.grids.map((g) => g.frame.id)") == ["last"]
        browser.close()


def test_enter_and_space_on_a_focused_button_press_that_button_only(host: str) -> None:
    with sync_playwright() as pw:
        browser, page, frame = _open_grid(pw, host)
        keys = frame.locator("#keys")
        keys.focus()
        for n, key in enumerate(("Enter", " ", "Enter")):
            page.keyboard.press(key)
            expanded = "true" if n % 2 == 0 else "false"
            wait_until(lambda e=expanded: keys.get_attribute("aria-expanded") == e, 10, f"the help toggled by {key!r}")
        assert "no answer" not in _message(frame)
        # The Skip button pressed with Enter skips the focused image, and nothing else happens.
        frame.locator("button", has_text="Skip (x)").focus()
        page.keyboard.press("Enter")
        wait_until(lambda: _events(page, "label"), 10, "the skip")
        assert [e["class_id"] for e in _events(page, "label")] == [None]
        # The Submit button itself: its first press asks, its second submits.
        frame.locator("#submit").focus()
        page.keyboard.press("Enter")
        wait_until(lambda: "3 of 4 images have no answer yet" in _message(frame), 10, "the question")
        assert not _events(page, "submit")
        page.keyboard.press("Enter")
        wait_until(lambda: _events(page, "submit"), 10, "the submit")
        assert [e["unanswered"] for e in _events(page, "submit")] == [3]
        browser.close()


def test_the_submit_question_holds_for_the_next_key_only(host: str) -> None:
    with sync_playwright() as pw:
        browser, page, frame = _open_grid(pw, host)
        page.keyboard.press("Enter")
        wait_until(lambda: "4 of 4 images have no answer yet" in _message(frame), 10, "the question")
        # An answer instead of the second Enter: the question is gone, and the next Enter asks again.
        page.keyboard.press("1")
        wait_until(lambda: "no answer" not in _message(frame), 10, "the question withdrawn")
        wait_until(lambda: "1 of 4" in frame.locator("#status").inner_text(), 10, "the count")
        page.keyboard.press("Enter")
        wait_until(lambda: "3 of 4 images have no answer yet" in _message(frame), 10, "the question again")
        # Any other key withdraws it too.
        page.keyboard.press("ArrowRight")
        wait_until(lambda: "no answer" not in _message(frame), 10, "the question withdrawn by a move")
        page.keyboard.press("Enter")
        wait_until(lambda: "3 of 4 images have no answer yet" in _message(frame), 10, "the question once more")
        assert not _events(page, "submit")
        page.keyboard.press("Enter")
        wait_until(lambda: _events(page, "submit"), 10, "the submit")
        assert [(e["allow_unanswered"], e["unanswered"]) for e in _events(page, "submit")] == [(True, 3)]
        browser.close()


def test_the_accept_question_goes_once_answered(host: str) -> None:
    with sync_playwright() as pw:
        browser, page, frame = _open_grid(pw, host, _unanswered(7, "store-main", accept="confirm"))
        page.keyboard.press("a")
        wait_until(lambda: 'Accept "cat" for this image?' in _message(frame), 10, "the question")
        page.keyboard.press("ArrowRight")
        wait_until(lambda: "Accept" not in _message(frame), 10, "the question withdrawn by a move")
        page.keyboard.press("a")
        wait_until(lambda: "Accept" in _message(frame), 10, "the question again")
        page.keyboard.press("a")
        wait_until(lambda: _events(page, "label"), 10, "the guess accepted")
        assert [(e["image_id"], e["class_id"]) for e in _events(page, "label")] == [(2, 1)]
        # The focus moved on to the next image: the question about the last one is gone.
        wait_until(lambda: frame.locator(".tile.focus").get_attribute("data-image-id") == "3", 10, "the move")
        wait_until(lambda: "Accept" not in _message(frame), 10, "the question gone")
        browser.close()


def test_esc_or_a_finished_change_on_a_page_slider_gives_the_keys_back(host: str) -> None:
    with sync_playwright() as pw:
        args = _unanswered(7, "store-main")
        browser, page, _ = _open_grid(pw, host, args)
        # A slider of the page, as Streamlit draws its sliders (an input of type range).
        page.evaluate("() => { const s = document.createElement('input'); s.type = 'range'; s.id = 'size';"
                      " s.min = 0; s.max = 2; s.value = 1; document.body.prepend(s); }")
        slider = page.locator("#size")
        slider.focus()
        page.keyboard.press("ArrowRight")
        assert slider.input_value() == "2"
        page.keyboard.press("1")   # the slider has the keys while it is being used
        page.keyboard.press("Escape")
        wait_until(lambda: not page.evaluate("() => document.activeElement.id === 'size'"), 10, "the slider let go")
        page.keyboard.press("1")
        wait_until(lambda: _events(page, "label"), 10, "a label by key after Esc")
        # A change of tile size drawn while the slider still has the focus ends its use too.
        slider.focus()
        page.keyboard.press("ArrowLeft")
        page.evaluate("([id, args]) => window.renderGrid(id, args)", ["main", {**args, "image_px": 96}])
        wait_until(lambda: not page.evaluate("() => document.activeElement.id === 'size'"), 10,
                   "the slider let go after the change")
        page.keyboard.press("1")
        wait_until(lambda: len(_events(page, "label")) == 2, 10, "a label by key after the change")
        browser.close()


def _tile_in_view(page: Any, grid: str, image_id: int) -> bool:
    return page.evaluate(
        """([grid, id]) => { const f = document.getElementById(grid);
             const t = f.contentDocument.querySelector(`.tile[data-image-id='${id}']`);
             const top = f.getBoundingClientRect().top + t.getBoundingClientRect().top;
             return top >= 0 && top + t.offsetHeight <= innerHeight; }""", [grid, image_id])


def _held_back(page: Any, frame: Any, focused: int, answers: int = 0) -> None:
    """The grid came into view with the keys and says so, and nothing more was written."""
    wait_until(lambda: f"Keys go to the batch: #{focused} is focused" in _message(frame), 10, "the notice")
    wait_until(lambda: _tile_in_view(page, "main", focused), 10, "the focused tile scrolled into view")
    wait_until(lambda: page.evaluate("() => document.activeElement.id === 'main'"), 10, "the keys in the grid")
    # Until the burst of typing is over, its later keys stay held back too.
    wait_until(lambda: frame.locator("body").evaluate("() => Date.now() > S.heldUntil"), 10, "the pause")
    assert len(_events(page, "label")) == answers


def _away(page: Any, target: str, focus: bool = True) -> None:
    page.evaluate("(id) => document.getElementById(id).scrollIntoView()", target)
    if focus:
        page.locator(f"#{target}").focus()
    wait_until(lambda: not _tile_in_view(page, "main", 1), 10, "the grid out of sight")


def test_an_answer_key_never_goes_to_an_image_out_of_sight(host: str) -> None:
    with sync_playwright() as pw:
        browser, page, frame = _open_grid(pw, host, below=True)
        # An image number typed on a button far below the grid: no answer, the grid comes to view.
        _away(page, "help")
        page.keyboard.type("12")
        _held_back(page, frame, 1)
        page.keyboard.press("1")   # pressed again, now that the image is in view: it answers it
        wait_until(lambda: _events(page, "label"), 10, "the answer")
        assert [(e["image_id"], e["class_id"]) for e in _events(page, "label")] == [(1, 1)]
        # The same from the header of a folded section, with the skip and accept keys.
        for key in ("x", "a"):
            _away(page, "more")
            page.keyboard.press(key)
            _held_back(page, frame, 2, answers=1)
        # Space skips only where no control takes it: with the focus on nothing.
        _away(page, "more")
        page.evaluate("() => document.activeElement.blur()")
        page.keyboard.press(" ")
        _held_back(page, frame, 2, answers=1)
        # Moving is no answer: it moves the focus and brings it into view.
        _away(page, "help")
        page.keyboard.press("ArrowRight")
        wait_until(lambda: _tile_in_view(page, "main", 3), 10, "the moved focus in view")
        assert frame.locator(".tile.focus").get_attribute("data-image-id") == "3"
        # Keys typed into a text field or a list of the page stay there.
        _away(page, "jump")
        page.keyboard.type("12")
        assert page.locator("#jump").input_value() == "12"
        page.locator("#pick").focus()
        page.keyboard.press("1")
        assert page.locator("#pick").input_value() == "1"
        assert not _tile_in_view(page, "main", 3)
        assert len(_events(page, "label")) == 1
        browser.close()


def test_a_grid_drawn_after_a_sidebar_link_takes_the_keys_and_esc_gives_them_back(host: str) -> None:
    with sync_playwright() as pw:
        browser, page = _open(pw, host)
        # As Streamlit leaves it after a click on its sidebar link to the page: the link focused.
        page.evaluate("() => { document.body.insertAdjacentHTML('afterbegin', '<nav data-testid=stSidebarNav>"
                      "<a id=nav href=#label>Label</a></nav><a id=other href=#other>Other</a>'); }")
        page.locator("#nav").focus()
        frame = _draw(page, "main", _unanswered(7, "store-main", n=2))
        wait_until(lambda: page.evaluate("() => document.activeElement.id === 'main'"), 10, "the keys in the grid")
        page.keyboard.press("1")
        page.keyboard.press("1")
        wait_until(lambda: "2 of 2" in frame.locator("#status").inner_text(), 10, "the batch answered")
        # Esc on a link of the page gives the keys back to the grid: Enter then submits.
        page.locator("#other").focus()
        page.keyboard.press("Escape")
        wait_until(lambda: page.evaluate("() => document.activeElement.id === 'main'"), 10, "the keys back")
        page.keyboard.press("Enter")
        wait_until(lambda: _submits(page), 10, "the submit")
        assert page.evaluate("() => location.hash") == ""
        browser.close()


def test_keys_typed_in_the_grid_answer_even_while_the_image_is_still_scrolling_in(host: str) -> None:
    """The labeling itself: with the keys in the grid, an answer key answers the focused image
    whatever the page's scroll (a fast labeler's next key arrives before the next image is in view)."""
    with sync_playwright() as pw:
        browser, page, frame = _open_grid(pw, host, below=True)
        _away(page, "help", focus=False)
        # The keys in the grid's frame, as after the last answer, while the page is scrolled away.
        frame.locator("body").evaluate("() => window.focus()")
        wait_until(lambda: page.evaluate("() => document.activeElement.id === 'main'"), 10, "the keys in the grid")
        assert not _tile_in_view(page, "main", 1)
        page.keyboard.press("1")
        page.keyboard.press("1")
        wait_until(lambda: len(_events(page, "label")) == 2, 10, "both answers")
        assert [(e["image_id"], e["class_id"]) for e in _events(page, "label")] == [(1, 1), (2, 1)]
        assert "Keys go to" not in _message(frame)
        browser.close()


def _selected(frame: Any) -> list[int]:
    return frame.locator(".tile[aria-selected=true]").evaluate_all(
        "ts => ts.map(t => Number(t.dataset.imageId))")


def test_shift_arrows_select_a_range_that_one_class_key_labels(host: str) -> None:
    args = _unanswered(7, "store-main", n=6)
    # A guess that counts as a merged class's target shows its stored share as a lower bound.
    args["items"][1]["confidence_floor"] = True
    with sync_playwright() as pw:
        browser, page, frame = _open_grid(pw, host, args)
        assert frame.locator(".tile[data-image-id='2'] .conf").inner_text() == "model: cat ≥ 60%"
        assert frame.locator(".tile[data-image-id='1'] .conf").inner_text() == "model: cat 60%"
        page.keyboard.press("Shift+ArrowRight")
        page.keyboard.press("Shift+ArrowRight")
        wait_until(lambda: _selected(frame) == [1, 2, 3], 10, "images 1-3 selected")
        # Back one step shrinks the range towards the anchor, as in a file manager.
        page.keyboard.press("Shift+ArrowLeft")
        wait_until(lambda: _selected(frame) == [1, 2], 10, "images 1-2 selected")
        page.keyboard.press("1")
        wait_until(lambda: _events(page, "bulk"), 10, "the bulk answer")
        assert [(sorted(e["image_ids"]), e["class_id"]) for e in _events(page, "bulk")] == [([1, 2], 1)]
        assert _selected(frame) == [] and not _events(page, "label")
        # The focus moved on to the first image without an answer; a new range starts there, and Esc
        # clears it without writing anything.
        page.keyboard.press("Shift+ArrowRight")
        wait_until(lambda: _selected(frame) == [3, 4], 10, "images 3-4 selected")
        page.keyboard.press("Escape")
        wait_until(lambda: _selected(frame) == [], 10, "the selection cleared")
        page.keyboard.press("x")
        wait_until(lambda: _events(page, "label"), 10, "one answer")
        assert [(e["image_id"], e["class_id"]) for e in _events(page, "label")] == [(4, None)]
        assert len(_events(page, "bulk")) == 1
        browser.close()


def test_shift_arrows_extend_a_shift_click_range_and_restart_where_the_focus_left_it(host: str) -> None:
    with sync_playwright() as pw:
        browser, page, frame = _open_grid(pw, host, _unanswered(7, "store-main", n=6))
        frame.locator(".tile[data-image-id='3'] .img").click(modifiers=["Shift"])
        wait_until(lambda: _selected(frame) == [1, 2, 3], 10, "images 1-3 selected by shift+click")
        page.keyboard.press("Shift+ArrowRight")
        wait_until(lambda: _selected(frame) == [1, 2, 3, 4], 10, "the same range extended to image 4")
        # The focus jumps away from the range: the next shift+arrow starts a new range there, never
        # one that spans images passed over without being seen.
        page.keyboard.press("End")
        page.keyboard.press("Shift+ArrowLeft")
        wait_until(lambda: _selected(frame) == [5, 6], 10, "a new range at the end")
        assert not _events(page, "bulk") and not _events(page, "label")
        browser.close()
