"""Labeling projects: a folder with the images' labels, rounds and models, and the API the app uses.

``Project.create(folder, images, ...)`` / ``Project.open(folder)`` / ``Project.create_demo(folder)``;
see :mod:`ralif.project.session` for the flow and :mod:`ralif.project.store` for the database.
"""

from ralif.project.rounds import ProjectModel, load_model, run_next_round
from ralif.project.session import (
    BatchItem,
    BulkResult,
    ClassInfo,
    ImageRow,
    ImportReport,
    LabelResult,
    LabelState,
    Progress,
    Project,
    ProjectError,
    RoundBusy,
    UndoResult,
)

__all__ = [
    "BatchItem",
    "BulkResult",
    "ClassInfo",
    "ImageRow",
    "ImportReport",
    "LabelResult",
    "LabelState",
    "Progress",
    "Project",
    "ProjectError",
    "ProjectModel",
    "RoundBusy",
    "UndoResult",
    "load_model",
    "run_next_round",
]
