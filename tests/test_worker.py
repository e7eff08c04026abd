"""Background jobs: completion, failures, crashes of the worker process, cancellation.

The job functions live at module level because the worker process imports them by name.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from ralif.worker import BackgroundJob, JobCancelled, read_status, start_job

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def counting_job(job, steps=3):
    for i in range(steps):
        job.report({"step": i + 1, "of": steps}, phase="counting", force=True)
    return "results/model.safetensors"


def dict_job(job, value):
    return {"value": value}


def failing_job(job):
    job.report(phase="checking input")
    raise ValueError("bad input: no images")


def sleeping_job(job):
    # Ignores cancellation on purpose: only terminate/kill can stop it.
    job.report(phase="sleeping", force=True)
    while True:
        time.sleep(0.05)


def polite_job(job):
    job.report(phase="waiting", force=True)
    while True:
        job.check_cancelled()
        time.sleep(0.02)


def exiting_job(job):
    os._exit(3)


def wait_for_state(job: BackgroundJob, state: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = job.status()
        if status["state"] == state:
            return status
        time.sleep(0.05)
    raise AssertionError(f"job never reached {state!r}: {job.status()}")


def test_job_completes_and_reports_progress(tmp_path):
    job = start_job(counting_job, {"steps": 3}, tmp_path / "job.json")
    status = job.wait(60)
    assert status["state"] == "done", status
    assert status["progress"] == {"step": 3, "of": 3}
    assert status["result_path"] == "results/model.safetensors"
    assert status["pid"] == job.pid and status["error"] is None
    assert status["created_at"] <= status["started_at"] <= status["finished_at"]
    assert read_status(tmp_path / "job.json")["state"] == "done"


def test_job_named_by_module_and_function(tmp_path):
    job = start_job(f"{__name__}:dict_job", {"value": 42}, tmp_path / "job.json")
    status = job.wait(60)
    assert status["state"] == "done" and status["result"] == {"value": 42}


def test_failing_job_reports_the_exception(tmp_path):
    status = start_job(failing_job, {}, tmp_path / "job.json").wait(60)
    assert status["state"] == "failed"
    assert "ValueError: bad input: no images" in status["error"]
    assert "failing_job" in status["traceback"]
    assert status["phase"] == "checking input"


@posix_only
def test_sigkilled_worker_is_reported_failed(tmp_path):
    path = tmp_path / "job.json"
    job = start_job(sleeping_job, {}, path)
    wait_for_state(job, "running")
    os.kill(job.pid, signal.SIGKILL)
    status = job.wait(30)
    assert status["state"] == "failed"
    assert "worker process died" in status["error"] and "SIGKILL" in status["error"]
    # The verdict is written back, so any later reader sees it too.
    assert read_status(path)["state"] == "failed"


@posix_only
def test_attached_handle_notices_a_dead_worker(tmp_path):
    path = tmp_path / "job.json"
    job = start_job(sleeping_job, {}, path)
    wait_for_state(job, "running")
    other = BackgroundJob.attach(path)
    assert other.is_alive() and other.status()["state"] == "running"
    os.kill(job.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while other.status()["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert other.status()["state"] == "failed"
    assert "worker process died" in other.status()["error"]
    job.wait(10)


def test_worker_exiting_without_status_is_reported_failed(tmp_path):
    status = start_job(exiting_job, {}, tmp_path / "job.json").wait(60)
    assert status["state"] == "failed" and "exit code 3" in status["error"]


def test_cancel_stops_a_cooperative_job_quickly(tmp_path):
    job = start_job(polite_job, {}, tmp_path / "job.json")
    wait_for_state(job, "running")
    t0 = time.monotonic()
    status = job.cancel(grace_s=10)
    assert time.monotonic() - t0 < 5
    assert status["state"] == "cancelled" and status["cancel_requested"]
    assert not job.is_alive()


def test_cancel_escalates_when_the_job_ignores_it(tmp_path):
    job = start_job(sleeping_job, {}, tmp_path / "job.json")
    wait_for_state(job, "running")
    t0 = time.monotonic()
    status = job.cancel(grace_s=0.5)
    assert time.monotonic() - t0 < 8
    assert status["state"] == "cancelled"
    assert not job.is_alive()


def test_cancel_by_path_from_another_handle(tmp_path):
    path = tmp_path / "job.json"
    job = start_job(polite_job, {}, path)
    wait_for_state(job, "running")
    BackgroundJob.attach(path).cancel(grace_s=10)
    assert job.wait(10)["state"] == "cancelled"


def test_job_cancelled_exception_means_cancelled(tmp_path):
    assert issubclass(JobCancelled, Exception)
    with pytest.raises(ValueError, match="top-level"):
        start_job(lambda job: None, {}, tmp_path / "job.json")


def test_train_resnet_job_end_to_end(tmp_path):
    import numpy as np

    from ralif.models.resnet import TrainedResNet

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 16, 16, 3), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    job = start_job(
        "ralif.worker:train_resnet_job",
        {
            "images": str(tmp_path / "images.npy"),
            "labels": (np.arange(16) % 2).tolist(),
            "num_classes": 2,
            "output_path": str(tmp_path / "model.safetensors"),
            "config": {"epochs": 2, "batch_size": 8, "image_size": 16},
            "device": "cpu",
            "threads": 1,
        },
        tmp_path / "job.json",
    )
    status = job.wait(180)
    assert status["state"] == "done", status
    progress = status["progress"]
    assert progress["epoch"] == 2 and progress["epochs"] == 2 and progress["fraction"] == 1.0
    assert np.isfinite(progress["loss"])
    model = TrainedResNet.load(status["result_path"])
    assert model.predict_proba(images[:3]).shape == (3, 2)


def test_never_started_is_true_only_for_an_old_queued_job_that_no_process_started():
    from ralif.worker import START_TIMEOUT_S, never_started

    now = 1_000_000.0
    old = now - START_TIMEOUT_S - 1.0
    assert never_started({"state": "queued", "created_at": old, "started_at": None}, now)
    assert not never_started({"state": "queued", "created_at": now - 1.0, "started_at": None}, now)
    assert not never_started({"state": "running", "created_at": old, "started_at": old + 1}, now)
    assert not never_started({"state": "queued", "created_at": old, "started_at": old + 1}, now)
    assert not never_started({"state": "failed", "created_at": old}, now)
