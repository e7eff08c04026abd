"""Classes (add, rename, merge, delete; labels follow) and the project's settings."""

from __future__ import annotations

from typing import Any

import streamlit as st

from ralif.project import ProjectError
from ralif.strategies import REGISTRY
from ralif.ui import common
from ralif.ui.state import require_project
from ralif.ui.text import code, counted, lit

MERGE_KEY = "ralif_merge_pending"
# A change's outcome, by the place it is shown ({place: [(kind, text)]}): next to the form that made
# it, where the person is, not at the top of a page they may have scrolled down.
RESULT_KEY = "ralif_classes_result"
# What each class dropdown showed selected ({key: label}), and the class each label shown so far
# stands for ({label: class id}): see _pick.
SHOWN_KEY = "ralif_classes_shown"
SEEN_KEY = "ralif_classes_seen"
CLEAR_RENAME = "ralif_rename_clear"
TABS = ["Add", "Rename", "Merge", "Delete"]
CLASS_COLUMN = 150      # pixels: the counts beside it stay in view at 1280 pixels wide

common.setup_page("Classes")
project = require_project()
common.sidebar(project)
st.title(f"Classes and settings · {lit(project.name)}")
# Messages from other pages. The container is there on every run, with or without a message, so
# the elements below keep their places (a box that comes and goes used to reset the tabs).
with st.container():
    common.show_flash()


def _chosen(value: int | None) -> int:
    if value is None:
        raise ProjectError("choose a class first")
    return int(value)


def _done(place: str, text: str, kind: str = "success") -> None:
    _tell(place, text, kind)
    st.rerun()


def _tell(place: str, text: str, kind: str = "success") -> None:
    """``text`` (Markdown, user text escaped) to show where the page calls ``_result(place)``: later
    in this run, or in the next one (after a change, which reruns the page)."""
    st.session_state.setdefault(RESULT_KEY, {}).setdefault(place, []).append((kind, text))


def _result(place: str) -> None:
    for kind, text in st.session_state.get(RESULT_KEY, {}).pop(place, []):
        common.show(kind, text)


classes = project.classes()
by_id = {c.id: c for c in classes}
CLASS_EDITS = ("merge", "delete-class")


def _label(cid: int) -> str:
    c = by_id[cid]
    return f"{c.name} ({c.count:,} labeled)"


def _pick(label: str, key: str, *, avoid: int | None = None) -> int | None:
    """A dropdown of the classes that always shows the current name and count of the class chosen.

    The browser keeps the text of the option it showed chosen, and Streamlit sends it again only
    when the value is set from the script: after a rename, merge or undo the old name and count
    stayed in the box. So the value is set again whenever its text changed, and a text the browser
    still holds from before (a choice not yet submitted) is read as the class it stood for. A
    class that is gone (merged, deleted) gives way to the first class other than ``avoid``."""
    shown = st.session_state.setdefault(SHOWN_KEY, {})
    seen = st.session_state.setdefault(SEEN_KEY, {})
    if not by_id:
        st.session_state.pop(key, None)
        return st.selectbox(label, [], key=key)
    held: Any = st.session_state.get(key)
    wanted: Any = seen.get(held) if isinstance(held, str) else held
    current = wanted if wanted in by_id else next((c for c in by_id if c != avoid), next(iter(by_id)))
    if key not in st.session_state or current != held or shown.get(key) != _label(current):
        st.session_state[key] = current
    value = st.selectbox(label, list(by_id), format_func=_label, key=key)
    shown[key] = _label(value) if value is not None and value in by_id else None
    seen.update({_label(c): c for c in by_id})
    return value


table, actions = st.columns([2, 3], gap="large")
with table:
    st.subheader("Classes")
    if classes:
        # The name column has a set width (a long name is cut, in full on hover) so that the counts
        # stay in view however long a name is.
        st.dataframe([{"key": c.hotkey or "", "class": c.name, "labeled": c.count} for c in classes],
                     hide_index=True, width="stretch",
                     column_config={"key": st.column_config.TextColumn("key", width=48),
                                    "class": st.column_config.TextColumn("class", width=CLASS_COLUMN),
                                    "labeled": st.column_config.NumberColumn("labeled", width=72)})
    else:
        st.info("No classes yet: add the first one.")
    st.caption("Each class keeps its key on the Label page through every change; a new class takes the next "
               "free key. Classes past the tenth are found with / on the Label page.")

