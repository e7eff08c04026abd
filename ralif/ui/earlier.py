"""The "relabel earlier images" panel: this tab's recent answers, and a browser over all images.

It uses the same grid component as the batch (keys work once a picture in it is clicked), so a
label changed here is written and versioned exactly like one given in the batch.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from ralif.project import ImageRow, Project, ProjectError
from ralif.ui.grid import Applied, TabMemory, label_grid, row_items
from ralif.ui.text import code, lit

PAGE_SIZE = 24
_VIEW_KEY = "ralif_earlier_view"
_WHICH_KEY = "earlier_which"
_SPLIT_KEY = "earlier_split"
_OPEN_KEY = "ralif_earlier_open"       # open the panel on the next Label page run, once
_PAGES_KEY = "ralif_earlier_pages"      # keyset paging: the after_id of every page shown so far


def _which_options(project: Project) -> dict[str, str | int]:
    options: dict[str, str | int] = {"Labeled": "labeled", "Skipped": "unsure", "Unlabeled": "unlabeled",
                                     "All": "all"}
    # No counts in the names: a changing option list would reset the choice after every label.
    for c in project.classes():
        options[f"Class: {c.name}"] = c.id
    return options


def _rows_recent(project: Project, memory: TabMemory) -> list[ImageRow]:
    rows = []
    for image_id in memory.recent:
        try:
            rows.append(project.image(image_id))
        except ProjectError:
            continue
    return rows


def _rows_browse(project: Project) -> tuple[list[ImageRow], str]:
    """One page of the chosen images, and a name for that page (a new page resets the grid's focus)."""
    options = _which_options(project)
    cols = st.columns([3, 2, 2, 2])
    label = cols[0].selectbox("Show", list(options), key=_WHICH_KEY)
    which = options[label] if label is not None else "labeled"
    split = cols[1].selectbox("Split", ["pool", "test"], key=_SPLIT_KEY,
                              help="The held-out test images can be labeled too; they score the model.") or "pool"
    jump = cols[2].number_input("Go to image id", min_value=0, step=1, value=0, key="earlier_jump",
                                help="0 shows the list; an image id shows that image.")
    name_filter = cols[3].text_input("File name contains", key="earlier_name",
                                     help="Finds, among all the images the choices beside it show, those whose "
                                          "path (file name or folders) contains this text; letters A-Z match in "
                                          "either case.")
    if jump:
        try:
            return [project.image(int(jump))], f"image {jump}"
        except ProjectError as exc:
            st.warning(lit(exc))
            return [], "none"
    # A new search starts again at its first page.
    state_key = (str(project.folder), str(which), split, name_filter)
    pages: list[int] = st.session_state.get(_PAGES_KEY, {}).get(state_key, [0])
    rows = project.images_page(which, split=split, after_id=pages[-1], limit=PAGE_SIZE + 1, path_contains=name_filter)
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    # One row as wide as its parts (fixed column shares cut "← Previous" off at 1280 pixels).
    nav = st.container(horizontal=True, vertical_alignment="center")
    if nav.button("← Previous", key="earlier_prev", disabled=len(pages) < 2):
        st.session_state.setdefault(_PAGES_KEY, {})[state_key] = pages[:-1]
        st.rerun()
    if nav.button("Next →", key="earlier_next", disabled=not more):
        st.session_state.setdefault(_PAGES_KEY, {})[state_key] = [*pages, rows[-1].image_id]
        st.rerun()
    found = f" whose path contains {code(name_filter)}" if name_filter else ""
    nav.caption(f"Page {len(pages)} · images {rows[0].image_id if rows else '-'} to "
                f"{rows[-1].image_id if rows else '-'}{found}")
    return rows, f"{which}:{split}:{pages[-1]}:{name_filter}"


def open_on_held_out() -> None:
    """The next Label page opens this panel on the held-out images that have no label (the
    Progress page's way to the labels that score the model)."""
    st.session_state[_VIEW_KEY] = "Browse all"
    st.session_state[_WHICH_KEY] = "Unlabeled"
    st.session_state[_SPLIT_KEY] = "test"
    st.session_state[_OPEN_KEY] = True


def panel(project: Project, memory: TabMemory, applied: Applied, expanded: bool) -> None:
    # A fixed key gives the panel one identity from run to run, whatever comes and goes above it
    # (the round's status, the notes, the box saying there is no batch), so the browser keeps it
    # open or closed as the user left it instead of drawing a new, closed one.
    expanded = bool(st.session_state.pop(_OPEN_KEY, False)) or expanded
    # One key per project: a panel left open in one project does not open itself in the next.
    with st.expander("Relabel earlier images", expanded=expanded, key=f"earlier_panel:{project.folder}"):
        # The view's start lives in the session state (not default=): open_on_held_out sets it too.
        st.session_state.setdefault(_VIEW_KEY, "Recent (this tab)")
        view = st.segmented_control("View", ["Recent (this tab)", "Browse all"], key=_VIEW_KEY,
                                    label_visibility="collapsed")
        if view == "Browse all":
            rows, page_id = _rows_browse(project)
            empty = "No images match."
        else:
            rows, page_id = _rows_recent(project, memory), "recent"
            empty = ("Images you label in this tab are listed here, newest first, so a slip can be "
                     "fixed at once. Use 'Browse all' for older ones.")
        items: list[dict[str, Any]] = row_items(rows, 128)
        label_grid(key="browse_grid", items=items, classes=project.classes(), mode="browse",
                   batch_id=page_id, acked=applied.acked, memory=memory, project=project,
                   focus_hint=applied.focus_hint, image_px=128, empty=empty)
