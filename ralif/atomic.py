"""Crash-safe file writes: readers see the old file or the new one, never a torn one.

The new content goes to a temporary file in the same folder, is fsynced, and replaces the target
with ``os.replace`` (atomic on POSIX and Windows); the folder is fsynced so the rename survives a
power loss too.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO


def fsync_dir(folder: str | os.PathLike) -> None:
    with contextlib.suppress(OSError, AttributeError):  # not every platform can open a folder
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_via_path(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """``write(temp_path)`` next to ``path``, fsync it, then replace ``path`` with it.

    Writers that only take a file name (plot libraries) use this directly; the temporary name keeps
    the target's suffix because some of them pick the format from it.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp{path.suffix}")
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
