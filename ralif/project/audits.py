"""The audit share of each batch, as stored in the project: which images of a round's batch were
drawn uniformly at random from the unlabeled pool to measure the model, the model's guess for each
when it was picked, and the training losses of each round's model.

The tables live beside the project schema and are created by this module's own small migration
(:func:`ensure_tables`, run inside the write that records a round), so an older project gains them
the first time a round finishes; until then every read here finds nothing and says so. Nothing in
them is shown per image: the grid must not tell the user which images are audits, or the answers
would no longer be an unbiased sample.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ralif.audit import (
    DEFAULT_AUDIT_SHARE,
    AcceptDecision,
    AccuracyEstimate,
    AuditAnswer,
    TrustWarning,
    accept_allowed,
    estimate_accuracy,
    trust_warnings,
)

AUDIT_SCHEMA_KEY = "audit_schema"
AUDIT_SHARE_KEY = "audit_share"
# Script i takes the audit tables from version i to i + 1.
AUDIT_MIGRATIONS = [
    ("CREATE TABLE IF NOT EXISTS audit_picks ("
     " round INTEGER NOT NULL,"
     " image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,"
     " predicted_class_id INTEGER,"
     " confidence REAL,"
     " share REAL NOT NULL,"
     " PRIMARY KEY (round, image_id)) WITHOUT ROWID",
     "CREATE TABLE IF NOT EXISTS round_losses ("
     " round INTEGER PRIMARY KEY,"
     " losses TEXT NOT NULL)"),
]
AUDIT_SCHEMA = len(AUDIT_MIGRATIONS)
# Audit answers used for the estimate: the newest rounds back to at least this many answers.
ESTIMATE_MIN_ANSWERS = 30


def ensure_tables(conn: sqlite3.Connection) -> None:
    """Create or upgrade the audit tables (inside the caller's write transaction)."""
    row = conn.execute("SELECT value FROM settings WHERE key = ?", (AUDIT_SCHEMA_KEY,)).fetchone()
    current = int(json.loads(row[0])) if row is not None else 0
    if current >= AUDIT_SCHEMA:
        return
    for script in AUDIT_MIGRATIONS[current:]:
        for statement in script:
            conn.execute(statement)
    conn.execute("INSERT INTO settings(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value ="
                 " excluded.value", (AUDIT_SCHEMA_KEY, json.dumps(AUDIT_SCHEMA)))


def has_tables(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit_picks'"
                        ).fetchone() is not None


def validate_share(share: Any) -> float:
    """The audit share as a float in [0, 0.5]; 0 turns the audit off. Half a batch drawn at random
    is already more than an accuracy estimate needs, and past it the strategy has little say."""
    try:
        value = float(share)
    except (TypeError, ValueError):
        raise ValueError(f"the audit share must be a number between 0 and 0.5, got {share!r}") from None
    if not (math.isfinite(value) and 0.0 <= value <= 0.5):
        raise ValueError(f"the audit share must be between 0 and 0.5 (0 turns the audit off), got {share!r}")
    return value


def share_setting(settings: dict[str, Any]) -> float:
    """The project's audit share (the default when never set)."""
    value = settings.get(AUDIT_SHARE_KEY)
    return DEFAULT_AUDIT_SHARE if value is None else validate_share(value)


def record_round(conn: sqlite3.Connection, number: int, image_ids: Sequence[int] | np.ndarray,
                 predicted: Sequence[int | None], confidence: Sequence[float | None],
                 info: dict[str, Any]) -> None:
    """Store round ``number``'s audit images (``info["audit_ids"]``, each with the guess made for it
    in ``image_ids``/``predicted``) and its training losses (``info["losses"]``); a round run again
    replaces what its earlier run stored."""
    ensure_tables(conn)
    conn.execute("DELETE FROM audit_picks WHERE round = ?", (number,))
    conn.execute("DELETE FROM round_losses WHERE round = ?", (number,))
    audit = {int(i) for i in info.get("audit_ids") or ()}
    share = float(info.get("audit_share") or 0.0)
    rows = [(number, int(i), p, c, share) for i, p, c in zip(image_ids, predicted, confidence) if int(i) in audit]
    conn.executemany("INSERT INTO audit_picks(round, image_id, predicted_class_id, confidence, share)"
                     " VALUES (?, ?, ?, ?, ?)", rows)
    losses = info.get("losses")
    if losses:
        # NaN and inf are what a diverged run leaves; JSON keeps them as null so the row stays valid.
        clean = [float(v) if math.isfinite(float(v)) else None for v in losses]
        conn.execute("INSERT INTO round_losses(round, losses) VALUES (?, ?)", (number, json.dumps(clean)))


def round_picks(conn: sqlite3.Connection, number: int) -> set[int]:
    """The images of round ``number`` drawn at random to measure the model (empty before any)."""
    if not has_tables(conn):
        return set()
    return {int(r[0]) for r in conn.execute("SELECT image_id FROM audit_picks WHERE round = ?", (number,))}


@dataclass(frozen=True)
class AuditRows:
    """What the audit tables hold, read in one snapshot."""

    answers: list[AuditAnswer]
    class_ids: list[int]            # live classes in display order
    class_names: list[str]
    losses: list[float] | None      # the newest trained round's epoch losses, when recorded
    share: float
    audited_rounds: int


def read_rows(conn: sqlite3.Connection) -> AuditRows:
    """Audit answers (label: the image's current label; None when skipped; unanswered images and
    labels given on the Map are left out), the live classes and the newest recorded losses."""
    settings = {r[0]: json.loads(r[1]) for r in conn.execute("SELECT key, value FROM settings")}
    classes = conn.execute("SELECT id, name FROM classes WHERE deleted = 0 ORDER BY position, id").fetchall()
    ids, names = [int(r[0]) for r in classes], [str(r[1]) for r in classes]
    if not has_tables(conn):
        return AuditRows([], ids, names, None, share_setting(settings), 0)
    rows = conn.execute(
        "SELECT a.round, a.image_id, a.predicted_class_id, l.state, l.class_id, l.source FROM audit_picks a"
        " LEFT JOIN labels l ON l.image_id = a.image_id ORDER BY a.round, a.image_id").fetchall()
    # A label given on the Map was given with the model's guess in view (the Map hides it only for
    # the batch waiting to be labeled): it is not an answer of the user's alone.
    answers = [AuditAnswer(int(r[0]), int(r[1]), None if r[2] is None else int(r[2]),
                           int(r[4]) if r[3] == "labeled" else None)
               for r in rows if r[3] in ("labeled", "unsure") and r[5] != "map"]
    last = conn.execute("SELECT losses FROM round_losses ORDER BY round DESC LIMIT 1").fetchone()
    losses = None if last is None else [math.nan if v is None else float(v) for v in json.loads(last[0])]
    audited = len({int(r[0]) for r in rows})
    return AuditRows(answers, ids, names, losses, share_setting(settings), audited)


@dataclass(frozen=True)
class AuditSummary:
    """The model's accuracy as the audit answers measure it, why not to trust it yet, and what the
    accept key may do."""

    estimate: AccuracyEstimate
    warnings: list[TrustWarning]
    accept: AcceptDecision
    share: float                    # the audit share of batches to come (0: off)
    audited_rounds: int             # rounds whose batch held audit images

    @property
    def accuracy(self) -> float | None:
        return self.estimate.accuracy

    @property
    def interval(self) -> tuple[float, float]:
        return self.estimate.low, self.estimate.high

    @property
    def n(self) -> int:
        return self.estimate.n


def summarise(rows: AuditRows, min_answers: int = ESTIMATE_MIN_ANSWERS) -> AuditSummary:
    """The estimate, its warnings and the accept rule from what :func:`read_rows` read."""
    est = estimate_accuracy(rows.answers, len(rows.class_ids), min_answers=min_answers)
    # The audit images are a uniform sample of the pool, so the model's guesses for them are a
    # uniform sample of its predictions over the pool: enough to see one class taking over.
    index = {c: k for k, c in enumerate(rows.class_ids)}
    used = set(est.rounds)
    guesses = [index[a.predicted] for a in rows.answers
               if a.round in used and a.predicted is not None and a.predicted in index]
    pool_predictions = np.asarray(guesses, dtype=np.int64) if len(guesses) >= 10 else None
    warnings = trust_warnings(est, pool_predictions=pool_predictions, losses=rows.losses,
                              class_names=rows.class_names)
    return AuditSummary(est, warnings, accept_allowed(est, warnings=warnings), rows.share, rows.audited_rounds)
