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

import json
import os
import secrets
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import ralif
from ralif.project.store import DB_NAME, LABEL_SOURCES, Store, StoreError, fill_ids
from ralif.worker import (
    START_TIMEOUT_S,
    job_for,
    never_started,
    pid_alive,
    process_start_time,
    started_here,
    write_queued_status,
)

if TYPE_CHECKING:
    from ralif.images import ImageList
    from ralif.project.rounds import ProjectModel, RoundInputs, RoundOutcome
    from ralif.worker import BackgroundJob

MODEL_KINDS = ("clip-linear", "resnet18")
DEFAULT_ENCODER = {"clip-linear": "clip:ViT-B-16:openai", "resnet18": "pixels:8"}
KNOWN_LABELS = ("import", "truth", "ignore")
LAYOUTS = ("auto", "imagefolder", "flat")
DEFAULT_BATCH = 20
FOLDERS = ("cache", "models", "exports", "jobs")
_UNDOABLE = ("label", "unlabel", "bulk", "oracle")


class ProjectError(ValueError):
    """A request the project cannot carry out; the message says why and what to do."""


class RoundBusy(ProjectError):
    """A round is already running for this project."""


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class ClassInfo:
    id: int
    name: str
    position: int
    count: int = 0          # labeled pool images


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


@dataclass(frozen=True)
class UndoResult:
    action_id: int
    kind: str
    restored: list[int]
    conflicts: list[int]     # images changed by someone else since; left as they are


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


def _now() -> float:
    return time.time()


def _label_state(image_id: int, row: sqlite3.Row | None, names: dict[int, str]) -> LabelState:
    if row is None or row["state"] is None:
        return LabelState(int(image_id), "unlabeled", None, None, 0 if row is None else int(row["version"] or 0))
    state = "unlabeled" if row["state"] == "cleared" else row["state"]
    cid = row["class_id"]
    return LabelState(int(image_id), state, cid, names.get(cid) if cid is not None else None,
                      int(row["version"]), row["source"], row["round"], row["created_at"])


def _check_source(source: str) -> None:
    if source not in LABEL_SOURCES:
        raise ProjectError(f"label source must be one of {', '.join(LABEL_SOURCES)}, not {source!r}")


def _clean_name(name: str) -> str:
    if not isinstance(name, str):
        raise ProjectError(f"a class name must be text, got {type(name).__name__}")
    cleaned = " ".join(name.split())
    if not cleaned:
        raise ProjectError("a class name cannot be empty")
    if len(cleaned) > 200:
        raise ProjectError("a class name can have at most 200 characters")
    return cleaned


def _validate_strategy(spec: str) -> str:
    from ralif.strategies import make_strategy

    make_strategy(spec)
    return spec.strip()


def _validate_encoder(spec: str) -> str:
    """Catch a mistyped spec at creation; weights themselves are only loaded by the first round."""
    kind, _, rest = spec.strip().partition(":")
    kind = kind.lower()
    if kind == "precomputed":
        if not Path(rest).expanduser().is_file():
            raise ProjectError(f"embeddings file not found: {rest!r} (encoder spec {spec!r})")
        return f"precomputed:{Path(rest).expanduser().resolve()}"
    if kind == "pixels":
        from ralif.project.rounds import pixel_size

        pixel_size(spec)
    elif kind not in ("clip", "open_clip", "openclip") and not kind.startswith("resnet18"):
        raise ProjectError(f"unknown encoder spec {spec!r}; use clip:<model>:<weights>, resnet18:<weights>, "
                           f"resnet18-32:<weights>, precomputed:<file.npz> or pixels[:N]")
    return spec.strip()


def _validate_batch(n: Any) -> int:
    if isinstance(n, bool) or int(n) != n or int(n) < 1:
        raise ProjectError(f"batch size must be a positive integer, got {n!r}")
    return int(n)


