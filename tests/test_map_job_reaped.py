"""A finished map job leaves no zombie worker under the app: the status read that the Map page
polls collects the worker once it has ended, without waiting for the next job to start."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from test_reaper_zombies import process_state

from ralif.map.jobs import projection_status, start_once
from ralif.project import Project
from ralif.worker import FINAL_STATES

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")


def short_map_job(job: Any, folder: str) -> dict[str, Any]:
    return {"folder": folder}


def test_a_finished_map_job_is_collected_by_the_status_reads_of_the_page(demo_project_no_round: Project) -> None:
    project = demo_project_no_round
    # The Map page's own start: one job named "projection" per project, not detached.
    job = start_once(project, "projection", f"{__name__}:short_map_job", {"folder": str(project.folder)})
    pid = job.pid
    assert pid is not None
    try:
        # As the page does: read the status on every run until the job is over, and keep reading
        # it on later runs. The worker may still be exiting when its final state is first read.
        deadline = time.monotonic() + 120
        status = projection_status(project) or {}
        while ((status.get("state") not in FINAL_STATES or process_state(pid) is not None)
               and time.monotonic() < deadline):
            time.sleep(0.05)
            status = projection_status(project) or {}
        assert status.get("state") == "done", status
        assert process_state(pid) is None, "the finished map worker was left a zombie"
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    finally:
        job.wait(10)   # collected here if not before, so no zombie outlives a failed run
