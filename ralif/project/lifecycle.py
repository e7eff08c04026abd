"""The round lifecycle: the one owner of the ``rounds`` and ``selections`` tables.

A round is ``queued`` (inserted by the submit that closed the previous one), then claimed
(``running``), computed by a worker or the round server, and ends ``ready`` (its batch waits to be
labeled, then ``submitted``) or ``failed`` (run it again: back to ``running``). While ``running``,
``phase`` is ``server-queued`` (claimed for the round server), ``queued`` (claimed for a worker of
its own), ``taken`` (the server picked it up), then the worker's phases.

Reading a status never writes: :meth:`RoundBook.reap` is the explicit step that marks failed a
round whose worker is gone, and callers that show a status run it first.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from ralif.project.audits import record_round as record_audits
from ralif.project.audits import share_setting
from ralif.project.checkpoints import prune_models
from ralif.project.errors import ProjectError, RoundBusy
from ralif.project.records import RoundInputs, RoundOutcome, now
from ralif.project.schema import PENDING_ROUND
from ralif.project.store import DB_NAME, Store
from ralif.worker import (
    START_TIMEOUT_S,
    job_for,
    never_started,
    pid_alive,
    process_start_time,
    read_status,
    started_here,
)


class RoundState(str, Enum):
    """``rounds.status``; the values are the stored strings (and compare equal to them)."""

    QUEUED = "queued"
    RUNNING = "running"
    READY = "ready"
    SUBMITTED = "submitted"
    FAILED = "failed"


class RoundPhase(str, Enum):
    """The phases the lifecycle itself writes to ``rounds.phase``; workers add their own
    (``extracting``, ``training``, ``selecting``, ``saving``)."""

    SERVER_QUEUED = "server-queued"   # claimed for the round server, not taken yet
    QUEUED = "queued"                 # claimed for a worker process of its own
    TAKEN = "taken"                   # the round server picked it up
    STARTING = "starting"             # a runner claimed it and is reading its inputs
    DONE = "done"
    FAILED = "failed"


ACTIVE = (RoundState.QUEUED.value, RoundState.RUNNING.value)

# The phase shown for a round that is not running.
_SHOWN_PHASE = {"queued": "queued", "ready": "done", "submitted": "done", "failed": "failed"}
# The phase shown for a running round before its worker reports one.
_SHOWN_RUNNING = {None: "starting", "taken": "starting", "server-queued": "queued"}


@dataclass(frozen=True)
class RoundStatus(Mapping[str, Any]):
    """The latest round as the UI shows it: the ``rounds`` row merged with its status file's
    phase, progress and message. Reads like the dict it replaced (``status["phase"]``,
    ``status.get("error")``, ``{**status}``), so existing callers keep working."""

    round: int
    status: str | None
    phase: str | None
    progress: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    message: str | None = None
    row: dict[str, Any] = field(default_factory=dict)   # the other columns of the rounds row

    @property
    def state(self) -> RoundState | None:
        return None if self.status is None else RoundState(self.status)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.row)
        out.update({f.name: getattr(self, f.name) for f in fields(self) if f.name != "row"})
        if self.status is None:
            # An empty project: the keys the dict had then, no more.
            out.pop("message", None)
        return out

    def __getitem__(self, key: str) -> Any:
        return self.as_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.as_dict())

    def __len__(self) -> int:
        return len(self.as_dict())


@dataclass
class ImageFiles:
    """The images' ids, splits, paths and hashes, in id order."""

    key: tuple[Any, ...]
    ids: np.ndarray
    is_pool: np.ndarray
    pool_paths: list[str]
    pool_hashes: list[str]
    test_paths: list[str]
    test_hashes: list[str]


# One per project folder and process: the round server reads 60k paths once, not per round.
_IMAGE_FILES: dict[str, ImageFiles] = {}


def read_settings(conn: sqlite3.Connection) -> dict[str, Any]:
    return {r[0]: json.loads(r[1]) for r in conn.execute("SELECT key, value FROM settings")}


