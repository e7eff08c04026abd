"""What a project database file is, decided before SQLite opens it for writing.

A ralif database carries a marker in its SQLite header: ``application_id`` is
:data:`APPLICATION_ID` (the bytes ``RLIF``) and ``user_version`` is its schema version. The
checks here run before anything is written, so that a file that is not a ralif project (another
program's SQLite database, a zero-byte or truncated file, garbage) is refused and left byte for
byte as it was: no marker, no tables, no ``-wal``/``-shm`` files beside it.

Files written before the marker existed have ``application_id`` 0; they are recognised by their
``schema_version`` table and the exact set of tables, indexes and triggers that ralif's
migrations create, and get the marker the first time they are opened for writing.

The errors a user can meet with a project database are defined here too, each with a message
that names the file or its folder.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
import urllib.parse
from pathlib import Path
from typing import NamedTuple

from ralif.project.schema import objects, schema_objects

APPLICATION_ID = int.from_bytes(b"RLIF", "big")   # 0x524C4946
SQLITE_MAGIC = b"SQLite format 3\x00"
HEADER_SIZE = 100

# SQLite's primary result codes (the low byte of an extended code).
SQLITE_READONLY = 8
SQLITE_IOERR = 10
SQLITE_CORRUPT = 11
SQLITE_FULL = 13
SQLITE_CANTOPEN = 14
SQLITE_NOTADB = 26


class StoreError(RuntimeError):
    """The project database cannot be used (missing, newer format, damaged)."""


class CorruptError(StoreError):
    """The file is empty, truncated or not a database at all."""


class NotRalifError(StoreError):
    """A SQLite database of another program (or an empty one): refused, never written."""


class NewerSchemaError(StoreError):
    """Written by a newer ralif than this one."""


class ReadOnlyError(StoreError):
    """A change was asked for but the project folder (or the open project) is read-only."""


class DiskFullError(StoreError):
    """The disk is full: the change was rolled back and nothing saved before it is lost."""


class ProjectGoneError(StoreError):
    """The database file is no longer where the project was opened (folder deleted or moved)."""


class ProjectReplacedError(StoreError):
    """The database file was replaced while a change was being saved; the change is not in it."""


class Header(NamedTuple):
    size: int               # bytes on disk
    page_size: int
    pages: int | None       # as the header records it; None where the header does not vouch for it
    application_id: int
    user_version: int


def sidecars(path: str) -> list[str]:
    """The files SQLite keeps beside a database (write-ahead log, its index, a rollback journal)."""
    return [path + suffix for suffix in ("-wal", "-shm", "-journal")]


def has_wal(path: str) -> bool:
    """Whether a non-empty write-ahead log lies beside ``path`` (committed data not yet in the file)."""
    try:
        return os.stat(path + "-wal").st_size > 0
    except OSError:
        return False


def read_header(path: str) -> Header:
    """The SQLite header of ``path``, read with plain file reads (SQLite is not involved, so
    nothing is created or locked). Raises :class:`CorruptError` for an empty, short, truncated
    or non-SQLite file and :class:`NotRalifError` for something that is not a regular file."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        # A FIFO or a device would block or never end when read.
        raise NotRalifError(f"not a ralif project: {path} is not a regular file")
    with open(path, "rb") as f:
        head = f.read(HEADER_SIZE)
    if not head:
        raise CorruptError(f"the project database {path} is empty (0 bytes): it is damaged, not a new "
                           f"project; restore it from a backup")
    if not head.startswith(SQLITE_MAGIC):
        raise CorruptError(f"the project database {path} is damaged: it is not a SQLite database "
                           f"(it does not start with the SQLite header); restore it from a backup")
    if len(head) < HEADER_SIZE:
        raise CorruptError(f"the project database {path} is damaged: only {len(head)} bytes, shorter "
                           f"than a SQLite header (truncated?); restore it from a backup")
    raw_page = int.from_bytes(head[16:18], "big")
    page_size = 65536 if raw_page == 1 else raw_page
    if page_size < 512 or page_size & (page_size - 1):
        raise CorruptError(f"the project database {path} is damaged: its header gives a page size "
                           f"of {raw_page}; restore it from a backup")
    # The page count in the header is only valid when written by the same change as the counter.
    counter, valid_for = head[24:28], head[92:96]
    pages = int.from_bytes(head[28:32], "big") if counter == valid_for else None
    header = Header(st.st_size, page_size, pages or None, int.from_bytes(head[68:72], "big"),
                    int.from_bytes(head[60:64], "big", signed=True))
    # With a write-ahead log beside it, the file may lag behind its header (a checkpoint that was
    # cut short); SQLite completes it from the log, so only a file without one is judged here.
    if header.pages and not has_wal(path) and st.st_size < header.pages * page_size:
        raise CorruptError(f"the project database {path} is damaged: it is {st.st_size:,} bytes but its "
                           f"header says {header.pages * page_size:,} (truncated?); restore it from a backup")
    return header


def check_file(path: str, migrations: list[str]) -> bool:
    """Decide whether ``path`` is a ralif project database that this version can open, before
    anything is written to it. Returns True when it carries the marker, False for a ralif database
    from before the marker. Raises a :class:`StoreError` subclass, leaving the file untouched, for
    anything else."""
    header = read_header(path)
    if header.application_id == APPLICATION_ID:
        _check_version(path, header.user_version, migrations)
        return True
    if header.application_id != 0:
        raise NotRalifError(f"not a ralif project: {path} is a SQLite database of another program "
                            f"(application id 0x{header.application_id:08x}); it was left untouched")
    return _check_unmarked(path, migrations)


