"""A project's classes: add, rename, reorder, merge, delete, and undo a merge or a delete.

A class's key and colour are stored with it (schema 3): editing one class never changes another's.
A merge never rewrites the images' hidden true classes; it records where the class went
(``merged_into``), and whoever reads the truth maps it through :meth:`ClassesMixin.truth_map`."""

from __future__ import annotations

import json
import sqlite3
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ralif.images import canonical_spellings, class_key
from ralif.project.errors import ProjectError
from ralif.project.records import ClassInfo
from ralif.project.records import now as clock
from ralif.project.schema import HOTKEYS
from ralif.project.store import Store
from ralif.project.validation import clean_name

if TYPE_CHECKING:
    from ralif.project.lifecycle import RoundBook

CLASS_ACTIONS = ("merge", "delete-class")


def name_key(name: str) -> str:
    """What two class names are compared by (:func:`ralif.images.class_key`), after the checks a
    class name must pass."""
    return class_key(clean_name(name))


def canonical_names(names: Iterable[str], live: Iterable[str]) -> dict[str, str]:
    """Each of ``names`` (one per labeled image, cleaned) mapped to the class it means: the live class
    with the same :func:`name_key`, else the spelling most of ``names`` use, so an import's 'Cat'
    labels go to an existing 'cat' and folders 'Cat' and 'cat' make one class, not two."""
    return canonical_spellings((clean_name(n) for n in names), live)


def _taken(name: str, existing: str) -> str:
    """The refusal, naming the class that is there as it is written."""
    if unicodedata.normalize("NFC", existing) == unicodedata.normalize("NFC", name):
        return f"a class named {existing!r} already exists"
    return f"a class named {existing!r} already exists ({name!r} differs from it only in case or spaces)"


def _same_name(conn: sqlite3.Connection, name: str, other_than: int | None = None) -> str | None:
    """The live class whose name is ``name`` up to case, spaces and Unicode form, as stored."""
    key = name_key(name)
    for cid, existing in conn.execute("SELECT id, name FROM classes WHERE deleted = 0"):
        if cid != other_than and name_key(existing) == key:
            return str(existing)
    return None


