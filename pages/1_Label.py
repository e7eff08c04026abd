"""Label the pending batch with the keyboard; submit it to train the model and get the next one."""

from __future__ import annotations

import streamlit as st

from ralif.project import Project, ProjectError
from ralif.ui import common, earlier, round_panel
from ralif.ui.grid import apply_pending, batch_items, label_grid, tab_memory
from ralif.ui.state import require_project

common.setup_page("Label")
project = require_project()
memory = tab_memory(project)

# Actions sent by the grids since the last run are written before anything is drawn, so every
# count below already includes them.
main = apply_pending(project, "label_grid", memory)
browse = apply_pending(project, "browse_grid", memory)
outcome = ("", "")
if main.submit is not None:
    outcome = round_panel.submit_and_start(project, main.submit)
start_error = round_panel.ensure_running(project)


def _fill_with_oracle(p: Project) -> None:
    try:
        res = p.oracle_label_batch()
    except ProjectError as exc:
        common.flash("error", str(exc))
        return
    common.flash("success", f"The simulated oracle answered {res.changed} image(s) with their true labels. "
                            "Check them, then press Enter to submit.")


def _add_classes(p: Project, text: str) -> None:
    added = []
    for name in (n.strip() for n in text.split(",")):
        if not name:
            continue
        try:
            p.add_class(name)
            added.append(name)
        except ProjectError as exc:
            common.flash("error", str(exc))
    if added:
        common.flash("success", f"Added {len(added)} class(es): {', '.join(added)}.")


prog = project.progress()
common.sidebar(project, prog)
st.title(f"Label · {project.name}")
# Fixed slots: the grid must keep its place in the page from run to run (a message or a button
# that comes and goes above it would otherwise make the browser rebuild it and lose its focus).
header, notes, status_slot, tools, grid_slot = (st.container() for _ in range(5))

header.markdown(common.progress_line(prog))
header.caption(common.class_counts_line(prog))
with notes:
    common.show_flash()
    common.show(*outcome)
    if start_error:
        common.show("error", start_error)
    for kind, text in main.messages + browse.messages:
        common.show(kind, text)

with status_slot:
    status = round_panel.status_panel(project)
batch = project.pending_batch()
classes = project.classes()

if batch:
    if project.settings.get("simulated_oracle"):
        tools.button("Fill the rest of the batch with the true labels (simulated oracle)", key="oracle_fill",
                     on_click=_fill_with_oracle, args=(project,), disabled=prog.pending_done >= prog.pending,
                     help="Demo and simulation projects know every image's true class; this answers the "
                          "unanswered images of the batch with it. Switch it off on the Classes page.")
    if not classes:
        with tools.form("quick_classes"):
            st.markdown("**This project has no classes yet.** Name them to start labeling; keys 1–9 and 0 "
                        "follow this order (the Classes page can change it later).")
            names = st.text_input("Class names, separated by commas", placeholder="cat, dog, bird",
                                  key="quick_class_names")
            if st.form_submit_button("Add classes", type="primary"):
                _add_classes(project, names)
                st.rerun()
    with grid_slot:
        label_grid(key="label_grid", items=batch_items(batch, 160), classes=classes, mode="batch",
                   batch_id=project.pending_round(), acked=main.acked, memory=memory, project=project,
                   focus_hint=main.focus_hint, capture_page_keys=True)
elif status.get("status") not in round_panel.ACTIVE and status.get("status") != "failed":
    grid_slot.info("There is no batch to label: every pool image is labeled or skipped.")

earlier.panel(project, memory, browse, expanded=not batch)
