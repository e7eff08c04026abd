"""A project's classes: add, rename, reorder, merge, delete."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ralif.project.errors import ProjectError
from ralif.project.records import (
    ClassInfo,
)
from ralif.project.records import (
    now as clock,
)
from ralif.project.store import Store
from ralif.project.validation import (
    clean_name,
)

if TYPE_CHECKING:
    from ralif.project.lifecycle import RoundBook


class ClassesMixin:
    """Part of :class:`ralif.project.Project`; it uses the project's store."""

    store: Store
    folder: Path
    client: str
    round_book: RoundBook

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
        name = clean_name(name)
        with self.store.write() as conn:
            if conn.execute("SELECT 1 FROM classes WHERE name = ? AND deleted = 0", (name,)).fetchone():
                raise ProjectError(f"a class named {name!r} already exists")
            pos = conn.execute("SELECT COALESCE(MAX(position) + 1, 0) FROM classes").fetchone()[0]
            cur = conn.execute("INSERT INTO classes(name, position, created_at) VALUES (?, ?, ?)",
                               (name, pos, clock()))
            return int(cur.lastrowid)

    def rename_class(self, class_id: int, name: str) -> None:
        name = clean_name(name)
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
