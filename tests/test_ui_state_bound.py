"""The per-tab project cache is bounded: tabs that are gone do not keep a connection each."""

from __future__ import annotations

from ralif.project import Project
from ralif.ui import state


def test_open_projects_are_bounded(demo_project_no_round: Project) -> None:
    folder = str(demo_project_no_round.folder)
    state._open.clear()
    first = state._open(folder, "tab-0")
    assert state._open(folder, "tab-0") is first
    for i in range(1, state.MAX_OPEN_PROJECTS + 1):
        state._open(folder, f"tab-{i}")
    # The oldest tab's entry was evicted: it is opened again (a new object), not kept forever.
    assert state._open(folder, "tab-0") is not first
    state._open.clear()
