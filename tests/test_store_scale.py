"""The project database at scale: the schema 1 -> 2 migration, the trigger-kept counts, and the
query plans of a label write and a page load.

Plans are checked on a small database: without ``ANALYZE`` statistics (ralif never runs it)
SQLite plans from fixed estimates, so a plan seen here is the plan it uses at a million rows
(``benchmarks/store_scale.py`` times those).
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ralif.images import ImageList
from ralif.project import Project
from ralif.project import store as store_mod
from ralif.project.store import DB_NAME, SCHEMA_VERSION, Store, release

CLASSES = ["cat", "dog", "bird"]
BIG_TABLES = {"images", "labels", "label_history", "selections", "actions"}
_NAME = re.compile(r"\b(?:FROM|JOIN)\s+(\w+)(?:\s+(?:AS\s+)?(\w+))?", re.IGNORECASE)


def _images(start: int, n: int, seed: int = 0) -> ImageList:
    truth = np.random.default_rng(seed + start).integers(0, len(CLASSES), n)
    return ImageList(paths=[f"/nowhere/img-{k:05d}.jpg" for k in range(start, start + n)], labels=truth,
                     classes=CLASSES, hashes=[hashlib.sha256(b"%d" % k).hexdigest() for k in range(start, start + n)])


def _project(folder: Path, n: int = 300) -> Project:
    # The files need not exist: nothing here reads pixels.
    return Project.create(folder, _images(0, n), test=_images(n, n // 5), encoder="pixels:8",
                          known_labels="truth", simulated_oracle=True, decode=False)


def _activity(p: Project) -> None:
    """Labels in every state, a bulk label, an undo and a pending batch."""
    ids = [r.image_id for r in p.images_page("all", limit=60)]
    # Not p.classes(): this also builds the schema 1 project, which has no count tables to read.
    cls = [r[0] for r in p.store.query("SELECT id FROM classes WHERE deleted = 0 ORDER BY position")]
    for k, i in enumerate(ids[:20]):
        p.label(i, cls[k % 3])
    p.label(ids[20], None)                      # unsure
    p.label(ids[21], cls[0])
    p.unlabel(ids[21])                          # cleared
    p.label(ids[0], cls[1])                     # changed
    p.bulk_label(ids[30:40], cls[2])
    p.bulk_label(ids[40:45], cls[0])
    p.undo_last()
    test_id = p.images_page("all", split="test", limit=1)[0].image_id
    p.label(test_id, cls[1])
    with p.store.write() as conn:
        conn.execute("UPDATE rounds SET status = 'ready' WHERE number = 1")
        conn.executemany("INSERT INTO selections(round, image_id, rank, reason) VALUES (1, ?, ?, 'test')",
                         [(i, r + 1) for r, i in enumerate(ids[45:55])])


def _table_rows(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(db)
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            " AND name NOT IN ('schema_version', 'image_counts', 'label_counts')")]
        # Later migrations add columns to classes (its key and colour); the rows must keep the rest.
        columns = {t: "id, name, position, deleted, created_at" if t == "classes" else "*" for t in tables}
        return {t: conn.execute(f"SELECT {columns[t]} FROM {t} ORDER BY 1, 2").fetchall() for t in tables}
    finally:
        conn.close()


def _counted(db_or_conn: Any) -> tuple[dict[str, tuple[int, int]], dict[tuple[str, str, int | None], int]]:
    """The counts recomputed from the base tables, the slow way."""
    conn = sqlite3.connect(db_or_conn) if isinstance(db_or_conn, Path) else db_or_conn
    images = {r[0]: (r[1], r[2]) for r in conn.execute(
        "SELECT split, COUNT(*), COUNT(true_class_id) FROM images GROUP BY split")}
    labels = {(r[0], r[1], r[2]): r[3] for r in conn.execute(
        "SELECT i.split, l.state, l.class_id, COUNT(*) FROM labels l JOIN images i ON i.id = l.image_id"
        " WHERE l.state != 'cleared' GROUP BY i.split, l.state, l.class_id")}
    return images, labels


def _assert_counts(store: Store) -> None:
    images, labels = _counted(Path(store.path))
    assert {k: tuple(v) for k, v in store.image_counts().items() if v.images} == images
    assert store.label_counts() == labels


# ----------------------------------------------------------------------------- migration


def test_migration_from_schema_1_keeps_data_and_adds_the_count_tables(tmp_path, monkeypatch):
    folder = tmp_path / "old"
    # A project as the previous ralif wrote it: only the first migration exists.
    with monkeypatch.context() as m:
        m.setattr(store_mod, "MIGRATIONS", store_mod.MIGRATIONS[:1])
        m.setattr(store_mod, "SCHEMA_VERSION", 1)
        old = _project(folder)
        _activity(old)
        release(folder / DB_NAME)
    db = folder / DB_NAME
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == 1
    assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'label_counts'").fetchone()
    conn.close()
    before = _table_rows(db)

    project = Project.open(folder)

    conn = sqlite3.connect(db)
    versions = [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY version")]
    names = {r[0]: r[1] for r in conn.execute("SELECT name, type FROM sqlite_master")}
    conn.close()
    assert versions == list(range(1, SCHEMA_VERSION + 1))
    assert _table_rows(db) == before
    assert {"image_counts", "label_counts"} <= {n for n, t in names.items() if t == "table"}
    # The indexes a label write and a page load use are all still there.
    assert {"images_split", "images_hash", "labels_class", "labels_state", "label_history_image",
            "label_history_action", "actions_client", "selections_rank", "selections_image"} <= {
        n for n, t in names.items() if t == "index"}
    assert {n for n, t in names.items() if t == "trigger"} >= {
        "images_count_insert", "images_count_delete", "images_count_update",
        "labels_count_insert", "labels_count_update", "labels_count_delete"}
    _assert_counts(project.store)
    # The migrated project keeps working, and its counts keep up.
    cls = project.classes()[0].id
    image = project.images_page("unlabeled", limit=1)[0].image_id
    project.label(image, cls)
    _assert_counts(project.store)
    assert project.progress().labeled == sum(n for (s, st, _), n in project.store.label_counts().items()
                                             if s == "pool" and st == "labeled")


def test_migration_is_applied_once_and_reopening_changes_nothing(tmp_path):
    project = _project(tmp_path / "p")
    _activity(project)
    release(project.folder / DB_NAME)
    again = Project.open(project.folder)
    rows = again.store.query("SELECT version FROM schema_version ORDER BY version")
    assert [r[0] for r in rows] == list(range(1, SCHEMA_VERSION + 1))
    _assert_counts(again.store)


def test_migration_script_keeps_trigger_bodies_whole():
    statements = store_mod._statements(store_mod.MIGRATIONS[1])
    triggers = [s for s in statements if s.startswith("CREATE TRIGGER")]
    assert len(triggers) == 6
    assert all(s.rstrip().endswith("END;") and sqlite3.complete_statement(s) for s in triggers)


# ----------------------------------------------------------------------------- counts


def test_counts_follow_every_kind_of_change(tmp_path):
    project = _project(tmp_path / "p")
    store = project.store
    _assert_counts(store)
    _activity(project)
    _assert_counts(store)
    cat, dog, bird = (c.id for c in project.classes())
    project.merge_classes(bird, dog)            # moves labels and true classes
    _assert_counts(store)
    project.delete_class(cat)                   # clears labels
    _assert_counts(store)
    project.add_images(_images(10_000, 30), known_labels="import", add_unknown_classes=True)
    project.add_images(_images(20_000, 10), split="test", known_labels="truth", add_unknown_classes=True)
    _assert_counts(store)
    ids = [r.image_id for r in project.images_page("labeled", limit=5)]
    with store.write() as conn:
        # Writes no Project method makes today, which the triggers must still follow.
        conn.execute("UPDATE images SET split = 'test' WHERE id = ?", (ids[0],))
        conn.execute("UPDATE images SET true_class_id = NULL WHERE id = ?", (ids[1],))
        conn.execute("DELETE FROM images WHERE id = ?", (ids[2],))          # cascades to the label
        conn.execute("DELETE FROM labels WHERE image_id = ?", (ids[3],))
    _assert_counts(store)


def test_progress_matches_counts_recomputed_from_the_tables(tmp_path):
    project = _project(tmp_path / "p")
    _activity(project)
    prog = project.progress()
    images, labels = _counted(Path(project.store.path))
    names = {c.id: c.name for c in project.classes()}
    assert (prog.pool, prog.test) == (images["pool"][0], images["test"][0])
    assert prog.labeled == sum(n for (s, st, _), n in labels.items() if s == "pool" and st == "labeled")
    assert prog.unsure == labels.get(("pool", "unsure", None), 0)
    assert prog.test_labeled == sum(n for (s, st, _), n in labels.items() if s == "test" and st == "labeled")
    assert prog.per_class == {names[c]: labels.get(("pool", "labeled", c), 0) for c in names}


# ----------------------------------------------------------------------------- query plans


def _plans(conn: sqlite3.Connection, statements: list[str]) -> dict[str, list[str]]:
    out = {}
    for sql in statements:
        words = sql.split(None, 1)
        if words and words[0].upper() in ("SELECT", "WITH", "INSERT", "UPDATE", "DELETE"):
            out[sql] = [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql)]
    return out


def _big_table_scans(plans: dict[str, list[str]]) -> dict[str, list[str]]:
    """Statements whose plan scans all of a big table or of one of its indexes."""
    bad = {}
    for sql, plan in plans.items():
        # Plans name a table by its alias when it has one.
        alias = {t: t for t in BIG_TABLES}
        for table, name in _NAME.findall(sql):
            if name and name.upper() not in ("WHERE", "ON", "ORDER", "GROUP", "LIMIT", "LEFT", "CROSS", "JOIN"):
                alias[name.lower()] = table.lower()
        for line in plan:
            m = re.match(r"SCAN (\w+)", line)
            if m and alias.get(m.group(1).lower()) in BIG_TABLES:
                bad[sql] = plan
    return bad


def _traced(project: Project, calls: list[Callable[[], Any]]) -> dict[str, list[str]]:
    seen: dict[str, None] = {}
    conn = project.store._conn
    conn.set_trace_callback(lambda sql: seen.setdefault(sql, None))
    try:
        for call in calls:
            call()
    finally:
        conn.set_trace_callback(None)
    return _plans(conn, list(seen))


@pytest.fixture()
def busy_project(tmp_path) -> Project:
    project = _project(tmp_path / "p")
    _activity(project)
    return project


def test_label_write_and_page_reads_use_indexes(busy_project):
    p = busy_project
    cls = [c.id for c in p.classes()]
    unlabeled = [r.image_id for r in p.images_page("unlabeled", limit=3)]
    labeled = p.images_page("labeled", limit=1)[0].image_id
    plans = _traced(p, [
        # a label write from the grid: new, changed, skipped, removed, and its undo
        lambda: p.label(unlabeled[0], cls[0], expected_version=0),
        lambda: p.label(unlabeled[0], cls[1], expected_version=1),
        lambda: p.label(unlabeled[1], None),
        lambda: p.unlabel(unlabeled[1]),
        lambda: p.undo_last(),
        # what the Label page and its "relabel earlier images" panel read
        p.round_status, p.pending_round, p.pending_batch, lambda: p.image(labeled),
        lambda: p.label_of(labeled), lambda: p.label_history(labeled),
        lambda: p.images_page("all", limit=25), lambda: p.images_page("all", after_id=100, limit=25),
        lambda: p.images_page("unlabeled", limit=25), lambda: p.images_page("labeled", limit=25),
        lambda: p.images_page("unsure", limit=25), lambda: p.images_page(cls[0], limit=25),
        lambda: p.images_page("all", split="test", limit=25),
        # the store's count readers
        p.store.label_counts, p.store.image_counts,
    ])
    assert plans, "no statement was traced"
    assert _big_table_scans(plans) == {}
    # A sort reads every matching row before the first comes out: a page of 25 must not need one.
    assert {sql: plan for sql, plan in plans.items() if any("TEMP B-TREE" in line for line in plan)} == {}


def test_page_counts_do_not_read_the_big_tables(busy_project):
    from ralif import projection as proj

    p = busy_project
    ids = [r.image_id for r in p.images_page("unlabeled", limit=20)]
    plans = _traced(p, [p.progress, p.classes, lambda: proj.simulation_reference(p),
                        lambda: p.bulk_label(ids, p.classes()[0].id)])
    assert _big_table_scans(plans) == {}
