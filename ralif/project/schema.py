"""The project database's schema: SQL scripts applied in order, one per schema version.

Script *i* of ``MIGRATIONS`` takes the schema from version *i* to *i + 1*; a database records
the versions applied in its ``schema_version`` table (and, from the file marker on, in its
``user_version`` header field, see :mod:`ralif.project.dbfile`).
"""

from __future__ import annotations

import functools
import sqlite3

SPLITS = ("pool", "test")
LABEL_STATES = ("labeled", "unsure", "cleared")
LABEL_SOURCES = ("user", "oracle", "import", "bulk", "map")
# History rows also record changes that no user made directly.
HISTORY_SOURCES = (*LABEL_SOURCES, "undo", "merge", "delete")
ROUND_STATUSES = ("queued", "running", "ready", "submitted", "failed")
# The round whose batch waits on the Label page: the newest computed and not yet submitted.
PENDING_ROUND = "SELECT MAX(number) FROM rounds WHERE status = 'ready'"
# The images of that batch.
PENDING_BATCH = f"SELECT image_id FROM selections WHERE round = ({PENDING_ROUND})"

V1 = f"""
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
V2 = """
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

# Version 3: a class keeps its key and colour through every edit (they were derived from the
# display order, so deleting one class renumbered the rest), and a merge records where a class
# went instead of rewriting the images' hidden true classes.
HOTKEYS = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "0")
# Grey is kept for "skipped" and for deleted classes, so no class colour is grey.
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#e8710a", "#0f9fb5", "#8c564b", "#d6409f",
           "#0f766e", "#a59b00", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd")
_KEYS_SQL = ", ".join(f"('{k}', {i})" for i, k in enumerate(HOTKEYS))
_COLORS_SQL = ", ".join(f"('{c}', {i})" for i, c in enumerate(PALETTE))
_RANK = ("(SELECT COUNT(*) FROM classes o WHERE o.deleted = 0 AND (o.position < classes.position"
         " OR (o.position = classes.position AND o.id < classes.id)))")
V3 = f"""
ALTER TABLE classes ADD COLUMN hotkey TEXT;
ALTER TABLE classes ADD COLUMN color TEXT;
ALTER TABLE classes ADD COLUMN merged_into INTEGER REFERENCES classes(id);
-- Existing projects keep the keys and colours they showed: the n-th live class in display order.
UPDATE classes SET hotkey = CASE WHEN {_RANK} < {len(HOTKEYS)}
    THEN substr('{"".join(HOTKEYS)}', {_RANK} + 1, 1) END WHERE deleted = 0;
UPDATE classes SET color = substr('{"".join(PALETTE)}', ({_RANK} % {len(PALETTE)}) * 7 + 1, 7) WHERE deleted = 0;
UPDATE classes SET color = '#888888' WHERE deleted = 1;
CREATE UNIQUE INDEX classes_live_hotkey ON classes(hotkey) WHERE deleted = 0 AND hotkey IS NOT NULL;
-- Whoever adds a class (the app, an import, a script writing SQL) gets the next free key and the
-- least used colour; a row inserted with its colour already set (a restored class) keeps both.
CREATE TRIGGER classes_key_color AFTER INSERT ON classes WHEN NEW.color IS NULL BEGIN
    UPDATE classes SET
        hotkey = (SELECT column1 FROM (VALUES {_KEYS_SQL}) WHERE column1 NOT IN
                  (SELECT hotkey FROM classes WHERE deleted = 0 AND hotkey IS NOT NULL) ORDER BY column2 LIMIT 1),
        color = (SELECT p.column1 FROM (VALUES {_COLORS_SQL}) p ORDER BY
                 (SELECT COUNT(*) FROM classes c WHERE c.deleted = 0 AND c.color = p.column1), p.column2 LIMIT 1)
    WHERE id = NEW.id;
END;
-- The live class each class's images count as: itself, or where a merge sent it (merges chain).
-- The hidden true classes of images are never rewritten; evaluation and the simulated oracle read
-- them through this view, so undoing a merge brings the true classes back with the class.
CREATE VIEW class_truth AS
WITH RECURSIVE chain(class_id, at, depth) AS (
    SELECT id, id, 0 FROM classes
    UNION ALL
    SELECT chain.class_id, c.merged_into, chain.depth + 1 FROM chain JOIN classes c ON c.id = chain.at
    WHERE c.deleted = 1 AND c.merged_into IS NOT NULL AND chain.depth < 100)
SELECT chain.class_id AS class_id, chain.at AS live_id FROM chain JOIN classes c ON c.id = chain.at
WHERE c.deleted = 0;
"""

MIGRATIONS: list[str] = [V1, V2, V3]
SCHEMA_VERSION = len(MIGRATIONS)


def statements(script: str) -> list[str]:
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


@functools.lru_cache(maxsize=8)
def schema_objects(scripts: tuple[str, ...]) -> frozenset[tuple[str, str]]:
    """The (type, name) of every table, index, trigger and view that ``scripts`` create, as read
    back from SQLite itself, so that a file on disk can be compared with them exactly."""
    conn = sqlite3.connect(":memory:")
    try:
        for script in scripts:
            for statement in statements(script):
                conn.execute(statement)
        return frozenset(objects(conn))
    finally:
        conn.close()


def objects(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    """The schema objects of the database ``conn`` reads, without SQLite's own (``sqlite_*``)."""
    rows = conn.execute("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite!_%' ESCAPE '!'")
    return [(str(r[0]), str(r[1])) for r in rows]
