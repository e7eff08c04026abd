"""A project folder copied while the app uses the original (``cp -a``) carries the original's
``jobs/round-server.json``, which names a live process: the original's round server. That server
serves the original folder only, so the copy must not count on it: its rounds start a server of
its own, and stopping the copy's server never stops (or kills) the original's."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from ralif.processes import process_start_time
from ralif.project import Project
from ralif.project.lifecycle import RoundState
from ralif.project.round_server import server_alive, server_status_path, stop_server
from ralif.worker import pid_alive, read_status, write_queued_status

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "ralif/app/assets/demo"


def _wait(pred: Any, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError("timed out")


def _idle_record(project: Project) -> dict[str, Any]:
    path = server_status_path(project.folder)
    return dict(_wait(lambda: path.is_file() and (st := read_status(path)).get("phase") == "idle" and st))


@pytest.fixture()
def original(tmp_path: Path):
    project = Project.create_demo(tmp_path / "original", assets=DEMO, batch_size=10)
    yield project
    stop_server(project.folder, grace_s=5.0)


def test_a_copy_starts_its_own_server_and_leaves_the_originals_alone(original: Project, tmp_path: Path) -> None:
    original.ensure_round_server()
    first = _idle_record(original)
    assert server_alive(original.folder)

    copy_dir = Path(shutil.copytree(original.folder, tmp_path / "copy", symlinks=True))
    copied = read_status(server_status_path(copy_dir))
    assert copied["pid"] == first["pid"] and pid_alive(int(first["pid"]), first["pid_started_at"])
    # The record names a live server, but one of another folder.
    assert not server_alive(copy_dir)
    assert server_alive(original.folder)
    assert first["serves"] == str(original.folder.resolve())

    # Stopping "the copy's server" must not reach the original's through the copied pid.
    stop_server(copy_dir, grace_s=0.2)
    assert pid_alive(int(first["pid"]), first["pid_started_at"])
    assert server_alive(original.folder)

    copy = Project.open(copy_dir)
    try:
        copy.oracle_label_batch()
        copy.submit_batch()
        copy.start_round()
        status = _wait(lambda: (s := copy.round_status())["status"] in ("ready", "failed") and s)
        assert status["status"] == "ready", status
        own = read_status(server_status_path(copy_dir))
        assert own["pid"] != first["pid"] and own["serves"] == str(copy_dir.resolve())
        assert server_alive(copy_dir) and server_alive(original.folder)
        # The original's server took nothing of the copy's.
        assert read_status(server_status_path(original.folder))["progress"].get("rounds") == 0
    finally:
        stop_server(copy_dir, grace_s=5.0)


def _record(folder: Path, **fields: Any) -> None:
    """A round server's status file as a running server writes it (this test process stands in)."""
    path = server_status_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_queued_status(path, "round-server", "ralif.project.round_server:serve_rounds")
    status = read_status(path)
    status.pop("cancel_requested")
    now = time.time()
    status.update(state="running", phase="idle", pid=os.getpid(), pid_started_at=process_start_time(os.getpid()),
                  started_at=now, updated_at=now)
    status.update(fields)
    path.write_text(json.dumps(status), encoding="utf-8")


def test_which_records_count_as_this_folders_server(tmp_path: Path) -> None:
    here, there = tmp_path / "here", tmp_path / "there"
    there.mkdir()
    _record(here, serves=str(here.resolve()))
    assert server_alive(here)
    # Another spelling of the same folder: a symbolic link to it.
    (tmp_path / "link").symlink_to(here, target_is_directory=True)
    assert server_alive(tmp_path / "link")
    _record(here, serves=str(there))
    assert not server_alive(here)
    _record(here, serves=str(tmp_path / "gone"))
    assert not server_alive(here)
    # A record of an earlier version names no folder: its live pid is all there is to go by.
    _record(here)
    assert server_alive(here)
    # A record caught while its server starts names no folder yet: alive for the start's grace only.
    _record(here, phase="starting")
    assert server_alive(here)
    _record(here, phase="starting", started_at=time.time() - 3600)
    assert not server_alive(here)


def _copy_with_a_round_of_the_original(
        original: Project, tmp_path: Path, phase: str) -> tuple[Project, int, Path, bytes]:
    """A copy of ``original`` made while its newest round was queued for its server (``phase``
    ``server-queued``) or being run by it (``taken``, the worker's status file saying so)."""
    original.oracle_label_batch()
    original.submit_batch()
    job = original.folder / "jobs" / "round-0002-waiting.json"
    write_queued_status(job, "round-2", "round-server")
    number = original.round_book.claim(job_path=str(job), mark_queued=True, for_server=True)
    if phase == "taken":
        assert original.round_book.take(number, str(job))
        st = read_status(job)
        job.write_text(json.dumps({**st, "state": "running", "phase": "training", "pid": os.getpid(),
                                   "started_at": time.time()}))
    copy = Project.open(shutil.copytree(original.folder, tmp_path / "copy", symlinks=True))
    return copy, number, job, job.read_bytes()


@pytest.mark.parametrize("phase", ["server-queued", "taken"])
def test_a_round_of_the_original_is_queued_again_in_the_copy_and_runs_there(
        original: Project, tmp_path: Path, phase: str) -> None:
    from ralif.ui import round_panel

    copy, number, job, before = _copy_with_a_round_of_the_original(original, tmp_path, phase)
    try:
        # Nothing will finish the copy's round but a run of its own: it is waiting again, not failed.
        status = copy.round_status()
        assert status["status"] == "queued" and status["round"] == number and not status["error"], status
        # Opening the Label page starts it in the copy, with the copy's own status file.
        assert round_panel.ensure_running(copy) is None
        status = _wait(lambda: (s := copy.round_status())["status"] in ("ready", "failed") and s)
        assert status["status"] == "ready" and status["round"] == number, status
        assert job.read_bytes() == before, "the original's status file is the original's"
        assert original.round_status()["status"] == "running"       # still its own server's
    finally:
        stop_server(copy.folder, grace_s=5.0)


def test_a_server_that_meets_the_originals_round_first_fails_it_and_retry_runs_it(
        original: Project, tmp_path: Path) -> None:
    """The copy's server can look before any page has reaped the copy's rounds: it must not run the
    round into the original's file."""
    from ralif.ui import round_panel

    copy, number, job, before = _copy_with_a_round_of_the_original(original, tmp_path, "server-queued")
    try:
        copy.ensure_round_server()
        status = _wait(lambda: (s := copy.round_book.status()).state in (RoundState.READY, RoundState.FAILED)
                       and s.as_dict())
        assert status["status"] == "failed" and "copied from" in status["error"], status
        assert job.read_bytes() == before, "the original's status file is the original's"
        assert original.round_status()["status"] == "running"
        # Retry in the copy queues the round with the copy's own status file; its server runs it.
        assert round_panel.start(copy) is None
        status = _wait(lambda: (s := copy.round_status())["status"] in ("ready", "failed") and s)
        assert status["status"] == "ready" and status["round"] == number, status
    finally:
        stop_server(copy.folder, grace_s=5.0)
