"""Classes (add, rename, merge, delete; labels follow) and the project's settings."""

from __future__ import annotations

import streamlit as st

from ralif.project import ProjectError
from ralif.strategies import REGISTRY
from ralif.ui import common
from ralif.ui.state import require_project
from ralif.ui.text import code, counted, lit

MERGE_KEY = "ralif_merge_pending"

common.setup_page("Classes")
project = require_project()
common.sidebar(project)
st.title(f"Classes and settings · {lit(project.name)}")
common.show_flash()


def _chosen(value: int | None) -> int:
    if value is None:
        raise ProjectError("choose a class first")
    return int(value)


def _done(text: str) -> None:
    common.flash("success", text)
    st.rerun()


classes = project.classes()
by_id = {c.id: c for c in classes}
CLASS_EDITS = ("merge", "delete-class")

def _label(cid: int) -> str:
    c = by_id[cid]
    return f"{c.name} ({c.count:,} labeled)"


table, actions = st.columns([2, 3], gap="large")
with table:
    st.subheader("Classes")
    if classes:
        st.dataframe([{"key": c.hotkey or "", "class": c.name, "labeled": c.count} for c in classes],
                      hide_index=True, width="stretch")
    else:
        st.info("No classes yet: add the first one.")
    st.caption("Each class keeps its key on the Label page through every change; a new class takes the next "
               "free key. Classes past the tenth are found with / on the Label page.")

with actions:
    st.subheader("Change classes")
    st.caption("Labels follow every change: a renamed class keeps its labels, a merge moves them, a deleted "
               "class leaves its images unlabeled. The label history keeps the old answers.")
    add_tab, rename_tab, merge_tab, delete_tab = st.tabs(["Add", "Rename", "Merge", "Delete"])
    with add_tab, st.form("add_class", clear_on_submit=True, border=False):
        new_name = st.text_input("New class name", key="add_name")
        if st.form_submit_button("Add class"):
            try:
                added = project.add_class(new_name)
            except ProjectError as exc:
                st.error(lit(exc))
            else:
                # The name as stored (spaces collapsed), the one the class list will show.
                _done(f"Added class '{lit(next(c.name for c in project.classes() if c.id == added))}'.")

    with rename_tab, st.form("rename_class", border=False):
        target = st.selectbox("Class", list(by_id), format_func=_label, key="rename_which")
        renamed = st.text_input("New name", key="rename_to")
        if st.form_submit_button("Rename", disabled=not classes):
            try:
                old = by_id[_chosen(target)].name
                project.rename_class(_chosen(target), renamed)
            except (ProjectError, KeyError, TypeError) as exc:
                st.error(lit(exc))
            else:
                new = next(c.name for c in project.classes() if c.id == target)
                _done(f"Renamed '{lit(old)}' to '{lit(new)}'; its labels keep the class.")

    with merge_tab, st.form("merge_class", border=False):
        source = st.selectbox("Move every label of", list(by_id), format_func=_label, key="merge_from")
        into = st.selectbox("into", list(by_id), format_func=_label, key="merge_into",
                            index=1 if len(by_id) > 1 else 0)
        if st.form_submit_button("Merge", disabled=len(classes) < 2):
            if source is None or into is None or source == into:
                st.error("Choose two different classes.")
            else:
                # Nothing is merged yet: the counts are shown and a second, explicit click does it.
                st.session_state[MERGE_KEY] = (source, into)
    pending = st.session_state.get(MERGE_KEY)
    if pending and all(c in by_id for c in pending):
        src, dst = (by_id[c] for c in pending)
        with merge_tab, st.container(border=True):
            st.warning(f"Merge {lit(src.name)} into {lit(dst.name)}? {counted(src.count, 'label')} "
                       f"{'moves' if src.count == 1 else 'move'} to "
                       f"{lit(dst.name)} (which then has {src.count + dst.count:,}), and the class "
                       f"{lit(src.name)} is removed. The label history keeps the old answers.")
            yes, no = st.columns(2)
            if yes.button(f"Merge: move {counted(src.count, 'label')}", type="primary", key="merge_confirm"):
                st.session_state.pop(MERGE_KEY, None)
                try:
                    moved = project.merge_classes(src.id, dst.id)
                except (ProjectError, TypeError) as exc:
                    st.error(lit(exc))
                else:
                    _done(f"Merged '{lit(src.name)}' into '{lit(dst.name)}': {counted(moved, 'label')} moved.")
            if no.button("Cancel", key="merge_cancel"):
                st.session_state.pop(MERGE_KEY, None)
                st.rerun()

    with delete_tab, st.form("delete_class", border=False):
        doomed = st.selectbox("Class", list(by_id), format_func=_label, key="delete_which")
        sure = st.checkbox("Its labeled images become unlabeled", key="delete_sure")
        if st.form_submit_button("Delete", disabled=not classes) and doomed is not None:
            if not sure:
                st.warning(f"Tick the box to confirm: deleting {lit(by_id[doomed].name)} removes "
                           f"{counted(by_id[doomed].count, 'label')}; "
                           f"{'that image becomes' if by_id[doomed].count == 1 else 'those images become'} "
                           f"unlabeled.")
            else:
                try:
                    cleared = project.delete_class(doomed)
                except (ProjectError, TypeError) as exc:
                    st.error(lit(exc))
                else:
                    _done(f"Deleted '{lit(by_id[doomed].name)}'; {counted(cleared, 'image')} "
                          f"{'is' if cleared == 1 else 'are'} unlabeled again.")

    # Merges and deletes are one history action each: undone here, also after a reload.
    edits = project.recent_actions(CLASS_EDITS, limit=5)
    if edits:
        st.markdown("**Recent class changes**")
    for act in edits:
        what, button = st.columns([4, 1], vertical_alignment="center")
        what.markdown(lit(act.summary[:1].upper() + act.summary[1:]))
        if button.button("Undo", key=f"undo_class_{act.id}"):
            try:
                res = project.undo_action(act.id)
            except ProjectError as exc:
                st.error(lit(exc))
            else:
                back = ", ".join(repr(n) for n in res.classes_restored)
                _done(lit(f"Undone: {act.summary}. " + (f"Class back: {back}. " if back else "")
                          + f"{counted(len(res.restored), 'label')} restored"
                          + (f"; {len(res.conflicts):,} changed since were left as they are." if res.conflicts
                             else ".")))

