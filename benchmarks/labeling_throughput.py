"""Labeling throughput in a real browser: a scripted labeler labels N images of the demo by keyboard.

It presses one number key per image (the demo's hidden true class stands in for the person) and
Enter per batch, at 1280×720 in headless Chromium, and reports:

- keys per image: every key pressed, Enter included, divided by the images labeled;
- tiles visible: whole tiles on the first screen of each batch (Streamlit's header excluded);
- app ms per image: the time the app makes the labeler wait, i.e. from each key until the grid shows
  the answer saved in the database, plus from each Enter until the next batch is on screen, divided
  by the images labeled. The labeler's own thinking time is not part of it (it presses at once).

    python benchmarks/labeling_throughput.py --images 100
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from ralif.project import Project
from ralif.ui.launch import AppServer

GRID = "iframe[title*='label_grid']"
KEYS = "1234567890"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
STATE = """() => {
  const f = document.querySelector("iframe[title*='label_grid']");
  if (!f || !f.contentDocument) return null;
  const d = f.contentDocument, fr = f.getBoundingClientRect();
  const hd = document.querySelector('[data-testid=stHeader]');
  const top = hd ? hd.getBoundingClientRect().bottom : 0;
  const foc = d.querySelector('.tile.focus');
  return {focus: foc ? +foc.dataset.imageId : null, saved: !!d.querySelector('.status .saved'),
          ids: Array.from(d.querySelectorAll('.tile')).map(t => +t.dataset.imageId),
          whole: Array.from(d.querySelectorAll('.tile')).filter(t => { const r = t.getBoundingClientRect();
            return fr.top + r.top >= top - 0.5 && fr.top + r.bottom <= innerHeight + 0.5; }).length};
}"""


def wait(page, check, timeout: float):
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        v = page.evaluate(STATE)
        if v and check(v):
            return v
        time.sleep(0.005)
    raise TimeoutError("the app did not answer in time")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ralif-throughput-"))
    with AppServer(tmp / "projects", log=str(tmp / "app.log")) as app, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=ARGS)
        page = browser.new_context(viewport={"width": a.width, "height": a.height}).new_page()
        page.goto(app.url)
        page.frame_locator(GRID).first.locator(".tile").first.wait_for(timeout=120_000)
        project = Project.open(app.projects / "demo")
        classes = [c.id for c in project.classes()]
        truth = dict(project.store.query("SELECT id, true_class_id FROM images"))
        keys = labeled = 0
        key_ms: list[float] = []
        next_ms: list[float] = []
        visible: list[int] = []
        while labeled < a.images:
            batch = {b.image_id for b in project.pending_batch()}
            v = wait(page, lambda s, b=batch: set(s["ids"]) == b and s["focus"] is not None, 60)
            visible.append(v["whole"])
            for _ in range(min(len(batch), a.images - labeled)):
                focus = wait(page, lambda s: s["focus"] is not None, 10)["focus"]
                t0 = time.perf_counter()
                page.keyboard.press(KEYS[classes.index(truth[focus])])
                wait(page, lambda s: s["saved"], 30)
                key_ms.append((time.perf_counter() - t0) * 1000)
                keys += 1
                labeled += 1
            if labeled < a.images or project.progress().pending_done == len(batch):
                t0 = time.perf_counter()
                page.keyboard.press("Enter")
                keys += 1
                wait(page, lambda s, b=batch: bool(s["ids"]) and not set(s["ids"]) & b, 120)
                next_ms.append((time.perf_counter() - t0) * 1000)
        browser.close()
    out = {"images": labeled, "keys_per_image": round(keys / labeled, 3),
           "tiles_visible_min": min(visible), "tiles_visible_median": statistics.median(visible),
           "app_ms_per_image": round((sum(key_ms) + sum(next_ms)) / labeled, 1),
           "key_to_saved_ms_median": round(statistics.median(key_ms), 1),
           "enter_to_next_batch_ms_median": round(statistics.median(next_ms), 1) if next_ms else None,
           "window": f"{a.width}x{a.height}"}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
