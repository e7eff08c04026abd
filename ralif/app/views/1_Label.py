"""Label the pending batch with the keyboard; submit it to train the model and get the next one."""

from __future__ import annotations

import streamlit as st

from ralif.project import Project, ProjectError
from ralif.ui import common, earlier, errors, round_panel
from ralif.ui.grid import apply_pending, batch_items, label_grid, save_problem, tab_memory
from ralif.ui.quality_panel import render_audit
from ralif.ui.state import require_project
from ralif.ui.text import lit

common.setup_page("Label")
project = require_project()
memory = tab_memory(project)

# Actions sent by the grids since the last run are written before anything is drawn, so every
# count below already includes them.
main = apply_pending(project, "label_grid", memory)
browse = apply_pending(project, "browse_grid", memory)
outcome = ("", "")
if main.submit is not None:
    # The library's one rule: unanswered images stay unlabeled, and the grid's second Enter is the
    # explicit yes that lets the batch go with some left (the notice says how many).
    try:
        notice = project.submit_and_start(main.submit, allow_unanswered=main.allow_unanswered)
        outcome = (notice.kind, lit(notice.message))
    except errors.USER_ERRORS as exc:
        # A full disk or a read-only folder: the batch stays, with every answer in it, and the
        # grid stays too, so that Enter can submit again once the cause is fixed.
        outcome = ("error", errors.error_text(exc, "The batch was not submitted."))
        why = save_problem(exc)
        memory.notice("label_grid", f"The batch was not submitted{': ' + why if why else ''}. Your answers are "
                                    "kept; press Enter to submit again once this is fixed.", "error")
start_error = round_panel.ensure_running(project)


def _fill_with_oracle(p: Project) -> None:
    try:
        res = p.oracle_label_batch()
    except ProjectError as exc:
        common.flash("error", lit(exc))
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
            common.flash("error", lit(exc))
    if added:
        common.flash("success", f"Added {len(added)} class(es): {', '.join(map(lit, added))}.")


# Tile sizes: image height in pixels. Medium fits two rows of five under the header at 1280×720.
TILE_PX = {"small": 96, "medium": 120, "large": 160}

prog = project.progress()
common.sidebar(project, prog)
with st.sidebar:
    tile_size = st.select_slider("Tile size", list(TILE_PX), value="medium", key="label_tile_size",
                                 help="Smaller tiles show more images at once. After a change (or on Esc) "
                                      "the keys go back to the images.")
    # In the sidebar: every pixel above the grid is a row of pictures less.
    with st.expander("Model accuracy (random audit images)"):
        audit = render_audit(project, heading=False, compact=True)
# Every pixel above the grid is a row of pictures less: Streamlit's top padding is cut to what
# its header bar needs, and the page title is folded into the line of counts.
st.html("<style>[data-testid=stMainBlockContainer]{padding-top:3.9rem;padding-bottom:3rem}"
        "[data-testid=stMainBlockContainer] [data-testid=stVerticalBlock]{gap:0.6rem}"
        "[data-testid=stMainBlockContainer] h1{font-size:1.25rem;padding:0;white-space:nowrap;overflow:hidden;"
        "text-overflow:ellipsis}</style>")
# Fixed slots: the grid must keep its place in the page from run to run (a message or a button
# that comes and goes above it would otherwise make the browser rebuild it and lose its focus).
header, notes, status_slot, grid_slot = (st.container() for _ in range(4))

batch = project.pending_batch()
oracle = bool(batch and project.settings.get("simulated_oracle"))
# At 1280x720 the title's share holds "Label · CIFAR-10 demo" and the oracle's its whole button text.
title_col, counts_col, tools = header.columns([2.2, 3.8, 2] if oracle else [2.2, 5.8, 0.01],
                                              vertical_alignment="center")
title_col.title(f"Label · {lit(project.name)}", anchor=False)
per_class = ", ".join(f"{lit(name)} {n:,}" for name, n in prog.per_class.items()) or "no classes yet"
counts_col.markdown(common.progress_line(prog), help=f"Labeled per class: {per_class}")
with notes:
    common.show_flash()
    common.show(*outcome)
    if start_error:
        common.show("error", lit(start_error))
    for kind, text in main.messages + browse.messages:
        common.show(kind, text)

with status_slot:
    status = round_panel.status_panel(project)
classes = project.classes()

if batch:
    if oracle:
        tools.button("Fill the rest with true labels", key="oracle_fill",
                     on_click=_fill_with_oracle, args=(project,), disabled=prog.pending_done >= prog.pending,
                     help="Simulated oracle: demo and simulation projects know every image's true class; this "
                          "answers the unanswered images of the batch with it. Switch it off on the Classes "
                          "page.", width="stretch", wrap=True)
    if not classes:
        with notes.form("quick_classes"):
            st.markdown("**This project has no classes yet.** Name them to start labeling; keys 1–9 and 0 "
                        "go to the first ten in this order and stay with their class.")
            names = st.text_input("Class names, separated by commas", placeholder="cat, dog, bird",
                                  key="quick_class_names")
            if st.form_submit_button("Add classes", type="primary"):
                _add_classes(project, names)
                st.rerun()
    with grid_slot:
        px = TILE_PX.get(tile_size, TILE_PX["medium"])
        number = project.pending_round()
        label_grid(key="label_grid", items=batch_items(batch, px, classes, audit=project.audit_images(number),
                                                      truth=project.truth_map()),
                   classes=classes, mode="batch", batch_id=number, acked=main.acked,
                   memory=memory, project=project, focus_hint=main.focus_hint, capture_page_keys=True,
                   image_px=px, sticky=True, accept=audit.accept)
elif status.get("status") not in round_panel.ACTIVE and status.get("status") != "failed":
    grid_slot.info("There is no batch to label: every pool image is labeled or skipped.")

earlier.panel(project, memory, browse, expanded=not batch)