# ------------------------------------------------------------------------- settings
st.subheader("Settings")
settings = project.settings
st.caption(f"Model: **{project.model_kind}** · features: {code(common.encoder_label(project.encoder_spec))}. "
           "Changes apply from the next round on.")
current = project.strategy
names = list(REGISTRY)
base = current.split("(")[0].strip().lower()
with st.form("settings"):
    c1, c2 = st.columns(2)
    strategy = c1.selectbox("Selection strategy", names, index=names.index(base) if base in names else 0,
                            key="set_strategy")
    spec = c1.text_input("Strategy options (full spec, optional)", value=current if "(" in current else "",
                         placeholder="ralif(rule=single)", key="set_spec",
                         help="Options for the strategy chosen above, as a full spec; "
                              "`python -m ralif strategies` lists them. Options written for another "
                              "strategy are not used.")
    batch_size = c2.number_input("Batch size", min_value=1, max_value=1000, value=int(project.batch_size),
                                 step=1, key="set_batch")
    oracle = c2.toggle("Simulated oracle", value=bool(settings.get("simulated_oracle")), key="set_oracle",
                       help="For demos and simulations on data whose true labels are known (hidden) in the "
                            "project: the Label page offers to answer a batch with them.")
    if st.form_submit_button("Save settings", type="primary"):
        spec = spec.strip()
        # The dropdown is what the user sees chosen: options written for another strategy (say, the
        # current one's, left in the field) must not silently win over it.
        chosen = spec if spec and spec.split("(")[0].strip().lower() == strategy else strategy
        if spec and chosen != spec:
            common.flash("warning", f"The options {code(spec)} are for another strategy than {lit(strategy)}; "
                                    f"saved {lit(strategy)} with its default options.")
        try:
            project.update_settings(strategy=chosen, batch_size=int(batch_size), simulated_oracle=bool(oracle))
        except (ProjectError, ValueError) as exc:
            st.error(f"Settings not saved: {lit(exc)}")
        else:
            _done("Settings saved; they apply from the next round on.")