class RoundBook:
    """The rounds of the project whose database is ``store`` (in ``folder``)."""

    def __init__(self, folder: Path, store: Store) -> None:
        self.folder = folder
        self.store = store

    @classmethod
    def open(cls, folder: str | os.PathLike[str]) -> RoundBook:
        """The rounds of the project in ``folder``, for a process that runs rounds only."""
        path = Path(folder).expanduser().resolve()
        if not (path / DB_NAME).is_file():
            raise FileNotFoundError(f"no ralif project in {path} (missing {DB_NAME})")
        return cls(path, Store(path / DB_NAME))

    # -- reads --------------------------------------------------------------------------------
    def current_number(self, conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT COALESCE(MAX(number), 0) FROM rounds").fetchone()[0])

    def latest(self, conn: sqlite3.Connection) -> sqlite3.Row | None:
        """(number, status) of the newest round."""
        return conn.execute("SELECT number, status FROM rounds ORDER BY number DESC LIMIT 1").fetchone()

    def pending_counts(self, conn: sqlite3.Connection) -> tuple[int, int]:
        """(images in the pending batch, those answered: labeled or unsure)."""
        row = conn.execute(
            "SELECT COUNT(*), SUM(CASE WHEN l.state IN ('labeled', 'unsure') THEN 1 ELSE 0 END)"
            f" FROM selections s LEFT JOIN labels l ON l.image_id = s.image_id WHERE s.round = ({PENDING_ROUND})"
        ).fetchone()
        return int(row[0] or 0), int(row[1] or 0)

    def pending_round(self) -> int | None:
        row = self.store.query_one(PENDING_ROUND)
        return None if row is None or row[0] is None else int(row[0])

    def batch_rows(self, number: int) -> list[sqlite3.Row]:
        """The selections of round ``number`` with each image's path and current label, by rank."""
        return self.store.query(
            "SELECT s.image_id, i.path, s.rank, s.score, s.reason, s.predicted_class_id, s.confidence,"
            " l.class_id, l.state, l.source, l.round, l.created_at, l.version FROM selections s"
            " JOIN images i ON i.id = s.image_id LEFT JOIN labels l ON l.image_id = s.image_id"
            " WHERE s.round = ? ORDER BY s.rank", (number,))

    def all(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.store.query("SELECT * FROM rounds ORDER BY number")]

    def model_paths(self) -> list[str]:
        """Checkpoints recorded by rounds, newest round first."""
        return [r[0] for r in self.store.query(
            "SELECT model_path FROM rounds WHERE model_path IS NOT NULL ORDER BY number DESC")]

    def status(self) -> RoundStatus:
        """The latest round for the UI; a pure read (run :meth:`reap` first to see dead workers)."""
        row = self.store.query_one("SELECT * FROM rounds ORDER BY number DESC LIMIT 1")
        if row is None:
            return RoundStatus(0, None, None)
        out = dict(row)
        number, status, phase = out.pop("number"), out.pop("status"), out.pop("phase")
        error = out.pop("error")
        progress: dict[str, Any] = {}
        message = None
        if status == RoundState.RUNNING:
            phase = _SHOWN_RUNNING.get(phase, phase)
            if out["job_path"] and Path(out["job_path"]).is_file():
                try:
                    st = read_status(out["job_path"])
                except (OSError, ValueError):
                    st = {}
                phase = st.get("phase") or phase
                progress = st.get("progress") or {}
                message = st.get("message")
        else:
            phase = _SHOWN_PHASE[status]
        return RoundStatus(int(number), status, phase, progress, error, message, out)

    def never_started(self) -> int | None:
        """The newest round when it is queued and was never claimed (the app stopped right after
        a submit, or a new project): nobody will run it until someone starts it."""
        row = self.store.query_one("SELECT number, status FROM rounds ORDER BY number DESC LIMIT 1")
        return int(row[0]) if row is not None and row[1] == RoundState.QUEUED else None

    def selection_marks(self, conn: sqlite3.Connection) -> tuple[int, int]:
        """(selections recorded, newest round with any): grows with every finished round."""
        row = conn.execute("SELECT COUNT(*), COALESCE(MAX(round), 0) FROM selections").fetchone()
        return int(row[0]), int(row[1])

    def audit_share(self) -> float:
        """The share of each batch drawn at random to measure the model (see :mod:`ralif.audit`)."""
        return share_setting(self.store.settings())

    def queued_for_server(self) -> tuple[int, str] | None:
        """(number, status file) of a round claimed for the round server and not yet taken."""
        row = self.store.query_one("SELECT number, job_path FROM rounds WHERE status = 'running'"
                                   " AND phase = 'server-queued' AND job_path IS NOT NULL ORDER BY number LIMIT 1")
        return None if row is None else (int(row[0]), str(row[1]))

    def image_files(self, conn: sqlite3.Connection) -> ImageFiles:
        """The images' ids, splits, paths and hashes, read again only when the image set changed."""
        # Images are only ever added, so the trigger-kept counts per split and the newest id name the
        # image set without reading the table.
        sizes = self.store.image_counts(conn)
        key = (tuple(sorted((k, v.images) for k, v in sizes.items())),
               conn.execute("SELECT MAX(id) FROM images").fetchone()[0])
        cached = _IMAGE_FILES.get(str(self.folder))
        if cached is not None and cached.key == key:
            return cached
        rows = conn.execute("SELECT id, path, content_hash, split FROM images ORDER BY id").fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        is_pool = np.fromiter((r[3] == "pool" for r in rows), dtype=bool, count=len(rows))
        files = ImageFiles(key, ids, is_pool,
                           pool_paths=[r[1] for r in rows if r[3] == "pool"],
                           pool_hashes=[r[2] for r in rows if r[3] == "pool"],
                           test_paths=[r[1] for r in rows if r[3] != "pool"],
                           test_hashes=[r[2] for r in rows if r[3] != "pool"])
        _IMAGE_FILES[str(self.folder)] = files
        return files

    @staticmethod
    def _positions(ids: np.ndarray, image_ids: list[int]) -> np.ndarray:
        """Positions of ``image_ids`` in the sorted ``ids`` of the image list the round reads."""
        wanted = np.asarray(image_ids, dtype=np.int64)
        at = np.searchsorted(ids, wanted)
        if len(wanted) and (at.max() >= len(ids) or not np.array_equal(ids[at], wanted)):
            raise ProjectError("the project's images changed while the round was being prepared; run it again")
        return at

    def inputs(self, number: int) -> RoundInputs:
        """Everything round ``number`` reads, in one snapshot."""
        with self.store.read() as conn:
            rnd = conn.execute("SELECT strategy, model_kind, batch_size FROM rounds WHERE number = ?",
                               (number,)).fetchone()
            settings = read_settings(conn)
            classes = conn.execute("SELECT id, name FROM classes WHERE deleted = 0 ORDER BY position, id").fetchall()
            files = self.image_files(conn)
            # Only the rows that say something: labels (one per image ever labeled) and the hidden
            # truth of held-out images; a join over every image was most of a small round's set-up.
            marks = conn.execute("SELECT image_id, state, class_id FROM labels").fetchall()
            truths = conn.execute(
                # Hidden truth is read through merges (class_truth), never rewritten by them.
                "SELECT i.id, t.live_id FROM images i JOIN class_truth t ON t.class_id = i.true_class_id"
                " WHERE i.split != 'pool'").fetchall()
        class_ids = [int(r[0]) for r in classes]
        index = {c: k for k, c in enumerate(class_ids)}
        ids = files.ids
        n = len(ids)
        is_labeled = np.zeros(n, dtype=bool)
        is_unsure = np.zeros(n, dtype=bool)
        label = np.full(n, -1, dtype=np.int64)
        truth = np.full(n, -1, dtype=np.int64)
        at = self._positions(ids, [r[0] for r in marks])
        is_labeled[at] = [r[1] == "labeled" for r in marks]
        is_unsure[at] = [r[1] == "unsure" for r in marks]
        label[at] = [index.get(r[2], -1) if r[2] is not None else -1 for r in marks]
        at = self._positions(ids, [r[0] for r in truths])
        truth[at] = [index.get(r[1], -1) for r in truths]
        is_pool = files.is_pool
        pool_rows = np.flatnonzero(is_pool)
        test_rows = np.flatnonzero(~is_pool)
        p_label = label[pool_rows]
        labeled = np.flatnonzero(is_labeled[pool_rows] & (p_label >= 0))
        candidates = np.flatnonzero(~(is_labeled | is_unsure)[pool_rows])
        t_ref = np.where(is_labeled[test_rows] & (label[test_rows] >= 0), label[test_rows], truth[test_rows])
        test_pos = np.flatnonzero(t_ref >= 0)
        return RoundInputs(
            number=number, strategy=rnd["strategy"], model_kind=rnd["model_kind"], batch_size=int(rnd["batch_size"]),
            seed=int(settings.get("seed", 0)), encoder=settings["encoder"], l2=float(settings.get("l2", 1e-2)),
            device=settings.get("device"), resnet=dict(settings.get("resnet") or {}),
            class_ids=class_ids, class_names=[r[1] for r in classes],
            pool_ids=ids[pool_rows], pool_paths=files.pool_paths, pool_hashes=files.pool_hashes,
            test_ids=ids[test_rows], test_paths=files.test_paths, test_hashes=files.test_hashes,
            labeled_pos=labeled, labeled_y=p_label[labeled], candidate_pos=candidates,
            test_pos=test_pos, test_y=t_ref[test_pos], project_name=str(settings.get("name", "")))

    # -- writes -------------------------------------------------------------------------------
    def queue_first(self, conn: sqlite3.Connection, strategy: str, model: str, batch_size: int) -> None:
        """Queue round 1 of a new project (inside the creating transaction)."""
        conn.execute("INSERT INTO rounds(number, strategy, model_kind, batch_size, status, created_at)"
                     " VALUES (1, ?, ?, ?, 'queued', ?)", (strategy, model, batch_size, now()))

    def submit(self) -> int:
        """Close the pending round and queue the next one; returns the new round's number."""
        with self.store.write() as conn:
            row = conn.execute("SELECT number FROM rounds WHERE status = 'ready' ORDER BY number DESC LIMIT 1"
                               ).fetchone()
            if row is None:
                last = conn.execute("SELECT number, status, error FROM rounds ORDER BY number DESC LIMIT 1"
                                    ).fetchone()
                why = "" if last is None else f"; round {last[0]} is {last[1]}" + (f" ({last[2]})" if last[2] else "")
                raise ProjectError(f"there is no pending batch to submit{why}")
            number = int(row[0])
            settings = read_settings(conn)
            t = now()
            conn.execute("UPDATE rounds SET status = 'submitted', submitted_at = ? WHERE number = ?", (t, number))
            conn.execute("INSERT INTO rounds(number, strategy, model_kind, batch_size, status, created_at)"
                         " VALUES (?, ?, ?, ?, 'queued', ?)",
                         (number + 1, settings["strategy"], settings["model"], settings["batch_size"], t))
        return number + 1

    def reap(self) -> None:
        """A round left 'running' by a worker or process that died is marked failed; one that was
        running in the folder this project was copied from is queued again here."""
        rows = self.store.query("SELECT number, job_path, runner_pid, runner_start, started_at FROM rounds"
                                " WHERE status = 'running'")
        for number, job_path, pid, started, claimed_at in rows:
            reason = None
            if job_path and not self.in_jobs_folder(job_path):
                # The original's worker reports to the original's file and records its result in the
                # original's database: nothing will ever finish this copy's round but a run of its own.
                self._requeue(int(number), str(job_path))
                continue
            if job_path and not Path(job_path).is_file():
                # A claimed background round whose worker has not reported by then never will.
                if claimed_at is not None and now() - claimed_at > START_TIMEOUT_S:
                    reason = "the background worker never started"
            elif job_path:
                st = job_for(job_path).status()
                if st.get("state") in ("failed", "cancelled"):
                    reason = st.get("error") or st.get("message") or st.get("state")
                elif st.get("state") == "done":
                    reason = "the worker finished without recording the round"
                elif claimed_at is not None and never_started({**st, "created_at": claimed_at}):
                    reason = "the background worker never started"
            elif job_path is None and pid is not None and pid_alive(int(pid), started) is False:
                reason = "the process running the round stopped before it finished"
            if reason:
                self.fail(int(number), str(reason), only_if_running=True)

    def in_jobs_folder(self, job_path: str) -> bool:
        """Whether a round's status file lies in this project's own jobs folder (a copied or moved
        folder's rounds name the original's). The reaper and the round server both ask this."""
        parent = Path(job_path).parent
        try:
            return os.path.samefile(parent, self.folder / "jobs")
        except OSError:
            # Either folder gone: compare the spelled paths, so a missing file is reaped as before.
            return os.path.abspath(parent) == os.path.abspath(self.folder / "jobs")

    def _requeue(self, number: int, job_path: str) -> None:
        with self.store.write() as conn:
            conn.execute("UPDATE rounds SET status = 'queued', phase = NULL, job_path = NULL, error = NULL,"
                         " runner_pid = NULL, runner_start = NULL, started_at = NULL"
                         " WHERE number = ? AND status = 'running' AND job_path = ?", (number, job_path))

    def claim(self, job_path: str | None, check_only: bool = False,
              mark_queued: bool = False, for_server: bool = False) -> int:
        """Claim the newest round. ``mark_queued``: record it as waiting for a worker (the round
        server when ``for_server``) whose status file is ``job_path``; otherwise this process runs
        it now (``job_path``: the status file it was queued with, or None in-process).
        ``check_only``: only say which round a claim would get. Raises :class:`RoundBusy`."""
        self.reap()
        with self.store.write() as conn:
            row = conn.execute("SELECT number, status, job_path, phase FROM rounds ORDER BY number DESC LIMIT 1"
                               ).fetchone()
            if row is None:
                raise ProjectError("the project has no round queued")
            number, status, current_job = int(row[0]), row[1], row[2]
            if status == RoundState.READY:
                raise ProjectError(f"round {number}'s batch is waiting to be labeled; submit it first")
            if status == RoundState.SUBMITTED:
                raise ProjectError(f"round {number} was submitted but no next round is queued")
            ours = job_path is not None and current_job == job_path and not mark_queued \
                and status == RoundState.RUNNING and row[3] in (RoundPhase.QUEUED, RoundPhase.TAKEN)
            if status == RoundState.RUNNING and not ours:
                raise RoundBusy(f"round {number} is already running")
            if job_path is not None and not mark_queued and not ours:
                # A worker whose round was cancelled (or given up on) before it started: not its to run.
                raise RoundBusy(f"round {number} is no longer waiting for this worker ({status})")
            if check_only:
                return number
            settings = read_settings(conn)
            t = now()
            if mark_queued:
                phase = RoundPhase.SERVER_QUEUED if for_server else RoundPhase.QUEUED
                conn.execute("UPDATE rounds SET status = 'running', phase = ?, job_path = ?, error = NULL,"
                             " runner_pid = NULL, runner_start = NULL, started_at = ?, strategy = ?,"
                             " batch_size = ?, model_kind = ? WHERE number = ?",
                             (phase.value, job_path, t, settings["strategy"],
                              settings["batch_size"], settings["model"], number))
                return number
            conn.execute("UPDATE rounds SET status = 'running', phase = 'starting', job_path = ?, error = NULL,"
                         " runner_pid = ?, runner_start = ?, started_at = ?, attempts = attempts + 1,"
                         " strategy = ?, batch_size = ?, model_kind = ? WHERE number = ?",
                         (job_path, os.getpid(), process_start_time(os.getpid()), t, settings["strategy"],
                          settings["batch_size"], settings["model"], number))
            return number

    def take(self, number: int, job_path: str) -> bool:
        """Take a round queued for the round server; False when another server took it first (or
        it was cancelled meanwhile)."""
        with self.store.write() as conn:
            row = conn.execute("SELECT status, phase, job_path FROM rounds WHERE number = ?", (number,)).fetchone()
            if row is None or row[0] != RoundState.RUNNING or row[1] != RoundPhase.SERVER_QUEUED \
                    or row[2] != job_path:
                return False
            conn.execute("UPDATE rounds SET phase = 'taken' WHERE number = ?", (number,))
        return True

    def set_phase(self, number: int, phase: str) -> None:
        with self.store.write() as conn:
            conn.execute("UPDATE rounds SET phase = ? WHERE number = ? AND status = 'running'", (phase, number))

    def finish(self, number: int, outcome: RoundOutcome, seconds: float, job_path: str | None = None) -> None:
        """Record a computed round: its batch, results and the current model, in one transaction."""
        with self.store.write() as conn:
            row = conn.execute("SELECT status, job_path FROM rounds WHERE number = ?", (number,)).fetchone()
            if row is None or row[0] != RoundState.RUNNING or (job_path is not None and row[1] != job_path):
                # Cancelled, or given up on and run again elsewhere, while this run computed.
                raise RoundBusy(f"round {number} was cancelled or taken over while it ran; its result is dropped")
            conn.execute("DELETE FROM selections WHERE round = ?", (number,))
            conn.executemany(
                "INSERT INTO selections(round, image_id, rank, score, reason, predicted_class_id, confidence)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(number, int(i), r + 1, s, why, p, c) for r, (i, s, why, p, c) in enumerate(zip(
                    outcome.image_ids, outcome.scores, outcome.reasons, outcome.predicted, outcome.confidence))])
            conn.execute(
                "UPDATE rounds SET status = 'ready', phase = 'done', finished_at = ?, seconds = ?, labeled_count = ?,"
                " accuracy = ?, test_count = ?, cold_start = ?, model_path = ?, error = NULL WHERE number = ?",
                (now(), seconds, outcome.labeled_count, outcome.accuracy, outcome.test_count,
                 int(outcome.cold_start), outcome.model_path, number))
            if outcome.model_path:
                self.store.set_settings({"current_model": outcome.model_path}, conn)
            if not outcome.cold_start:
                record_audits(conn, number, outcome.image_ids, outcome.predicted, outcome.confidence, outcome.info)
        if outcome.model_path:
            self.prune_models()

    def prune_models(self) -> None:
        keep = int(self.store.get_setting("keep_models", 5) or 5)
        prune_models(self.folder, [*self.model_paths()[:keep], self.store.get_setting("current_model")])

    def fail(self, number: int, reason: str, only_if_running: bool = False, job_path: str | None = None) -> None:
        sql = "UPDATE rounds SET status = 'failed', phase = 'failed', error = ?, finished_at = ? WHERE number = ?"
        params: list[Any] = [reason[:2000], now(), number]
        if only_if_running:
            sql += " AND status = 'running'"
        if job_path is not None:
            sql += " AND job_path = ?"
            params.append(job_path)
        with self.store.write() as conn:
            conn.execute(sql, params)

    def cancel(self) -> None:
        """Stop the running background round; it is marked failed and can be run again."""
        row = self.store.query_one("SELECT number, job_path FROM rounds WHERE status = 'running'"
                                   " ORDER BY number DESC LIMIT 1")
        if row is None or not row[1] or not Path(row[1]).is_file():
            return
        job_for(row[1]).cancel(grace_s=10.0, wait=False)
        if not started_here(row[1]):
            # A worker that never got to run has no pid to stop; the cancel flag keeps it from starting.
            st = job_for(row[1]).status()
            if st.get("state") == "queued":
                self.fail(int(row[0]), "cancelled on request", only_if_running=True)
