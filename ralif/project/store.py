"""The project database: one SQLite file per labeling project.

Durability and concurrency choices:

* WAL journal with ``synchronous=FULL``: a commit returns only after the write-ahead log is
  fsynced, so an acknowledged label survives a killed process or a power cut. WAL also lets
  readers (another browser tab, the background round) read while a label is written.
* One connection per database file per process, shared by all threads (a web app serves every
  tab from threads of one process) and serialised by a lock. Across processes, writes take the
  database lock up front (``BEGIN IMMEDIATE``) so a read-check-write sequence such as a version
  check is atomic; ``busy_timeout`` makes a second writer wait instead of failing.
* Every write is one short transaction.

Schema changes go through ``MIGRATIONS``: a list of SQL scripts, script *i* taking the schema
from version *i* to *i + 1*. A database written by a newer ralif is refused rather than guessed at.

Scale: every page run shows how many images are labeled, per class and split. Counting them from
``labels`` and ``images`` grows with the pool (a join of every label to its image), so the counts
are kept in two small tables by triggers (``image_counts``, ``label_counts``) and read with
:meth:`Store.image_counts` and :meth:`Store.label_counts`; a label write pays one extra row update.
``benchmarks/store_scale.py`` measures writes and page loads at 10k, 100k and 1M images.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

DB_NAME = "project.sqlite"
BUSY_TIMEOUT_MS = 30_000

SPLITS = ("pool", "test")
LABEL_STATES = ("labeled", "unsure", "cleared")
LABEL_SOURCES = ("user", "oracle", "import", "bulk", "map")
# History rows also record changes that no user made directly.
HISTORY_SOURCES = LABEL_SOURCES + ("undo", "merge", "delete")
ROUND_STATUSES = ("queued", "running", "ready", "submitted", "failed")

_V1 = f"""
CREATE TABLE schema_version (
    version    INTEGER PRIMARY KEY,
    applied_at REAL NOT NULL
);
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL            -- JSON
) WITHOUT ROWID;
CREATE TABLE classes (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    position   INTEGER NOT NULL,
    deleted    INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1)),
    created_at REAL NOT NULL
);
-- Deleted classes keep their rows (history refers to them), so names are unique among live ones.
CREATE UNIQUE INDEX classes_live_name ON classes(name) WHERE deleted = 0;
CREATE TABLE images (
    id            INTEGER PRIMARY KEY,
    path          TEXT NOT NULL UNIQUE,
    content_hash  TEXT NOT NULL,
    width         INTEGER,
    height        INTEGER,
    split         TEXT NOT NULL CHECK (split IN ('pool', 'test')),
    true_class_id INTEGER REFERENCES classes(id),
    added_at      REAL NOT NULL
);
CREATE INDEX images_split ON images(split, id);
CREATE INDEX images_hash ON images(content_hash);
-- The current label of an image; no row means never labeled. The row stays when a label is
-- removed (state 'cleared') so that its version counter keeps counting.
CREATE TABLE labels (
    image_id   INTEGER PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,
    class_id   INTEGER REFERENCES classes(id),
    state      TEXT NOT NULL CHECK (state IN {LABEL_STATES!r}),
    round      INTEGER,
    source     TEXT NOT NULL CHECK (source IN {LABEL_SOURCES!r}),
    created_at REAL NOT NULL,
    version    INTEGER NOT NULL CHECK (version >= 1),
    client     TEXT,
    CHECK ((state = 'labeled') = (class_id IS NOT NULL))
);
CREATE INDEX labels_class ON labels(class_id);
CREATE INDEX labels_state ON labels(state);
-- One row per user-visible operation, so that undo reverts a bulk label as a whole.
CREATE TABLE actions (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT NOT NULL,
    client     TEXT,
    created_at REAL NOT NULL,
    undo_of    INTEGER REFERENCES actions(id),
    undone_by  INTEGER REFERENCES actions(id),
    detail     TEXT
);
CREATE INDEX actions_client ON actions(client, id);
CREATE TABLE label_history (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    action_id    INTEGER NOT NULL REFERENCES actions(id),
    image_id     INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    old_class_id INTEGER,
    old_state    TEXT,
    old_source   TEXT,
    old_round    INTEGER,
    new_class_id INTEGER,
    new_state    TEXT NOT NULL CHECK (new_state IN {LABEL_STATES!r}),
    source       TEXT NOT NULL CHECK (source IN {HISTORY_SOURCES!r}),
    round        INTEGER,
    version      INTEGER NOT NULL,
    created_at   REAL NOT NULL,
    client       TEXT
);
CREATE INDEX label_history_image ON label_history(image_id, id);
CREATE INDEX label_history_action ON label_history(action_id);
CREATE TABLE rounds (
    number        INTEGER PRIMARY KEY,
    strategy      TEXT NOT NULL,
    model_kind    TEXT NOT NULL,
    batch_size    INTEGER NOT NULL CHECK (batch_size >= 1),
    status        TEXT NOT NULL CHECK (status IN {ROUND_STATUSES!r}),
    phase         TEXT,
    created_at    REAL NOT NULL,
    started_at    REAL,
    finished_at   REAL,
    submitted_at  REAL,
    seconds       REAL,
    labeled_count INTEGER,
    accuracy      REAL,
    test_count    INTEGER,
    cold_start    INTEGER,
    model_path    TEXT,
    error         TEXT,
    job_path      TEXT,
    runner_pid    INTEGER,
    runner_start  REAL,
    attempts      INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE selections (
    round              INTEGER NOT NULL REFERENCES rounds(number) ON DELETE CASCADE,
    image_id           INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    rank               INTEGER NOT NULL,
    score              REAL,
    reason             TEXT NOT NULL,
    predicted_class_id INTEGER REFERENCES classes(id),
    confidence         REAL,
    PRIMARY KEY (round, image_id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX selections_rank ON selections(round, rank);
CREATE INDEX selections_image ON selections(image_id);
"""

# Version 2: counts kept by triggers, so that a page run reads a few rows instead of joining every
# label to its image or counting a million-row index.
_V2 = """
CREATE TABLE image_counts (
    split  TEXT PRIMARY KEY,
    images INTEGER NOT NULL,
    truths INTEGER NOT NULL         -- images with a hidden true class
) WITHOUT ROWID;
-- Every label row by (split, state, class); class_id 0 stands for none (unsure, cleared) so that
-- it can be part of the key. Rows are never deleted: a count that drops to 0 stays as a 0.
CREATE TABLE label_counts (
    split    TEXT NOT NULL,
    state    TEXT NOT NULL,
    class_id INTEGER NOT NULL,
    n        INTEGER NOT NULL,
    PRIMARY KEY (split, state, class_id)
) WITHOUT ROWID;
INSERT INTO image_counts(split, images, truths)
    SELECT split, COUNT(*), COUNT(true_class_id) FROM images GROUP BY split;
INSERT INTO label_counts(split, state, class_id, n)
    SELECT i.split, l.state, COALESCE(l.class_id, 0), COUNT(*) FROM labels l CROSS JOIN images i
    ON i.id = l.image_id GROUP BY i.split, l.state, COALESCE(l.class_id, 0);
CREATE TRIGGER images_count_insert AFTER INSERT ON images BEGIN
    INSERT INTO image_counts(split, images, truths) VALUES (NEW.split, 1, NEW.true_class_id IS NOT NULL)
        ON CONFLICT(split) DO UPDATE SET images = images + 1, truths = truths + excluded.truths;
END;
-- BEFORE: the cascade that deletes the image's label runs once the image row is gone, when the
-- label's split can no longer be looked up; its own trigger then finds no split and does nothing.
CREATE TRIGGER images_count_delete BEFORE DELETE ON images BEGIN
    UPDATE image_counts SET images = images - 1, truths = truths - (OLD.true_class_id IS NOT NULL)
        WHERE split = OLD.split;
    UPDATE label_counts SET n = n - 1 WHERE split = OLD.split
        AND (state, class_id) = (SELECT state, COALESCE(class_id, 0) FROM labels WHERE image_id = OLD.id);
END;
-- A merge rewrites true classes of many images: only a change of split or of having a true
-- class moves a count, so the WHEN clause keeps that statement at its own cost.
CREATE TRIGGER images_count_update AFTER UPDATE OF split, true_class_id ON images
WHEN OLD.split IS NOT NEW.split OR (OLD.true_class_id IS NULL) != (NEW.true_class_id IS NULL) BEGIN
    UPDATE image_counts SET images = images - 1, truths = truths - (OLD.true_class_id IS NOT NULL)
        WHERE split = OLD.split;
    INSERT INTO image_counts(split, images, truths) VALUES (NEW.split, 1, NEW.true_class_id IS NOT NULL)
        ON CONFLICT(split) DO UPDATE SET images = images + 1, truths = truths + excluded.truths;
    UPDATE label_counts SET n = n - 1 WHERE OLD.split IS NOT NEW.split AND split = OLD.split
        AND (state, class_id) = (SELECT state, COALESCE(class_id, 0) FROM labels WHERE image_id = OLD.id);
    INSERT INTO label_counts(split, state, class_id, n)
        SELECT NEW.split, state, COALESCE(class_id, 0), 1 FROM labels
        WHERE image_id = NEW.id AND OLD.split IS NOT NEW.split
        ON CONFLICT(split, state, class_id) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER labels_count_insert AFTER INSERT ON labels BEGIN
    INSERT INTO label_counts(split, state, class_id, n)
        SELECT split, NEW.state, COALESCE(NEW.class_id, 0), 1 FROM images WHERE id = NEW.image_id
        ON CONFLICT(split, state, class_id) DO UPDATE SET n = n + 1;
END;
-- An upsert that finds the row fires this, not the insert trigger.
CREATE TRIGGER labels_count_update AFTER UPDATE OF image_id, state, class_id ON labels
WHEN OLD.image_id != NEW.image_id OR OLD.state != NEW.state OR OLD.class_id IS NOT NEW.class_id BEGIN
    UPDATE label_counts SET n = n - 1 WHERE split = (SELECT split FROM images WHERE id = OLD.image_id)
        AND state = OLD.state AND class_id = COALESCE(OLD.class_id, 0);
    INSERT INTO label_counts(split, state, class_id, n)
        SELECT split, NEW.state, COALESCE(NEW.class_id, 0), 1 FROM images WHERE id = NEW.image_id
        ON CONFLICT(split, state, class_id) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER labels_count_delete AFTER DELETE ON labels BEGIN
    UPDATE label_counts SET n = n - 1 WHERE split = (SELECT split FROM images WHERE id = OLD.image_id)
        AND state = OLD.state AND class_id = COALESCE(OLD.class_id, 0);
END;
"""

MIGRATIONS: list[str] = [_V1, _V2]
SCHEMA_VERSION = len(MIGRATIONS)


class SplitCount(NamedTuple):
    images: int
    truths: int       # images with a hidden true class (simulations, demos)


class StoreError(RuntimeError):
    """The project database cannot be used (missing, newer format, damaged)."""


class _Shared:
    """The process's connection to one database file, with the lock that serialises its use."""

    def __init__(self, path: str) -> None:
        self.pid = os.getpid()
        self.lock = threading.RLock()
        self.conn = _connect(path)


_REGISTRY: dict[str, _Shared] = {}
_REGISTRY_LOCK = threading.Lock()


def _connect(path: str) -> sqlite3.Connection:
    # isolation_level=None: transactions are opened explicitly, so none stays open by accident.
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                           check_same_thread=False)
    conn.row_factory = sqlite3.Row
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        conn.close()
        raise StoreError(f"{path}: the file system does not support SQLite's WAL mode (got {mode!r}); "
                         f"keep the project on a local disk")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    # Statement journals (every insert into a table with count triggers opens one) and the
    # temporary id tables stay in memory: on disk, importing a million images took twice as long.
    conn.execute("PRAGMA temp_store=MEMORY")
    return conn


def _shared(path: str) -> _Shared:
    with _REGISTRY_LOCK:
        entry = _REGISTRY.get(path)
        # A forked child must not use its parent's connection (SQLite forbids it).
        if entry is None or entry.pid != os.getpid():
            entry = _Shared(path)
            _REGISTRY[path] = entry
        return entry


def release(path: str | os.PathLike[str]) -> None:
    """Close this process's connection to the database at ``path`` (e.g. before deleting it)."""
    key = os.path.realpath(path)
    with _REGISTRY_LOCK:
        entry = _REGISTRY.pop(key, None)
    if entry is not None and entry.pid == os.getpid():
        with entry.lock:
            entry.conn.close()


class Store:
    """Transactions on a project database; cheap to create, the connection is shared."""

    def __init__(self, path: str | os.PathLike[str], create: bool = False) -> None:
        p = Path(path)
        if not create and not p.is_file():
            raise StoreError(f"no project database at {p}")
        if create:
            p.parent.mkdir(parents=True, exist_ok=True)
        self.path = os.path.realpath(p)
        self._entry = _shared(self.path)
        self._migrate()

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._entry.pid != os.getpid():
            self._entry = _shared(self.path)
        return self._entry.conn

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, holding the database's write lock from its start."""
        conn = self._conn
        with self._entry.lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for several queries (WAL readers never block writers)."""
        conn = self._conn
        with self._entry.lock:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    def query(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        with self._entry.lock:
            return self._conn.execute(sql, params).fetchall()

    def query_one(self, sql: str, params: Any = ()) -> sqlite3.Row | None:
        with self._entry.lock:
            return self._conn.execute(sql, params).fetchone()

    # -- schema ------------------------------------------------------------------------------
    def schema_version(self) -> int:
        with self._entry.lock:
            exists = self._conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'").fetchone()
            if not exists:
                return 0
            row = self._conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            return int(row[0] or 0)

    def _migrate(self) -> None:
        current = self.schema_version()
        if current > SCHEMA_VERSION:
            raise StoreError(f"{self.path} was written by a newer ralif (schema {current}, this version "
                             f"reads up to {SCHEMA_VERSION}); upgrade ralif to open it")
        if current == SCHEMA_VERSION:
            return
        with self.write() as conn:
            # Re-read under the write lock: another process may have migrated meanwhile.
            row = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'"
                               ).fetchone()
            current = int(conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0) \
                if row else 0
            for version in range(current, SCHEMA_VERSION):
                for statement in _statements(MIGRATIONS[version]):
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version(version, applied_at) VALUES (?, ?)",
                             (version + 1, time.time()))

    # -- counts ------------------------------------------------------------------------------
    def image_counts(self, conn: sqlite3.Connection | None = None) -> dict[str, SplitCount]:
        """Images per split (``pool``, ``test``) and how many of them have a hidden true class.
        ``conn``: read inside that transaction (a snapshot shared with other reads)."""
        sql = "SELECT split, images, truths FROM image_counts"
        rows = conn.execute(sql).fetchall() if conn is not None else self.query(sql)
        return {r[0]: SplitCount(int(r[1]), int(r[2])) for r in rows}

    def label_counts(self, conn: sqlite3.Connection | None = None) -> dict[tuple[str, str, int | None], int]:
        """Current labels by (split, state, class id), cleared ones left out; class id None for
        ``unsure``. The same groups as ``SELECT i.split, l.state, l.class_id, COUNT(*) FROM labels l
        JOIN images i ... WHERE l.state != 'cleared' GROUP BY ...``, in time independent of the pool."""
        sql = "SELECT split, state, class_id, n FROM label_counts WHERE n > 0 AND state != 'cleared'"
        rows = conn.execute(sql).fetchall() if conn is not None else self.query(sql)
        return {(r[0], r[1], r[2] or None): int(r[3]) for r in rows}

    # -- settings ----------------------------------------------------------------------------
    def get_setting(self, key: str, default: Any = None) -> Any:
        row = self.query_one("SELECT value FROM settings WHERE key = ?", (key,))
        return default if row is None else json.loads(row[0])

    def settings(self) -> dict[str, Any]:
        return {r[0]: json.loads(r[1]) for r in self.query("SELECT key, value FROM settings")}

    def set_settings(self, values: dict[str, Any], conn: sqlite3.Connection | None = None) -> None:
        rows = [(k, json.dumps(v)) for k, v in values.items()]
        sql = "INSERT INTO settings(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value"
        if conn is not None:
            conn.executemany(sql, rows)
            return
        with self.write() as c:
            c.executemany(sql, rows)


def _statements(script: str) -> list[str]:
    """The statements of a migration script (executescript would commit the open transaction).
    A trigger body holds several ``;``: a statement ends where SQLite says it is complete."""
    out, buf = [], []
    for line in script.splitlines():
        buf.append(line.split("--", 1)[0])
        stmt = "\n".join(buf).strip()
        if stmt and sqlite3.complete_statement(stmt):
            if stmt.rstrip(";").strip():
                out.append(stmt)
            buf = []
    tail = "\n".join(buf).strip()
    if tail:
        out.append(tail)
    return out


def fill_ids(conn: sqlite3.Connection, ids: Any) -> int:
    """Put ``ids`` into the connection's temporary ``_ids`` table for set-based statements."""
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS _ids (id INTEGER PRIMARY KEY)")
    conn.execute("DELETE FROM _ids")
    conn.executemany("INSERT OR IGNORE INTO _ids(id) VALUES (?)", ((int(i),) for i in ids))
    return int(conn.execute("SELECT COUNT(*) FROM _ids").fetchone()[0])
