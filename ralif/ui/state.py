"""Which project a browser tab has open, kept in ``st.session_state`` and shared by every page."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import streamlit as st

from ralif.project import Project
from ralif.project.store import DB_NAME, ProjectReplacedError
from ralif.ui import errors
from ralif.ui.common import home_link

PROJECT_KEY = "ralif_project_dir"
CLIENT_KEY = "ralif_client_id"
# The open project is also kept in the page address, so a reload (a new session) reopens it.
QUERY_KEY = "project"


def projects_root() -> Path:
    """Where new projects are created: $RALIF_PROJECTS, else ./ralif-projects."""
    return errors.projects_root()


def client_id() -> str:
    """A per-tab id: two tabs on one project are two clients, so undo and conflicts stay per tab."""
    if CLIENT_KEY not in st.session_state:
        st.session_state[CLIENT_KEY] = f"tab-{uuid.uuid4().hex[:8]}"
    return st.session_state[CLIENT_KEY]


def _url_value(folder: str) -> str:
    path = Path(folder)
    return path.name if path.parent == projects_root() else str(path)


def _from_url() -> str | None:
    value = st.query_params.get(QUERY_KEY)
    if not value:
        return None
    path = Path(value)
    folder = path if path.is_absolute() else projects_root() / path.name
    return str(folder.resolve()) if (folder / DB_NAME).is_file() else None


def set_project(folder: str | os.PathLike) -> None:
    st.session_state[PROJECT_KEY] = str(Path(folder).resolve())
    st.query_params[QUERY_KEY] = _url_value(st.session_state[PROJECT_KEY])


# One connection per tab, shared across its page runs, but bounded: a reload makes a new client id, so
# an unbounded cache would keep a Project (and its SQLite connection) for every tab ever opened. An
# evicted entry is simply reopened on the tab's next run.
MAX_OPEN_PROJECTS = 32


@st.cache_resource(show_spinner=False, max_entries=MAX_OPEN_PROJECTS)
def _open(folder: str, client: str) -> Project:
    return Project.open(folder, client=client)


def _refuse(folder: str, exc: BaseException, context: str, stop_on_error: bool) -> None:
    """Forget the tab's project, explain ``exc`` in a box and stop the page (unless asked not to)."""
    # Only this tab's entry: other tabs on other projects keep theirs.
    _open.clear(folder, client_id())
    st.session_state.pop(PROJECT_KEY, None)
    st.query_params.pop(QUERY_KEY, None)
    errors.show_error(exc, context)
    if stop_on_error:
        home_link()
        st.stop()


def current_project(stop_on_error: bool = True) -> Project | None:
    """The open project of this tab (one connection per tab, cached), or None.

    A project that cannot be opened (corrupt, not a ralif file, newer, unreadable) is explained in an
    error box, with the details in the app's log, and the page stops there (or, with
    ``stop_on_error=False``, goes on without a project). The database file's identity is checked on
    every page run: a folder replaced under the open project (restored from a backup) is reopened
    after the same checks as a first open, and one that is gone is refused, so nothing is written
    to a file that is no longer the project's."""
    folder = st.session_state.get(PROJECT_KEY)
    if not folder:
        folder = _from_url()
        if not folder:
            return None
        st.session_state[PROJECT_KEY] = folder
    if st.query_params.get(QUERY_KEY) != _url_value(folder):
        st.query_params[QUERY_KEY] = _url_value(folder)
    try:
        project = _open(folder, client_id())
    except errors.USER_ERRORS as exc:
        _refuse(folder, exc, f"The project in {folder} could not be opened.", stop_on_error)
        return None
    try:
        if project.store.check_identity():
            errors.write_log(ProjectReplacedError(f"{project.store.path} was replaced; reopened"),
                             f"The project in {folder} was replaced on disk and opened again.")
    except errors.USER_ERRORS as exc:
        _refuse(folder, exc, f"The project in {folder} can no longer be used.", stop_on_error)
        return None
    return project


def require_project() -> Project:
    """For pages that need a project: a clear message and a stop when none is open."""
    project = current_project()
    if project is None:
        st.info("No project is open. Open or create one on the home page.")
        home_link()
        st.stop()
    return project
