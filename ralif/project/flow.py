"""The app's round flow as library rules: submit a batch and start the next round, start a round
nobody started, and the cheap change markers a page uses to know its cached data is stale.

Each rule returns what the user should be told, so every caller (page, CLI, script) says the
same thing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ralif.project.audits import (
    AUDIT_SHARE_KEY,
    ESTIMATE_MIN_ANSWERS,
    AuditSummary,
    read_rows,
    round_picks,
    share_setting,
    summarise,
)
from ralif.project.errors import ProjectError, RoundBusy

if TYPE_CHECKING:
    from ralif.audit import AcceptDecision
    from ralif.project.lifecycle import RoundBook
    from ralif.project.records import Progress
    from ralif.project.store import Store


@dataclass(frozen=True)
class Notice:
    """What to tell the user: ``kind`` is "" (nothing), "success", "warning" or "error"."""

    kind: str
    message: str
    round: int | None = None


@dataclass(frozen=True)
class ChangeMarks:
    """Markers that change whenever labels, selections or classes change (history and
    selections only grow; a class merge, the one change of true labels, deletes a class)."""

    history: int
    selections: tuple[int, int]
    classes: tuple[int, int]

    def as_tuple(self) -> tuple[int, tuple[int, int], tuple[int, int]]:
        return self.history, self.selections, self.classes


class RoundFlowMixin:
    """Part of :class:`ralif.project.Project`."""

    store: Store
    folder: Path
    round_book: RoundBook

    if TYPE_CHECKING:
        def progress(self) -> Progress: ...
        def pending_round(self) -> int | None: ...
        def submit_batch(self) -> int: ...
        def start_round(self, threads: int | None = None, *, own_process: bool = False) -> Any: ...
        def ensure_round_server(self) -> None: ...
        def update_settings(self, **values: Any) -> None: ...

    def start_round_notice(self) -> str | None:
        """Start the queued (or failed) round in the background: an error message, or None (also
        when it runs already)."""
        try:
            self.start_round()
        except RoundBusy:
            return None
        except (ProjectError, OSError, RuntimeError) as exc:
            return f"Could not start the round: {exc}"
        return None

    def unanswered(self) -> tuple[int, int]:
        """(images of the pending batch without a label or a skip, images in the batch)."""
        prog = self.progress()
        return prog.pending - prog.pending_done, prog.pending

    def submit_and_start(self, batch_round: int | None = None, *, allow_unanswered: bool = False) -> Notice:
        """Submit the pending batch and start the next round. ``batch_round``: the round whose
        batch the user saw; a batch already submitted (a second Enter) does nothing.

        The one rule for unanswered images: they stay unlabeled, and a submit that would leave
        some is refused with a warning unless ``allow_unanswered`` (then the notice counts them)."""
        pending = self.pending_round()
        if pending is None or (batch_round and batch_round != pending):
            return Notice("", "")
        left, total = self.unanswered()
        if left > 0 and not allow_unanswered:
            return Notice("warning", f"{left} of {total} images of the batch still need a label or a skip; "
                                     f"the batch was not submitted.")
        try:
            number = self.submit_batch()
        except ProjectError as exc:
            return Notice("error", str(exc))
        error = self.start_round_notice()
        if error:
            return Notice("error", error, number)
        kept = f" {left} unanswered images stay unlabeled." if left > 0 else ""
        return Notice("success", f"Batch submitted; round {number} has started.{kept}", number)

    def resume_round(self) -> str | None:
        """A round that is queued but was never started (the app stopped right after a submit, or a
        new project) is started now, so the user never waits on nothing; otherwise the round server
        is started ahead of the next submit. An error message, or None."""
        self.round_book.reap()
        if self.round_book.never_started() is not None:
            return self.start_round_notice()
        try:
            self.ensure_round_server()
        except (OSError, RuntimeError) as exc:
            return f"Could not start the background worker: {exc}"
        return None

    def change_marks(self) -> ChangeMarks:
        """Cheap markers of label, selection and class changes, read in one snapshot."""
        with self.store.read() as conn:
            history = conn.execute("SELECT COALESCE(MAX(id), 0) FROM label_history").fetchone()[0]
            picks = self.round_book.selection_marks(conn)
            classes = conn.execute("SELECT COUNT(*), COALESCE(SUM(deleted), 0) FROM classes").fetchone()
        return ChangeMarks(int(history), picks, (int(classes[0]), int(classes[1])))

    # -- the audit share and what it measures ---------------------------------------------------
    @property
    def audit_share(self) -> float:
        """The share of each batch drawn uniformly from the unlabeled pool, never by the strategy,
        to measure the model (default 0.10; 0: off)."""
        return share_setting(self.store.settings())

    def set_audit_share(self, share: float) -> None:
        """Change the audit share for the rounds to come (0 turns the audit off)."""
        self.update_settings(**{AUDIT_SHARE_KEY: share})

    def audit_estimate(self, min_answers: int = ESTIMATE_MIN_ANSWERS) -> AuditSummary:
        """The current model's accuracy from the audit answers (``.accuracy``, ``.interval`` at 95 %,
        ``.n``), the warnings that say it is not yet to be trusted, and the accept rule."""
        with self.store.read() as conn:
            rows = read_rows(conn)
        return summarise(rows, min_answers)

    def audit_images(self, number: int | None = None) -> set[int]:
        """The images of round ``number`` (default: the pending batch's) drawn at random to measure
        the model. Their answers must come from a person: the model's guess is neither shown nor
        accepted for them, or the estimate would measure the model against itself."""
        number = self.pending_round() if number is None else number
        if number is None:
            return set()
        with self.store.read() as conn:
            return round_picks(conn, number)

    def accept_policy(self) -> AcceptDecision:
        """What accepting the model's guess (the ``a`` key) may do now: ``mode`` ``allow`` (write it),
        ``confirm`` (ask first, showing ``reason``) or ``off`` (refuse, showing ``reason``)."""
        return self.audit_estimate().accept
