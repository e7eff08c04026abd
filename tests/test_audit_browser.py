"""The Progress page in a real browser after three oracle rounds of the demo: the audit estimate
with its interval, the accept rule, and the Random comparison explained. With
``RALIF_SCREENSHOTS=DIR`` it saves ``audit-estimate.png`` (docs/screenshots/) into DIR."""

from __future__ import annotations

import time
from pathlib import Path

from helpers import DEMO
from test_e2e_browser import (
    launch,
    pytestmark,
    screenshot,
    sync_playwright,
    wait_until,
)

from ralif import projection as proj
from ralif.project import Project
from ralif.ui.launch import AppServer
from ralif.ui.text import JOINER

# The imported marks skip this module where Chromium or Playwright is missing.
__all__ = ["pytestmark"]


def test_progress_page_shows_the_audit_estimate(tmp_path: Path) -> None:
    projects = tmp_path / "projects"
    project = Project.create_demo(projects / "demo", assets=DEMO, initial_labels=30, batch_size=50)
    for _ in range(3):
        project.oracle_label_batch()
        project.submit_batch()
        project.run_round()
    counts = [r["labeled_count"] for r in project.rounds() if r["accuracy"] is not None]
    proj.random_baseline(project, counts)
    summary = project.audit_estimate()
    with AppServer(projects, log=str(tmp_path / "app.log")) as app, sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.goto(f"{app.url}/Progress?project=demo")

            def text() -> str:
                return page.locator("[data-testid=stMain]").first.inner_text().replace(JOINER, "")

            wait_until(lambda: "AUCA ratio against Random" in text() and "Estimated accuracy" in text(), 90,
                       "the audit estimate and the Random comparison on the Progress page")
            time.sleep(1.5)
            body = text()
            assert "Traceback" not in body
            assert f"between {summary.estimate.low:.0%} and {summary.estimate.high:.0%} with 95 % confidence" in body
            assert "Accepting the model's guess" in body and "Random was run with 5 seeds" in body
            screenshot(page, "audit-estimate")
        finally:
            browser.close()