def _check_version(path: str, version: int, migrations: list[str]) -> None:
    if version > len(migrations):
        raise NewerSchemaError(f"{path} was written by a newer ralif (schema {version}, this version "
                               f"reads up to {len(migrations)}); upgrade ralif to open it")


def _check_unmarked(path: str, migrations: list[str]) -> bool:
    # A marker committed recently may still be in the write-ahead log only: SQLite reads the log,
    # a plain header read does not. Without a log, an immutable open reads the file and creates,
    # locks and changes nothing; with one, a read-only open reads it (the log is already there).
    try:
        conn = inspect_connection(path)
    except sqlite3.DatabaseError as exc:
        raise CorruptError(f"the project database {path} is damaged ({exc}); restore it from a backup") from exc
    try:
        app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
        if app_id == APPLICATION_ID:
            _check_version(path, int(conn.execute("PRAGMA user_version").fetchone()[0]), migrations)
            return True
        if app_id != 0:
            raise NotRalifError(f"not a ralif project: {path} is a SQLite database of another program "
                                f"(application id 0x{app_id:08x}); it was left untouched")
        found = set(objects(conn))
        tables = sorted(n for t, n in found if t == "table")
        if not tables:
            raise NotRalifError(f"not a ralif project: {path} is an empty SQLite database (no tables); "
                                f"it was left untouched")
        version = 0
        if ("table", "schema_version") in found:
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            version = int(row[0] or 0) if row and isinstance(row[0], int) else 0
        if version > len(migrations):
            _check_version(path, version, migrations)
        if version < 1 or found != schema_objects(tuple(migrations[:version])):
            shown = ", ".join(tables[:6]) + (", …" if len(tables) > 6 else "")
            raise NotRalifError(f"not a ralif project: {path} is a SQLite database whose tables are not ralif's "
                                f"(it holds {shown}); it was left untouched")
        return False
    except sqlite3.DatabaseError as exc:
        raise CorruptError(f"the project database {path} is damaged ({exc}); restore it from a backup") from exc
    finally:
        conn.close()


def file_uri(path: str, **params: str) -> str:
    """A SQLite URI for ``path`` (any character a file name may hold is escaped)."""
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"file:{urllib.parse.quote(path, safe='/')}" + (f"?{query}" if query else "")


def inspect_connection(path: str) -> sqlite3.Connection:
    """A connection that reads ``path`` without creating, locking or changing any file where that
    can be avoided (see :func:`check_file`)."""
    if has_wal(path):
        try:
            conn = sqlite3.connect(file_uri(path, mode="ro"), uri=True, isolation_level=None)
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            return conn
        except sqlite3.OperationalError:
            pass    # a read-only folder without the log's index: read the file alone
    conn = sqlite3.connect(file_uri(path, mode="ro", immutable="1"), uri=True, isolation_level=None)
    conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    return conn


def primary_code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF


def translate(exc: BaseException, path: str, explicit_readonly: bool = False) -> StoreError | None:
    """The :class:`StoreError` a user should see for ``exc`` raised while using the database at
    ``path``, or None when it is not one of the faults this module names."""
    folder = str(Path(path).parent)
    code = primary_code(exc) if isinstance(exc, sqlite3.Error) else None
    err = exc.errno if isinstance(exc, OSError) else None
    if code == SQLITE_FULL or err == errno.ENOSPC or err == errno.EDQUOT:
        return disk_full(folder)
    if code == SQLITE_READONLY or err == errno.EROFS:
        return read_only(folder, explicit_readonly)
    if code in (SQLITE_CORRUPT, SQLITE_NOTADB):
        return CorruptError(f"the project database {path} is damaged ({exc}); restore it from a backup")
    return None


def disk_full(folder: str) -> DiskFullError:
    return DiskFullError(f"the disk holding the project folder {folder} is full: this change was not saved "
                         f"(everything saved before it is kept). Free some space and try again")


def read_only(folder: str, explicit: bool = False) -> ReadOnlyError:
    if explicit:
        return ReadOnlyError(f"the project in {folder} was opened read-only: this change was not saved; "
                             f"open it again without read-only to make changes")
    return ReadOnlyError(f"the project folder {folder} is read-only: ralif can show and export this project "
                         f"but not save changes to it. Make the folder writable (or copy it somewhere "
                         f"writable) to label")


def writable(path: str) -> bool:
    """Whether this process may write the database at ``path``, its folder and its side files
    (SQLite needs to create its write-ahead log beside the database)."""
    folder = os.path.dirname(path) or "."
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        return False
    return all(os.access(p, os.W_OK) for p in sidecars(path) if os.path.exists(p))


def file_fault(exc: BaseException, path: str | os.PathLike[str]) -> StoreError | None:
    """The :class:`StoreError` for ``exc`` raised while writing a project file other than the
    database (a model, an export, a status file), naming that file; None for other faults."""
    err = exc.errno if isinstance(exc, OSError) else None
    if err in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(f"the disk is full: {path} could not be written (nothing saved before is lost). "
                             f"Free some space and try again")
    if err in (errno.EROFS, errno.EACCES, errno.EPERM):
        return ReadOnlyError(f"{path} cannot be written: its folder is read-only for ralif ({os.strerror(err)}). "
                             f"Make it writable, or choose a writable folder")
    return None