def _read_source(source: Any, layout: str, decode: bool) -> dict[str, ImageList]:
    """An image source as ImageLists by split name (``all``, ``train``, ``val``, ``test``)."""
    from ralif.images import ImageList, load_image_folder, load_manifest, scan_images

    if isinstance(source, ImageList):
        return {"all": source}
    if isinstance(source, dict) and all(isinstance(v, ImageList) for v in source.values()):
        return dict(source)
    if layout not in LAYOUTS:
        raise ProjectError(f"layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
    path = Path(os.fspath(source)).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise ProjectError(f"{path} is a file but not a CSV manifest (a 'path' column, optional 'label')")
        return {"all": load_manifest(path, decode=decode)}
    if not path.exists():
        raise FileNotFoundError(f"image source not found: {path}")
    if layout == "flat":
        return {"all": scan_images(path, decode=decode)}
    if layout == "auto" and not _looks_like_imagefolder(path):
        return {"all": scan_images(path, decode=decode)}
    return load_image_folder(path, decode=decode)


def _looks_like_imagefolder(path: Path) -> bool:
    """Split folders (train/val/test), or images only inside first-level folders."""
    from ralif.images import SPLIT_NAMES, is_image_file

    entries = [e for e in os.scandir(path) if not e.name.startswith(".")]
    if any(e.is_dir() and e.name.lower() in SPLIT_NAMES for e in entries):
        return True
    has_dirs = any(e.is_dir() for e in entries)
    loose = any(e.is_file() and is_image_file(e.name) for e in entries)
    return has_dirs and not loose


# ----------------------------------------------------------------------------- the project


class Project:
    """A labeling project stored in a folder. Safe to use from several threads and processes;
    every method that changes something commits before it returns."""

    def __init__(self, folder: Path, store: Store, client: str | None = None) -> None:
        self.folder = folder
        self.store = store
        # Identifies this caller (a browser tab) so undo reverts its own last action only.
        self.client = client or secrets.token_hex(6)
        # What the import that created the project found (bad files, duplicates); None once reopened.
        self.import_report: ImportReport | None = None

    # -- creating and opening ---------------------------------------------------------------
    @classmethod
    def open(cls, folder: str | os.PathLike[str], client: str | None = None) -> Project:
        path = Path(folder).expanduser().resolve()
        db = path / DB_NAME
        if not db.is_file():
            raise FileNotFoundError(f"no ralif project in {path} (missing {DB_NAME}); "
                                    f"create one with Project.create or `ralif project create`")
        try:
            store = Store(db)
        except (StoreError, sqlite3.DatabaseError) as exc:
            raise ProjectError(f"cannot open the project in {path}: {exc}") from exc
        for sub in FOLDERS:
            (path / sub).mkdir(exist_ok=True)
        return cls(path, store, client)

    @classmethod
    def create(cls, folder: str | os.PathLike[str], images: Any, *, name: str | None = None,
               model: str = "clip-linear", encoder: str | None = None, strategy: str = "ralif",
               batch_size: int = DEFAULT_BATCH, test: Any = None, classes: Sequence[str] | None = None,
               known_labels: str = "import", add_unknown_classes: bool = False, layout: str = "auto",
               seed: int = 0, resnet: dict[str, Any] | None = None, l2: float | None = None,
               simulated_oracle: bool = False, decode: bool = True, client: str | None = None) -> Project:
        """Create a project in ``folder`` (new or empty) from ``images``.

        ``images``: a folder (plain, or ImageFolder ``<class>/...`` or ``train|val|test/<class>/...``;
        ``layout`` forces one reading), a CSV manifest (``path`` and optional ``label`` columns), or
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
        encoder = _validate_encoder(encoder or DEFAULT_ENCODER[model])
        strategy = _validate_strategy(strategy)
        batch_size = _validate_batch(batch_size)
        path = Path(folder).expanduser().resolve()
        if (path / DB_NAME).exists():
            raise ProjectError(f"{path} already holds a project; open it with Project.open")
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise ProjectError(f"{path} exists and is not an empty folder; choose a new folder")
        # Sources are read (and every file checked) before anything is written, and a failure after
        # that removes what was made, so a bad source never leaves a half-made project behind.
        lists = _read_source(images, layout, decode)
        pool_lists = [v for k, v in lists.items() if k != "test"]
        test_lists: list[ImageList] = []
        fraction: float | None = None
        if isinstance(test, (int, float)) and not isinstance(test, bool):
            fraction = float(test)
            if not 0 < fraction < 1:
                raise ProjectError(f"a held-out fraction must be between 0 and 1, got {test}")
        elif test is not None:
            test_lists = list(_read_source(test, layout, decode).values())
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
            settings = {
                "name": name or path.name, "model": model, "encoder": encoder, "strategy": strategy,
                "batch_size": batch_size, "seed": int(seed), "l2": float(l2 if l2 is not None else DEFAULT_L2),
                "device": None, "simulated_oracle": bool(simulated_oracle),
                "resnet": dict(resnet or {}), "current_model": None, "created_at": _now(), "keep_models": 5,
                "created_by": f"ralif {ralif.__version__}", "demo": False,
            }
            if model == "resnet18":
                from ralif.models.resnet import TrainConfig
                from ralif.project.rounds import DEFAULT_RESNET

                TrainConfig.from_dict({**DEFAULT_RESNET, **settings["resnet"]})
            with store.write() as conn:
                store.set_settings(settings, conn)
                now = _now()
                for i, cname in enumerate(classes or []):
                    conn.execute("INSERT INTO classes(name, position, created_at) VALUES (?, ?, ?)",
                                 (_clean_name(cname), i, now))
            report = project._import(pool_lists, test_lists, known_labels, add_unknown_classes, fraction)
            with store.write() as conn:
                conn.execute("INSERT INTO rounds(number, strategy, model_kind, batch_size, status, created_at)"
                             " VALUES (1, ?, ?, ?, 'queued', ?)", (strategy, model, batch_size, _now()))
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
        """A ready-made demo on the bundled CIFAR-10 subset (``assets/demo``).

        2,000 pool images and a 500-image held-out set with hidden true labels, the bundled
        precomputed embeddings as the encoder, and the simulated oracle switched on. By default the
        demo starts cold (no labels): the first batch is a k-means++ pick over the features, which
        shows how a project starts from nothing. ``initial_labels=n`` instead labels n pool images
        up front (one class after the other, fixed seed) so the first batch already comes from
        the model. With ``run_first_round`` the first batch is computed at once (about a second).
        """
        demo = Path(assets) if assets is not None else Path(__file__).resolve().parents[2] / "assets" / "demo"
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

    # -- importing ---------------------------------------------------------------------------
    def add_images(self, source: Any, *, split: str = "pool", known_labels: str = "import",
                   add_unknown_classes: bool = False, layout: str = "auto", decode: bool = True
                   ) -> ImportReport:
        """Add more images to the pool (or the held-out ``test`` split); same rules as create."""
        if split not in ("pool", "test"):
            raise ProjectError("split must be 'pool' or 'test'")
        if known_labels not in KNOWN_LABELS:
            raise ProjectError(f"known_labels must be one of {', '.join(KNOWN_LABELS)}")
        lists = list(_read_source(source, layout, decode).values())
        if split == "pool":
            return self._import(lists, [], known_labels, add_unknown_classes, None)
        return self._import([], lists, known_labels, add_unknown_classes, None)

    def _import(self, pool: list[ImageList], test: list[ImageList], known_labels: str,
                add_unknown: bool, fraction: float | None) -> ImportReport:
        report = ImportReport()
        entries: list[tuple[str, str, str, str | None]] = []   # path, hash, split, label name
        for split, lists in (("pool", pool), ("test", test)):
            for lst in lists:
                report.problems += [(str(p), r) for p, r in lst.problems]
                for p, h, y in zip(lst.paths, lst.hashes, lst.labels.tolist()):
                    entries.append((os.path.abspath(p), h, split, lst.classes[y] if y >= 0 else None))
        # Identical bytes: keep the first copy (pool before test), report the group.
        groups: dict[str, list[int]] = {}
        for i, (_, h, _, _) in enumerate(entries):
            groups.setdefault(h, []).append(i)
        keep = np.ones(len(entries), dtype=bool)
        for members in groups.values():
            if len(members) > 1:
                report.duplicates.append([entries[i][0] for i in members])
                keep[members[1:]] = False
                names = sorted({entries[i][3] for i in members if entries[i][3] is not None})
                if len(names) > 1:
                    # One picture under two classes: taking the label of whichever copy sorts first
                    # would be a silent guess, so the kept copy comes in unlabeled and is reported.
                    p, h, split, _ = entries[members[0]]
                    entries[members[0]] = (p, h, split, None)
                    copies = ", ".join(f"{entries[i][0]} ({entries[i][3]})" for i in members)
                    report.label_conflicts.append(
                        f"{p}: the same image has the labels {' and '.join(names)} ({copies}); "
                        f"imported without a label")
        existing_paths: set[str] = set()
        existing_hashes: dict[str, str] = {}
        with self.store.read() as conn:
            if conn.execute("SELECT 1 FROM images LIMIT 1").fetchone():
                conn.execute("CREATE TEMP TABLE IF NOT EXISTS _new (p TEXT PRIMARY KEY, h TEXT)")
                conn.execute("DELETE FROM _new")
                conn.executemany("INSERT OR IGNORE INTO _new VALUES (?, ?)", [(e[0], e[1]) for e in entries])
                existing_paths = {r[0] for r in conn.execute(
                    "SELECT i.path FROM _new t JOIN images i ON i.path = t.p")}
                existing_hashes = {r[0]: r[1] for r in conn.execute(
                    "SELECT content_hash, path FROM images WHERE content_hash IN (SELECT h FROM _new)")}
            live = {r["name"]: r["id"] for r in conn.execute("SELECT id, name FROM classes WHERE deleted = 0")}
        for i, (p, h, _, _) in enumerate(entries):
            if keep[i] and p in existing_paths:
                keep[i] = False
                report.already_present += 1
            elif keep[i] and h in existing_hashes:
                report.duplicates.append([existing_hashes[h], p])
                keep[i] = False
        report.skipped_duplicates = int(len(entries) - keep.sum()) - report.already_present
        kept = [e for e, k in zip(entries, keep) if k]
        if known_labels != "ignore":
            named = {e[3] for e in kept if e[3] is not None}
            unknown = sorted(n for n in named if _clean_name(n) not in live)
            if unknown and live and not add_unknown:
                raise ProjectError(
                    f"{len(unknown)} label name(s) are not classes of this project: {', '.join(unknown[:20])}"
                    f"{' ...' if len(unknown) > 20 else ''}. Known classes: {', '.join(sorted(live))}. "
                    f"Fix the labels, or pass add_unknown_classes=True (--add-classes) to add them.")
        if fraction is not None:
            pool_idx = [i for i, e in enumerate(kept) if e[2] == "pool"]
            n_test = round(fraction * len(pool_idx))
            if n_test < 1 or n_test >= len(pool_idx):
                raise ProjectError(f"a held-out fraction of {fraction} of {len(pool_idx)} images leaves an "
                                   f"empty pool or test set")
            seed = int(self.store.get_setting("seed", 0))
            chosen = np.random.default_rng([seed, 7]).choice(pool_idx, n_test, replace=False)
            for i in chosen:
                p, h, _, y = kept[i]
                kept[i] = (p, h, "test", y)
        now = _now()
        with self.store.write() as conn:
            live = {r["name"]: r["id"] for r in conn.execute("SELECT id, name FROM classes WHERE deleted = 0")}
            next_pos = int(conn.execute("SELECT COALESCE(MAX(position) + 1, 0) FROM classes").fetchone()[0])
            if known_labels != "ignore":
                named = {_clean_name(e[3]) for e in kept if e[3] is not None}
                # New classes keep the source's order (ImageFolder: sorted folder names).
                ordered = dict.fromkeys(_clean_name(c) for lst in pool + test for c in lst.classes)
                for n in [c for c in ordered if c in named and c not in live]:
                    cur = conn.execute("INSERT INTO classes(name, position, created_at) VALUES (?, ?, ?)",
                                       (n, next_pos, now))
                    live[n] = int(cur.lastrowid)
                    next_pos += 1
                    report.classes_added.append(n)
            truth = known_labels == "truth"
            rows = [(p, h, split, live[_clean_name(y)] if (truth and y is not None) else None, now)
                    for p, h, split, y in kept]
            conn.executemany("INSERT INTO images(path, content_hash, split, true_class_id, added_at) "
                             "VALUES (?, ?, ?, ?, ?)", rows)
            report.added = len(rows)
            report.pool = sum(1 for r in rows if r[2] == "pool")
            report.test = len(rows) - report.pool
            report.truths = sum(1 for r in rows if r[3] is not None)
            if known_labels == "import":
                labeled = [(p, live[_clean_name(y)]) for p, _, _, y in kept if y is not None]
                if labeled:
                    action = self._new_action(conn, "import", {"count": len(labeled)})
                    conn.execute("CREATE TEMP TABLE IF NOT EXISTS _import (path TEXT PRIMARY KEY, class_id INTEGER)")
                    conn.execute("DELETE FROM _import")
                    conn.executemany("INSERT INTO _import VALUES (?, ?)", labeled)
                    conn.execute(
                        "INSERT INTO label_history(action_id, image_id, new_class_id, new_state, source, round,"
                        " version, created_at, client) SELECT ?, i.id, t.class_id, 'labeled', 'import', 0, 1, ?, ?"
                        " FROM _import t JOIN images i ON i.path = t.path", (action, now, self.client))
                    conn.execute(
                        "INSERT INTO labels(image_id, class_id, state, round, source, created_at, version, client)"
                        " SELECT i.id, t.class_id, 'labeled', 0, 'import', ?, 1, ? FROM _import t"
                        " JOIN images i ON i.path = t.path", (now, self.client))
                    report.labels = len(labeled)
        return report

    def import_labels(self, csv_path: str | os.PathLike[str], *, add_unknown_classes: bool = False,
                      source: str = "import") -> BulkResult:
        """Labels for images already in the project from a CSV (``path``, ``label``); paths are
        matched as written or relative to the CSV's folder. Unknown class names are refused with
        their list unless ``add_unknown_classes``; rows naming images not in the project too."""
        import csv

        _check_source(source)
        csv_file = Path(csv_path).expanduser().resolve()
        with open(csv_file, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            cols = {(c or "").strip().lower(): c for c in reader.fieldnames or []}
            if "path" not in cols or "label" not in cols:
                raise ProjectError(f"{csv_file} needs 'path' and 'label' columns (has {', '.join(cols) or 'none'})")
            pairs = [((r.get(cols["path"]) or "").strip(), (r.get(cols["label"]) or "").strip()) for r in reader]
        pairs = [(os.path.normpath(os.path.join(csv_file.parent, p)), _clean_name(y)) for p, y in pairs if p and y]
        wanted: dict[str, str] = {}
        clashes = []
        for p, y in pairs:
            if wanted.setdefault(p, y) != y:
                clashes.append(f"{p} ({wanted[p]} / {y})")
        if clashes:
            raise ProjectError(f"{len(clashes)} image(s) get two different labels in {csv_file.name}, "
                               f"e.g. {'; '.join(clashes[:3])}")
        live = {c.name: c.id for c in self.classes()}
        unknown = sorted(set(wanted.values()) - set(live))
        if unknown and not add_unknown_classes:
            raise ProjectError(f"{len(unknown)} label name(s) in {csv_file.name} are not classes of this project: "
                               f"{', '.join(unknown[:20])}. Known classes: {', '.join(sorted(live))}. "
                               f"Pass add_unknown_classes=True to add them.")
        ids = {r[1]: r[0] for r in self.store.query("SELECT id, path FROM images")}
        missing = [p for p in wanted if p not in ids]
        if missing:
            raise ProjectError(f"{len(missing)} path(s) in {csv_file.name} are not images of this project, "
                               f"e.g. {', '.join(missing[:3])}")
        changed = unchanged = 0
        # New classes and the labels are written together: a failure leaves neither behind.
        with self.store.write() as conn:
            pos = int(conn.execute("SELECT COALESCE(MAX(position) + 1, 0) FROM classes").fetchone()[0])
            for i, y in enumerate(unknown):
                cur = conn.execute("INSERT INTO classes(name, position, created_at) VALUES (?, ?, ?)",
                                   (y, pos + i, _now()))
                live[y] = int(cur.lastrowid)
            by_class: dict[int, list[int]] = {}
            for p, y in wanted.items():
                by_class.setdefault(live[y], []).append(ids[p])
            action_id = self._new_action(conn, "import", {"csv": str(csv_file)})
            for cid, img_ids in by_class.items():
                n = fill_ids(conn, img_ids)
                c = self._apply_labels(conn, cid, "labeled", source, action_id, source)
                changed += c
                unchanged += n - c
        return BulkResult(action_id, changed, unchanged)

    # -- settings ----------------------------------------------------------------------------
    @property
    def settings(self) -> dict[str, Any]:
        return self.store.settings()

    @property
    def name(self) -> str:
        return str(self.store.get_setting("name", self.folder.name))

    @property
    def model_kind(self) -> str:
        return str(self.store.get_setting("model"))

    @property
    def encoder_spec(self) -> str:
        return str(self.store.get_setting("encoder"))

    @property
    def strategy(self) -> str:
        return str(self.store.get_setting("strategy"))

    @property
    def batch_size(self) -> int:
        return int(self.store.get_setting("batch_size"))

    def update_settings(self, **values: Any) -> None:
        """Change settings for the rounds to come: ``strategy``, ``batch_size``, ``name``,
        ``simulated_oracle``, ``device``, ``l2``, ``resnet`` (dict), ``seed``."""
        allowed = {"strategy", "batch_size", "name", "simulated_oracle", "device", "l2", "resnet", "seed",
                   "threads", "keep_models"}
        bad = sorted(set(values) - allowed)
        if bad:
            raise ProjectError(f"unknown or read-only setting(s): {', '.join(bad)}; allowed: {', '.join(sorted(allowed))}")
        if "strategy" in values:
            values["strategy"] = _validate_strategy(values["strategy"])
        if "batch_size" in values:
            values["batch_size"] = _validate_batch(values["batch_size"])
        if "l2" in values and not float(values["l2"]) > 0:
            raise ProjectError("l2 must be positive")
        if "resnet" in values:
            from ralif.models.resnet import TrainConfig
            from ralif.project.rounds import DEFAULT_RESNET

            TrainConfig.from_dict({**DEFAULT_RESNET, **values["resnet"]})
        if "simulated_oracle" in values:
            values["simulated_oracle"] = bool(values["simulated_oracle"])
        if "keep_models" in values:
            values["keep_models"] = _validate_batch(values["keep_models"])
        self.store.set_settings(values)

    def set_oracle(self, enabled: bool) -> None:
        self.update_settings(simulated_oracle=enabled)

    # -- classes -----------------------------------------------------------------------------
    def _class_names(self, include_deleted: bool = True) -> dict[int, str]:
        return {r[0]: r[1] for r in self.store.query(
            "SELECT id, name FROM classes" + ("" if include_deleted else " WHERE deleted = 0"))}

    def classes(self) -> list[ClassInfo]:
        """Live classes in display order, with their number of labeled pool images."""
        counts = self._pool_label_counts()
        rows = self.store.query("SELECT id, name, position FROM classes WHERE deleted = 0 ORDER BY position, id")
        return [ClassInfo(r[0], r[1], r[2], counts.get(("pool", "labeled", r[0]), 0)) for r in rows]

    def _pool_label_counts(self) -> dict[tuple[str, str, int | None], int]:
        # Kept by triggers in the store: joining every label to its image took 0.1-0.2 s per call
        # at 50k labels (a million-image pool), and one Label page run asks for the classes 2-3 times.
        return self.store.label_counts()

    def class_id(self, name: str) -> int:
        row = self.store.query_one("SELECT id FROM classes WHERE name = ? AND deleted = 0", (_clean_name(name),))
        if row is None:
            raise ProjectError(f"no class named {name!r}; classes: {', '.join(c.name for c in self.classes())}")
        return int(row[0])

    def _live_class(self, conn: sqlite3.Connection, class_id: int) -> sqlite3.Row:
        row = conn.execute("SELECT id, name, deleted FROM classes WHERE id = ?", (int(class_id),)).fetchone()
        if row is None:
            raise ProjectError(f"class {class_id} does not exist")
        if row["deleted"]:
            raise ProjectError(f"class {row['name']!r} (id {class_id}) was deleted")
        return row

    def add_class(self, name: str) -> int:
        name = _clean_name(name)
        with self.store.write() as conn:
            if conn.execute("SELECT 1 FROM classes WHERE name = ? AND deleted = 0", (name,)).fetchone():
                raise ProjectError(f"a class named {name!r} already exists")
            pos = conn.execute("SELECT COALESCE(MAX(position) + 1, 0) FROM classes").fetchone()[0]
            cur = conn.execute("INSERT INTO classes(name, position, created_at) VALUES (?, ?, ?)",
                               (name, pos, _now()))
            return int(cur.lastrowid)

    def rename_class(self, class_id: int, name: str) -> None:
        name = _clean_name(name)
        with self.store.write() as conn:
            self._live_class(conn, class_id)
            clash = conn.execute("SELECT id FROM classes WHERE name = ? AND deleted = 0 AND id != ?",
                                 (name, int(class_id))).fetchone()
            if clash:
                raise ProjectError(f"a class named {name!r} already exists; merge the two instead")
            conn.execute("UPDATE classes SET name = ? WHERE id = ?", (name, int(class_id)))

    def reorder_classes(self, class_ids: Sequence[int]) -> None:
        with self.store.write() as conn:
            live = {r[0] for r in conn.execute("SELECT id FROM classes WHERE deleted = 0")}
            if set(map(int, class_ids)) != live or len(class_ids) != len(live):
                raise ProjectError("reorder_classes needs every live class id exactly once")
            conn.executemany("UPDATE classes SET position = ? WHERE id = ?",
                             [(i, int(c)) for i, c in enumerate(class_ids)])

    def merge_classes(self, source_id: int, target_id: int) -> int:
        """Move every label (and true label) of ``source_id`` to ``target_id`` and delete the
        source class. Returns the number of labels moved; history keeps the old values."""
        if int(source_id) == int(target_id):
            raise ProjectError("cannot merge a class into itself")
        with self.store.write() as conn:
            src = self._live_class(conn, source_id)
            dst = self._live_class(conn, target_id)
            action = self._new_action(conn, "merge", {"source": src["name"], "target": dst["name"]})
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS _ids (id INTEGER PRIMARY KEY)")
            conn.execute("DELETE FROM _ids")
            conn.execute("INSERT INTO _ids SELECT image_id FROM labels WHERE class_id = ?", (int(source_id),))
            moved = self._apply_labels(conn, int(target_id), "labeled", None, action, "merge")
            conn.execute("UPDATE images SET true_class_id = ? WHERE true_class_id = ?",
                         (int(target_id), int(source_id)))
            conn.execute("UPDATE classes SET deleted = 1 WHERE id = ?", (int(source_id),))
        return moved

    def delete_class(self, class_id: int) -> int:
        """Delete a class; its images become unlabeled (history keeps the old labels). Returns how
        many labels were removed."""
        with self.store.write() as conn:
            row = self._live_class(conn, class_id)
            action = self._new_action(conn, "delete-class", {"class": row["name"]})
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS _ids (id INTEGER PRIMARY KEY)")
            conn.execute("DELETE FROM _ids")
            conn.execute("INSERT INTO _ids SELECT image_id FROM labels WHERE class_id = ?", (int(class_id),))
            cleared = self._apply_labels(conn, None, "cleared", None, action, "delete")
            conn.execute("UPDATE classes SET deleted = 1 WHERE id = ?", (int(class_id),))
        return cleared

    # -- labels ------------------------------------------------------------------------------
    def _current_round(self, conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT COALESCE(MAX(number), 0) FROM rounds").fetchone()[0])

    def _new_action(self, conn: sqlite3.Connection, kind: str, detail: dict[str, Any] | None = None,
                    undo_of: int | None = None) -> int:
        cur = conn.execute("INSERT INTO actions(kind, client, created_at, undo_of, detail) VALUES (?, ?, ?, ?, ?)",
                           (kind, self.client, _now(), undo_of, json.dumps(detail or {})))
        return int(cur.lastrowid)

    def _write_label(self, conn: sqlite3.Connection, image_id: int, class_id: int | None, state: str,
                     source: str, action: int, history_source: str | None = None,
                     round_no: int | None = None) -> tuple[int, sqlite3.Row | None]:
        old = conn.execute("SELECT class_id, state, source, round, version FROM labels WHERE image_id = ?",
                           (image_id,)).fetchone()
        version = (int(old["version"]) if old else 0) + 1
        now = _now()
        rnd = self._current_round(conn) if round_no is None else round_no
        conn.execute(
            "INSERT INTO label_history(action_id, image_id, old_class_id, old_state, old_source, old_round,"
            " new_class_id, new_state, source, round, version, created_at, client)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (action, image_id, old["class_id"] if old else None, old["state"] if old else None,
             old["source"] if old else None, old["round"] if old else None, class_id, state,
             history_source or source, rnd, version, now, self.client))
        conn.execute(
            "INSERT INTO labels(image_id, class_id, state, round, source, created_at, version, client)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(image_id) DO UPDATE SET class_id = excluded.class_id,"
            " state = excluded.state, round = excluded.round, source = excluded.source,"
            " created_at = excluded.created_at, version = excluded.version, client = excluded.client",
            (image_id, class_id, state, rnd, source, now, version, self.client))
        return version, old

    def _apply_labels(self, conn: sqlite3.Connection, class_id: int | None, state: str, source: str | None,
                      action: int, history_source: str) -> int:
        """Set the label of every image in ``_ids`` that does not have it already; set-based, so
        a bulk label or class merge of any size is two statements. ``source=None`` keeps each
        label's own source (a merge does not make a user's label an import)."""
        now = _now()
        rnd = self._current_round(conn)
        differs = ("NOT (COALESCE(l.state, 'cleared') = :state AND l.class_id IS :cls)")
        params = {"state": state, "cls": class_id, "src": source, "hsrc": history_source, "action": action,
                  "now": now, "round": rnd, "client": self.client}
        conn.execute(
            "INSERT INTO label_history(action_id, image_id, old_class_id, old_state, old_source, old_round,"
            " new_class_id, new_state, source, round, version, created_at, client)"
            " SELECT :action, t.id, l.class_id, l.state, l.source, l.round, :cls, :state, :hsrc, :round,"
            f" COALESCE(l.version, 0) + 1, :now, :client FROM _ids t LEFT JOIN labels l ON l.image_id = t.id"
            f" WHERE {differs}", params)
        cur = conn.execute(
            "INSERT INTO labels(image_id, class_id, state, round, source, created_at, version, client)"
            " SELECT t.id, :cls, :state, :round, COALESCE(:src, l.source, 'user'), :now,"
            f" COALESCE(l.version, 0) + 1, :client FROM _ids t LEFT JOIN labels l ON l.image_id = t.id"
            f" WHERE {differs}"
            " ON CONFLICT(image_id) DO UPDATE SET class_id = excluded.class_id, state = excluded.state,"
            " round = excluded.round, source = excluded.source, created_at = excluded.created_at,"
            " version = excluded.version, client = excluded.client", params)
        return int(cur.rowcount)

    def label_of(self, image_id: int) -> LabelState:
        row = self.store.query_one("SELECT class_id, state, source, round, created_at, version FROM labels"
                                   " WHERE image_id = ?", (int(image_id),))
        return _label_state(int(image_id), row, self._class_names())

    def label(self, image_id: int, class_id: int | None, source: str = "user",
              expected_version: int | None = None, on_conflict: str = "overwrite") -> LabelResult:
        """Label an image (``class_id=None``: unsure / skip, so it is not asked again).

        Durable when it returns. ``expected_version``: the label version the caller last saw;
        if the label changed since, the result says ``conflict=True`` and carries the value
        that was there. The default ``on_conflict="overwrite"`` writes anyway (last write wins);
        ``"reject"`` leaves the other write in place.
        """
        _check_source(source)
        state = "labeled" if class_id is not None else "unsure"
        return self._set_one(int(image_id), None if class_id is None else int(class_id), state, source,
                             expected_version, on_conflict, "label")

    def unlabel(self, image_id: int, expected_version: int | None = None,
                on_conflict: str = "overwrite") -> LabelResult:
        """Remove an image's label (the history keeps it); the image can be selected again."""
        return self._set_one(int(image_id), None, "cleared", "user", expected_version, on_conflict, "unlabel")

    def _set_one(self, image_id: int, class_id: int | None, state: str, source: str,
                 expected_version: int | None, on_conflict: str, kind: str) -> LabelResult:
        if on_conflict not in ("overwrite", "reject"):
            raise ProjectError("on_conflict must be 'overwrite' or 'reject'")
        names = self._class_names()
        with self.store.write() as conn:
            if conn.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone() is None:
                raise ProjectError(f"image {image_id} is not in this project")
            if class_id is not None:
                self._live_class(conn, class_id)
            old = conn.execute("SELECT class_id, state, source, round, created_at, version FROM labels"
                               " WHERE image_id = ?", (image_id,)).fetchone()
            previous = _label_state(image_id, old, names)
            old_version = previous.version
            same = (old is None and state == "cleared") or (
                old is not None and old["state"] == state and old["class_id"] == class_id)
            conflict = expected_version is not None and int(expected_version) != old_version and not same
            if same or (conflict and on_conflict == "reject"):
                return LabelResult(image_id, previous.state, previous.class_id, old_version, False, conflict,
                                   previous)
            action = self._new_action(conn, kind, {"image_id": image_id})
            version, _ = self._write_label(conn, image_id, class_id, state, source, action)
        shown = "unlabeled" if state == "cleared" else state
        return LabelResult(image_id, shown, class_id, version, True, conflict, previous)

    def bulk_label(self, image_ids: Iterable[int], class_id: int | None, source: str = "bulk") -> BulkResult:
        """Give many images the same label in one transaction (all or nothing)."""
        _check_source(source)
        ids = [int(i) for i in image_ids]
        state = "labeled" if class_id is not None else "unsure"
        with self.store.write() as conn:
            n = fill_ids(conn, ids)
            # CROSS JOIN: the ids drive the join. Left to itself SQLite scans every image (it knows
            # nothing of the temporary table's size): 0.5 s for a lasso of 1,000 at a million images.
            found = conn.execute("SELECT COUNT(*) FROM _ids t CROSS JOIN images i ON i.id = t.id").fetchone()[0]
            if found != n:
                bad = [r[0] for r in conn.execute(
                    "SELECT t.id FROM _ids t LEFT JOIN images i ON i.id = t.id WHERE i.id IS NULL LIMIT 5")]
                raise ProjectError(f"{n - found} image id(s) are not in this project, e.g. {bad}")
            if class_id is not None:
                self._live_class(conn, class_id)
            action = self._new_action(conn, "bulk", {"count": n, "class_id": class_id})
            changed = self._apply_labels(conn, None if class_id is None else int(class_id), state, source,
                                         action, source)
            if not changed:
                conn.execute("DELETE FROM actions WHERE id = ?", (action,))
                action = None
        return BulkResult(action, changed, n - changed)

    def undo_last(self) -> UndoResult | None:
        """Revert this client's last label action (a single label, unlabel or bulk label).

        Images whose label someone else changed since are left alone and listed in
        ``conflicts``. Returns None when there is nothing left to undo.
        """
        with self.store.write() as conn:
            marks = ",".join("?" * len(_UNDOABLE))
            act = conn.execute(
                f"SELECT id, kind FROM actions WHERE client = ? AND kind IN ({marks}) AND undone_by IS NULL"
                " AND undo_of IS NULL ORDER BY id DESC LIMIT 1", (self.client, *_UNDOABLE)).fetchone()
            if act is None:
                return None
            undo = self._new_action(conn, "undo", {"action": act["id"]}, undo_of=act["id"])
            restored, conflicts = [], []
            rows = conn.execute("SELECT image_id, old_class_id, old_state, old_source, old_round, new_class_id,"
                                " new_state FROM label_history WHERE action_id = ? ORDER BY id DESC",
                                (act["id"],)).fetchall()
            for r in rows:
                cur = conn.execute("SELECT class_id, state FROM labels WHERE image_id = ?",
                                   (r["image_id"],)).fetchone()
                # Only a label that is still what the action set is reverted; one changed since
                # (by another tab, say) is the newer answer and stays.
                if cur is None or (cur["class_id"], cur["state"]) != (r["new_class_id"], r["new_state"]):
                    conflicts.append(int(r["image_id"]))
                    continue
                old_state = r["old_state"] or "cleared"
                old_class = r["old_class_id"]
                if old_class is not None and conn.execute(
                        "SELECT deleted FROM classes WHERE id = ?", (old_class,)).fetchone()[0]:
                    old_class, old_state = None, "cleared"
                self._write_label(conn, int(r["image_id"]), old_class, old_state, r["old_source"] or "user",
                                  undo, history_source="undo", round_no=r["old_round"])
                restored.append(int(r["image_id"]))
            conn.execute("UPDATE actions SET undone_by = ? WHERE id = ?", (undo, act["id"]))
        return UndoResult(int(act["id"]), str(act["kind"]), restored, conflicts)

    def label_history(self, image_id: int) -> list[dict[str, Any]]:
        """Every change of an image's label, oldest first (class names resolved)."""
        names = self._class_names()
        rows = self.store.query("SELECT * FROM label_history WHERE image_id = ? ORDER BY id", (int(image_id),))
        out = []
        for r in rows:
            d = dict(r)
            d["old_class"] = names.get(d["old_class_id"])
            d["new_class"] = names.get(d["new_class_id"])
            out.append(d)
        return out

    # -- oracle ------------------------------------------------------------------------------
    def oracle_answer(self, image_id: int) -> int | None:
        """The true class of an image (demos and simulations), when the simulated oracle is on.
        None when the image has no true label or its true class was deleted."""
        if not self.store.get_setting("simulated_oracle", False):
            raise ProjectError("the simulated oracle is off for this project; switch it on with set_oracle(True)")
        row = self.store.query_one("SELECT i.true_class_id, c.deleted FROM images i LEFT JOIN classes c"
                                   " ON c.id = i.true_class_id WHERE i.id = ?", (int(image_id),))
        if row is None:
            raise ProjectError(f"image {image_id} is not in this project")
        return None if row[0] is None or row[1] else int(row[0])

    def oracle_label_batch(self) -> BulkResult:
        """Answer every still-unlabeled image of the pending batch with the simulated oracle."""
        if not self.store.get_setting("simulated_oracle", False):
            raise ProjectError("the simulated oracle is off for this project; switch it on with set_oracle(True)")
        number = self.pending_round()
        if number is None:
            raise ProjectError("there is no pending batch")
        rows = self.store.query(
            "SELECT s.image_id, i.true_class_id FROM selections s JOIN images i ON i.id = s.image_id"
            " JOIN classes c ON c.id = i.true_class_id LEFT JOIN labels l ON l.image_id = s.image_id"
            " WHERE s.round = ? AND c.deleted = 0 AND (l.state IS NULL OR l.state = 'cleared')", (number,))
        by_class: dict[int, list[int]] = {}
        for img, cid in rows:
            by_class.setdefault(int(cid), []).append(int(img))
        changed = 0
        action = None
        with self.store.write() as conn:
            action = self._new_action(conn, "oracle", {"round": number})
            for cid, ids in by_class.items():
                fill_ids(conn, ids)
                changed += self._apply_labels(conn, cid, "labeled", "oracle", action, "oracle")
        return BulkResult(action, changed, len(rows) - changed)

    # -- reading -----------------------------------------------------------------------------
    def progress(self) -> Progress:
        names = self._class_names(include_deleted=False)
        with self.store.read() as conn:
            # Trigger-kept counts: a few rows, however large the pool and however many labels.
            sizes = self.store.image_counts(conn)
            pool = sizes["pool"].images if "pool" in sizes else 0
            test = sizes["test"].images if "test" in sizes else 0
            counts = [(*key, n) for key, n in self.store.label_counts(conn).items()]
            rnd = conn.execute("SELECT number, status FROM rounds ORDER BY number DESC LIMIT 1").fetchone()
            pend = conn.execute(
                "SELECT COUNT(*), SUM(CASE WHEN l.state IN ('labeled', 'unsure') THEN 1 ELSE 0 END)"
                " FROM selections s LEFT JOIN labels l ON l.image_id = s.image_id WHERE s.round ="
                " (SELECT MAX(number) FROM rounds WHERE status = 'ready')").fetchone()
        per_class = {n: 0 for n in names.values()}
        labeled = unsure = test_labeled = 0
        for split, state, cid, n in counts:
            if split == "pool" and state == "labeled":
                labeled += n
                per_class[names.get(cid, str(cid))] = per_class.get(names.get(cid, str(cid)), 0) + n
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
        return ImageRow(row["id"], row["path"], row["split"], _label_state(row["id"], row, self._class_names()))

    def images_page(self, which: str | int = "all", *, split: str = "pool", after_id: int = 0,
                    limit: int = 100) -> list[ImageRow]:
        """One page of images in id order (keyset paging: pass the last id as ``after_id``).
        ``which``: ``all``, ``unlabeled``, ``labeled``, ``unsure`` or a class id."""
        cols = ("SELECT i.id, i.path, i.split, l.class_id, l.state, l.source, l.round, l.created_at, l.version")
        if which in ("all", "unlabeled"):
            extra = " AND (l.state IS NULL OR l.state = 'cleared')" if which == "unlabeled" else ""
            sql = (f"{cols} FROM images i LEFT JOIN labels l ON l.image_id = i.id WHERE i.split = ? AND i.id > ?"
                   f"{extra} ORDER BY i.id LIMIT ?")
            params: tuple[Any, ...] = (split, int(after_id), int(limit))
        elif which in ("labeled", "unsure") or (isinstance(which, int) and not isinstance(which, bool)):
            # Driven from the labels' own indexes, so a rare class is found without scanning the split.
            cond, value = ("l.state = ?", which) if isinstance(which, str) else ("l.class_id = ?", int(which))
            sql = (f"{cols} FROM labels l CROSS JOIN images i ON i.id = l.image_id WHERE {cond}"
                   " AND l.image_id > ? AND i.split = ? ORDER BY l.image_id LIMIT ?")
            params = (value, int(after_id), split, int(limit))
        else:
            raise ProjectError("which must be all, unlabeled, labeled, unsure or a class id")
        rows = self.store.query(sql, params)
        names = self._class_names()
        return [ImageRow(r["id"], r["path"], r["split"], _label_state(r["id"], r, names)) for r in rows]

    # -- rounds ------------------------------------------------------------------------------
    def pending_round(self) -> int | None:
        row = self.store.query_one("SELECT MAX(number) FROM rounds WHERE status = 'ready'")
        return None if row is None or row[0] is None else int(row[0])

    def pending_batch(self) -> list[BatchItem]:
        """The batch waiting to be labeled (empty while the next round is queued or running)."""
        number = self.pending_round()
        if number is None:
            return []
        names = self._class_names()
        rows = self.store.query(
            "SELECT s.image_id, i.path, s.rank, s.score, s.reason, s.predicted_class_id, s.confidence,"
            " l.class_id, l.state, l.source, l.round, l.created_at, l.version FROM selections s"
            " JOIN images i ON i.id = s.image_id LEFT JOIN labels l ON l.image_id = s.image_id"
            " WHERE s.round = ? ORDER BY s.rank", (number,))
        return [BatchItem(r["image_id"], r["path"], r["rank"], r["score"], r["reason"], r["predicted_class_id"],
                          names.get(r["predicted_class_id"]), r["confidence"],
                          _label_state(r["image_id"], r, names)) for r in rows]

    def submit_batch(self) -> int:
        """Close the pending round and queue the next one; returns the new round's number.
        Unanswered images of the batch simply stay unlabeled."""
        with self.store.write() as conn:
            row = conn.execute("SELECT number FROM rounds WHERE status = 'ready' ORDER BY number DESC LIMIT 1"
                               ).fetchone()
            if row is None:
                last = conn.execute("SELECT number, status, error FROM rounds ORDER BY number DESC LIMIT 1"
                                    ).fetchone()
                why = "" if last is None else f"; round {last[0]} is {last[1]}" + (f" ({last[2]})" if last[2] else "")
                raise ProjectError(f"there is no pending batch to submit{why}")
            number = int(row[0])
            settings = {r[0]: json.loads(r[1]) for r in conn.execute("SELECT key, value FROM settings")}
            now = _now()
            conn.execute("UPDATE rounds SET status = 'submitted', submitted_at = ? WHERE number = ?", (now, number))
            conn.execute("INSERT INTO rounds(number, strategy, model_kind, batch_size, status, created_at)"
                         " VALUES (?, ?, ?, ?, 'queued', ?)",
                         (number + 1, settings["strategy"], settings["model"], settings["batch_size"], now))
        return number + 1

    def rounds(self) -> list[dict[str, Any]]:
        """Every round, oldest first: status, accuracy on the held-out set, labels used, timing."""
        return [dict(r) for r in self.store.query("SELECT * FROM rounds ORDER BY number")]

    def run_round(self, progress: Callable[[str, dict[str, Any] | None], None] | None = None) -> dict[str, Any]:
        """Run the queued (or failed) round in this process; see :func:`rounds.run_next_round`."""
        from ralif.project.rounds import run_next_round

        return run_next_round(self, progress)

    def start_round(self, threads: int | None = None, *, own_process: bool = False) -> BackgroundJob:
        """Run the queued (or failed) round in the background; follow it with :meth:`round_status`.
        Raises :class:`RoundBusy` when one is running already.

        The round goes to the project's warm round server (started here if none runs), so it
        begins within tens of milliseconds; ``own_process=True`` runs it in a fresh worker process
        instead (``threads`` then sets its torch threads). The handle follows the round's status."""
        from ralif.project.round_server import ensure_server
        from ralif.worker import BackgroundJob, start_job

        number = self._claim_round(job_path=None, check_only=True)
        status_path = self.folder / "jobs" / f"round-{number:04d}-{secrets.token_hex(3)}.json"
        if not own_process:
            status_path.parent.mkdir(parents=True, exist_ok=True)
            write_queued_status(status_path, f"round-{number}", "round-server")
        # The claim is recorded before any worker sees it, so two tabs cannot start the same round;
        # a round meant for a worker of its own is never picked up by the round server.
        try:
            self._claim_round(job_path=str(status_path), mark_queued=True, for_server=not own_process)
        except ProjectError:
            status_path.unlink(missing_ok=True)  # another tab claimed it first: no orphan status file
            raise
        if not own_process:
            try:
                ensure_server(self.folder)
            except Exception as exc:
                self._fail_round(number, f"could not start the background worker: {exc}")
                raise
            return BackgroundJob(status_path)
        threads = threads or self.store.get_setting("threads")
        try:
            job = start_job("ralif.project.rounds:round_job", {"folder": str(self.folder), "threads": threads},
                            status_path, job_id=f"round-{number}")
        except Exception as exc:
            self._fail_round(number, f"could not start the worker: {exc}")
            raise
        return job

    def ensure_round_server(self) -> None:
        """Start the project's warm round server now, so the next round starts without waiting
        for a new process (the Label page calls this when it opens)."""
        from ralif.project.round_server import ensure_server

        ensure_server(self.folder)

    def _queued_round(self) -> tuple[int, str] | None:
        """(number, status file) of a round claimed for the round server and not yet taken."""
        row = self.store.query_one("SELECT number, job_path FROM rounds WHERE status = 'running'"
                                   " AND phase = 'server-queued' AND job_path IS NOT NULL ORDER BY number LIMIT 1")
        return None if row is None else (int(row[0]), str(row[1]))

    def _take_round(self, number: int, job_path: str) -> bool:
        """Take a queued round for this process; False when another server took it first (or it
        was cancelled meanwhile)."""
        with self.store.write() as conn:
            row = conn.execute("SELECT status, phase, job_path FROM rounds WHERE number = ?", (number,)).fetchone()
            if row is None or row[0] != "running" or row[1] != "server-queued" or row[2] != job_path:
                return False
            conn.execute("UPDATE rounds SET phase = 'taken' WHERE number = ?", (number,))
        return True

    def cancel_round(self) -> dict[str, Any]:
        """Stop a background round; the round is marked failed and can be run again."""
        row = self.store.query_one("SELECT number, job_path FROM rounds WHERE status = 'running'"
                                   " ORDER BY number DESC LIMIT 1")
        if row is None or not row[1] or not Path(row[1]).is_file():
            return self.round_status()
        job_for(row[1]).cancel(grace_s=10.0, wait=False)
        if not started_here(row[1]):
            # A worker that never got to run has no pid to stop; the cancel flag keeps it from starting.
            st = job_for(row[1]).status()
            if st.get("state") == "queued":
                self._fail_round(int(row[0]), "cancelled on request", only_if_running=True)
        return self.round_status()

    def round_status(self) -> dict[str, Any]:
        """The latest round for the UI: ``status`` (queued, running, ready, submitted, failed),
        ``phase`` (queued, extracting, training, selecting, saving, done, failed), ``progress``,
        ``error`` and results (``accuracy``, ``labeled_count``, ``seconds``)."""
        self._reap_stale()
        row = self.store.query_one("SELECT * FROM rounds ORDER BY number DESC LIMIT 1")
        if row is None:
            return {"round": 0, "status": None, "phase": None, "progress": {}, "error": None}
        out = dict(row)
        out["round"] = out.pop("number")
        out["progress"] = {}
        out["message"] = None
        phase = {"queued": "queued", "ready": "done", "submitted": "done", "failed": "failed"}
        if out["status"] == "running":
            out["phase"] = {None: "starting", "taken": "starting", "server-queued": "queued"}.get(
                out["phase"], out["phase"])
            if out["job_path"] and Path(out["job_path"]).is_file():
                from ralif.worker import read_status

                try:
                    st = read_status(out["job_path"])
                except (OSError, ValueError):
                    st = {}
                out["phase"] = st.get("phase") or out["phase"]
                out["progress"] = st.get("progress") or {}
                out["message"] = st.get("message")
        else:
            out["phase"] = phase[out["status"]]
        return out

    # -- round bookkeeping (used by rounds.run_next_round) ----------------------------------------
    def _reap_stale(self) -> None:
        """A round left 'running' by a worker or process that died is marked failed."""
        rows = self.store.query("SELECT number, job_path, runner_pid, runner_start, started_at FROM rounds"
                                " WHERE status = 'running'")
        for number, job_path, pid, started, claimed_at in rows:
            reason = None
            if job_path and not Path(job_path).is_file():
                # A claimed background round whose worker has not reported by then never will.
                if claimed_at is not None and _now() - claimed_at > START_TIMEOUT_S:
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
                self._fail_round(int(number), str(reason), only_if_running=True)

    def _claim_round(self, job_path: str | None, check_only: bool = False,
                     mark_queued: bool = False, for_server: bool = False) -> int:
        self._reap_stale()
        with self.store.write() as conn:
            row = conn.execute("SELECT number, status, job_path, phase FROM rounds ORDER BY number DESC LIMIT 1"
                               ).fetchone()
            if row is None:
                raise ProjectError("the project has no round queued")
            number, status, current_job = int(row[0]), row[1], row[2]
            if status == "ready":
                raise ProjectError(f"round {number}'s batch is waiting to be labeled; submit it first")
            if status == "submitted":
                raise ProjectError(f"round {number} was submitted but no next round is queued")
            ours = job_path is not None and current_job == job_path and not mark_queued \
                and status == "running" and row[3] in ("queued", "taken")
            if status == "running" and not ours:
                raise RoundBusy(f"round {number} is already running")
            if job_path is not None and not mark_queued and not ours:
                # A worker whose round was cancelled (or given up on) before it started: not its to run.
                raise RoundBusy(f"round {number} is no longer waiting for this worker ({status})")
            if check_only:
                return number
            settings = {r[0]: json.loads(r[1]) for r in conn.execute("SELECT key, value FROM settings")}
            now = _now()
            if mark_queued:
                conn.execute("UPDATE rounds SET status = 'running', phase = ?, job_path = ?, error = NULL,"
                             " runner_pid = NULL, runner_start = NULL, started_at = ?, strategy = ?,"
                             " batch_size = ?, model_kind = ? WHERE number = ?",
                             ("server-queued" if for_server else "queued", job_path, now, settings["strategy"],
                              settings["batch_size"], settings["model"], number))
                return number
            conn.execute("UPDATE rounds SET status = 'running', phase = 'starting', job_path = ?, error = NULL,"
                         " runner_pid = ?, runner_start = ?, started_at = ?, attempts = attempts + 1,"
                         " strategy = ?, batch_size = ?, model_kind = ? WHERE number = ?",
                         (job_path, os.getpid(), process_start_time(os.getpid()), now, settings["strategy"],
                          settings["batch_size"], settings["model"], number))
            return number

    def _set_round_phase(self, number: int, phase: str) -> None:
        with self.store.write() as conn:
            conn.execute("UPDATE rounds SET phase = ? WHERE number = ? AND status = 'running'", (phase, number))

    def _round_inputs(self, number: int) -> RoundInputs:
        from ralif.project.rounds import RoundInputs

        with self.store.read() as conn:
            rnd = conn.execute("SELECT strategy, model_kind, batch_size FROM rounds WHERE number = ?",
                               (number,)).fetchone()
            settings = {r[0]: json.loads(r[1]) for r in conn.execute("SELECT key, value FROM settings")}
            classes = conn.execute("SELECT id, name FROM classes WHERE deleted = 0 ORDER BY position, id").fetchall()
            files = self._image_files(conn)
            rows = conn.execute(
                "SELECT i.id, l.state, l.class_id, i.true_class_id"
                " FROM images i LEFT JOIN labels l ON l.image_id = i.id ORDER BY i.id").fetchall()
        class_ids = [int(r[0]) for r in classes]
        index = {c: k for k, c in enumerate(class_ids)}
        n = len(rows)
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=n)
        if not np.array_equal(ids, files.ids):
            raise ProjectError("the project's images changed while the round was being prepared; run it again")
        is_pool = files.is_pool
        state = np.array([r[1] or "" for r in rows], dtype=object)
        label = np.fromiter((index.get(r[2], -1) if r[2] is not None else -1 for r in rows), dtype=np.int64,
                            count=n)
        truth = np.fromiter((index.get(r[3], -1) if r[3] is not None else -1 for r in rows), dtype=np.int64,
                            count=n)
        pool_rows = np.flatnonzero(is_pool)
        test_rows = np.flatnonzero(~is_pool)
        p_label = label[pool_rows]
        p_state = state[pool_rows]
        labeled = np.flatnonzero((p_state == "labeled") & (p_label >= 0))
        candidates = np.flatnonzero((p_state != "labeled") & (p_state != "unsure"))
        t_ref = np.where((state[test_rows] == "labeled") & (label[test_rows] >= 0), label[test_rows], truth[test_rows])
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

    def _image_files(self, conn: sqlite3.Connection) -> _ImageFiles:
        """The images' ids, splits, paths and hashes, read again only when the image set changed:
        a process that runs round after round (the round server) reads 60k paths once, not per round."""
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
        files = _ImageFiles(key, ids, is_pool,
                            pool_paths=[r[1] for r in rows if r[3] == "pool"],
                            pool_hashes=[r[2] for r in rows if r[3] == "pool"],
                            test_paths=[r[1] for r in rows if r[3] != "pool"],
                            test_hashes=[r[2] for r in rows if r[3] != "pool"])
        _IMAGE_FILES[str(self.folder)] = files
        return files

    def _finish_round(self, number: int, outcome: RoundOutcome, seconds: float,
                      job_path: str | None = None) -> None:
        # Selections, round status and the current-model pointer change together or not at all.
        with self.store.write() as conn:
            row = conn.execute("SELECT status, job_path FROM rounds WHERE number = ?", (number,)).fetchone()
            if row is None or row[0] != "running" or (job_path is not None and row[1] != job_path):
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
                (_now(), seconds, outcome.labeled_count, outcome.accuracy, outcome.test_count,
                 int(outcome.cold_start), outcome.model_path, number))
            if outcome.model_path:
                self.store.set_settings({"current_model": outcome.model_path}, conn)
        if outcome.model_path:
            self._prune_models()

    def _prune_models(self) -> None:
        """Keep the checkpoints of the last ``keep_models`` trained rounds (ResNet18 ones are large);
        the rounds table still records which round produced which model."""
        keep = int(self.store.get_setting("keep_models", 5) or 5)
        rows = self.store.query("SELECT model_path FROM rounds WHERE model_path IS NOT NULL ORDER BY number DESC")
        wanted = {r[0] for r in rows[:keep]} | {self.store.get_setting("current_model")}
        for weights in (self.folder / "models").glob("round-*.safetensors"):
            if os.path.relpath(weights, self.folder) not in wanted:
                # The sidecar is written last and removed first: a prune cut short leaves weights
                # without a sidecar (never loaded, removed by the next prune), not a sidecar
                # describing deleted weights.
                weights.with_suffix(".json").unlink(missing_ok=True)
                weights.unlink(missing_ok=True)

    def _fail_round(self, number: int, reason: str, only_if_running: bool = False,
                    job_path: str | None = None) -> None:
        sql = "UPDATE rounds SET status = 'failed', phase = 'failed', error = ?, finished_at = ? WHERE number = ?"
        params: list[Any] = [reason[:2000], _now(), number]
        if only_if_running:
            sql += " AND status = 'running'"
        if job_path is not None:
            sql += " AND job_path = ?"
            params.append(job_path)
        with self.store.write() as conn:
            conn.execute(sql, params)

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
        """A JSON-able summary: settings, progress, classes and rounds."""
        prog = asdict(self.progress())
        return {"folder": str(self.folder), "settings": self.settings, "progress": prog,
                "classes": [asdict(c) for c in self.classes()],
                "rounds": [{k: r[k] for k in ("number", "status", "strategy", "batch_size", "labeled_count",
                                              "accuracy", "test_count", "cold_start", "seconds", "error")}
                           for r in self.rounds()]}


@dataclass
class _ImageFiles:
    key: tuple[Any, ...]
    ids: np.ndarray
    is_pool: np.ndarray
    pool_paths: list[str]
    pool_hashes: list[str]
    test_paths: list[str]
    test_hashes: list[str]


_IMAGE_FILES: dict[str, _ImageFiles] = {}

