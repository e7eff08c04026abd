"""The warm round server: rounds start without a new process, failures are reported, retry works."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ralif.project import Project
from ralif.project.round_server import server_alive, server_status_path, stop_server
from ralif.ui import round_panel
from ralif.worker import pid_alive, read_status

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "ralif/app/assets/demo"


def _wait(pred, timeout: float = 120.0, step: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("timed out")


def _finished(project: Project) -> dict[str, Any]:
    return _wait(lambda: (s := project.round_status())["status"] in ("ready", "failed") and s)


def _server_pid(project: Project) -> int:
    return int(_wait(lambda: read_status(server_status_path(project.folder)).get("pid")))


@pytest.fixture()
def demo(tmp_path: Path):
    # A copy: some tests swap one of the project's image files for a pipe.
    assets = shutil.copytree(DEMO, tmp_path / "assets")
    project = Project.create_demo(tmp_path / "p", assets=assets, batch_size=10)
    yield project
    stop_server(project.folder, grace_s=5.0)


def _block_extraction(project: Project, position: int = 1000) -> tuple[Path, bytes]:
    """Make the pool's image at ``position`` a named pipe: the next round's feature extraction
    (pixel features, read from the files) stops there until the test writes the image into it."""
    project.store.set_settings({"encoder": "pixels:16"})
    row = project.store.query("SELECT path FROM images WHERE split = 'pool' ORDER BY id")[position]
    path = Path(row[0])
    assert DEMO not in path.parents, "never touch the shipped demo"
    data = path.read_bytes()
    path.unlink()
    os.mkfifo(path)
    return path, data


def _unblock(path: Path, data: bytes, timeout: float = 60.0) -> None:
    """Write the image into the pipe once a reader waits on it (never blocking for good), then put
    the plain file back."""
    deadline = time.monotonic() + timeout
    fd = None
    while fd is None and time.monotonic() < deadline:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # no reader yet
            time.sleep(0.02)
    if fd is not None:
        os.set_blocking(fd, True)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    path.unlink()
    path.write_bytes(data)


def _submit(project: Project) -> None:
    project.oracle_label_batch()
    project.submit_batch()


def test_one_warm_server_runs_round_after_round(demo: Project) -> None:
    demo.ensure_round_server()
    pid = _server_pid(demo)
    _wait(lambda: read_status(server_status_path(demo.folder)).get("phase") == "idle")
    assert server_alive(demo.folder)
    demo.ensure_round_server()  # a second call (another tab) starts no second server
    assert _server_pid(demo) == pid
    pids = []
    for _ in range(2):
        _submit(demo)
        job = demo.start_round()
        status = _finished(demo)
        assert status["status"] == "ready", status
        assert status["accuracy"] is not None and len(demo.pending_batch()) == 10
        # The round is recorded in the database first, then in its status file.
        final = _wait(lambda job=job: (st := read_status(job.status_path))["state"] != "running" and st)
        assert final["state"] == "done" and final["phase"] == "done"
        pids.append(final["pid"])
    assert pids == [pid, pid]
    _wait(lambda: read_status(server_status_path(demo.folder))["progress"].get("rounds") == 2)


def test_a_killed_server_fails_the_round_with_the_reason_and_retry_works(demo: Project) -> None:
    fifo, data = _block_extraction(demo)
    _submit(demo)
    labels_before = demo.progress().labeled
    model_before = demo.current_model_path()
    job = demo.start_round()
    pid = _server_pid(demo)

    _wait(lambda: read_status(job.status_path).get("phase") == "extracting")
    os.kill(pid, signal.SIGKILL)
    _wait(lambda: pid_alive(pid, None) is False)
    status = _finished(demo)
    assert status["status"] == "failed"
    assert "died" in status["error"] and "SIGKILL" in status["error"] and "memory" in status["error"]
    assert demo.progress().labeled == labels_before and demo.current_model_path() == model_before
    assert not server_alive(demo.folder)
    fifo.unlink()
    fifo.write_bytes(data)

    # The Label page says so, with the reason, and offers the retry.
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "views" / "1_Label.py"), default_timeout=60)
    at.session_state["ralif_project_dir"] = str(demo.folder)
    at.run()
    assert not at.exception
    shown = " ".join(e.value for e in at.error)
    assert "Round 2 failed" in shown and "SIGKILL" in shown and "labels are safe" in shown
    assert at.button(key="round_retry") is not None

    # What the page's Retry button does: a new server takes the round and finishes it.
    assert round_panel.start(demo) is None
    status = _finished(demo)
    assert status["status"] == "ready", status
    assert status["attempts"] == 2 and _server_pid(demo) != pid


def test_a_round_queued_for_a_dead_server_is_picked_up_by_the_next(demo: Project) -> None:
    demo.ensure_round_server()
    pid = _server_pid(demo)
    _wait(lambda: read_status(server_status_path(demo.folder)).get("phase") == "idle")
    _submit(demo)
    # A stopped server still looks alive, so the round is queued for it; then it dies.
    os.kill(pid, signal.SIGSTOP)
    demo.start_round()
    assert demo.round_status()["status"] == "running"
    os.kill(pid, signal.SIGKILL)
    _wait(lambda: pid_alive(pid, None) is False)
    # The Label page's check on every run sees no live server and starts one.
    assert round_panel.ensure_running(demo) is None
    status = _finished(demo)
    assert status["status"] == "ready", status
    assert _server_pid(demo) != pid


def test_cancel_stops_a_round_on_the_server(demo: Project) -> None:
    fifo, data = _block_extraction(demo)
    _submit(demo)
    job = demo.start_round()
    _wait(lambda: read_status(job.status_path).get("phase") == "extracting")
    # The request is seen at the next progress report, once the blocked file arrives.
    threading.Timer(1.0, _unblock, (fifo, data)).start()
    demo.cancel_round()  # returns at once; the page follows the round until it stops
    status = _finished(demo)
    assert status["status"] == "failed" and "cancel" in status["error"]
    assert _wait(lambda: read_status(job.status_path)["state"] != "running")
    assert read_status(job.status_path)["state"] == "cancelled"
    # The server survives a cancelled round and takes the retry.
    assert round_panel.start(demo) is None
    assert _finished(demo)["status"] == "ready"


def test_a_server_leaves_when_idle(tmp_path: Path) -> None:
    from ralif.project.round_server import ensure_server

    project = Project.create_demo(tmp_path / "p", assets=DEMO, run_first_round=False)
    job = ensure_server(project.folder, idle_s=0.5)
    assert job is not None
    final = job.wait(120)
    assert final["state"] == "done" and final["result"]["rounds"] == 0
    assert not server_alive(project.folder)


def test_the_server_finishes_its_round_and_leaves_when_the_app_is_stopped(demo: Project) -> None:
    import subprocess
    import sys

    # The app: opens the project, starts its round server (ahead of the next submit), runs on.
    app = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from ralif.project import Project; "
         "Project.open(sys.argv[1]).ensure_round_server(); print('up', flush=True); time.sleep(600)",
         str(demo.folder)], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert app.stdout is not None and app.stdout.readline().strip() == "up"
        pid = _server_pid(demo)
        _wait(lambda: read_status(server_status_path(demo.folder)).get("phase") == "idle")
        fifo, data = _block_extraction(demo)
        _submit(demo)
        job = demo.start_round()     # the app's server takes it (no second server is started)
        _wait(lambda: read_status(job.status_path).get("phase") == "extracting")
        app.send_signal(signal.SIGTERM)
        assert app.wait(30) == -signal.SIGTERM
        time.sleep(0.5)
        assert pid_alive(pid, None), "the round under way is finished, not cut short"
        _unblock(fifo, data)
        status = _finished(demo)
        assert status["status"] == "ready", status
        assert read_status(job.status_path)["pid"] == pid
        # Then it leaves at once, instead of waiting out its idle time (15 minutes).
        _wait(lambda: pid_alive(pid, None) is False, timeout=30)
        final = read_status(server_status_path(demo.folder))
        assert final["state"] == "done" and final["result"]["rounds"] == 1
        assert not server_alive(demo.folder)
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
