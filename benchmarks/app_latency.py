"""How fast the labeling app answers, on the bundled demo (2,000 CIFAR-10 images, CPU).

(a) label key -> durable: the time of ``Project.label`` (one committed, fsynced SQLite write) in
    process, and in a real browser the time from a key press to the label's commit, for keys at a
    person's pace and for a burst of keys pressed as fast as the browser takes them.
(b) submit -> next batch: the round in process (``run_round``), in the background worker
    (``start_round`` until the round is ready: process start, imports, training, selection), and in
    the browser from Enter to the new batch's pictures in the page.

Prints one JSON object. The browser part needs Chromium and Playwright (skipped, with the reason in
the output, without them).

    python benchmarks/app_latency.py [--labels 200] [--keys 20] [--key-gap 0.5] [--no-browser]
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

from ralif.project import Project, round_server, rounds
from ralif.ui.launch import AppServer

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "ralif/app/assets/demo"
KEYS = "1234567890"
GRID = "iframe[title*='label_grid']"


def stats_ms(values: list[float]) -> dict[str, float]:
    ms = sorted(v * 1000 for v in values)
    return {"n": len(ms), "median_ms": round(statistics.median(ms), 2),
            "p95_ms": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 2), "max_ms": round(ms[-1], 2)}


def label_in_process(folder: Path, n: int) -> dict[str, Any]:
    project = Project.create_demo(folder, assets=DEMO, batch_size=20)
    classes = [c.id for c in project.classes()]
    rows = project.images_page("unlabeled", limit=n)
    times = []
    for k, row in enumerate(rows):
        start = time.perf_counter()
        project.label(row.image_id, classes[k % len(classes)], expected_version=row.label.version)
        times.append(time.perf_counter() - start)
    return stats_ms(times)


def in_process_round(folder: Path, threads: int) -> float:
    """Round 2 (the first trained model) in this process with ``threads`` torch threads."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        project = Project.create_demo(folder, assets=DEMO)
        project.oracle_label_batch()
        project.submit_batch()
        start = time.perf_counter()
        project.run_round()
        return time.perf_counter() - start
    finally:
        torch.set_num_threads(before)


def round_times(folder: Path) -> dict[str, Any]:
    """Round 2 in process (torch's default threads, and one thread), then round 3 in the
    background worker started the way the app starts it."""
    import torch

    default_threads = torch.get_num_threads()
    out: dict[str, Any] = {
        f"in_process_round2_{default_threads}_threads_s":
            round(in_process_round(folder / "default", default_threads), 2),
        "in_process_round2_1_thread_s": round(in_process_round(folder / "one", 1), 2)}
    project = Project.create_demo(folder / "bg", assets=DEMO)
    project.oracle_label_batch()
    project.submit_batch()
    project.run_round()
    threads = rounds.round_threads(project.settings)
    out["background_threads"] = threads or "torch default"
    # A fresh worker process per round (the app's former way), then the warm round server twice:
    # its first round still loads the pool's features, later ones find them in memory.
    out["own_process_round_s"], _ = background_round(project, own_process=True, threads=threads)
    project.ensure_round_server()
    wait_for_server(project)
    for name in ("server_first_round", "server_next_round"):
        seconds, status = background_round(project)
        out[f"{name}_s"] = seconds
        out[f"{name}_compute_s"] = round(float(status.get("seconds") or 0), 2)
    return out


def wait_for_server(project: Project, timeout: float = 120.0) -> None:
    from ralif.worker import read_status

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if read_status(round_server.server_status_path(project.folder)).get("phase") == "idle":
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise RuntimeError("the round server did not start")


