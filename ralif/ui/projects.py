"""Finding, creating and opening projects for the home page."""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ralif.project import ImportReport, Project, ProjectError
from ralif.project.store import DB_NAME

DEMO_FOLDER = "demo"
# Two tabs opening the app for the first time at once must not both create the demo.
_DEMO_LOCK = threading.Lock()


@dataclass(frozen=True)
class ProjectSummary:
    folder: Path
    name: str
    pool: int
    labeled: int
    round: int
    status: str | None
    error: str | None = None


def find_projects(root: Path) -> list[Path]:
    """Project folders directly under ``root`` (those holding a project database)."""
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if (p / DB_NAME).is_file()), key=lambda p: p.name.lower())


def summarize(folder: Path) -> ProjectSummary:
    try:
        project = Project.open(folder)
        prog = project.progress()
        return ProjectSummary(folder, project.name, prog.pool, prog.labeled, prog.round, prog.round_status)
    except (OSError, ProjectError, ValueError) as exc:
        return ProjectSummary(folder, folder.name, 0, 0, 0, None, str(exc))


def ensure_demo(root: Path, client: str | None = None) -> Path:
    """The demo project's folder under ``root``, created (with its first batch) when no project
    exists yet. Raises FileNotFoundError when the demo images are not installed."""
    with _DEMO_LOCK:
        existing = find_projects(root)
        if existing:
            demo = root / DEMO_FOLDER
            return demo if demo in existing else existing[0]
        root.mkdir(parents=True, exist_ok=True)
        folder = root / DEMO_FOLDER
        Project.create_demo(folder, client=client)
        return folder


def folder_name(name: str) -> str:
    """A safe folder name for a project name ("My cats!" -> "my-cats")."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.strip().lower()).strip("-")
    return slug[:60] or "project"


def check_source(path_text: str) -> tuple[Path | None, str | None]:
    """The image source a user typed, or a message saying what is wrong with it."""
    text = path_text.strip().strip("'\"")
    if not text:
        return None, ("Give the path of a folder of images, an ImageFolder (one folder per class) or a "
                      "CSV manifest.")
    path = Path(os.path.expandvars(text)).expanduser()
    if not path.exists():
        return None, (f"Nothing found at {path}. Check the spelling; the path is read on the machine "
                      "that runs ralif, so it must exist there.")
    if path.is_file() and path.suffix.lower() != ".csv":
        return None, (f"{path} is a file but not a CSV manifest. Give a folder of images, or a CSV with "
                      "a 'path' column (and optionally 'label').")
    if path.is_dir() and not os.access(path, os.R_OK | os.X_OK):
        return None, f"{path} cannot be read (permissions)."
    return path, None


def create_project(root: Path, name: str, source: Any, *, model: str, strategy: str, batch_size: int,
                   test: Any, known_labels: str, layout: str, client: str | None = None,
                   encoder: str | None = None, resnet: dict[str, Any] | None = None
                   ) -> tuple[Project, ImportReport]:
    """Create the project in ``root/<folder_name(name)>`` from ``source`` (a path, or the import
    plan's ImageLists); raises ProjectError with a readable message for anything wrong (folder
    taken, no images, unknown strategy, ...)."""
    folder = root / folder_name(name)
    if (folder / DB_NAME).exists():
        raise ProjectError(f"a project named {folder.name!r} already exists; choose another name or open it")
    root.mkdir(parents=True, exist_ok=True)
    try:
        project = Project.create(folder, source, name=name.strip() or folder.name, model=model,
                                 encoder=encoder, resnet=resnet, strategy=strategy, batch_size=batch_size, test=test,
                                 known_labels=known_labels, layout=layout,
                                 simulated_oracle=known_labels == "truth", client=client)
    except FileNotFoundError as exc:
        raise ProjectError(str(exc)) from exc
    except ValueError as exc:   # ProjectError is a ValueError too; the image readers raise plain ones
        raise ProjectError(str(exc)) from exc
    report = project.import_report or ImportReport()
    return project, report