class ClassesMixin:
    """Part of :class:`ralif.project.Project`; it uses the project's store."""

    store: Store
    folder: Path
    client: str
    round_book: RoundBook

    if TYPE_CHECKING:
        # Provided by LabelsMixin.
        def _new_action(self, conn: sqlite3.Connection, kind: str, detail: dict[str, Any] | None = None,
                        undo_of: int | None = None) -> int: ...
        def _apply_labels(self, conn: sqlite3.Connection, class_id: int | None, state: str, source: str | None,
                          action: int, history_source: str) -> int: ...

    # -- classes -----------------------------------------------------------------------------
    def _class_names(self, include_deleted: bool = True) -> dict[int, str]:
        return {r[0]: r[1] for r in self.store.query(
            "SELECT id, name FROM classes" + ("" if include_deleted else " WHERE deleted = 0"))}

    def classes(self) -> list[ClassInfo]:
        """Live classes in display order, with their number of labeled pool images, key and colour."""
        counts = self._pool_label_counts()
        rows = self.store.query("SELECT id, name, position, hotkey, color FROM classes WHERE deleted = 0"
                                " ORDER BY position, id")
        return [ClassInfo(r[0], r[1], r[2], counts.get(("pool", "labeled", r[0]), 0), r[3], r[4] or "#1f77b4")
                for r in rows]

    def _pool_label_counts(self) -> dict[tuple[str, str, int | None], int]:
        # Kept by triggers in the store: joining every label to its image took 0.1-0.2 s per call
        # at 50k labels (a million-image pool), and one Label page run asks for the classes 2-3 times.
        return self.store.label_counts()

    def truth_map(self) -> dict[int, int]:
        """Every class id -> the live class it counts as now: itself while live, the class it was
        merged into after a merge; a deleted class (or one merged into a deleted one) is left out.
        The hidden true classes of a demo or simulation keep the class they were made with;
        evaluation and the oracle read them through this map
        (:func:`ralif.project.insights.through_merges`)."""
        # The schema's class_truth view follows merges (the oracle reads it too).
        rows = self.store.query("SELECT class_id, live_id FROM class_truth")
        return {int(r[0]): int(r[1]) for r in rows}

    def class_id(self, name: str) -> int:
        row = self.store.query_one("SELECT id FROM classes WHERE name = ? AND deleted = 0", (clean_name(name),))
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
        """Add a class at the end; it takes the next free key and the least used colour."""
        name = clean_name(name)
        with self.store.write() as conn:
            existing = _same_name(conn, name)
            if existing is not None:
                raise ProjectError(_taken(name, existing))
            pos = conn.execute("SELECT COALESCE(MAX(position) + 1, 0) FROM classes").fetchone()[0]
            cur = conn.execute("INSERT INTO classes(name, position, created_at) VALUES (?, ?, ?)",
                               (name, pos, clock()))
            return int(cur.lastrowid or 0)

    def rename_class(self, class_id: int, name: str) -> None:
        name = clean_name(name)
        with self.store.write() as conn:
            self._live_class(conn, class_id)
            # Only other classes clash: 'cat' may become 'Cat'.
            existing = _same_name(conn, name, other_than=int(class_id))
            if existing is not None:
                raise ProjectError(_taken(name, existing) + "; merge the two instead")
            conn.execute("UPDATE classes SET name = ? WHERE id = ?", (name, int(class_id)))

    def reorder_classes(self, class_ids: Sequence[int]) -> None:
        """Change the display order; keys and colours stay with their classes."""
        with self.store.write() as conn:
            live = {r[0] for r in conn.execute("SELECT id FROM classes WHERE deleted = 0")}
            if set(map(int, class_ids)) != live or len(class_ids) != len(live):
                raise ProjectError("reorder_classes needs every live class id exactly once")
            conn.executemany("UPDATE classes SET position = ? WHERE id = ?",
                             [(i, int(c)) for i, c in enumerate(class_ids)])

    def set_class_key(self, class_id: int, hotkey: str | None) -> None:
        """Give a class a key ("1"-"9", "0") or none; a class that had that key swaps with it."""
        if hotkey is not None and hotkey not in HOTKEYS:
            raise ProjectError(f"a class key is one of {', '.join(HOTKEYS)}, not {hotkey!r}")
        with self.store.write() as conn:
            self._live_class(conn, class_id)
            row = conn.execute("SELECT hotkey FROM classes WHERE id = ?", (int(class_id),)).fetchone()
            other = conn.execute("SELECT id FROM classes WHERE deleted = 0 AND hotkey = ? AND id != ?",
                                 (hotkey, int(class_id))).fetchone() if hotkey is not None else None
            conn.execute("UPDATE classes SET hotkey = NULL WHERE id = ?", (int(class_id),))
            if other is not None:
                conn.execute("UPDATE classes SET hotkey = ? WHERE id = ?", (row["hotkey"], int(other[0])))
            conn.execute("UPDATE classes SET hotkey = ? WHERE id = ?", (hotkey, int(class_id)))

    def merge_classes(self, source_id: int, target_id: int) -> int:
        """Move every label of ``source_id`` to ``target_id`` and remove the source class, as one
        undoable action. Returns the number of labels moved. True classes are not rewritten:
        the source is recorded as merged into the target."""
        if int(source_id) == int(target_id):
            raise ProjectError("cannot merge a class into itself")
        with self.store.write() as conn:
            src = self._live_class(conn, source_id)
            dst = self._live_class(conn, target_id)
            # Classes merged into the source earlier now point at the target (one step, never a chain).
            earlier = [int(r[0]) for r in conn.execute("SELECT id FROM classes WHERE merged_into = ?",
                                                       (int(source_id),))]
            action = self._new_action(conn, "merge", {
                "source": src["name"], "target": dst["name"], "source_id": int(source_id),
                "target_id": int(target_id), "remapped": earlier})
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS _ids (id INTEGER PRIMARY KEY)")
            conn.execute("DELETE FROM _ids")
            conn.execute("INSERT INTO _ids SELECT image_id FROM labels WHERE class_id = ?", (int(source_id),))
            moved = self._apply_labels(conn, int(target_id), "labeled", None, action, "merge")
            conn.execute("UPDATE classes SET merged_into = ? WHERE merged_into = ?", (int(target_id), int(source_id)))
            conn.execute("UPDATE classes SET deleted = 1, merged_into = ? WHERE id = ?",
                         (int(target_id), int(source_id)))
            self._note_count(conn, action, moved)
        return moved

    def delete_class(self, class_id: int) -> int:
        """Delete a class, as one undoable action; its images become unlabeled (history keeps the
        old labels). Returns how many labels were removed."""
        with self.store.write() as conn:
            row = self._live_class(conn, class_id)
            action = self._new_action(conn, "delete-class", {"class": row["name"], "class_id": int(class_id)})
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS _ids (id INTEGER PRIMARY KEY)")
            conn.execute("DELETE FROM _ids")
            conn.execute("INSERT INTO _ids SELECT image_id FROM labels WHERE class_id = ?", (int(class_id),))
            cleared = self._apply_labels(conn, None, "cleared", None, action, "delete")
            conn.execute("UPDATE classes SET deleted = 1, merged_into = NULL WHERE id = ?", (int(class_id),))
            self._note_count(conn, action, cleared)
        return cleared

    @staticmethod
    def _note_count(conn: sqlite3.Connection, action: int, count: int) -> None:
        row = conn.execute("SELECT detail FROM actions WHERE id = ?", (action,)).fetchone()
        detail = json.loads(row[0] or "{}")
        detail["count"] = int(count)
        conn.execute("UPDATE actions SET detail = ? WHERE id = ?", (json.dumps(detail), action))

    def _restore_classes(self, conn: sqlite3.Connection, kind: str, detail: dict[str, Any]) -> list[str]:
        """Bring back the class a merge or a delete removed (before its labels are restored), with
        its key unless another class took that key since. Returns the names brought back."""
        if kind not in CLASS_ACTIONS:
            return []
        cid = int(detail["source_id"] if kind == "merge" else detail["class_id"])
        row = conn.execute("SELECT name, deleted, hotkey FROM classes WHERE id = ?", (cid,)).fetchone()
        if row is None or not row["deleted"]:
            return []
        existing = _same_name(conn, row["name"])
        if existing is not None:
            raise ProjectError(f"a class named {existing!r} exists again; rename it, then undo")
        key = row["hotkey"]
        if key is not None and conn.execute("SELECT 1 FROM classes WHERE deleted = 0 AND hotkey = ?",
                                            (key,)).fetchone():
            used = {r[0] for r in conn.execute("SELECT hotkey FROM classes WHERE deleted = 0 AND hotkey IS NOT NULL")}
            key = next((k for k in HOTKEYS if k not in used), None)
        conn.execute("UPDATE classes SET deleted = 0, merged_into = NULL, hotkey = ? WHERE id = ?", (key, cid))
        if kind == "merge":
            remapped = [int(i) for i in detail.get("remapped", [])]
            # Only classes still merged away: one brought back since by its own undo stays live.
            conn.executemany("UPDATE classes SET merged_into = ? WHERE id = ? AND deleted = 1",
                             [(cid, i) for i in remapped])
        return [str(row["name"])]