with actions:
    st.subheader("Change classes")
    st.caption("Labels follow every change: a renamed class keeps its labels, a merge moves them, a deleted "
               "class leaves its images unlabeled. The label history keeps the old answers.")
    # Keyed and stateful: the tab chosen stays chosen through the runs a change makes.
    add_tab, rename_tab, merge_tab, delete_tab = st.tabs(TABS, key="classes_tab", on_change="rerun")
    with add_tab:
        with st.form("add_class", clear_on_submit=True, border=False):
            new_name = st.text_input("New class name", key="add_name")
            if st.form_submit_button("Add class"):
                try:
                    added = project.add_class(new_name)
                except ProjectError as exc:
                    st.error(lit(exc))
                else:
                    # The name as stored (spaces collapsed), the one the class list will show.
                    _done("add", f"Added class '{lit(next(c.name for c in project.classes() if c.id == added))}'.")
        _result("add")

    with rename_tab:
        if st.session_state.pop(CLEAR_RENAME, False):
            st.session_state["rename_to"] = ""
        with st.form("rename_class", border=False):
            target = _pick("Class", "rename_which")
            renamed = st.text_input("New name", key="rename_to")
            if st.form_submit_button("Rename", disabled=not classes):
                try:
                    which = _chosen(target)
                    old = by_id[which].name
                    # Enter pressed again in the field, which keeps the name typed, is no rename.
                    same = " ".join(str(renamed).split()) == old
                    if not same:
                        project.rename_class(which, renamed)
                except (ProjectError, KeyError, TypeError) as exc:
                    st.error(lit(exc))
                else:
                    if same:
                        st.info(f"'{lit(old)}' already has that name; nothing changed.")
                    else:
                        new = next(c.name for c in project.classes() if c.id == which)
                        st.session_state[CLEAR_RENAME] = True
                        _done("rename", f"Renamed '{lit(old)}' to '{lit(new)}'; its labels keep the class.")
        _result("rename")

    with merge_tab:
        # The question goes above the form, filled in below once the form has run: right under the
        # tabs it is in view at once, with its buttons, however short the window.
        confirm_box = st.container()
        with st.form("merge_class", border=False):
            into_now = st.session_state.get("merge_into")
            source = _pick("Move every label of", "merge_from", avoid=into_now if into_now in by_id else None)
            into = _pick("into", "merge_into", avoid=source)
            if st.form_submit_button("Merge", disabled=len(classes) < 2):
                if source is None or into is None or source == into:
                    st.error("Choose two different classes.")
                else:
                    # Nothing is merged yet: the counts are shown and a second, explicit click does it.
                    st.session_state[MERGE_KEY] = (source, into)
        _result("merge")
        pending = st.session_state.get(MERGE_KEY)
        if pending and all(c in by_id for c in pending):
            src, dst = (by_id[c] for c in pending)
            with confirm_box, st.container(border=True):
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
                        _done("merge", f"Merged '{lit(src.name)}' into '{lit(dst.name)}': "
                                       f"{counted(moved, 'label')} moved.")
                if no.button("Cancel", key="merge_cancel"):
                    st.session_state.pop(MERGE_KEY, None)
                    st.rerun()

    with delete_tab:
        with st.form("delete_class", border=False):
            doomed = _pick("Class", "delete_which")
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
                        _done("delete", f"Deleted '{lit(by_id[doomed].name)}'; {counted(cleared, 'image')} "
                                        f"{'is' if cleared == 1 else 'are'} unlabeled again.")
        _result("delete")

    # Merges and deletes are one history action each: undone here, also after a reload.
    edits = project.recent_actions(CLASS_EDITS, limit=5)
    if edits:
        st.markdown("**Recent class changes**")
    # Where the list was: undoing the last change empties it, and the outcome still shows here.
    _result("undo")
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
                _done("undo", lit(f"Undone: {act.summary}. " + (f"Class back: {back}. " if back else "")
                                  + f"{counted(len(res.restored), 'label')} restored"
                                  + (f"; {len(res.conflicts):,} changed since were left as they are."
                                     if res.conflicts else ".")))

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
            _tell("settings", f"The options {code(spec)} are for another strategy than {lit(strategy)}; "
                              f"saved {lit(strategy)} with its default options.", "warning")
        try:
            project.update_settings(strategy=chosen, batch_size=int(batch_size), simulated_oracle=bool(oracle))
        except (ProjectError, ValueError) as exc:
            st.error(f"Settings not saved: {lit(exc)}")
        else:
            _done("settings", "Settings saved; they apply from the next round on.")
_result("settings")
