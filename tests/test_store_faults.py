"""The project database under faults of its surroundings: a full disk (simulated by SQLite's page
limit everywhere, and real on a small tmpfs where the tests may mount one) and a project file
replaced or deleted under an open project. A change is either saved in the current file and
reported saved, or not saved and reported with a message naming the folder; nothing acknowledged
is lost and the same Store keeps working once the cause is gone."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import sqlite3
import subprocess
import tempfile
from pathlib import Path

import pytest

from ralif.project.store import (
    DB_NAME,
    DiskFullError,
    NotRalifError,
    ProjectGoneError,
    ProjectReplacedError,
    Store,
    release,
)


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))}


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


def _foreign(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    conn.commit()
    conn.close()


# ----------------------------------------------------------------------------- disk full


def test_disk_full_rolls_back_names_the_folder_and_recovers(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    store = _store(folder)
    # SQLite's page limit gives the same SQLITE_FULL a full disk gives, on any machine.
    pages = store.query_one("PRAGMA page_count")[0]
    store.query(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(DiskFullError) as info:
        _add(store, [f"big {i} " + "x" * 3000 for i in range(20)])
    message = str(info.value)
    assert str(folder) in message and "is full" in message
    assert "this change was not saved (everything saved before it is kept)" in message
    assert [r[0] for r in store.query("SELECT name FROM classes")] == ["c0", "c1", "c2"]
    assert not store._conn.in_transaction
    # Space is back: the same Store (the same cached connection) writes again.
    store.query("PRAGMA max_page_count = 1073741823")
    _add(store, ["after"])
    assert _names(folder / DB_NAME)[-1] == "after"


def test_no_space_raised_inside_a_write_rolls_it_back(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    store = _store(folder)
    with pytest.raises(DiskFullError, match="is full"), store.write() as conn:
        conn.execute("INSERT INTO classes(name, position, created_at) VALUES ('lost', 0, 0)")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert "lost" not in _names(folder / DB_NAME)
    _add(store, ["kept"])
    assert _names(folder / DB_NAME)[-1] == "kept"


@pytest.fixture
def small_disk():
    """A 2 MiB file system (tmpfs), where a disk really fills up; skipped where none can be mounted."""
    if os.geteuid() != 0 or not Path("/proc/mounts").exists():
        pytest.skip("mounting a small file system needs root on Linux")
    mount = Path(tempfile.mkdtemp(prefix="ralif-full-"))
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        mount.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        release(mount / "p" / DB_NAME)
        subprocess.run(["umount", str(mount)], check=False)
        mount.rmdir()


def _fill(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


def test_a_really_full_disk_loses_nothing_acknowledged(small_disk: Path) -> None:
    folder = small_disk / "p"
    store = _store(folder)
    _fill(small_disk / "filler")
    acknowledged: list[str] = []
    failure = None
    for i in range(400):
        name = f"label {i} " + "y" * 2000
        try:
            _add(store, [name])
        except DiskFullError as exc:
            failure = exc
            break
        acknowledged.append(name)
    assert failure is not None, "the disk never filled"
    assert str(folder) in str(failure) and "not saved" in str(failure)
    assert _names(folder / DB_NAME)[3:] == acknowledged
    (small_disk / "filler").unlink()
    _add(store, ["after space returned"])
    acknowledged.append("after space returned")
    release(folder / DB_NAME)
    conn = sqlite3.connect(folder / DB_NAME)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    assert _names(folder / DB_NAME)[3:] == acknowledged


def test_a_project_cannot_be_created_on_a_full_disk_and_says_so(small_disk: Path) -> None:
    _fill(small_disk / "filler")
    with pytest.raises(DiskFullError, match="is full"):
        _store(small_disk / "p")


# ----------------------------------------------------------------------------- a replaced file


def test_a_folder_restored_from_a_backup_is_reopened_not_written_blind(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    store = _store(folder, rows=0)
    tab2 = Store(folder / DB_NAME)              # another tab: the same shared connection
    _add(store, ["A"])
    shutil.copytree(folder, tmp_path / "backup")  # copied live: the log and its index come along
    _add(store, ["B"])
    assert store.check_identity() is False
    # Keep the old file reachable, to show afterwards that nothing more went into it.
    os.link(folder / DB_NAME, tmp_path / "old.sqlite")
    os.link(folder / (DB_NAME + "-wal"), tmp_path / "old.sqlite-wal")
    shutil.rmtree(folder)
    shutil.copytree(tmp_path / "backup", folder)

    _add(store, ["C"])                         # the write checks the file first and reopens it
    _add(tab2, ["D"])
    assert [r[0] for r in tab2.query("SELECT name FROM classes ORDER BY id")] == ["A", "C", "D"]
    assert store.check_identity() is False
    release(folder / DB_NAME)
    assert _names(folder / DB_NAME) == ["A", "C", "D"]
    assert _names(tmp_path / "old.sqlite") == ["A", "B"]


def test_check_identity_reopens_for_reads_too(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    store = _store(folder, rows=1)
    shutil.copytree(folder, tmp_path / "backup")
    _add(store, ["later"])
    shutil.rmtree(folder)
    shutil.copytree(tmp_path / "backup", folder)
    assert store.check_identity() is True
    assert [r[0] for r in store.query("SELECT name FROM classes")] == ["c0"]


def test_a_deleted_project_is_never_written(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    store = _store(folder)
    shutil.rmtree(folder)
    with pytest.raises(ProjectGoneError, match=r"is gone .*nothing was written") as info:
        _add(store, ["lost"])
    assert str(folder / DB_NAME) in str(info.value)
    with pytest.raises(ProjectGoneError):
        store.check_identity()
    assert not folder.exists(), "nothing may be recreated where the project was"


def test_a_project_file_replaced_by_a_foreign_one_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    store = _store(folder)
    release(folder / DB_NAME)
    store = Store(folder / DB_NAME)
    (folder / DB_NAME).unlink()
    _foreign(folder / DB_NAME)
    before = _snapshot(folder)
    with pytest.raises(NotRalifError, match="not a ralif project"):
        _add(store, ["x"])
    assert _snapshot(folder) == before


def test_a_file_replaced_during_a_write_is_not_reported_saved(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    store = _store(folder, rows=1)
    shutil.copytree(folder, tmp_path / "backup")
    with pytest.raises(ProjectReplacedError, match=r"is not in the current file\. Repeat it"), \
            store.write() as conn:
        conn.execute("INSERT INTO classes(name, position, created_at) VALUES ('during', 0, 0)")
        shutil.rmtree(folder)
        shutil.copytree(tmp_path / "backup", folder)
    _add(store, ["during"])                    # the repeat lands in the current file
    release(folder / DB_NAME)
    assert _names(folder / DB_NAME) == ["c0", "during"]
