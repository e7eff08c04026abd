"""The record types the project API returns, and the snapshot a round reads and writes."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ClassInfo:
    """A live class. ``hotkey`` ("1"-"9", "0", or None past the tenth) and ``color`` belong to the
    class: stored with it, kept through renames, reorders, merges and deletes of other classes."""

    id: int
    name: str
    position: int
    count: int = 0          # labeled pool images
    hotkey: str | None = None
    color: str = "#1f77b4"


@dataclass(frozen=True)
class ActionInfo:
    """One entry of the history of user actions, as undo shows it before undoing it.

    ``kind``: label, unlabel, bulk, oracle, merge, delete-class. ``image_ids``: up to
    ``labels.SHOWN`` of the images it changed (``count`` is how many in all); ``first_label`` is what the
    first of them was set to (a class name, "skipped" or "no label")."""

    id: int
    kind: str
    client: str | None
    created_at: float
    count: int
    image_ids: list[int]
    first_label: str | None
    first_path: str | None
    summary: str


@dataclass(frozen=True)
class LabelState:
    """An image's current label. ``state``: ``unlabeled``, ``labeled`` or ``unsure``."""

    image_id: int
    state: str
    class_id: int | None
    class_name: str | None
    version: int            # 0 = never labeled; +1 on every change
    source: str | None = None
    round: int | None = None
    time: float | None = None


@dataclass(frozen=True)
class LabelResult:
    """What a label write did. ``conflict``: the label changed since ``expected_version`` (another
    tab or person); ``previous`` is what was there. ``written`` is False when nothing changed or
    the write was rejected (``on_conflict="reject"``)."""

    image_id: int
    state: str
    class_id: int | None
    version: int
    written: bool
    conflict: bool
    previous: LabelState


@dataclass(frozen=True)
class BulkResult:
    action_id: int | None
    changed: int
    unchanged: int
    # The images given that were left as they were because they are in the pending batch (only
    # when asked to, see ``bulk_label``'s ``skip_pending``), ascending.
    skipped: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class UndoResult:
    action_id: int
    kind: str
    restored: list[int]
    conflicts: list[int]     # images changed by someone else since; left as they are
    classes_restored: list[str] = field(default_factory=list)   # merge / delete undone: classes back
    undo_id: int | None = None


@dataclass
class ImportReport:
    """Outcome of adding images. ``problems``: (path, reason) of files skipped as unreadable;
    ``duplicates``: groups of identical files (the first of each group is kept);
    ``label_conflicts``: identical files with different labels (kept once, without a label)."""

    added: int = 0
    pool: int = 0
    test: int = 0
    labels: int = 0
    truths: int = 0
    classes_added: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    duplicates: list[list[str]] = field(default_factory=list)
    skipped_duplicates: int = 0
    already_present: int = 0
    label_conflicts: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Progress:
    pool: int
    labeled: int
    unsure: int
    unlabeled: int
    test: int
    test_labeled: int
    round: int
    round_status: str | None
    pending: int
    pending_done: int
    per_class: dict[str, int]


@dataclass(frozen=True)
class BatchItem:
    image_id: int
    path: str
    rank: int
    score: float | None
    reason: str
    predicted_class_id: int | None
    predicted_class: str | None
    confidence: float | None
    label: LabelState


@dataclass(frozen=True)
class ImageRow:
    image_id: int
    path: str
    split: str
    label: LabelState


# ----------------------------------------------------------------------------- helpers


def now() -> float:
    return time.time()


def action_detail(text: str | None) -> dict[str, Any]:
    """An action's detail column (JSON) as a dict; an unreadable one as empty."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def label_state(image_id: int, row: sqlite3.Row | None, names: dict[int, str]) -> LabelState:
    if row is None or row["state"] is None:
        return LabelState(int(image_id), "unlabeled", None, None, 0 if row is None else int(row["version"] or 0))
    state = "unlabeled" if row["state"] == "cleared" else row["state"]
    cid = row["class_id"]
    return LabelState(int(image_id), state, cid, names.get(cid) if cid is not None else None,
                      int(row["version"]), row["source"], row["round"], row["created_at"])


@dataclass
class RoundInputs:
    """Everything a round reads from the project database, read in one snapshot."""

    number: int
    strategy: str
    model_kind: str
    batch_size: int
    seed: int
    encoder: str
    l2: float
    device: str | None
    resnet: dict[str, Any]
    class_ids: list[int]
    class_names: list[str]
    pool_ids: np.ndarray
    pool_paths: list[str]
    pool_hashes: list[str]
    test_ids: np.ndarray
    test_paths: list[str]
    test_hashes: list[str]
    labeled_pos: np.ndarray          # positions in the pool
    labeled_y: np.ndarray            # class index (into class_ids) of each labeled position
    candidate_pos: np.ndarray        # pool positions that may be picked (never labeled, not skipped)
    test_pos: np.ndarray             # test positions with a reference label
    test_y: np.ndarray
    project_name: str = ""

    @property
    def labeled_classes(self) -> int:
        return int(np.unique(self.labeled_y).size)


@dataclass
class RoundOutcome:
    image_ids: np.ndarray
    scores: list[float | None]
    reasons: list[str]
    predicted: list[int | None]      # class ids
    confidence: list[float | None]
    cold_start: bool
    labeled_count: int
    accuracy: float | None = None
    test_count: int = 0
    model_path: str | None = None    # relative to the project folder
    info: dict[str, Any] = field(default_factory=dict)
