"""Labeling projects: a folder with the images' labels, rounds and models, and the API the app uses.

``Project.create(folder, images, ...)`` / ``Project.open(folder)`` / ``Project.create_demo(folder)``;
see :mod:`ralif.project.session` for the flow, :mod:`ralif.project.lifecycle` for rounds and
:mod:`ralif.project.store` for the database (docs/architecture.md has the module map).
"""

from ralif.project.checkpoints import ProjectModel, load_model
from ralif.project.errors import DestinationExists, ProjectError, RoundBusy
from ralif.project.flow import ChangeMarks, Notice
from ralif.project.insights import AucaSummary, auca_against_random, majority_guess
from ralif.project.lifecycle import RoundState, RoundStatus
from ralif.project.records import (
    BatchItem,
    BulkResult,
    ClassInfo,
    ImageRow,
    ImportReport,
    LabelResult,
    LabelState,
    Progress,
    UndoResult,
)
from ralif.project.rounds import run_next_round
from ralif.project.session import Project

__all__ = [
    "AucaSummary",
    "BatchItem",
    "BulkResult",
    "ChangeMarks",
    "ClassInfo",
    "DestinationExists",
    "ImageRow",
    "ImportReport",
    "LabelResult",
    "LabelState",
    "Notice",
    "Progress",
    "Project",
    "ProjectError",
    "ProjectModel",
    "RoundBusy",
    "RoundState",
    "RoundStatus",
    "UndoResult",
    "auca_against_random",
    "load_model",
    "majority_guess",
    "run_next_round",
]
