"""Errors shown to users as clear boxes, with the details written to a log file the box names.

A page must never show a Python traceback: a corrupt, foreign or newer project file, a read-only
folder or a full disk is something the user can act on once told plainly. :func:`show_error`
writes the traceback to ``ralif-app.log`` in the projects folder (or the system's temporary folder
when that one cannot be written) and shows the message, escaped, with the log's path.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import tempfile
import traceback
from pathlib import Path

import streamlit as st

from ralif.project import ProjectError
from ralif.project.store import (
    CorruptError,
    DiskFullError,
    NewerSchemaError,
    NotRalifError,
    ProjectGoneError,
    ProjectReplacedError,
    ReadOnlyError,
    StoreError,
)
from ralif.ui.text import code, lit

LOG_NAME = "ralif-app.log"
# What a page catches and explains; anything else is a bug and is still shown without a traceback
# (client.showErrorDetails = "none") with its details in the log.
USER_ERRORS: tuple[type[BaseException], ...] = (ProjectError, StoreError, sqlite3.DatabaseError, OSError)

_HINTS: tuple[tuple[type[BaseException], str], ...] = (
    (NotRalifError, "This file is not a ralif project; it was left as it was."),
    (NewerSchemaError, "The project was written by a newer ralif: update ralif to open it."),
    (CorruptError, "The project database is damaged: restore the folder from a backup."),
    (ReadOnlyError, "The folder is read-only: labels can be viewed but not changed."),
    (DiskFullError, "The disk is full: free some space; nothing already saved is lost."),
    (ProjectGoneError, "The project folder was moved or deleted: open it again from the Projects page."),
    (ProjectReplacedError, "The project folder was replaced: reload the page to open the new one."),
)


def projects_root() -> Path:
    """Where projects live: $RALIF_PROJECTS, else ./ralif-projects (the log file goes there too)."""
    return Path(os.environ.get("RALIF_PROJECTS") or "ralif-projects").resolve()


def log_file() -> Path:
    return projects_root() / LOG_NAME


def write_log(exc: BaseException, context: str) -> Path:
    """Append ``exc`` with its traceback to the app's log; returns the file written."""
    text = (f"--- {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')} {context}\n"
            + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    for path in (log_file(), Path(tempfile.gettempdir()) / LOG_NAME):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as f:
                f.write(text)
            return path
        except OSError:
            continue
    return log_file()


def hint(exc: BaseException) -> str | None:
    for kind, text in _HINTS:
        if isinstance(exc, kind):
            return text
    return None


def error_text(exc: BaseException, context: str) -> str:
    """The Markdown of the box: what failed, the message (literally), a hint, where the details are."""
    log = write_log(exc, context)
    parts = [f"**{lit(context)}**", lit(str(exc) or type(exc).__name__)]
    extra = hint(exc)
    if extra:
        parts.append(lit(extra))
    parts.append(f"Details are in {code(log)}.")
    return "  \n".join(parts)


def show_error(exc: BaseException, context: str) -> None:
    st.error(error_text(exc, context), icon=":material/error:")
