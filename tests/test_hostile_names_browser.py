"""Hostile names in a real browser: project, class and file names that are Markdown, HTML, LaTeX or
Streamlit colour directives are shown literally on every page, and the browser makes no request
outside the app's own origin (an image link in a name points at a local server that must get
nothing). Projects that cannot be opened (not a ralif file, corrupt) show a clear box naming the
log file, no traceback, and the foreign file is left byte for byte as it was.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image
from test_e2e_browser import (
    Page,
    launch,
    pytestmark,
    sync_playwright,
    wait_until,
)

from ralif.project import Project
from ralif.ui.launch import AppServer, free_port
from ralif.ui.text import JOINER

# The imported marks skip this module where Chromium or Playwright is missing.
__all__ = ["pytestmark"]

PAGES = ["", "Label", "Map", "Progress", "Export", "Classes"]


class _Trap(BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).hits.append(self.path)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def trap_server() -> Iterator[tuple[int, list[str]]]:
    """A local server standing in for an outside host: every request it gets is a leak."""
    hits: ClassVar[list[str]] = []
    handler = type("Trap", (_Trap,), {"hits": hits})
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], hits
    finally:
        server.shutdown()
        server.server_close()


def shown(page: Page, selector: str) -> str:
    """The text a person reads (the invisible word joiners that stop automatic links removed)."""
    return page.locator(selector).first.inner_text().replace(JOINER, "")


def hostile_names(port: int) -> list[str]:
    host = f"http://127.0.0.1:{port}"
    return [f"![p]({host}/img.png)", f"<img src={host}/html.png onerror=alert(1)>", "$x^2$", ":red[x]",
            f"[link]({host}/link)", "**bold** `tick`"]


def make_project(root: Path, port: int) -> tuple[Project, list[str]]:
    names = hostile_names(port)
    images = root.parent / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):
        # A file name that is Markdown too (no slash: it is one path component).
        path = images / f"$f{i}$ :red[x] <b>{i}.png"
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path)
        rows.append({"path": str(path), "label": names[i % len(names)] if i < 12 else ""})
    manifest = images.parent / "list.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.DictWriter(f, ["path", "label"])
        w.writeheader()
        w.writerows(rows)
    name = f"{names[0]} {names[1]} $y$ :blue[p]"
    project = Project.create(root / "hostile $x$ :red[x]", manifest, name=name, model="clip-linear",
                             encoder="pixels:8", batch_size=6)
    return project, names


@pytest.fixture(scope="module")
def hostile_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AppServer, Project, list[str], int,
                                                                             list[str]]]:
    """One app on a project whose name, class names and file names are hostile, and the trap."""
    tmp = tmp_path_factory.mktemp("hostile")
    with trap_server() as (port, hits):
        project, names = make_project(tmp / "projects", port)
        with AppServer(tmp / "projects", log=str(tmp / "app.log"), env={"HF_HUB_OFFLINE": "1"}) as app:
            yield app, project, names, port, hits


@pytest.mark.parametrize("name", PAGES)
def test_hostile_names_are_literal_and_nothing_leaves(hostile_app: tuple, name: str) -> None:
    app, project, names, port, hits = hostile_app
    hits.clear()
    what = name or "Projects"
    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            requests: list[str] = []
            dialogs: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(f"{app.url}/{name}?project={project.folder.name}")
            # The sidebar shows the open project's name as typed, on every page.
            wait_until(lambda: project.name in shown(page, "[data-testid=stSidebar]"), 60,
                       f"the project's name in the sidebar of {what}")
            time.sleep(2.0)    # let late parts (charts, components) render and fetch
            body = shown(page, "body")
            assert "Traceback" not in body, f"{what}: a traceback is shown"
            # Nothing was turned into an image, a link to the trap, LaTeX or coloured text.
            main = page.locator("[data-testid=stApp]")
            for kind, sel in (("image", f"img[src*='127.0.0.1:{port}']"), ("link", f"a[href*='127.0.0.1:{port}']"),
                              ("LaTeX", ".katex")):
                found = main.locator(sel)
                assert found.count() == 0, f"{what}: a name became {kind}: " + str(found.evaluate_all(
                    "es => es.map(e => e.parentElement.outerHTML.slice(0, 300))"))
            if name in ("Label", "Classes"):
                assert names[0] in body and names[3] in body, f"{what}: class names not shown as typed"
            if name == "":
                assert project.name in body
        finally:
            browser.close()
    outside = [u for u in requests if not u.startswith((app.url, "data:", "blob:", "about:"))]
    assert outside == [], f"{what}: the browser requested outside the app: {outside[:5]}"
    assert hits == [], f"{what}: the stand-in outside host was asked for {hits}"
    assert dialogs == [], f"{what}: a script in a name ran: {dialogs}"


def test_foreign_and_corrupt_projects_show_a_clear_box(tmp_path: Path) -> None:
    root = tmp_path / "projects"
    foreign = root / "foreign"
    foreign.mkdir(parents=True)
    with sqlite3.connect(foreign / "project.sqlite") as conn:
        conn.execute("CREATE TABLE notes(x TEXT)")
        conn.execute("INSERT INTO notes VALUES ('mine')")
    conn.close()
    corrupt = root / "corrupt"
    corrupt.mkdir()
    (corrupt / "project.sqlite").write_bytes(b"this is not a database" * 50)
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (foreign / "project.sqlite",
                                                                        corrupt / "project.sqlite")}
    with AppServer(root, log=str(tmp_path / "app.log")) as app, sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            for folder in ("foreign", "corrupt"):
                for name in ("Progress", ""):
                    page.goto(f"{app.url}/{name}?project={folder}")
                    box = page.locator("[data-testid=stAlertContentError]").filter(has_text="could not be opened")
                    box.first.wait_for(timeout=60_000)
                    text = box.first.inner_text()
                    assert "ralif-app.log" in text
                    assert "Traceback" not in page.locator("body").inner_text()
        finally:
            browser.close()
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in before}
    assert after == before, "a file that is not a ralif project was changed"
    assert sorted(p.name for p in foreign.iterdir()) == ["project.sqlite"]
    log = (root / "ralif-app.log").read_text()
    assert "Traceback" in log and "foreign" in log
