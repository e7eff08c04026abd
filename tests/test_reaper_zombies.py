"""A job's reaper is collected once it ends: no ``[ralif-reaper] <defunct>`` is left under the
process that started it (the app, for its round servers), however long that process lives."""

from __future__ import annotations

import multiprocessing
import multiprocessing.process
import os
import time
from pathlib import Path

import pytest

from ralif.processes import name_this_process_reaper, reap_when_done
from ralif.worker import FINAL_STATES, main_script_hidden, read_status, start_job

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")


def quick_job(job) -> dict:
    return {"done": True}


def process_state(pid: int) -> str | None:
    """The kernel's one-letter state of ``pid`` (``Z``: a zombie), None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat.rsplit(")", 1)[1].split()
    # A recycled pid is some other process's, not our child.
    return fields[0] if int(fields[1]) == os.getpid() else None


def _wait_for(pid: int, wanted: set[str | None], timeout: float = 60.0) -> str | None:
    """Poll ``pid``'s state until it is one of ``wanted`` or ``timeout`` passes; the last state."""
    deadline = time.monotonic() + timeout
    state = process_state(pid)
    while state not in wanted and time.monotonic() < deadline:
        time.sleep(0.05)
        state = process_state(pid)
    return state


def _detached_like_start_job(ctx) -> multiprocessing.process.BaseProcess:
    """A process that names itself as a reaper and ends, taken out of multiprocessing's children as
    ``start_job`` takes a detached job's reaper out (so nothing else collects it)."""
    process = ctx.Process(target=name_this_process_reaper)
    with main_script_hidden():   # as start_job does: a page run earlier in this process is no module
        process.start()
    multiprocessing.process._children.discard(process)  # type: ignore[attr-defined]
    return process


def test_an_ended_reaper_is_collected_and_its_exit_code_kept():
    ctx = multiprocessing.get_context("spawn")
    # Without a wait the ended reaper stays a zombie: what the app showed, one per round server.
    left = _detached_like_start_job(ctx)
    try:
        assert _wait_for(left.pid, {"Z", None}) == "Z"
        time.sleep(0.3)
        assert process_state(left.pid) == "Z"
    finally:
        left.join(10)
    assert process_state(left.pid) is None and left.exitcode == 0, left.exitcode

    process = _detached_like_start_job(ctx)
    thread = reap_when_done(process)
    assert _wait_for(process.pid, {None}) is None, "the reaper was left a zombie"
    thread.join(10)
    assert not thread.is_alive() and not process.is_alive() and process.exitcode == 0


def test_a_detached_job_leaves_no_zombie_reaper(tmp_path):
    path = tmp_path / "jobs" / "quick.json"
    job = start_job(quick_job, {}, path, detached=True)
    # The handle's process is the reaper (the job runs in its child).
    pid = job._process.pid  # type: ignore[union-attr]
    try:
        # Read the status file, as the app does, rather than wait on the handle (which collects).
        deadline = time.monotonic() + 60
        while read_status(path).get("state") not in FINAL_STATES and time.monotonic() < deadline:
            time.sleep(0.05)
        assert read_status(path)["state"] == "done"
        assert _wait_for(pid, {None}, timeout=10) is None, "the reaper was left a zombie"
    finally:
        job.wait(10)   # collected here if not before, so no zombie outlives the test
