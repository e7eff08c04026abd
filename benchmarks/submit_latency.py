"""Enter → next batch shown, in a real browser, on the demo or on a large pool with cached features.

The app runs as `make app` runs it; Chromium (headless, driven by Playwright) opens the Label page.
Each measured round: the batch is answered through the library (the simulated oracle; key latency
is measured by app_latency.py), the page is reloaded so its grid shows the answers, and the clock
runs from the Enter key to the moment every tile of the new batch is in the page. The round's own
compute time (as the project records it) is reported beside it.

    python benchmarks/submit_latency.py                       # the bundled demo (2,000 pool images)
    python benchmarks/submit_latency.py --images DIR --embeddings FILE.npz [--rounds 4]
    python benchmarks/submit_latency.py ... --no-browser      # the round server alone, no app

``DIR`` is an ImageFolder with ``train/`` (the pool) and ``test/`` (held out), and ``FILE.npz`` holds
their precomputed embeddings with the images' paths relative to ``DIR`` (the layout of CIFAR-10 in
the development data). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from ralif.project import Project
from ralif.project.round_server import server_status_path, stop_server
from ralif.ui.launch import AppServer
from ralif.worker import read_status

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "ralif/app/assets/demo"
GRID = "iframe[title*='label_grid']"


def make_project(root: Path, images: Path | None, embeddings: Path | None, batch: int) -> Project:
    if images is None:
        return Project.create_demo(root / "projects" / "bench", assets=DEMO, batch_size=batch)
    # The embeddings' relative paths are read from the file's own folder: give it one beside the images.
    data = root / "data"
    data.mkdir()
    shutil.copyfile(embeddings, data / "embeddings.npz")
    for split in ("train", "test"):
        if (images / split).is_dir():
            (data / split).symlink_to((images / split).resolve())
    start = time.perf_counter()
    project = Project.create(root / "projects" / "bench", data, name="large pool", batch_size=batch,
                             encoder=f"precomputed:{data / 'embeddings.npz'}", known_labels="truth",
                             simulated_oracle=True, decode=False)
    create_s = time.perf_counter() - start
    start = time.perf_counter()
    project.run_round()  # the cold-start pick
    project.store.set_settings({"benchmark_setup": {"create_s": round(create_s, 1),
                                                    "cold_start_s": round(time.perf_counter() - start, 1)}})
    return project


def tile_ids(frame: Any) -> list[int]:
    from playwright.sync_api import Error as PlaywrightError

    try:
        return frame.locator(".tile").evaluate_all("ts => ts.map(t => +t.dataset.imageId)")
    except PlaywrightError:  # the old grid was removed while being read
        return []


def stall_report(page: Any, project: Project) -> dict[str, Any]:
    """What the grid and the project show when a pressed Enter led nowhere."""
    from playwright.sync_api import Error as PlaywrightError

    state: Any = None
    try:
        handle = page.query_selector(GRID)
        grid = handle.content_frame() if handle is not None else None
    except PlaywrightError:
        grid = None
    if grid is not None:
        try:
            state = grid.evaluate("() => ({batch: S.batchId, outbox: S.outbox.map((e) => e.type + ' ' + e.id),"
                                  " message: S.message, focus: document.hasFocus()})")
        except PlaywrightError as exc:
            state = f"unreadable: {exc}"
    try:
        active = page.evaluate("() => ({element: document.activeElement ? document.activeElement.tagName : null,"
                               " page_keys: typeof window.__ralifGridKeys,"
                               " grids: document.querySelectorAll(\"iframe[title*='label_grid']\").length})")
    except PlaywrightError:
        active = None
    status = project.round_status()
    return {"grid": state, "active_element": active, "round": status.get("round"),
            "status": status.get("status"), "phase": status.get("phase")}


def wait_server_idle(project: Project, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if read_status(server_status_path(project.folder)).get("phase") == "idle":
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise TimeoutError("the round server did not become idle")


def measure(root: Path, project: Project, rounds: int, chromium: str) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    out: list[dict[str, Any]] = []
    with AppServer(project.folder.parent, log=str(root / "app.log")) as app, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{app.url}/Label?project={project.folder.name}")
        frame = page.frame_locator(GRID).first
        frame.locator(".tile").first.wait_for(timeout=300_000)
        wait_server_idle(project)  # opened with the Label page, as a person's first labels take seconds
        for _ in range(rounds):
            batch = {b.image_id for b in project.pending_batch()}
            project.oracle_label_batch()
            page.reload()
            frame = page.frame_locator(GRID).first
            frame.locator(".tile").first.wait_for(timeout=120_000)
            page.wait_for_timeout(500)
            pending = project.round_status().get("round")
            start = time.perf_counter()
            page.keyboard.press("Enter")
            presses, stalls = 1, []
            while True:
                ids = tile_ids(frame)
                if ids and len(ids) == len(batch) and not set(ids) & batch:
                    break
                waited = time.perf_counter() - start
                if waited > 300:
                    raise TimeoutError(f"the next batch did not appear within 300 s: {stalls}")
                if waited > 20 * presses:
                    # Nothing for 20 s: say what the page and the project show, and press again only
                    # if the grid holds no submit (a slow round is not a lost key).
                    stalls.append(stall_report(page, project))
                    grid = stalls[-1]["grid"]
                    outbox = grid.get("outbox", []) if isinstance(grid, dict) else []
                    unsent = stalls[-1]["status"] == "ready" and stalls[-1]["round"] == pending
                    if unsent and not any(e.startswith("submit") for e in outbox):
                        page.keyboard.press("Enter")
                    presses += 1
                time.sleep(0.02)
            shown = time.perf_counter() - start
            wall_shown = time.time()
            wall_enter = wall_shown - shown
            status = project.round_status()
            # Where the time went, from the round's own record: Enter -> claimed by the page,
            # claimed -> recorded ready (server pick-up and compute), ready -> tiles in the page.
            out.append({"round": status["round"], "enter_to_next_batch_shown_s": round(shown, 2),
                        "enter_to_round_queued_s": round(float(status["started_at"]) - wall_enter, 2),
                        "queued_to_ready_s": round(float(status["finished_at"]) - float(status["started_at"]), 2),
                        "ready_to_shown_s": round(wall_shown - float(status["finished_at"]), 2),
                        "round_compute_s": round(float(status.get("seconds") or 0), 2),
                        "phase_seconds": read_status(status["job_path"]).get("phase_seconds"),
                        "labeled": status.get("labeled_count")})
            if stalls:
                out[-1].update(enter_presses=presses, stalls=stalls)
        browser.close()
    later = [r["enter_to_next_batch_shown_s"] for r in out[1:]] or [out[0]["enter_to_next_batch_shown_s"]]
    return {"rounds": out, "first_round_s": out[0]["enter_to_next_batch_shown_s"],
            "later_rounds_median_s": round(statistics.median(later), 2)}


def measure_server_only(project: Project, rounds: int) -> dict[str, Any]:
    """The same rounds through the round server with no app or browser: submit -> ready."""
    project.ensure_round_server()
    wait_server_idle(project)
    out: list[dict[str, Any]] = []
    for _ in range(rounds):
        project.oracle_label_batch()
        project.submit_batch()
        start = time.perf_counter()
        job = project.start_round()
        while (status := project.round_status())["status"] not in ("ready", "failed"):
            time.sleep(0.01)
        seconds = time.perf_counter() - start
        deadline = time.monotonic() + 10
        while read_status(job.status_path).get("state") == "running" and time.monotonic() < deadline:
            time.sleep(0.02)
        out.append({"round": status["round"], "status": status["status"], "submit_to_ready_s": round(seconds, 2),
                    "phase_seconds": read_status(job.status_path).get("phase_seconds")})
    return {"rounds": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, help="ImageFolder with train/ and test/ (default: the demo)")
    parser.add_argument("--embeddings", type=Path, help="their precomputed embeddings (.npz)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--no-browser", action="store_true",
                        help="rounds through the round server only, without the app and Chromium")
    args = parser.parse_args()
    if (args.images is None) != (args.embeddings is None):
        parser.error("--images and --embeddings go together")
    chromium = os.environ.get("RALIF_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    with tempfile.TemporaryDirectory(prefix="ralif-submit-", ignore_cleanup_errors=True) as tmp:
        root = Path(tmp)
        project = make_project(root, args.images, args.embeddings, args.batch)
        result: dict[str, Any] = {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "load_avg_1m": round(os.getloadavg()[0], 2)},
            "pool": project.progress().pool, "held_out": project.progress().test, "batch": args.batch,
            "setup": project.settings.get("benchmark_setup"),
        }
        try:
            result.update(measure_server_only(project, args.rounds) if args.no_browser
                          else measure(root, project, args.rounds, chromium))
        finally:
            stop_server(project.folder)
        result["machine"]["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
