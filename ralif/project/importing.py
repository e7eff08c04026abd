"""Adding images and importing labels into a project."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sized
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ralif.csv_cells import from_spreadsheet_cell as cell
from ralif.project.classes import canonical_names
from ralif.project.errors import ProjectError
from ralif.project.records import (
    BulkResult,
    ClassInfo,
    ImportReport,
)
from ralif.project.records import (
    now as clock,
)
from ralif.project.store import Store, fill_ids
from ralif.project.validation import (
    KNOWN_LABELS,
    check_source,
    clean_name,
)

if TYPE_CHECKING:
    from ralif.images import ImageList
    from ralif.project.lifecycle import RoundBook

from ralif.project.validation import read_source


def _counted(n: int, word: str) -> str:
    return f"{n:,} {word if n == 1 else word + 's'}"


def _are(items: Sized, one: str, many: str) -> str:
    return f"is {one}" if len(items) == 1 else f"are {many}"


def _row_id(cur: sqlite3.Cursor) -> int:
    """The id SQLite gave the row just inserted (always set after an INSERT)."""
    if cur.lastrowid is None:
        raise ProjectError("the database gave no id for a new class")
    return int(cur.lastrowid)


class ImportMixin:
    """Part of :class:`ralif.project.Project`; it uses the project's store."""

    store: Store
    folder: Path
    client: str
    round_book: RoundBook

    if TYPE_CHECKING:
        def classes(self) -> list[ClassInfo]: ...
        def _new_action(self, conn: sqlite3.Connection, kind: str, detail: dict[str, Any] | None = None,
                        undo_of: int | None = None) -> int: ...
        def _apply_labels(self, conn: sqlite3.Connection, class_id: int | None, state: str, source: str | None,
                          action: int, history_source: str) -> int: ...

    # -- importing ---------------------------------------------------------------------------
    def add_images(self, source: Any, *, split: str = "pool", known_labels: str = "import",
                   add_unknown_classes: bool = False, layout: str = "auto", decode: bool = True
                   ) -> ImportReport:
        """Add more images to the pool (or the held-out ``test`` split); same rules as create."""
        if split not in ("pool", "test"):
            raise ProjectError("split must be 'pool' or 'test'")
        if known_labels not in KNOWN_LABELS:
            raise ProjectError(f"known_labels must be one of {', '.join(KNOWN_LABELS)}")
        lists = list(read_source(source, layout, decode).values())
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
                report.label_conflicts += [f"{p}: {r}" for p, r in lst.label_conflicts]
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
                names = sorted({n for n in (entries[i][3] for i in members) if n is not None})
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
            canon = canonical_names((e[3] for e in kept if e[3] is not None), live)
            unknown = sorted({n for n in canon.values() if n not in live})
            if unknown and live and not add_unknown:
                raise ProjectError(
                    f"{_counted(len(unknown), 'label name')} {_are(unknown, 'not a class', 'not classes')} "
                    f"of this project: {', '.join(unknown[:20])}"
                    f"{' ...' if len(unknown) > 20 else ''}. Known classes: {', '.join(sorted(live))}. "
                    f"Fix the labels, or add them as new classes (add_unknown_classes=True; --add-classes on "
                    f"the command line).")
        if fraction is not None:
            pool_idx = [i for i, e in enumerate(kept) if e[2] == "pool"]
            n_test = round(fraction * len(pool_idx))
            if n_test < 1 or n_test >= len(pool_idx):
                raise ProjectError(f"a held-out fraction of {fraction} of {_counted(len(pool_idx), 'image')} leaves an "
                                   f"empty pool or test set")
            seed = int(self.store.get_setting("seed", 0))
            chosen = np.random.default_rng([seed, 7]).choice(pool_idx, n_test, replace=False)
            for i in chosen:
                p, h, _, y = kept[i]
                kept[i] = (p, h, "test", y)
        now = clock()
        with self.store.write() as conn:
            live = {r["name"]: r["id"] for r in conn.execute("SELECT id, name FROM classes WHERE deleted = 0")}
            next_pos = int(conn.execute("SELECT COALESCE(MAX(position) + 1, 0) FROM classes").fetchone()[0])
            # Read again inside the write: a class added since the check above is the one meant.
            # One name per labeled image first, as the check above counted them; then every class name.
            canon = canonical_names([*(e[3] for e in kept if e[3] is not None),
                                     *(c for lst in pool + test for c in lst.classes)], live)
            if known_labels != "ignore":
                named = {canon[clean_name(e[3])] for e in kept if e[3] is not None}
                # New classes keep the source's order (ImageFolder: sorted folder names).
                ordered = dict.fromkeys(canon[clean_name(c)] for lst in pool + test for c in lst.classes)
                for n in [c for c in ordered if c in named and c not in live]:
                    cur = conn.execute("INSERT INTO classes(name, position, created_at) VALUES (?, ?, ?)",
                                       (n, next_pos, now))
                    live[n] = _row_id(cur)
                    next_pos += 1
                    report.classes_added.append(n)
            truth = known_labels == "truth"
            rows = [(p, h, split, live[canon[clean_name(y)]] if (truth and y is not None) else None, now)
                    for p, h, split, y in kept]
            conn.executemany("INSERT INTO images(path, content_hash, split, true_class_id, added_at) "
                             "VALUES (?, ?, ?, ?, ?)", rows)
            report.added = len(rows)
            report.pool = sum(1 for r in rows if r[2] == "pool")
            report.test = len(rows) - report.pool
            report.truths = sum(1 for r in rows if r[3] is not None)
            if known_labels == "import":
                labeled = [(p, live[canon[clean_name(y)]]) for p, _, _, y in kept if y is not None]
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

        check_source(source)
        csv_file = Path(csv_path).expanduser().resolve()
        with open(csv_file, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            cols = {(c or "").strip().lower(): c for c in reader.fieldnames or []}
            if "path" not in cols or "label" not in cols:
                raise ProjectError(f"{csv_file} needs 'path' and 'label' columns (has {', '.join(cols) or 'none'})")
            pairs = [(cell((r.get(cols["path"]) or "").strip()), cell((r.get(cols["label"]) or "").strip()))
                     for r in reader]
        pairs = [(os.path.normpath(os.path.join(csv_file.parent, p)), clean_name(y)) for p, y in pairs if p and y]
        wanted: dict[str, str] = {}
        clashes = []
        for p, y in pairs:
            if wanted.setdefault(p, y) != y:
                clashes.append(f"{p} ({wanted[p]} / {y})")
        if clashes:
            raise ProjectError(f"{_counted(len(clashes), 'image')} {'gets' if len(clashes) == 1 else 'get'} two "
                               f"different labels in {csv_file.name}, "
                               f"e.g. {'; '.join(clashes[:3])}")
        live = {c.name: c.id for c in self.classes()}
        # 'Cat ' in the CSV labels the class 'cat': one class to a person, never a second one.
        canon = canonical_names(wanted.values(), live)
        wanted = {p: canon[y] for p, y in wanted.items()}
        unknown = sorted(set(wanted.values()) - set(live))
        if unknown and not add_unknown_classes:
            raise ProjectError(f"{_counted(len(unknown), 'label name')} in {csv_file.name} "
                               f"{_are(unknown, 'not a class', 'not classes')} of this project: "
                               f"{', '.join(unknown[:20])}. Known classes: {', '.join(sorted(live))}. "
                               f"Fix the labels, or add them as new classes (add_unknown_classes=True).")
        ids = {r[1]: r[0] for r in self.store.query("SELECT id, path FROM images")}
        missing = [p for p in wanted if p not in ids]
        if missing:
            raise ProjectError(f"{_counted(len(missing), 'path')} in {csv_file.name} "
                               f"{_are(missing, 'not an image', 'not images')} of this project, "
                               f"e.g. {', '.join(missing[:3])}")
        changed = unchanged = 0
        # New classes and the labels are written together: a failure leaves neither behind.
        with self.store.write() as conn:
            pos = int(conn.execute("SELECT COALESCE(MAX(position) + 1, 0) FROM classes").fetchone()[0])
            for i, y in enumerate(unknown):
                cur = conn.execute("INSERT INTO classes(name, position, created_at) VALUES (?, ?, ?)",
                                   (y, pos + i, clock()))
                live[y] = _row_id(cur)
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