def background_round(project: Project, own_process: bool = False,
                     threads: int | None = None) -> tuple[float, dict[str, Any]]:
    """Label the batch with the oracle, submit, and time start_round until the round is ready."""
    project.oracle_label_batch()
    project.submit_batch()
    start = time.perf_counter()
    project.start_round(threads=threads, own_process=own_process)
    while True:
        status = project.round_status()
        if status["status"] in ("ready", "failed"):
            break
        time.sleep(0.01)
    if status["status"] != "ready":
        raise RuntimeError(f"round failed: {status.get('error')}")
    return round(time.perf_counter() - start, 2), status


def browser(tmp: Path, keys: int, key_gap: float) -> dict[str, Any]:
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {"skipped": "playwright is not installed"}
    chromium = os.environ.get("RALIF_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).is_file():
        return {"skipped": f"Chromium not found at {chromium}"}
    with AppServer(tmp / "projects", log=str(tmp / "app.log")) as app, sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium, headless=True,
                               args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = b.new_page(viewport={"width": 1400, "height": 1000})
        start = time.perf_counter()
        page.goto(app.url)
        page.frame_locator(GRID).first.locator(".tile").first.wait_for(timeout=120_000)
        first_batch = time.perf_counter() - start
        project = Project.open(app.projects / "demo", client="benchmark")
        batch = project.pending_batch()
        classes = [c.id for c in project.classes()]
        truth = dict(project.store.query("SELECT id, true_class_id FROM images"))

        def press(item: Any) -> float:
            wall = time.time()
            page.keyboard.press(KEYS[classes.index(truth[item.image_id])])
            return wall

        def committed(item: Any, timeout: float = 30.0) -> float:
            """The label's own commit time (polling only finds it; it does not time it)."""
            deadline = time.monotonic() + timeout
            while (label := project.label_of(item.image_id)).state == "unlabeled":
                if time.monotonic() > deadline:
                    raise TimeoutError("a label did not reach the database within 30 s")
                time.sleep(0.01)
            return float(label.time or 0.0)

        paced = batch[:keys // 2]
        burst = batch[keys // 2:keys]
        key_times = []
        for item in paced:
            wall = press(item)
            key_times.append(max(0.0, committed(item) - wall))
            time.sleep(key_gap)
        first = time.time()
        for item in burst:
            press(item)
        burst_s = max(committed(item) for item in burst) - first if burst else 0.0
        if project.progress().pending_done < len(batch):
            project.oracle_label_batch()
            page.reload()
            page.frame_locator(GRID).first.locator(".tile").first.wait_for(timeout=60_000)
        old = {x.image_id for x in batch}
        frame = page.frame_locator(GRID).first
        start = time.perf_counter()
        page.keyboard.press("Enter")
        while True:
            try:
                ids = frame.locator(".tile").evaluate_all("ts => ts.map(t => +t.dataset.imageId)")
            except PlaywrightError:     # the old grid was removed while being read
                ids = []
            if len(ids) == len(batch) and not set(ids) & old:
                break
            if time.perf_counter() - start > 300:
                raise TimeoutError("the next batch did not appear within 300 s")
            time.sleep(0.05)
        submit = time.perf_counter() - start
        b.close()
    return {"first_launch_to_batch_s": round(first_batch, 2),
            f"key_to_committed_keys_{key_gap:g}s_apart": stats_ms(key_times),
            f"burst_of_{len(burst)}_keys_to_all_committed_ms": round(burst_s * 1000, 1),
            "enter_to_next_batch_shown_s": round(submit, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=int, default=200, help="labels written in process")
    parser.add_argument("--keys", type=int, default=20,
                        help="keys pressed in the browser (at most a batch): half paced, half in a burst")
    parser.add_argument("--key-gap", type=float, default=0.5, help="seconds between paced keys")
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ralif-latency-") as tmp:
        root = Path(tmp)
        out: dict[str, Any] = {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None},
            "label_commit_in_process": label_in_process(root / "a", args.labels),
            "round": round_times(root / "b"),
        }
        out["browser"] = ({"skipped": "--no-browser"} if args.no_browser
                          else browser(root / "c", args.keys, args.key_gap))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
