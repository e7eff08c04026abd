"""Crash-safe file writes: readers see the old file or the new one, never a torn one.

The new content goes to a temporary file in the same folder, is fsynced, and replaces the target
with ``os.replace`` (atomic on POSIX and Windows); the folder is fsynced so the rename survives a
power loss too. Folders (exports) are replaced the same way with :func:`replace_dir`.

A writer killed before its rename leaves its temporary behind under a hidden name that no reader
looks at. Temporaries name the process (and machine) that wrote them, so the next write of the
same target, and :func:`sweep_temps`, remove those whose writer is gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

# A temporary is kept while its writer may still be running; past this age it is abandoned
# whatever its process id says (that id may have been reused).
STALE_TEMP_S = 3600.0
# ``.<target name>.<pid>.<host tag><random>.tmp[<target suffix>]``, as made by :func:`temp_path`.
# The host tag keeps a process id from being looked up on another machine sharing the folder.
_HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:4]
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.(?P<token>[0-9a-f]{8,})\.tmp")


def fsync_dir(folder: str | os.PathLike) -> None:
    with contextlib.suppress(OSError, AttributeError):  # not every platform can open a folder
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def temp_path(path: str | os.PathLike) -> Path:
    """A hidden temporary name next to ``path`` for this process; it keeps the target's suffix
    because some writers pick the format from it."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{_HOST_TAG}{secrets.token_hex(4)}.tmp{path.suffix}")


def _writer_gone(pid: int, token: str) -> bool:
    if len(token) != 12 or token[:4] != _HOST_TAG or pid == os.getpid():
        return False
    try:
        import psutil
    except ImportError:
        return False
    return not psutil.pid_exists(pid)


def sweep_temps(folder: str | os.PathLike, name: str | None = None, max_age_s: float = STALE_TEMP_S) -> int:
    """Remove the temporaries (files or folders) that killed writers left in ``folder``: those
    whose process is gone, and any older than ``max_age_s``. ``name``: only the temporaries of
    that target. Returns how many were removed."""
    removed = 0
    try:
        entries = list(os.scandir(os.fspath(folder)))
    except OSError:
        return 0
    now = time.time()
    for entry in entries:
        m = _TEMP.match(entry.name)
        if m is None or (name is not None and m["name"] != name):
            continue
        try:
            stale = now - entry.stat(follow_symlinks=False).st_mtime > max_age_s
            if not (stale or _writer_gone(int(m["pid"]), m["token"])):
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed += 1
        except OSError:
            continue  # removed meanwhile by another sweep, or not ours to remove
    return removed


def atomic_write_via_path(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """``write(temp_path)`` next to ``path``, fsync it, then replace ``path`` with it.

    Writers that only take a file name (plot libraries) use this directly.
    """
    path = Path(path)
    sweep_temps(path.parent, path.name)
    tmp = temp_path(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> Path:
    """Write ``path`` through ``write(binary_file)`` atomically."""

    def to_file(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            write(f)

    return atomic_write_via_path(path, to_file)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, data: Any, **kwargs: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, **kwargs))


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the
    platform or file system cannot."""
    if sys.platform != "linux":
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False   # a C library without renameat2 (glibc before 2.28, some others)
    at_fdcwd, rename_exchange = -100, 2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def replace_dir(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Move the folder ``src`` (complete, typically at a :func:`temp_path` name) to ``dest``,
    replacing a folder there, so that ``dest`` is at every moment the old folder or the new one.

    A folder cannot be renamed over a non-empty one, so an existing ``dest`` is swapped with
    ``src`` in one step where the system can (Linux) and the old content, now at ``src``, is
    removed. Elsewhere the old folder is moved aside first, which leaves a short window without
    ``dest``.
    """
    src, dest = Path(src), Path(dest)
    if not dest.exists():
        os.replace(src, dest)
        fsync_dir(dest.parent)
        return
    if _exchange(src, dest):
        old = src
    else:
        old = temp_path(dest)
        os.replace(dest, old)
        try:
            os.replace(src, dest)
        except BaseException:
            os.replace(old, dest)
            raise
    fsync_dir(dest.parent)
    # Killed before this, the old folder stays under a temporary name until a sweep removes it.
    shutil.rmtree(old, ignore_errors=True)
