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

Schema changes go through ``MIGRATIONS`` (:mod:`ralif.project.schema`): a list of SQL scripts,
script *i* taking the schema from version *i* to *i + 1*. A database written by a newer ralif is
refused rather than guessed at.

Faults a user can meet (each a :class:`StoreError` subclass whose message names the file or folder;
see :mod:`ralif.project.dbfile` and docs/reliability.md):

* A file that is not a ralif database (another program's SQLite file, an empty or truncated file)
  is refused before anything is written to it, and left byte for byte as it was.
* A read-only folder opens read-only: reads work, a write raises :class:`ReadOnlyError`.
* A full disk rolls the write back and raises :class:`DiskFullError`; the connection stays usable,
  so the next write succeeds once there is space again.
* The file's identity (device, inode) is checked before and after every write and by
  :meth:`Store.check_identity`: a file replaced under an open project (a folder restored from a
  backup) is reopened, after the same checks as a first open, instead of being written blind; a
  file that disappeared raises :class:`ProjectGoneError` and nothing is written.

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

from ralif.project.dbfile import (
    APPLICATION_ID,
    SQLITE_CANTOPEN,
    SQLITE_READONLY,
    CorruptError,
    DiskFullError,
    NewerSchemaError,
    NotRalifError,
    ProjectGoneError,
    ProjectReplacedError,
    ReadOnlyError,
    StoreError,
    check_file,
    file_uri,
    has_wal,
    primary_code,
    read_only,
    translate,
    writable,
)
from ralif.project.schema import (
    HISTORY_SOURCES,
    LABEL_SOURCES,
    LABEL_STATES,
    MIGRATIONS,
    ROUND_STATUSES,
    SCHEMA_VERSION,
    SPLITS,
    statements,
)

__all__ = [
    "APPLICATION_ID", "DB_NAME", "HISTORY_SOURCES", "LABEL_SOURCES", "LABEL_STATES", "MIGRATIONS",
    "ROUND_STATUSES", "SCHEMA_VERSION", "SPLITS", "CorruptError", "DiskFullError", "NewerSchemaError",
    "NotRalifError", "ProjectGoneError", "ProjectReplacedError", "ReadOnlyError", "SplitCount", "Store",
    "StoreError", "fill_ids", "release",
]

DB_NAME = "project.sqlite"
BUSY_TIMEOUT_MS = 30_000

# Kept under its former name: migration scripts are split by the schema module now.
_statements = statements


class SplitCount(NamedTuple):
    images: int
    truths: int       # images with a hidden true class (simulations, demos)


Identity = tuple[int, int]


def _identity(path: str) -> Identity | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


class _Shared:
    """The process's connection to one database file, with the lock that serialises its use.
    ``ident`` is the (device, inode) of the file it was opened on; ``closed`` is set under
    ``lock`` when the connection is closed, so a user holding the lock knows to look it up again."""

    def __init__(self, path: str, create: bool, readonly: bool) -> None:
        self.pid = os.getpid()
        self.lock = threading.RLock()
        self.closed = False
        self.new = False
        before = _identity(path)
        if before is None and not create:
            raise ProjectGoneError(f"no project database at {path} (was the project folder moved or deleted?)")
        if before is None:
            self.new = True
        else:
            check_file(path, MIGRATIONS)
        self.readonly = readonly or not writable(path)
        if self.new and self.readonly:
            raise read_only(os.path.dirname(path))
        if self.readonly:
            conn = _open_readonly(path)
        else:
            try:
                conn = _open(path, create)
            except ReadOnlyError:
                # Read-only underneath although the permissions said otherwise (e.g. a file system
                # mounted read-only, which root's access checks do not always see).
                if self.new:
                    raise
                self.readonly = True
                conn = _open_readonly(path)
        self.conn = conn
        self.ident = _identity(path)
        if before is not None and self.ident != before:
            # Replaced between the check and the open: what was checked is not what is open.
            self.conn.close()
            raise ProjectReplacedError(f"the project database {path} was replaced while it was being "
                                       f"opened; open the project again")

    def close(self) -> None:
        with self.lock:
            if not self.closed:
                self.closed = True
                self.conn.close()


_REGISTRY: dict[str, _Shared] = {}
_REGISTRY_LOCK = threading.Lock()


def _configure(conn: sqlite3.Connection) -> None:
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    # Statement journals (every insert into a table with count triggers opens one) and the
    # temporary id tables stay in memory: on disk, importing a million images took twice as long.
    conn.execute("PRAGMA temp_store=MEMORY")


def _open(path: str, create: bool) -> sqlite3.Connection:
    # isolation_level=None: transactions are opened explicitly, so none stays open by accident.
    # mode=rw never creates a file: a database that vanished is not silently replaced by an empty one.
    conn = sqlite3.connect(file_uri(path, mode="rwc" if create else "rw"), uri=True,
                           timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"{path}: the file system does not support SQLite's WAL mode (got {mode!r}); "
                             f"keep the project on a local disk")
        conn.execute("PRAGMA synchronous=FULL")
        _configure(conn)
    except BaseException as exc:
        conn.close()
        mapped = translate(exc, path) if isinstance(exc, (sqlite3.Error, OSError)) else None
        if mapped is not None:
            raise mapped from exc
        raise
    return conn


def _open_readonly(path: str) -> sqlite3.Connection:
    """Read ``path`` in a folder this process cannot write. ``mode=ro`` reads the write-ahead log
    too but needs its index file (``-shm``) to exist or be creatable; without one, ``immutable``
    reads the database file alone, which is all there is when no log lies beside it."""
    uris = [file_uri(path, mode="ro")]
    if not has_wal(path):
        uris.append(file_uri(path, mode="ro", immutable="1"))
    last: sqlite3.Error | None = None
    for uri in uris:
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            _configure(conn)
            return conn
        except sqlite3.Error as exc:
            conn.close()
            last = exc
            if primary_code(exc) not in (SQLITE_READONLY, SQLITE_CANTOPEN):
                break
    folder = os.path.dirname(path)
    raise ReadOnlyError(f"the project folder {folder} is read-only and its database {path} cannot be read "
                        f"without writing beside it (an unfinished write-ahead log {path}-wal is there; "
                        f"{last}). Make the folder writable once, or copy the project somewhere writable")


def _shared(path: str, create: bool = False, readonly: bool = False) -> _Shared:
    with _REGISTRY_LOCK:
        entry = _REGISTRY.get(path)
        # A forked child must not use its parent's connection (SQLite forbids it).
        if entry is None or entry.pid != os.getpid() or entry.closed:
            entry = _Shared(path, create, readonly)
            _REGISTRY[path] = entry
        return entry


def _retire(path: str, entry: _Shared) -> None:
    """Close ``entry`` and forget it, unless another thread already put a newer one in its place.
    Closing a connection whose file was replaced is safe: SQLite sees that the file moved and
    neither checkpoints into nor deletes the log files now at that path."""
    with entry.lock:
        with _REGISTRY_LOCK:
            if _REGISTRY.get(path) is entry:
                del _REGISTRY[path]
        if entry.pid == os.getpid():
            entry.close()
        else:
            entry.closed = True


def release(path: str | os.PathLike[str]) -> None:
    """Close this process's connection to the database at ``path`` (e.g. before deleting it)."""
    key = os.path.realpath(path)
    with _REGISTRY_LOCK:
        entry = _REGISTRY.pop(key, None)
    if entry is not None:
        if entry.pid == os.getpid():
            entry.close()
        else:
            entry.closed = True


class Store:
    """Transactions on a project database; cheap to create, the connection is shared.

    ``readonly``: never write (a write raises :class:`ReadOnlyError`); a folder this process
    cannot write opens read-only without being asked."""

    def __init__(self, path: str | os.PathLike[str], create: bool = False, readonly: bool = False) -> None:
        p = Path(path)
        if create and not readonly:
            p.parent.mkdir(parents=True, exist_ok=True)
        self.path = os.path.realpath(p)
        self.explicit_readonly = readonly
        try:
            self._entry = _shared(self.path, create=create and not readonly, readonly=readonly)
        except OSError as exc:
            mapped = translate(exc, self.path)
            if mapped is None:
                raise
            raise mapped from exc
        self.check_identity()
        self._migrate()

    @property
    def folder(self) -> Path:
        return Path(self.path).parent

    @property
    def readonly(self) -> bool:
        """Whether writes are refused (asked for, or the folder cannot be written)."""
        return self.explicit_readonly or self._live().readonly

    def _live(self) -> _Shared:
        entry = self._entry
        if entry.closed or entry.pid != os.getpid():
            entry = self._entry = _shared(self.path, readonly=self.explicit_readonly)
        return entry

    @property
    def _conn(self) -> sqlite3.Connection:
        return self._live().conn

    @contextlib.contextmanager
    def _locked(self) -> Iterator[_Shared]:
        # Another thread may close the entry (file replaced) between looking it up and locking it.
        for _ in range(5):
            entry = self._live()
            with entry.lock:
                if not entry.closed:
                    yield entry
                    return
        raise StoreError(f"the project database {self.path} keeps being replaced; open the project again")

    def _fail(self, exc: BaseException) -> BaseException:
        mapped = translate(exc, self.path, self.explicit_readonly)
        if mapped is None:
            return exc
        mapped.__cause__ = exc
        return mapped

    # -- identity ----------------------------------------------------------------------------
    def check_identity(self) -> bool:
        """Make sure the open connection is to the file now at :attr:`path`. Returns True when
        the file had been replaced (e.g. the folder restored from a backup) and the new one was
        opened, after the same checks as a first open; raises :class:`ProjectGoneError` when
        there is no file there any more. Cheap (one ``stat``): call it on every page run."""
        entry = self._live()
        now = _identity(self.path)
        if now is None:
            raise ProjectGoneError(f"the project database {self.path} is gone (was the project folder moved "
                                   f"or deleted?); nothing was written. Restore the folder or open another project")
        if now == entry.ident:
            return False
        _retire(self.path, entry)
        self._entry = _shared(self.path, readonly=self.explicit_readonly)
        return True

    def _writable_entry(self) -> _Shared:
        if self.explicit_readonly:
            raise read_only(str(self.folder), explicit=True)
        self.check_identity()
        entry = self._live()
        if entry.readonly:
            # The folder may have been made writable since the project was opened.
            if not writable(self.path):
                raise read_only(str(self.folder))
            _retire(self.path, entry)
            entry = self._entry = _shared(self.path)
            if entry.readonly:
                raise read_only(str(self.folder))
        return entry

    # -- transactions ------------------------------------------------------------------------
    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, holding the database's write lock from its start. Raises
        :class:`ReadOnlyError`, :class:`DiskFullError` (rolled back: nothing half-written), or
        :class:`ProjectReplacedError` when the file was replaced while the change was saved."""
        self._writable_entry()
        with self._locked() as entry:
            conn = entry.conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._fail(exc) from None
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                self._rollback(entry)
                failure = self._fail(exc) if isinstance(exc, (sqlite3.Error, OSError)) else exc
                if failure is exc:
                    raise
                raise failure from None
            if _identity(self.path) != entry.ident:
                # Replaced or removed while this transaction ran: it went to the old file, so the
                # caller must not report it saved.
                raise ProjectReplacedError(
                    f"the project database {self.path} was replaced or removed while a change was being "
                    f"saved: the change is not in the current file. Repeat it")

    def _rollback(self, entry: _Shared) -> None:
        conn = entry.conn
        if not conn.in_transaction:
            return      # SQLite already rolled back (it does on a full disk)
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            # A connection that cannot roll back must not serve the next write.
            _retire(self.path, entry)

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for several queries (WAL readers never block writers)."""
        with self._locked() as entry:
            conn = entry.conn
            try:
                conn.execute("BEGIN")
            except sqlite3.Error as exc:
                raise self._fail(exc) from None
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")

    def query(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        with self._locked() as entry:
            try:
                return entry.conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                failure = self._fail(exc)
                if failure is exc:
                    raise
                raise failure from None

    def query_one(self, sql: str, params: Any = ()) -> sqlite3.Row | None:
        with self._locked() as entry:
            try:
                return entry.conn.execute(sql, params).fetchone()
            except sqlite3.Error as exc:
                failure = self._fail(exc)
                if failure is exc:
                    raise
                raise failure from None

    # -- schema ------------------------------------------------------------------------------
    def schema_version(self) -> int:
        with self._locked() as entry:
            exists = entry.conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'").fetchone()
            if not exists:
                return 0
            row = entry.conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            return int(row[0] or 0)

    def _migrate(self) -> None:
        current = self.schema_version()
        if current > SCHEMA_VERSION:
            raise NewerSchemaError(f"{self.path} was written by a newer ralif (schema {current}, this version "
                                   f"reads up to {SCHEMA_VERSION}); upgrade ralif to open it")
        row = self.query_one("PRAGMA application_id")
        marked = row is not None and int(row[0]) == APPLICATION_ID
        if current == SCHEMA_VERSION and marked:
            return
        if current == 0 and not self._live().new:
            # check_file refuses such files; this guards a file emptied after that check.
            raise NotRalifError(f"not a ralif project: {self.path} has no ralif tables; it was left untouched")
        if self.readonly:
            if current == SCHEMA_VERSION:
                return      # from before the marker, readable as it is; marked on the first write access
            raise ReadOnlyError(f"the project in {self.folder} was made by an older ralif and must be upgraded "
                                f"once (schema {current} to {SCHEMA_VERSION}), which needs write access; make the "
                                f"folder writable and open it again")
        with self.write() as conn:
            # Re-read under the write lock: another process may have migrated meanwhile.
            row = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'"
                               ).fetchone()
            current = int(conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0) \
                if row else 0
            for version in range(current, SCHEMA_VERSION):
                for statement in statements(MIGRATIONS[version]):
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version(version, applied_at) VALUES (?, ?)",
                             (version + 1, time.time()))
            # The marker goes in with the schema, in the same transaction.
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

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


def fill_ids(conn: sqlite3.Connection, ids: Any) -> int:
    """Put ``ids`` into the connection's temporary ``_ids`` table for set-based statements."""
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS _ids (id INTEGER PRIMARY KEY)")
    conn.execute("DELETE FROM _ids")
    conn.executemany("INSERT OR IGNORE INTO _ids(id) VALUES (?)", ((int(i),) for i in ids))
    return int(conn.execute("SELECT COUNT(*) FROM _ids").fetchone()[0])
