"""Labels: write one or many, undo, history, and the simulated oracle."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ralif.project.errors import ProjectError
from ralif.project.records import (
    ActionInfo,
    BulkResult,
    LabelResult,
    LabelState,
    UndoResult,
    action_detail,
    label_state,
)
from ralif.project.records import (
    now as clock,
)
from ralif.project.schema import PENDING_BATCH
from ralif.project.store import Store, fill_ids
from ralif.project.validation import (
    check_source,
)

if TYPE_CHECKING:
    from ralif.project.lifecycle import RoundBook

# What undo takes back, one history action at a time: a label, a bulk label, the oracle's answers,
# a class merge or a class delete.
UNDOABLE_KINDS = ("label", "unlabel", "bulk", "oracle", "merge", "delete-class")
# How many of an action's images its description carries (undo shows the first).
SHOWN = 8


class LabelsMixin:
    """Part of :class:`ralif.project.Project`; it uses the project's store."""

    store: Store
    folder: Path
    client: str
    round_book: RoundBook

    if TYPE_CHECKING:
        # Provided by ClassesMixin and Project (all parts of Project).
        def _class_names(self, include_deleted: bool = True) -> dict[int, str]: ...
        def _live_class(self, conn: sqlite3.Connection, class_id: int) -> sqlite3.Row: ...
        def _restore_classes(self, conn: sqlite3.Connection, kind: str, detail: dict[str, Any]) -> list[str]: ...
        def pending_round(self) -> int | None: ...

    # -- labels ------------------------------------------------------------------------------
    def _current_round(self, conn: sqlite3.Connection) -> int:
        return self.round_book.current_number(conn)

    def _new_action(self, conn: sqlite3.Connection, kind: str, detail: dict[str, Any] | None = None,
                    undo_of: int | None = None) -> int:
        cur = conn.execute("INSERT INTO actions(kind, client, created_at, undo_of, detail) VALUES (?, ?, ?, ?, ?)",
                           (kind, self.client, clock(), undo_of, json.dumps(detail or {})))
        return int(cur.lastrowid or 0)

    def _write_label(self, conn: sqlite3.Connection, image_id: int, class_id: int | None, state: str,
                     source: str, action: int, history_source: str | None = None,
                     round_no: int | None = None) -> tuple[int, sqlite3.Row | None]:
        old = conn.execute("SELECT class_id, state, source, round, version FROM labels WHERE image_id = ?",
                           (image_id,)).fetchone()
        version = (int(old["version"]) if old else 0) + 1
        now = clock()
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
        now = clock()
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
        return label_state(int(image_id), row, self._class_names())

    def label(self, image_id: int, class_id: int | None, source: str = "user",
              expected_version: int | None = None, on_conflict: str = "overwrite") -> LabelResult:
        """Label an image (``class_id=None``: unsure / skip, so it is not asked again).

        Durable when it returns. ``expected_version``: the label version the caller last saw;
        if the label changed since, the result says ``conflict=True`` and carries the value
        that was there. The default ``on_conflict="overwrite"`` writes anyway (last write wins);
        ``"reject"`` leaves the other write in place.
        """
        check_source(source)
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
            previous = label_state(image_id, old, names)
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

    def bulk_label(self, image_ids: Iterable[int], class_id: int | None, source: str = "bulk", *,
                   skip_pending: bool = False) -> BulkResult:
        """Give many images the same label in one transaction (all or nothing).

        ``skip_pending``: leave alone the images of the batch pending on the Label page, read in the
        same transaction as the write; they are listed in the result's ``skipped``. A caller that
        left the batch out when it chose the images still needs this: a round that finishes
        between its choice and this call brings a new batch, and its audit images must be answered
        one at a time, without the hints a bulk label is given with."""
        check_source(source)
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
            skipped: list[int] = []
            if skip_pending:
                skipped = sorted(int(r[0]) for r in conn.execute(f"{PENDING_BATCH} AND image_id IN"
                                                                 " (SELECT id FROM _ids)"))
                if skipped:
                    conn.execute(f"DELETE FROM _ids WHERE id IN ({PENDING_BATCH})")
                    n -= len(skipped)
            if not n:
                return BulkResult(None, 0, 0, skipped)
            action = self._new_action(conn, "bulk", {"count": n, "class_id": class_id})
            changed = self._apply_labels(conn, None if class_id is None else int(class_id), state, source,
                                         action, source)
            if not changed:
                conn.execute("DELETE FROM actions WHERE id = ?", (action,))
        return BulkResult(action if changed else None, changed, n - changed, skipped)

    def next_undo(self) -> ActionInfo | None:
        """The action :meth:`undo_last` would take back now (to show it first), or None.

        A tab's undo stack: its own actions, then the history from before its first action. A
        reload gives the tab a new client id, so the actions of the earlier page stay undoable;
        another tab's actions made while this one works are never taken back from here."""
        marks = ",".join("?" * len(UNDOABLE_KINDS))
        open_ = f"kind IN ({marks}) AND undone_by IS NULL AND undo_of IS NULL"
        # Two index-ordered reads (by client, then by id) rather than one OR that needs a sort.
        with self.store.read() as conn:
            row = conn.execute(f"SELECT id FROM actions WHERE client = ? AND {open_} ORDER BY client DESC, id DESC"
                               " LIMIT 1", (self.client, *UNDOABLE_KINDS)).fetchone()
            if row is None:
                first = conn.execute("SELECT MIN(id) FROM actions WHERE client = ?", (self.client,)).fetchone()[0]
                row = conn.execute(f"SELECT id FROM actions WHERE id < ? AND {open_} ORDER BY id DESC LIMIT 1",
                                   (first if first is not None else 1 << 62, *UNDOABLE_KINDS)).fetchone()
        return None if row is None else self.action_info(int(row[0]))

    def action_info(self, action_id: int) -> ActionInfo:
        """What one history action did, in words and with its first images."""
        names = self._class_names()
        act = self.store.query_one("SELECT id, kind, client, created_at, detail FROM actions WHERE id = ?",
                                   (int(action_id),))
        if act is None:
            raise ProjectError(f"there is no action {action_id} in this project's history")
        row = self.store.query_one("SELECT COUNT(*) FROM label_history WHERE action_id = ?", (int(action_id),))
        count = int(row[0]) if row is not None else 0
        rows = self.store.query("SELECT h.image_id, h.new_class_id, h.new_state, i.path FROM label_history h"
                                " JOIN images i ON i.id = h.image_id WHERE h.action_id = ? ORDER BY h.id LIMIT ?",
                                (int(action_id), SHOWN))
        first = rows[0] if rows else None
        label = None if first is None else (
            names.get(first["new_class_id"], "a deleted class") if first["new_state"] == "labeled"
            else "skipped" if first["new_state"] == "unsure" else "no label")
        detail = action_detail(act["detail"])
        kind = str(act["kind"])
        images = f"{count:,} image{'s' if count != 1 else ''}"
        if kind == "merge":
            summary = f"the merge of class {detail.get('source')!r} into {detail.get('target')!r} ({images})"
        elif kind == "delete-class":
            summary = f"the deletion of class {detail.get('class')!r} ({images} lost the label)"
        elif kind == "oracle":
            summary = f"the oracle's answers ({images})"
        elif count == 1 and first is not None:
            what = repr(label) if first["new_state"] == "labeled" else label
            # Named by its file, as a person knows it, not by the project's internal id.
            summary = f"image {Path(str(first['path'])).name} set to {what}"
        else:
            summary = f"a bulk label of {images}" + (f" as {label!r}" if first is not None and
                                                     first["new_state"] == "labeled" else f" ({label})")
        return ActionInfo(int(act["id"]), kind, act["client"], float(act["created_at"]), count,
                          [int(r["image_id"]) for r in rows], label, None if first is None else str(first["path"]),
                          summary)

    def undo_last(self) -> UndoResult | None:
        """Revert the action :meth:`next_undo` names (a label, a bulk label, the oracle's answers,
        a class merge or delete). Images whose label someone else changed since are left alone and listed in
        ``conflicts``. Returns None when there is nothing left to undo.
        """
        act = self.next_undo()
        return None if act is None else self.undo_action(act.id)

    def recent_actions(self, kinds: Iterable[str] = UNDOABLE_KINDS, limit: int = 10) -> list[ActionInfo]:
        """The project's newest actions of ``kinds`` not undone yet, by any client, newest first."""
        kinds = tuple(kinds)
        marks = ",".join("?" * len(kinds))
        rows = self.store.query(f"SELECT id FROM actions WHERE kind IN ({marks}) AND undone_by IS NULL"
                                " AND undo_of IS NULL ORDER BY id DESC LIMIT ?", (*kinds, int(limit)))
        return [self.action_info(int(r[0])) for r in rows]

    def undo_action(self, action_id: int) -> UndoResult:
        """Undo exactly one action of the history (one label, a bulk label, the oracle's answers,
        a merge or a class delete), as a new action. Labels changed by a later action are the
        newer answer and stay (listed in ``conflicts``); a merge or delete brings its class back."""
        with self.store.write() as conn:
            act = conn.execute("SELECT id, kind, undone_by, undo_of, detail FROM actions WHERE id = ?",
                               (int(action_id),)).fetchone()
            if act is None:
                raise ProjectError(f"there is no action {action_id} in this project's history")
            if act["kind"] not in UNDOABLE_KINDS or act["undo_of"] is not None:
                raise ProjectError(f"a {act['kind']} action cannot be undone")
            if act["undone_by"] is not None:
                raise ProjectError(f"action {action_id} ({act['kind']}) was undone already")
            undo = self._new_action(conn, "undo", {"action": act["id"]}, undo_of=act["id"])
            back = self._restore_classes(conn, str(act["kind"]), action_detail(act["detail"]))
            restored, conflicts = self._restore_labels(conn, int(act["id"]), undo)
            conn.execute("UPDATE actions SET undone_by = ? WHERE id = ?", (undo, act["id"]))
        return UndoResult(int(act["id"]), str(act["kind"]), restored, conflicts, back, undo)

    def _restore_labels(self, conn: sqlite3.Connection, action: int, undo: int) -> tuple[list[int], list[int]]:
        """Set every label ``action`` changed back to what it was, set-based (a merge of thousands
        of labels is a few statements), unless it changed again since."""
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS _undo (image_id INTEGER PRIMARY KEY, cls INTEGER,"
                     " state TEXT, source TEXT, rnd INTEGER, ok INTEGER NOT NULL)")
        conn.execute("DELETE FROM _undo")
        # Only a label that is still what the action set is reverted (ok); one changed since (by
        # another tab, say) is the newer answer and stays. OR IGNORE: an image's first row of the
        # action holds the value it had before.
        conn.execute(
            "INSERT OR IGNORE INTO _undo SELECT h.image_id, h.old_class_id, COALESCE(h.old_state, 'cleared'),"
            " COALESCE(h.old_source, 'user'), h.old_round,"
            " l.image_id IS NOT NULL AND l.class_id IS h.new_class_id AND l.state = h.new_state"
            " FROM label_history h LEFT JOIN labels l ON l.image_id = h.image_id WHERE h.action_id = ?"
            " ORDER BY h.id", (action,))
        conn.execute("UPDATE _undo SET cls = NULL, state = 'cleared' WHERE cls IN (SELECT id FROM classes"
                     " WHERE deleted = 1)")
        conn.execute("UPDATE _undo SET cls = NULL WHERE state != 'labeled'")
        params = {"undo": undo, "now": clock(), "client": self.client}
        conn.execute(
            "INSERT INTO label_history(action_id, image_id, old_class_id, old_state, old_source, old_round,"
            " new_class_id, new_state, source, round, version, created_at, client)"
            " SELECT :undo, u.image_id, l.class_id, l.state, l.source, l.round, u.cls, u.state, 'undo', u.rnd,"
            " l.version + 1, :now, :client FROM _undo u CROSS JOIN labels l ON l.image_id = u.image_id"
            " WHERE u.ok", params)
        conn.execute(
            "INSERT INTO labels(image_id, class_id, state, round, source, created_at, version, client)"
            " SELECT u.image_id, u.cls, u.state, u.rnd, u.source, :now, l.version + 1, :client"
            " FROM _undo u CROSS JOIN labels l ON l.image_id = u.image_id WHERE u.ok"
            " ON CONFLICT(image_id) DO UPDATE SET class_id = excluded.class_id, state = excluded.state,"
            " round = excluded.round, source = excluded.source, created_at = excluded.created_at,"
            " version = excluded.version, client = excluded.client", params)
        # In image id order straight from the key: no sort.
        restored = [int(r[0]) for r in conn.execute("SELECT image_id FROM _undo WHERE ok")]
        conflicts = [int(r[0]) for r in conn.execute("SELECT image_id FROM _undo WHERE NOT ok")]
        return restored, conflicts

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
        # Through merges: an image of a class merged away is answered with the class it went into.
        row = self.store.query_one("SELECT t.live_id FROM images i LEFT JOIN class_truth t"
                                   " ON t.class_id = i.true_class_id WHERE i.id = ?", (int(image_id),))
        if row is None:
            raise ProjectError(f"image {image_id} is not in this project")
        return None if row[0] is None else int(row[0])

    def oracle_label_batch(self) -> BulkResult:
        """Answer every still-unlabeled image of the pending batch with the simulated oracle."""
        if not self.store.get_setting("simulated_oracle", False):
            raise ProjectError("the simulated oracle is off for this project; switch it on with set_oracle(True)")
        number = self.pending_round()
        if number is None:
            raise ProjectError("there is no pending batch")
        rows = self.store.query(
            "SELECT s.image_id, t.live_id FROM selections s JOIN images i ON i.id = s.image_id"
            " JOIN class_truth t ON t.class_id = i.true_class_id LEFT JOIN labels l ON l.image_id = s.image_id"
            " WHERE s.round = ? AND (l.state IS NULL OR l.state = 'cleared')", (number,))
        by_class: dict[int, list[int]] = {}
        for img, cid in rows:
            by_class.setdefault(int(cid), []).append(int(img))
        changed = 0
        with self.store.write() as conn:
            action = self._new_action(conn, "oracle", {"round": number})
            for cid, ids in by_class.items():
                fill_ids(conn, ids)
                changed += self._apply_labels(conn, cid, "labeled", "oracle", action, "oracle")
        return BulkResult(action, changed, len(rows) - changed)

