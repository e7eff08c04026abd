"""The label grid hears keys typed on the page around it (not only inside its frame), and keeps
hearing them when Streamlit replaces its frame: a frame that loaded late and was then removed must
not take the page's keys away from the grid that stays.

The grid runs here in a plain page standing in for Streamlit: its frames load the component's own
files from a local server and get their arguments as Streamlit sends them (a render message)."""

from __future__ import annotations

import functools
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from test_e2e_browser import launch, pytestmark, sync_playwright, wait_until

__all__ = ["pytestmark"]

COMPONENT = Path(__file__).resolve().parents[1] / "ralif/ui/components/label_grid"

HOST = """<!doctype html><html><body>
<script>
window.evalBlocked = (() => { try { new Function("return 1"); return false; } catch (e) { return true; } })();
window.sent = [];
window.addEventListener("message", (e) => {
  const d = e.data;
  if (!d || d.type !== "streamlit:setComponentValue") return;
  const from = Array.from(document.querySelectorAll("iframe")).find((f) => f.contentWindow === e.source);
  window.sent.push({from: from ? from.id : "gone", outbox: d.value.outbox});
});
window.addGrid = (id) => new Promise((done) => {
  const f = document.createElement("iframe");
  f.id = id; f.title = "label_grid " + id; f.src = "grid/index.html"; f.width = 600; f.height = 300;
  f.addEventListener("load", () => done(true));
  document.body.append(f);
});
window.renderGrid = (id, args) => document.getElementById(id).contentWindow.postMessage(
  {type: "streamlit:render", args: args}, "*");
// As Streamlit does: a grid announcing itself ready gets its arguments at once.
window.argsFor = {};
window.addEventListener("message", (e) => {
  if (!e.data || e.data.type !== "streamlit:componentReady") return;
  const from = Array.from(document.querySelectorAll("iframe")).find((f) => f.contentWindow === e.source);
  if (from && window.argsFor[from.id]) window.renderGrid(from.id, window.argsFor[from.id]);
});
</script></body></html>"""


def grid_args(batch: int, store: str) -> dict[str, Any]:
    items = [{"id": i, "src": "", "title": f"#{i}", "subtitle": "", "alt": f"image {i}", "predicted": None,
              "predicted_class_id": None, "confidence": None, "no_prediction": "", "why": "", "why_full": "",
              "tooltip": "", "rank": i, "state": "labeled", "class_id": 1, "class_name": "cat", "version": 1}
             for i in (1, 2, 3)]
    return {"items": items, "classes": [{"id": 1, "name": "cat", "count": 3, "key": "1", "color": "#cc3333"}],
            "mode": "batch", "batch_id": batch, "acked": [], "notice": None, "focus_hint": None,
            "capture_page_keys": True, "image_px": 64, "empty": "", "sticky": False, "accept": None,
            "store_key": store}


class _Files(http.server.SimpleHTTPRequestHandler):
    slow: ClassVar[set[str]] = set()   # files served a second late, as on a loaded machine

    def do_GET(self) -> None:
        if self.path.rsplit("/", 1)[-1] in self.slow:
            time.sleep(1.0)
        super().do_GET()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def host(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "index.html").write_text(HOST, encoding="utf-8")
    # The same page under a policy that forbids building code from text (no 'unsafe-eval').
    strict = "<meta http-equiv=\"Content-Security-Policy\" content=\"script-src 'self' 'unsafe-inline'\">"
    (tmp_path / "strict.html").write_text(HOST.replace("<body>", "<head>" + strict + "</head><body>", 1),
                                          encoding="utf-8")
    (tmp_path / "grid").symlink_to(COMPONENT, target_is_directory=True)
    _Files.slow = set()
    handler = functools.partial(_Files, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    finally:
        server.shutdown()
        server.server_close()


def _show(page: Any, grid: str, batch: int) -> None:
    page.evaluate("(id) => window.addGrid(id)", grid)
    page.evaluate("([id, args]) => window.renderGrid(id, args)", [grid, grid_args(batch, f"store-{grid}")])
    page.frame_locator(f"#{grid}").locator(".tile").first.wait_for(timeout=10_000)


def _submits(page: Any) -> list[tuple[str, int]]:
    return [(s["from"], ev.get("round")) for s in page.evaluate("() => window.sent")
            for ev in s["outbox"] if ev.get("type") == "submit"]


@pytest.mark.parametrize("policy", ["none", "strict"])
def test_enter_on_the_page_submits_the_grids_batch(host: str, policy: str) -> None:
    with sync_playwright() as pw:
        browser = launch(pw)
        page = browser.new_page()
        page.goto(host if policy == "none" else host.replace("index.html", "strict.html"))
        if policy == "strict":
            assert page.evaluate("() => window.evalBlocked")  # the page's own scripts may not build code
        _show(page, "main", 7)
        page.keyboard.press("Enter")  # the focus is on the page, not in the grid's frame
        assert wait_until(lambda: _submits(page), 10, "the submit") == [("main", 7)]
        browser.close()


def test_a_replaced_frame_that_loaded_last_leaves_the_keys_to_the_grid_that_stays(host: str) -> None:
    with sync_playwright() as pw:
        browser = launch(pw)
        page = browser.new_page()
        page.goto(host)
        _show(page, "live", 7)
        _show(page, "stale", 6)   # an older frame of the same grid, drawn after the live one
        page.evaluate("() => document.getElementById('stale').remove()")
        page.keyboard.press("Enter")
        assert wait_until(lambda: _submits(page), 10, "the submit") == [("live", 7)]
        # And once more, after the first key: the page keeps its keys for every later one.
        page.evaluate("() => { window.sent = []; }")
        page.frame_locator("#live").locator("body").evaluate("() => { S.outbox = []; S.confirmSubmit = null; }")
        page.keyboard.press("Enter")
        assert wait_until(lambda: _submits(page), 10, "the second submit") == [("live", 7)]
        browser.close()


def test_a_render_before_the_last_script_has_loaded_still_gives_the_page_keys(host: str) -> None:
    # keys.js arrives a second after the rest: the grid must not say it is ready (and so get its
    # first render) before it can attach the page's keys.
    _Files.slow = {"keys.js"}
    with sync_playwright() as pw:
        browser = launch(pw)
        page = browser.new_page()
        page.goto(host)
        page.evaluate("([id, args]) => { window.argsFor[id] = args; return window.addGrid(id); }",
                      ["main", grid_args(9, "store-main")])
        page.frame_locator("#main").locator(".tile").first.wait_for(timeout=10_000)
        page.evaluate("([id, args]) => window.renderGrid(id, args)", ["main", grid_args(9, "store-main")])  # a rerun
        page.keyboard.press("Enter")
        assert wait_until(lambda: _submits(page), 10, "the submit") == [("main", 9)]
        browser.close()
