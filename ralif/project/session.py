"""The labeling project: what the app (and scripts) call.

A project folder holds::

    project.sqlite   images, classes, labels (+ history), rounds, selections, settings
    cache/           feature cache (one folder per encoder)
    models/          one checkpoint per trained round (safetensors + JSON)
    exports/         CSV / JSON / ImageFolder / model exports
    jobs/            status files of background rounds

The flow: ``Project.create`` imports the images (known labels optional) and queues round 1.
Running a round (``run_round`` in-process or ``start_round`` in a worker process) trains the
model on the current labels and writes the next batch; ``pending_batch`` shows it,
``label``/``bulk_label`` record answers, and ``submit_batch`` closes the round and queues the next.
Labels are written straight to the database and are durable when the call returns; rounds only
read them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import ralif
from ralif.project.classes import ClassesMixin
from ralif.project.dbfile import file_fault, read_only
from ralif.project.errors import ProjectError, RoundBusy
from ralif.project.flow import RoundFlowMixin
from ralif.project.importing import ImportMixin
from ralif.project.labels import LabelsMixin
from ralif.project.lifecycle import RoundBook, RoundStatus
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
    label_state,
)
from ralif.project.records import now as clock
from ralif.project.settings import SettingsMixin
from ralif.project.store import DB_NAME, Store, StoreError
from ralif.project.validation import (
    DEFAULT_BATCH,
    DEFAULT_ENCODER,
    FOLDERS,
    KNOWN_LABELS,
    LAYOUTS,
    MODEL_KINDS,
    UNDOABLE,
    clean_name,
    read_source,
    validate_batch,
    validate_encoder,
    validate_strategy,
)
from ralif.worker import write_queued_status

if TYPE_CHECKING:
    from ralif.images import ImageList
    from ralif.project.rounds import ProjectModel
    from ralif.worker import BackgroundJob

# Record types and errors are re-exported: callers import them from here and from ralif.project.
__all__ = [
    "MODEL_KINDS",
    "UNDOABLE",
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
    "RoundBusy",
    "RoundStatus",
    "UndoResult",
]

# ----------------------------------------------------------------------------- the project


class Project(ImportMixin, SettingsMixin, ClassesMixin, LabelsMixin, RoundFlowMixin):
    """A labeling project stored in a folder. Safe to use from several threads and processes;
    every method that changes something commits before it returns."""

    def __init__(self, folder: Path, store: Store, client: str | None = None) -> None:
        self.folder = folder
        self.store = store
        # The one owner of the rounds table; rounds.py and the round server use it directly.
        self.round_book = RoundBook(folder, store)
        # Identifies this caller (a browser tab) so undo reverts its own last action only.
        self.client = client or secrets.token_hex(6)
        # What the import that created the project found (bad files, duplicates); None once reopened.
        self.import_report: ImportReport | None = None

    # -- creating and opening ---------------------------------------------------------------
    @classmethod
    def open(cls, folder: str | os.PathLike[str], client: str | None = None, *,
             readonly: bool = False) -> Project:
        """Open the project in ``folder``. A folder this process cannot write opens read-only
        (``readonly=True`` asks for that): reads, the pages and exports to another folder work,
        and every change raises :class:`~ralif.project.store.ReadOnlyError`."""
        path = Path(folder).expanduser().resolve()
        db = path / DB_NAME
        if not db.is_file():
            raise FileNotFoundError(f"no ralif project in {path} (missing {DB_NAME}); "
                                    f"create one with Project.create or `ralif project create`")
        try:
            store = Store(db, readonly=readonly)
        except (StoreError, sqlite3.DatabaseError) as exc:
            raise ProjectError(f"cannot open the project in {path}: {exc}") from exc
        if not store.readonly:
            # The working folders are made on first use too; a read-only project gets none, so
            # opening it leaves the folder exactly as it was.
            for sub in FOLDERS:
                try:
                    (path / sub).mkdir(exist_ok=True)
                except OSError as exc:
                    raise ProjectError(f"cannot open the project in {path}: {path / sub} cannot be made "
                                       f"({exc.strerror or exc})") from exc
        return cls(path, store, client)

    @property
    def readonly(self) -> bool:
        """Whether changes are refused (the folder cannot be written, or it was opened read-only)."""
        return self.store.readonly

    @classmethod
    def create(cls, folder: str | os.PathLike[str], images: Any, *, name: str | None = None,
               model: str = "clip-linear", encoder: str | None = None, strategy: str = "ralif",
               batch_size: int = DEFAULT_BATCH, test: Any = None, classes: Sequence[str] | None = None,
               known_labels: str = "import", add_unknown_classes: bool = False, layout: str = "auto",
               seed: int = 0, resnet: dict[str, Any] | None = None, l2: float | None = None,
               simulated_oracle: bool = False, decode: bool = True, client: str | None = None) -> Project:
        """Create a project in ``folder`` (new or empty) from ``images``.

        ``images``: a folder (plain, or ImageFolder ``<class>/...`` or ``train|val|test/<class>/...``;
        ``layout`` forces one reading; ``auto`` reads it as the preview of :mod:`ralif.folder_scan`
        does: a folder named like ``unlabeled``, ``unknown`` or ``todo`` and loose images are
        unlabeled, never a class), a CSV manifest (``path`` and optional ``label`` columns), or
        an :class:`~ralif.images.ImageList`. ``test``: a held-out source of the same kinds, or a
        fraction of the pool (e.g. 0.1) set aside; a ``test/`` split folder is used when neither is
        given. ``classes``: the class names in display order; known labels naming other classes
        are refused with the list of unknown names unless ``add_unknown_classes``.
        ``known_labels``: ``import`` (become labels), ``truth`` (hidden; answer the simulated
        oracle and score the held-out set) or ``ignore``. Unreadable files are skipped and listed
        in :attr:`import_report`, as are duplicate files (the first copy is kept).
        """
        from ralif.head import DEFAULT_L2

        if model not in MODEL_KINDS:
            raise ProjectError(f"model must be one of {', '.join(MODEL_KINDS)}, not {model!r}")
        if known_labels not in KNOWN_LABELS:
            raise ProjectError(f"known_labels must be one of {', '.join(KNOWN_LABELS)}, not {known_labels!r}")
        encoder = validate_encoder(encoder or DEFAULT_ENCODER[model])
        strategy = validate_strategy(strategy)
        batch_size = validate_batch(batch_size)
        path = Path(folder).expanduser().resolve()
        if (path / DB_NAME).exists():
            raise ProjectError(f"{path} already holds a project; open it (Project.open) or choose a new folder")
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise ProjectError(f"{path} exists and is not an empty folder; choose a new folder")
        fraction: float | None = None
        if isinstance(test, (int, float)) and not isinstance(test, bool):
            # Checked before the source is read: reading decodes every image.
            fraction = float(test)
            if not 0 < fraction < 1:
                raise ProjectError(f"a held-out fraction must be between 0 and 1, got {test}")
        elif isinstance(test, (str, os.PathLike)) and not Path(os.fspath(test)).expanduser().exists():
            raise FileNotFoundError(f"test source not found: {Path(os.fspath(test)).expanduser()}")
        if layout not in LAYOUTS:
            raise ProjectError(f"layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
        # Sources are read (and every file checked) before anything is written, and a failure after
        # that removes what was made, so a bad source never leaves a half-made project behind.
        lists = read_source(images, layout, decode)
        pool_lists = [v for k, v in lists.items() if k != "test"]
        test_lists: list[ImageList] = []
        if fraction is None and test is not None:
            test_lists = list(read_source(test, layout, decode).values())
        if "test" in lists:
            if test is not None:
                raise ProjectError(f"{images} has a test/ folder and a test source was given too; use one")
            test_lists = [lists["test"]]
        if not pool_lists or not sum(len(v) for v in pool_lists):
            raise ProjectError("the image source has no pool images (only a test split?)")
        created = not path.exists()
        path.mkdir(parents=True, exist_ok=True)
        try:
            store = Store(path / DB_NAME, create=True)
            for sub in FOLDERS:
                (path / sub).mkdir(exist_ok=True)
            project = cls(path, store, client)
            settings: dict[str, Any] = {
                "name": name or path.name, "model": model, "encoder": encoder, "strategy": strategy,
                "batch_size": batch_size, "seed": int(seed), "l2": float(l2 if l2 is not None else DEFAULT_L2),
                "device": None, "simulated_oracle": bool(simulated_oracle),
                "resnet": dict(resnet or {}), "current_model": None, "created_at": clock(), "keep_models": 5,
                "created_by": f"ralif {ralif.__version__}", "demo": False,
            }
            if model == "resnet18":
                from ralif.models.resnet import TrainConfig
                from ralif.project.rounds import DEFAULT_RESNET

                TrainConfig.from_dict({**DEFAULT_RESNET, **settings["resnet"]})
            with store.write() as conn:
                store.set_settings(settings, conn)
                now = clock()
                for i, cname in enumerate(classes or []):
                    conn.execute("INSERT INTO classes(name, position, created_at) VALUES (?, ?, ?)",
                                 (clean_name(cname), i, now))
            report = project._import(pool_lists, test_lists, known_labels, add_unknown_classes, fraction)
            with store.write() as conn:
                project.round_book.queue_first(conn, strategy, model, batch_size)
        except BaseException:
            from ralif.project.store import release

            release(path / DB_NAME)
            if created:
                shutil.rmtree(path, ignore_errors=True)
            else:
                for child in path.iterdir():
                    if child.is_dir():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
            raise
        project.import_report = report
        return project

    @classmethod
    def create_demo(cls, folder: str | os.PathLike[str], *, initial_labels: int = 0,
                    batch_size: int = DEFAULT_BATCH, strategy: str = "ralif",
                    assets: str | os.PathLike[str] | None = None, run_first_round: bool = True,
                    client: str | None = None) -> Project:
        """A ready-made demo on the bundled CIFAR-10 subset (``ralif/app/assets/demo``).

        2,000 pool images and a 500-image held-out set with hidden true labels, the bundled
        precomputed embeddings as the encoder, and the simulated oracle switched on. By default the
        demo starts cold (no labels): the first batch is a k-means++ pick over the features, which
        shows how a project starts from nothing. ``initial_labels=n`` instead labels n pool images
        up front (one class after the other, fixed seed) so the first batch already comes from
        the model. With ``run_first_round`` the first batch is computed at once (about a second).
        """
        demo = Path(assets) if assets is not None else Path(__file__).resolve().parents[1] / "app/assets/demo"
        emb = demo / "embeddings.npz"
        if not (demo / "images" / "train").is_dir() or not emb.is_file():
            raise FileNotFoundError(f"demo assets not found in {demo}; build them with "
                                    f"`python benchmarks/make_demo_assets.py`")
        project = cls.create(folder, demo / "images" / "train", test=demo / "images" / "test",
                             name="CIFAR-10 demo", model="clip-linear", encoder=f"precomputed:{emb.resolve()}",
                             strategy=strategy, batch_size=batch_size, known_labels="truth",
                             simulated_oracle=True, layout="imagefolder", decode=False, client=client)
        project.store.set_settings({"demo": True})
        if initial_labels:
            rows = project.store.query("SELECT id, true_class_id FROM images WHERE split = 'pool' ORDER BY id")
            ids = np.array([r[0] for r in rows])
            truth = np.array([r[1] for r in rows])
            rng = np.random.default_rng(0)
            order = rng.permutation(len(ids))
            classes = np.unique(truth)
            # Round-robin over classes so even a handful of labels covers several classes.
            picks: list[int] = []
            per_class = {c: list(order[truth[order] == c]) for c in classes}
            while len(picks) < min(int(initial_labels), len(ids)):
                for c in classes:
                    if per_class[c] and len(picks) < initial_labels:
                        picks.append(int(per_class[c].pop(0)))
            with project.store.write() as conn:
                action = project._new_action(conn, "import", {"demo_initial": len(picks)})
                for p in picks:
                    project._write_label(conn, int(ids[p]), int(truth[p]), "labeled", "import", action)
        if run_first_round:
            project.run_round()
        return project

    # -- reading -----------------------------------------------------------------------------
    def _reap_dead_runners(self) -> None:
        """Mark failed a round whose runner died (killed, crashed) before a status is read, so
        it reads as failed with the reason instead of running forever. A project that cannot be
        written now is read as it stands."""
        if self.store.readonly:
            return
        with contextlib.suppress(StoreError, sqlite3.Error):
            self.round_book.reap()

    def progress(self) -> Progress:
        """Counts of images and labels, and the latest round (a round whose runner died is marked
        failed first)."""
        self._reap_dead_runners()
        return self._read_progress()

    def _read_progress(self) -> Progress:
        names = self._class_names(include_deleted=False)
        with self.store.read() as conn:
            # Trigger-kept counts: a few rows, however large the pool and however many labels.
            sizes = self.store.image_counts(conn)
            pool = sizes["pool"].images if "pool" in sizes else 0
            test = sizes["test"].images if "test" in sizes else 0
            counts = [(*key, n) for key, n in self.store.label_counts(conn).items()]
            rnd = self.round_book.latest(conn)
            pend = self.round_book.pending_counts(conn)
        per_class = {n: 0 for n in names.values()}
        labeled = unsure = test_labeled = 0
        for split, state, cid, n in counts:
            if split == "pool" and state == "labeled":
                labeled += n
                cname = names.get(cid, str(cid)) if cid is not None else "None"
                per_class[cname] = per_class.get(cname, 0) + n
            elif split == "pool":
                unsure += n
            elif state == "labeled":
                test_labeled += n
        return Progress(pool=pool, labeled=labeled, unsure=unsure, unlabeled=pool - labeled - unsure, test=test,
                        test_labeled=test_labeled, round=int(rnd[0]) if rnd else 0,
                        round_status=rnd[1] if rnd else None, pending=int(pend[0] or 0),
                        pending_done=int(pend[1] or 0), per_class=per_class)

    def image(self, image_id: int) -> ImageRow:
        row = self.store.query_one(
            "SELECT i.id, i.path, i.split, l.class_id, l.state, l.source, l.round, l.created_at, l.version"
            " FROM images i LEFT JOIN labels l ON l.image_id = i.id WHERE i.id = ?", (int(image_id),))
        if row is None:
            raise ProjectError(f"image {image_id} is not in this project")
        return ImageRow(row["id"], row["path"], row["split"], label_state(row["id"], row, self._class_names()))

    def images_page(self, which: str | int = "all", *, split: str = "pool", after_id: int = 0,
                    limit: int = 100, path_contains: str = "") -> list[ImageRow]:
        """One page of images in id order (keyset paging: pass the last id as ``after_id``).
        ``which``: ``all``, ``unlabeled``, ``labeled``, ``unsure`` or a class id. ``path_contains``:
        only images whose path holds this text, literally (no wildcards), ASCII letters in either
        case (SQLite folds no others); the page still stops at ``limit`` matches."""
        cols = ("SELECT i.id, i.path, i.split, l.class_id, l.state, l.source, l.round, l.created_at, l.version")
        match = " AND (instr(lower(i.path), ?) > 0 OR instr(i.path, ?) > 0)" if path_contains else ""
        text: tuple[str, ...] = (path_contains.lower(), path_contains) if path_contains else ()
        if which in ("all", "unlabeled"):
            extra = " AND (l.state IS NULL OR l.state = 'cleared')" if which == "unlabeled" else ""
            sql = (f"{cols} FROM images i LEFT JOIN labels l ON l.image_id = i.id WHERE i.split = ? AND i.id > ?"
                   f"{extra}{match} ORDER BY i.id LIMIT ?")
            params: tuple[Any, ...] = (split, int(after_id), *text, int(limit))
        elif which in ("labeled", "unsure") or (isinstance(which, int) and not isinstance(which, bool)):
            # Driven from the labels' own indexes, so a rare class is found without scanning the split.
            cond, value = ("l.state = ?", which) if isinstance(which, str) else ("l.class_id = ?", int(which))
            sql = (f"{cols} FROM labels l CROSS JOIN images i ON i.id = l.image_id WHERE {cond}"
                   f" AND l.image_id > ? AND i.split = ?{match} ORDER BY l.image_id LIMIT ?")
            params = (value, int(after_id), split, *text, int(limit))
        else:
            raise ProjectError("which must be all, unlabeled, labeled, unsure or a class id")
        rows = self.store.query(sql, params)
        names = self._class_names()
        return [ImageRow(r["id"], r["path"], r["split"], label_state(r["id"], r, names)) for r in rows]

    # -- rounds ------------------------------------------------------------------------------
    def pending_round(self) -> int | None:
        return self.round_book.pending_round()

    def pending_batch(self) -> list[BatchItem]:
        """The batch waiting to be labeled (empty while the next round is queued or running)."""
        number = self.pending_round()
        if number is None:
            return []
        names = self._class_names()
        rows = self.round_book.batch_rows(number)
        return [BatchItem(r["image_id"], r["path"], r["rank"], r["score"], r["reason"], r["predicted_class_id"],
                          names.get(r["predicted_class_id"]), r["confidence"],
                          label_state(r["image_id"], r, names)) for r in rows]

    def submit_batch(self) -> int:
        """Close the pending round and queue the next one; returns the new round's number.
        Unanswered images of the batch simply stay unlabeled."""
        return self.round_book.submit()

    def rounds(self) -> list[dict[str, Any]]:
        """Every round, oldest first: status, accuracy on the held-out set, labels used, timing."""
        return self.round_book.all()

    def run_round(self, progress: Callable[[str, dict[str, Any] | None], None] | None = None) -> dict[str, Any]:
        """Run the queued (or failed) round in this process; see :func:`rounds.run_next_round`."""
        from ralif.project.rounds import run_next_round

        return run_next_round(self.round_book, progress)

    def start_round(self, threads: int | None = None, *, own_process: bool = False) -> BackgroundJob:
        """Run the queued (or failed) round in the background; follow it with :meth:`round_status`.
        Raises :class:`RoundBusy` when one is running already.

        The round goes to the project's warm round server (started here if none runs), so it
        begins within tens of milliseconds; ``own_process=True`` runs it in a fresh worker process
        instead (``threads`` then sets its torch threads). The handle follows the round's status."""
        from ralif.project.round_server import ensure_server
        from ralif.worker import BackgroundJob, start_job

        book = self.round_book
        if self.store.readonly:
            raise read_only(str(self.folder), self.store.explicit_readonly)
        number = book.claim(job_path=None, check_only=True)
        status_path = self.folder / "jobs" / f"round-{number:04d}-{secrets.token_hex(3)}.json"
        if not own_process:
            try:
                status_path.parent.mkdir(parents=True, exist_ok=True)
                write_queued_status(status_path, f"round-{number}", "round-server")
            except OSError as exc:
                # Nothing is claimed yet; the round is failed with the reason where that can be
                # written, so the page says why instead of showing a round that never moves.
                status_path.unlink(missing_ok=True)
                failure = file_fault(exc, status_path) or exc
                self._record_start_failure(number, failure)
                raise failure from exc
        # The claim is recorded before any worker sees it, so two tabs cannot start the same round;
        # a round meant for a worker of its own is never picked up by the round server.
        try:
            book.claim(job_path=str(status_path), mark_queued=True, for_server=not own_process)
        except ProjectError:
            status_path.unlink(missing_ok=True)  # another tab claimed it first: no orphan status file
            raise
        except StoreError as exc:
            status_path.unlink(missing_ok=True)
            self._record_start_failure(number, exc)
            raise
        if not own_process:
            try:
                ensure_server(self.folder)
            except Exception as exc:
                book.fail(number, f"could not start the background worker: {exc}")
                raise
            return BackgroundJob(status_path)
        threads = threads or self.store.get_setting("threads")
        try:
            job = start_job("ralif.project.rounds:round_job", {"folder": str(self.folder), "threads": threads},
                            status_path, job_id=f"round-{number}")
        except Exception as exc:
            book.fail(number, f"could not start the worker: {exc}")
            raise
        return job

    def _record_start_failure(self, number: int, exc: BaseException) -> None:
        """Mark round ``number`` failed with why it could not start, where the database can still
        be written (a full disk often leaves room for that small change); otherwise it stays
        queued and the next page run starts it once the cause is gone."""
        with contextlib.suppress(StoreError, sqlite3.Error):
            self.round_book.fail(number, f"the round could not start: {exc}")

    def ensure_round_server(self) -> None:
        """Start the project's warm round server now, so the next round starts without waiting
        for a new process (the Label page calls this when it opens)."""
        from ralif.project.round_server import ensure_server

        ensure_server(self.folder)

    def cancel_round(self) -> RoundStatus:
        """Stop a background round; the round is marked failed and can be run again."""
        self.round_book.cancel()
        return self.round_status()

    def round_status(self) -> RoundStatus:
        """The latest round for the UI: ``status`` (queued, running, ready, submitted, failed),
        ``phase`` (queued, extracting, training, selecting, saving, done, failed), ``progress``,
        ``error`` and results (``accuracy``, ``labeled_count``, ``seconds``). A round whose worker
        is gone is marked failed first."""
        self.round_book.reap()
        return self.round_book.status()

    # -- models and exports ------------------------------------------------------------------
    def current_model_path(self) -> Path | None:
        rel = self.store.get_setting("current_model")
        return None if not rel else self.folder / rel

    def load_model(self, device: str | None = None) -> ProjectModel:
        """The model of the last successful round, ready for prediction."""
        from ralif.project.rounds import load_model

        path = self.current_model_path()
        if path is None:
            raise ProjectError("no model has been trained yet: label images of at least two classes and run a round")
        return load_model(path, device=device)

    def predict(self, paths: Sequence[str], device: str | None = None) -> tuple[list[str], np.ndarray]:
        """(predicted class name, probabilities N x K) for image files, with the current model."""
        model = self.load_model(device)
        probs = model.predict_proba(list(paths), cache_root=self.folder / "cache", device=device)
        return [model.class_names[k] for k in probs.argmax(1)], probs

    def export_csv(self, dest: str | os.PathLike[str] | None = None, include_unsure: bool = False) -> Path:
        from ralif.project.exports import export_labels_csv

        return export_labels_csv(self, dest, include_unsure)

    def export_json(self, dest: str | os.PathLike[str] | None = None, include_unsure: bool = False) -> Path:
        from ralif.project.exports import export_labels_json

        return export_labels_json(self, dest, include_unsure)

    def export_imagefolder(self, dest: str | os.PathLike[str] | None = None, mode: str = "copy",
                           split_folders: bool = False, overwrite: bool = False) -> Path:
        from ralif.project.exports import export_imagefolder

        return export_imagefolder(self, dest, mode, split_folders, overwrite)

    def export_model(self, dest: str | os.PathLike[str] | None = None, overwrite: bool = False) -> Path:
        from ralif.project.exports import export_model

        return export_model(self, dest, overwrite)

    def info(self) -> dict[str, Any]:
        """A JSON-able summary: settings, progress, classes and rounds (a round whose runner died
        is marked failed first, with the reason)."""
        self._reap_dead_runners()
        prog = asdict(self._read_progress())
        return {"folder": str(self.folder), "settings": self.settings, "progress": prog,
                "classes": [asdict(c) for c in self.classes()],
                "rounds": [{k: r[k] for k in ("number", "status", "strategy", "batch_size", "labeled_count",
                                              "accuracy", "test_count", "cold_start", "seconds", "error")}
                           for r in self.rounds()]}
