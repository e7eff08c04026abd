"""Background jobs of the map: the layout's computation and the Random reference run in a worker,
one job of each name per project, their status read from the job's status file."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ralif.map.layout import (
    DEFAULT_CHUNK,
    DEFAULT_FIT_MAX,
    ProjectionCancelled,
    compute_project_projection,
)
from ralif.project import Project

if TYPE_CHECKING:
    from ralif.worker import BackgroundJob, JobContext

# A worker that has not reported by then never will (the status file still says queued).
_WORKER_START_TIMEOUT_S = 120.0


def status_path(project: Project, name: str) -> Path:
    """Where the job ``name`` of ``project`` writes its status."""
    return project.folder / "jobs" / f"{name}.json"


def job_status(project: Project, name: str) -> dict[str, Any] | None:
    """The status of the project's job ``name`` (None when it was never started); a job queued
    too long ago that never started is reported as failed."""
    from ralif.worker import job_for

    path = status_path(project, name)
    if not path.is_file():
        return None
    try:
        # Through a handle, so a worker that died without a final state is reported as failed.
        status = job_for(path).status()
    except (OSError, ValueError):
        return None
    if status.get("state") == "queued" and status.get("pid") is None and \
            time.time() - float(status.get("created_at") or 0) > _WORKER_START_TIMEOUT_S:
        status.update(state="failed", error="the background worker never started")
    return status


def start_once(project: Project, name: str, target: str, kwargs: dict[str, Any]) -> BackgroundJob:
    """Start ``target`` in a worker unless a job of that name is still running for the project."""
    from ralif.worker import FINAL_STATES, job_for, start_job

    path = status_path(project, name)
    status = job_status(project, name)
    if status is not None and status.get("state") not in FINAL_STATES:
        return job_for(path)
    return start_job(target, kwargs, path, job_id=name)


def projection_job(job: JobContext, folder: str, force: bool = False, extract: bool = False,
                   fit_max: int = DEFAULT_FIT_MAX, chunk: int = DEFAULT_CHUNK) -> dict[str, Any]:
    """Worker entry point: compute (or confirm) the project's projection, reporting progress."""
    from ralif.worker import JobCancelled

    project = Project.open(folder)

    def report(phase: str, fraction: float, message: str) -> None:
        # Overall fraction: features 0-10 %, UMAP fit 10-40 %, placing the rest 40-100 %.
        span = {"loading features": (0.0, 0.1), "fitting": (0.1, 0.4), "placing": (0.4, 1.0),
                "saving": (1.0, 1.0), "done": (1.0, 1.0)}.get(phase, (0.0, 1.0))
        overall = span[0] + (span[1] - span[0]) * min(1.0, max(0.0, fraction))
        job.report({"fraction": round(overall, 4)}, phase=phase, message=message)

    try:
        proj = compute_project_projection(project, force=force, progress=report, should_stop=job.should_stop,
                                          extract=extract, fit_max=fit_max, chunk=chunk)
    except ProjectionCancelled as exc:
        raise JobCancelled(str(exc)) from exc
    return {"path": str(proj.path), "points": len(proj.image_ids), "encoder_id": proj.encoder_id}


def start_projection(project: Project, force: bool = False, extract: bool = False) -> BackgroundJob:
    """Compute the projection in a background worker (one at a time per project)."""
    return start_once(project, "projection", "ralif.map.jobs:projection_job",
                      {"folder": str(project.folder), "force": bool(force), "extract": bool(extract)})


def projection_status(project: Project) -> dict[str, Any] | None:
    """The last projection job's status (``state``, ``phase``, ``progress.fraction``, ``message``,
    ``error``), or None when none was started."""
    return job_status(project, "projection")
