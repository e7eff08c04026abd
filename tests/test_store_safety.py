"""The project database against foreign files, damaged files, read-only folders, full disks and
replaced folders: each is refused or handled with a message that names the file or folder, a file
that is not ours is left byte for byte as it was, and no acknowledged write is lost."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from ralif.project import Project, ProjectError
from ralif.project import store as store_mod
from ralif.project.schema import MIGRATIONS, statements
from ralif.project.store import (
    APPLICATION_ID,
    DB_NAME,
    SCHEMA_VERSION,
    CorruptError,
    NewerSchemaError,
    NotRalifError,
    ReadOnlyError,
    Store,
    release,
)

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "ralif/app/assets/demo"


# ----------------------------------------------------------------------------- helpers


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder``: a hash for files, "dir" for folders."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _store(folder: Path, rows: int = 3) -> Store:
    store = Store(folder / DB_NAME, create=True)
    _add(store, [f"c{i}" for i in range(rows)])
    return store


def _add(store: Store, names: list[str]) -> None:
    with store.write() as conn:
        conn.executemany("INSERT INTO classes(name, position, created_at) VALUES (?, 0, 0)", [(n,) for n in names])


def _names(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute("SELECT name FROM classes ORDER BY id")]
    finally:
        conn.close()


def _header(db: Path) -> tuple[int, int]:
    head = db.read_bytes()[:100]
    return int.from_bytes(head[68:72], "big"), int.from_bytes(head[60:64], "big")


def _foreign_rollback(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    conn.executemany("INSERT INTO notes(text) VALUES (?)", [("a",), ("b",)])
    conn.commit()
    conn.close()


def _foreign_wal(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE moz_places (id INTEGER PRIMARY KEY, url TEXT)")
    conn.execute("INSERT INTO moz_places(url) VALUES ('x')")
    conn.commit()
    conn.close()


def _foreign_app_id(db: Path) -> None:
    _foreign_rollback(db)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA application_id = 1196444487")      # "GPKG": a GeoPackage
    conn.commit()
    conn.close()


def _empty_sqlite(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 0")
    conn.execute("VACUUM")      # writes a header, no tables
    conn.close()


def _lookalike(db: Path) -> None:
    # A schema_version table and a few of ralif's table names, but not ralif's schema.
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at REAL)")
    conn.execute("INSERT INTO schema_version VALUES (1, 0)")
    conn.execute("CREATE TABLE labels (image_id INTEGER, class_id INTEGER)")
    conn.execute("CREATE TABLE images (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()


def _ralif_plus_extra(db: Path) -> None:
    # Every ralif table, created by hand without the marker, plus a table of another program.
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN")
    for script in MIGRATIONS:
        for statement in statements(script):
            conn.execute(statement)
    conn.execute("INSERT INTO schema_version VALUES (?, 0)", (SCHEMA_VERSION,))
    conn.execute("CREATE TABLE other_app (x)")
    conn.execute("COMMIT")
    conn.close()


FOREIGN = {
    "rollback-journal": _foreign_rollback,
    "wal-mode": _foreign_wal,
    "other-application-id": _foreign_app_id,
    "empty-sqlite": _empty_sqlite,
    "lookalike": _lookalike,
    "ralif-plus-extra-table": _ralif_plus_extra,
}


# ----------------------------------------------------------------------------- the marker


def test_a_new_project_carries_the_marker(tmp_path: Path) -> None:
    store = _store(tmp_path / "p")
    assert store.query_one("PRAGMA application_id")[0] == APPLICATION_ID == int.from_bytes(b"RLIF", "big")
    assert store.query_one("PRAGMA user_version")[0] == SCHEMA_VERSION
    release(tmp_path / "p" / DB_NAME)      # the last connection checkpoints the log into the file
    assert _header(tmp_path / "p" / DB_NAME) == (APPLICATION_ID, SCHEMA_VERSION)


@pytest.mark.parametrize("kind", list(FOREIGN))
def test_a_foreign_sqlite_file_is_refused_and_left_untouched(tmp_path: Path, kind: str) -> None:
    folder = tmp_path / "someone-else"
    folder.mkdir()
    db = folder / DB_NAME
    FOREIGN[kind](db)
    before = _snapshot(folder)
    with pytest.raises(NotRalifError, match="not a ralif project") as info:
        Store(db)
    assert str(db) in str(info.value)
    assert "left untouched" in str(info.value)
    with pytest.raises(NotRalifError):
        Store(db, create=True)
    # As the app and `ralif project info` open it: refused before any folder is made beside it.
    with pytest.raises(ProjectError, match="not a ralif project"):
        Project.open(folder)
    assert _snapshot(folder) == before, "the file or its folder changed (sidecars, tables, folders)"


def test_a_foreign_file_in_use_by_its_program_is_refused_and_unchanged(tmp_path: Path) -> None:
    # The other program holds it open in WAL mode, with its log and index beside it.
    db = tmp_path / DB_NAME
    owner = sqlite3.connect(db, isolation_level=None)
    owner.execute("PRAGMA journal_mode=WAL")
    owner.execute("CREATE TABLE t (x)")
    owner.execute("INSERT INTO t VALUES (1)")
    main_before = hashlib.sha256(db.read_bytes()).hexdigest()
    wal_before = hashlib.sha256((tmp_path / (DB_NAME + "-wal")).read_bytes()).hexdigest()
    names_before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(NotRalifError, match="not a ralif project"):
        Store(db)
    assert hashlib.sha256(db.read_bytes()).hexdigest() == main_before
    assert hashlib.sha256((tmp_path / (DB_NAME + "-wal")).read_bytes()).hexdigest() == wal_before
    assert sorted(p.name for p in tmp_path.iterdir()) == names_before
    assert owner.execute("SELECT x FROM t").fetchall() == [(1,)]
    owner.close()


def _truncated(db: Path) -> None:
    store = Store(db, create=True)
    _add(store, [f"class {i} " + "x" * 400 for i in range(200)])    # some dozens of pages
    release(db)
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2])


DAMAGED = {
    "zero-bytes": (lambda db: db.write_bytes(b""), "empty \\(0 bytes\\)"),
    "short-header": (lambda db: db.write_bytes(b"SQLite format 3\x00" + b"\x10" * 30), "shorter than a SQLite header"),
    "garbage": (lambda db: db.write_bytes(os.urandom(8192)), "not a SQLite database"),
    "text-file": (lambda db: db.write_text("name,label\na.png,cat\n"), "not a SQLite database"),
    "truncated": (_truncated, "truncated"),
    "bad-page-size": (lambda db: db.write_bytes(b"SQLite format 3\x00" + b"\x00\x03" + b"\x00" * 4078), "page size"),
}


@pytest.mark.parametrize("kind", list(DAMAGED))
def test_a_damaged_file_is_reported_as_corrupt_never_opened_as_new(tmp_path: Path, kind: str) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    db = folder / DB_NAME
    make, message = DAMAGED[kind]
    make(db)
    before = _snapshot(folder)
    with pytest.raises(CorruptError, match=message) as info:
        Store(db)
    assert str(db) in str(info.value)
    with pytest.raises(ProjectError, match=r"damaged|empty"):
        Project.open(folder)
    # `ralif project info` says so too, with its usual error line and exit code.
    out = subprocess.run([sys.executable, "-m", "ralif", "project", "info", str(folder)], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False) \
        if kind == "zero-bytes" else None
    if out is not None:
        assert out.returncode == 1, out.stderr
        assert "empty (0 bytes)" in out.stderr and str(db) in out.stderr
    assert _snapshot(folder) == before


def test_a_newer_schema_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    db = tmp_path / "p" / DB_NAME
    _store(tmp_path / "p")
    release(db)
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 3}")
    conn.commit()
    conn.close()
    before = _snapshot(tmp_path / "p")
    with pytest.raises(NewerSchemaError, match=f"newer ralif \\(schema {SCHEMA_VERSION + 3}, this version reads "
                                               f"up to {SCHEMA_VERSION}\\); upgrade ralif"):
        Store(db)
    assert _snapshot(tmp_path / "p") == before


def _strip_marker(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA application_id = 0")
    conn.execute("PRAGMA user_version = 0")
    conn.commit()
    conn.close()


def test_a_project_from_before_the_marker_opens_and_gets_it(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    project = Project.create_demo(folder, assets=DEMO, run_first_round=False)
    labeled = project.images_page(limit=3)
    for row in labeled:
        project.label(row.image_id, project.classes()[0].id)
    release(folder / DB_NAME)
    _strip_marker(folder / DB_NAME)
    assert _header(folder / DB_NAME) == (0, 0)

    again = Project.open(folder)
    assert again.progress().labeled == 3
    release(folder / DB_NAME)
    assert _header(folder / DB_NAME) == (APPLICATION_ID, SCHEMA_VERSION)


def test_a_schema_1_project_from_before_the_marker_is_migrated_and_marked(tmp_path: Path) -> None:
    # Exactly what the first ralif wrote: schema 1 in WAL mode, no marker.
    db = tmp_path / "p" / DB_NAME
    db.parent.mkdir()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("BEGIN IMMEDIATE")
    for statement in statements(MIGRATIONS[0]):
        conn.execute(statement)
    conn.execute("INSERT INTO schema_version VALUES (1, 0)")
    conn.execute("INSERT INTO classes(name, position, created_at) VALUES ('cat', 0, 0)")
    conn.execute("COMMIT")
    conn.close()
    store = Store(db)
    versions = [r[0] for r in store.query("SELECT version FROM schema_version ORDER BY version")]
    assert versions == list(range(1, SCHEMA_VERSION + 1))
    assert store.query_one("PRAGMA application_id")[0] == APPLICATION_ID
    assert [r[0] for r in store.query("SELECT name FROM classes")] == ["cat"]


def test_a_project_whose_schema_is_still_in_the_write_ahead_log_opens(tmp_path: Path) -> None:
    # A process killed before the log was copied into the file: the file alone has no tables,
    # or (for a marked project) no marker yet; the log has both. Reading only the file's header
    # would take it for a foreign or empty database.
    for marked in (False, True):
        folder = tmp_path / f"p{int(marked)}"
        code = textwrap.dedent(f"""
            import os, sqlite3, sys
            from ralif.project.schema import MIGRATIONS, statements
            from ralif.project.store import Store, APPLICATION_ID
            db = sys.argv[1]
            if {marked}:
                store = Store(db, create=True)
                with store.write() as conn:
                    conn.execute("INSERT INTO classes(name, position, created_at) VALUES ('cat', 0, 0)")
            else:
                os.makedirs(os.path.dirname(db))
                conn = sqlite3.connect(db, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("BEGIN IMMEDIATE")
                for script in MIGRATIONS:
                    for s in statements(script):
                        conn.execute(s)
                conn.execute(f"INSERT INTO schema_version VALUES ({SCHEMA_VERSION}, 0)")
                conn.execute("INSERT INTO classes(name, position, created_at) VALUES ('cat', 0, 0)")
                conn.execute("COMMIT")
            os._exit(0)     # no close, no checkpoint: as after SIGKILL
        """)
        out = subprocess.run([sys.executable, "-c", code, str(folder / DB_NAME)], capture_output=True, text=True,
                             timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
        assert out.returncode == 0, out.stderr
        assert (folder / (DB_NAME + "-wal")).stat().st_size > 0
        assert _header(folder / DB_NAME)[0] == 0, "the marker should still be in the log only"
        store = Store(folder / DB_NAME)
        assert [r[0] for r in store.query("SELECT name FROM classes")] == ["cat"]
        assert store.query_one("PRAGMA application_id")[0] == APPLICATION_ID


# ----------------------------------------------------------------------------- read-only


def test_a_project_opened_read_only_reads_and_refuses_writes(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    _store(folder)
    release(folder / DB_NAME)
    before = hashlib.sha256((folder / DB_NAME).read_bytes()).hexdigest()
    store = Store(folder / DB_NAME, readonly=True)
    assert store.readonly
    assert [r[0] for r in store.query("SELECT name FROM classes ORDER BY id")] == ["c0", "c1", "c2"]
    assert store.image_counts() == {} and store.label_counts() == {}
    assert store.settings() == {}
    with pytest.raises(ReadOnlyError, match="opened read-only: this change was not saved") as info:
        _add(store, ["new"])
    assert str(folder) in str(info.value)
    with pytest.raises(ReadOnlyError):
        store.set_settings({"name": "x"})
    release(folder / DB_NAME)
    assert hashlib.sha256((folder / DB_NAME).read_bytes()).hexdigest() == before


def test_a_folder_that_cannot_be_written_opens_read_only_and_recovers(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # The permission check itself is what a root test run cannot exercise with chmod (root may
    # write anyway); it is replaced here, and the real permissions are tested below by a process
    # that is not root. This covers what follows from it: read-only open, reads, the message.
    folder = tmp_path / "p"
    store = _store(folder)
    release(folder / DB_NAME)
    monkeypatch.setattr(store_mod, "writable", lambda path: False)
    store = Store(folder / DB_NAME)
    assert store.readonly
    assert len(store.query("SELECT * FROM classes")) == 3
    with pytest.raises(ReadOnlyError, match=r"the project folder .* is read-only: ralif can show and export") as info:
        _add(store, ["new"])
    assert str(folder) in str(info.value)
    assert "unable to open" not in str(info.value)
    # Once the folder is writable again, the same Store writes (no restart needed).
    monkeypatch.undo()
    _add(store, ["new"])
    assert not store.readonly
    assert len(store.query("SELECT * FROM classes")) == 4


@contextlib.contextmanager
def _read_only(folder: Path) -> Iterator[None]:
    """Make ``folder`` truly unwritable for this process: by permissions, or for root (whom
    permissions do not stop) by a read-only bind mount of it; skipped where neither is possible."""
    if os.geteuid() != 0:
        paths = [folder, *folder.rglob("*")]
        for p in paths:
            os.chmod(p, 0o555 if p.is_dir() else 0o444)
        try:
            yield
        finally:
            for p in paths:
                os.chmod(p, 0o755 if p.is_dir() else 0o644)
        return
    for args in (["mount", "--bind", str(folder), str(folder)],
                 ["mount", "-o", "remount,ro,bind", str(folder)]):
        done = subprocess.run(args, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            subprocess.run(["umount", str(folder)], capture_output=True, check=False)
            pytest.skip(f"cannot make a read-only folder as root here: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize("with_log", [False, True], ids=["clean", "with-unfinished-log"])
def test_a_read_only_folder_really_opens_for_reading(tmp_path: Path, with_log: bool) -> None:
    folder = tmp_path / "p"
    project = Project.create_demo(folder, assets=DEMO, run_first_round=False)
    for row in project.images_page(limit=2):
        project.label(row.image_id, project.classes()[1].id)
    release(folder / DB_NAME)
    if with_log:
        # A labeling process killed after its commit: that label is only in the log.
        code = ("import os, sys\nfrom ralif.project import Project\np = Project.open(sys.argv[1])\n"
                "p.label(p.images_page('unlabeled', limit=1)[0].image_id, p.classes()[0].id)\nos._exit(0)")
        done = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True,
                              timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
        assert done.returncode == 0, done.stderr
        assert (folder / (DB_NAME + "-wal")).stat().st_size > 0
    before = _snapshot(folder)
    with _read_only(folder):
        with pytest.raises(OSError):
            (folder / "probe").write_text("x")
        opened = Project.open(folder)
        assert opened.store.readonly
        assert opened.progress().labeled == (3 if with_log else 2)
        assert [c.name for c in opened.classes()] == [c.name for c in project.classes()]
        with pytest.raises(ReadOnlyError, match="is read-only") as info:
            opened.label(opened.images_page("unlabeled", limit=1)[0].image_id, opened.classes()[0].id)
        assert str(folder) in str(info.value)
        assert "unable to open" not in str(info.value)
        release(folder / DB_NAME)
    assert _snapshot(folder) == before
