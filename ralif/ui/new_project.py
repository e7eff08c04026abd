"""The home page's new-project form: scan and preview a folder or CSV manifest, decide what each top
folder (or label) is, choose the encoder, then create.

Nothing is written before "Create project": the scan only reads (every file is checked, with a
progress bar), and the plan it gives (:func:`ralif.folder_scan.build_plan`) is what the project is
made from, so what the preview shows is what is imported.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import streamlit as st

from ralif.encoder_catalog import EncoderChoice
from ralif.folder_scan import DECISIONS, ImportPlan, SourceGroup, SourcePreview, build_plan, preview_source
from ralif.project import ProjectError
from ralif.strategies import REGISTRY
from ralif.ui import encoder_picker, projects, round_panel
from ralif.ui.state import client_id, set_project
from ralif.ui.text import code, counted, lit

PREVIEW_KEY = "ralif_new_preview"
REPORT_KEY = "ralif_import_report"
_SCAN_ASKED = "ralif_new_scan_asked"   # the path field was entered: scan it this run
STRATEGY_HELP = {
    "ralif": "RALIF (recommended)",
    "random": "random (baseline)",
    "uncertainty": "uncertainty (entropy)",
    "coreset": "coreset (k-center)",
    "badge": "BADGE (gradient k-means++)",
    "gradnorm": "gradient norm",
}
STRATEGY_DOC = ("RALIF: the images whose labels should lower the model's loss on the whole pool most "
                "(influence functions), then a diverse batch among the best 10 %. The others are the usual "
                "baselines: random, highest entropy, k-center coreset, BADGE, gradient norm.")
HELD = {"none": "None (or the source's test/ folder)", "share": "A share of the images",
        "path": "A separate folder or CSV"}
KNOWN = {
    "import": "Use them as labels",
    "truth": "Hide them: they answer the simulated oracle and score the held-out set",
}
DECISION_TEXT = {"class": "a class (its name)", "unlabeled": "unlabeled images", "ignore": "ignored"}
_THUMB_PX = 56


def _scan(text: str, slot: Any) -> None:
    """Scan the source with a progress bar in ``slot``; the preview (or the problem) is kept in the
    session."""
    source, problem = projects.check_source(text)
    if problem or source is None:
        st.session_state[PREVIEW_KEY] = {"text": text, "error": problem}
        return
    bar = slot.progress(0.0, text="Checking every image…")
    last = [0.0]

    def update(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.1 or done == total:
            last[0] = now
            bar.progress(done / max(total, 1), text=f"Checking every image: {done:,} of {total:,}")

    try:
        preview = preview_source(source, progress=update)
    except (OSError, ValueError) as exc:
        st.session_state[PREVIEW_KEY] = {"text": text, "error": str(exc)}
    else:
        scans = int(st.session_state.get(PREVIEW_KEY, {}).get("scan", 0)) + 1
        st.session_state[PREVIEW_KEY] = {"text": text, "preview": preview, "scan": scans}
    finally:
        bar.empty()


def _columns() -> list[Any]:
    return st.columns([3, 3, 2])


def _group_row(g: SourceGroup, key: str, what: str) -> str:
    c1, c2, c3 = _columns()
    # Markdown bold fails on text with a space inside either end ("** x **" shows its asterisks), and
    # the class name is the name with its spaces collapsed anyway: that is what is shown in bold.
    shown = " ".join(g.title.split()) or "(a name of spaces only)"
    options = list(DECISIONS) if g.can_be_class else [d for d in DECISIONS if d != "class"]
    # The layout's header names the column; the label itself is what a screen reader announces for
    # each box, so it names the folder.
    decision = str(c3.selectbox(f"Import {lit(shown)} as", options, index=options.index(g.proposed), key=key,
                                format_func=lambda d: DECISION_TEXT[d], label_visibility="collapsed"))
    splits = ""
    if len(g.per_split) > 1 or set(g.per_split) - {"all"}:
        splits = " (" + ", ".join(f"{n:,} {s}" for s, n in sorted(g.per_split.items())) + ")"
    bad = f" · {g.unreadable:,} unreadable" if g.unreadable else ""
    c1.markdown(f"**{lit(shown)}** · {counted(g.count, 'image')}{splits}{bad}  \n{lit(g.reason)}")
    if shown != g.title:
        c1.caption(f"The {what} name is exactly “{_spaced(g.title)}”: spaces at its ends, and repeated "
                   f"spaces, are not part of a class name.")
    if g.note:
        c1.caption(lit(g.note))
    if g.problem and decision == "class":
        c1.error(f"This {what} cannot be a class: {lit(g.problem)}. Rename the {what}, or import its images "
                 f"as unlabeled or ignore them.")
    if g.samples:
        c2.image(g.samples, width=_THUMB_PX)
    return decision


def _spaced(text: str) -> str:
    """``text`` for Markdown with every space kept: the page would fold a run of spaces into one and
    drop one at an end, and those spaces are the point of showing the exact name."""
    return lit(text).replace(" ", "\u00a0")


def _files_table(files: list[tuple[str, str]]) -> None:
    st.dataframe([{"file": Path(p).name, "folder": str(Path(p).parent), "reason": r} for p, r in files],
                 hide_index=True, width="stretch")


def show_preview(preview: SourcePreview, scan: int) -> dict[str, str]:
    """The layout, every group with its count, thumbnails and decision, the files that will be
    skipped (unreadable, or not images); returns the decisions by group key."""
    st.markdown(f"**Found:** {lit(preview.description)}")
    st.caption(f"Source: {code(preview.source)}")
    for note in preview.notes:
        st.info(lit(note))
    decisions = {}
    what = "folder" if preview.kind == "folder" else "label"
    with st.container(border=True):
        for column, title in zip(_columns(), (what.capitalize(), "Examples", "Import as")):
            column.caption(f"**{title}**")
        for i, g in enumerate(preview.groups):
            decisions[g.key] = _group_row(g, f"new_dec_{scan}_{i}", what)
    if preview.problems:
        with st.expander(f"{counted(len(preview.problems), 'file')} cannot be read and will be skipped"):
            _files_table(preview.problems)
    if preview.other_files:
        n = len(preview.other_files)
        with st.expander(f"{counted(n, 'file')} {'is not an image' if n == 1 else 'are not images'} and "
                         f"will be skipped"):
            _files_table(preview.other_files)
    return decisions


def _merges_beside(preview: SourcePreview, decisions: dict[str, str]) -> list[str]:
    """The folders that make one class, for a plan refused over a name that cannot be a class: the
    user fixing that row should not learn of the merge only afterwards."""
    with_rows_fixed = {**decisions, **{g.key: "unlabeled" for g in preview.groups if g.problem}}
    try:
        return build_plan(preview, with_rows_fixed).merged
    except ValueError:
        return []


def show_plan(plan: ImportPlan) -> None:
    """What will be imported, counted as the import will count it, and the identical copies it skips
    (of the images the decisions keep: a copy in an ignored folder is not imported anyway)."""
    st.markdown(f"**Will import:** {lit(plan.summary())}")
    for merged in plan.merged:
        st.info(lit(merged[:1].upper() + merged[1:]))
    if plan.duplicates:
        groups = counted(len(plan.duplicates), "group")
        with st.expander(f"{groups} of identical files (the first copy is kept)"):
            st.dataframe([{"kept": g[0], "skipped": ", ".join(g[1:])} for g in plan.duplicates],
                         hide_index=True, width="stretch")
    if plan.label_conflicts:
        with st.expander(f"{counted(len(plan.label_conflicts), 'image')} under two different labels "
                         f"(imported once, without a label)"):
            st.dataframe([{"image": text} for text in plan.label_conflicts], hide_index=True, width="stretch")


def _path_entered() -> None:
    """A new path typed and entered: scanned at once (an emptied field waits for a path)."""
    if str(st.session_state.get("new_source") or "").strip():
        st.session_state[_SCAN_ASKED] = True
        _new_attempt()


def _new_attempt() -> None:
    """A new scan or creation starts: the report of the project made before is no longer news, and
    left at the top of the page it would read as the outcome of this attempt. A button's callback
    runs before the page does, so the report is gone before the page draws it."""
    st.session_state.pop(REPORT_KEY, None)


def _settings() -> dict[str, Any]:
    c1, c2 = st.columns(2)
    names = ["ralif"] + [n for n in REGISTRY if n != "ralif"]
    out: dict[str, Any] = {
        "strategy": c1.selectbox("Selection strategy", names, key="new_strategy",
                                 format_func=lambda n: STRATEGY_HELP.get(n, n), help=STRATEGY_DOC),
        "batch_size": c2.number_input("Batch size", min_value=1, max_value=1000, value=20, step=1,
                                      key="new_batch", help="Images to label per round"),
        "known": c1.selectbox("Images in class folders", list(KNOWN), format_func=lambda k: KNOWN[k], key="new_known"),
        "held": c2.selectbox("Held-out set (scores the model after every round)", list(HELD), key="new_held",
                             format_func=lambda h: HELD[h]),
    }
    if out["held"] == "share":
        out["share"] = c1.slider("Held-out share", 0.05, 0.5, 0.1, 0.05, key="new_share")
    elif out["held"] == "path":
        out["held_path"] = c2.text_input("Held-out folder or CSV", key="new_held_path")
    with st.expander("Advanced"):
        out["spec"] = st.text_input("Strategy options", placeholder="ralif(rule=single)", key="new_spec",
                                    help="A full strategy spec overrides the choice above; "
                                         "`python -m ralif strategies` lists the options.")
    return out


def _held_out(opts: dict[str, Any]) -> tuple[Any, str | None]:
    if opts["held"] == "share":
        return float(opts["share"]), None
    if opts["held"] == "path":
        test, problem = projects.check_source(opts.get("held_path") or "")
        return test, f"Held-out set: {problem}" if problem else None
    return None, None


def _create(root: Path, name: str, plan: ImportPlan, choice: EncoderChoice,
            opts: dict[str, Any]) -> None:
    test, problem = _held_out(opts)
    if problem is None and not name.strip():
        problem = "Give the project a name."
    if problem:
        st.error(lit(problem))
        return
    if not encoder_picker.ensure_weights(choice, "new"):
        st.warning("The project was not created; choose another encoder or give a file, then create it.")
        return
    kwargs = choice.create_kwargs()
    try:
        with st.spinner("Creating the project…"):
            new, report = projects.create_project(
                root, name, plan.image_lists(), model=kwargs["model"], encoder=kwargs["encoder"],
                resnet=kwargs.get("resnet"), strategy=str(opts["spec"]).strip() or str(opts["strategy"]),
                batch_size=int(opts["batch_size"]), test=test, known_labels=str(opts["known"]),
                layout="auto", client=client_id())
    except ProjectError as exc:
        st.error(f"The project was not created: {lit(exc)}")
        return
    set_project(new.folder)
    error = round_panel.start(new)
    st.session_state.pop(PREVIEW_KEY, None)
    st.session_state[REPORT_KEY] = {"folder": str(new.folder), "report": asdict(report), "error": error}
    st.rerun()


def create_section(root: Path) -> None:
    """Name and source, "Scan and preview", the preview with a decision per folder, the encoder
    choice and the other settings, then "Create project"."""
    st.subheader("New project")
    name = st.text_input("Project name", placeholder="e.g. Street signs", key="new_name")
    # Enter in the path (or leaving the field with a new path) scans it, as the button does.
    text = st.text_input(
        "Images", key="new_source", placeholder="/data/photos  or  /data/imagefolder  or  /data/list.csv",
        on_change=_path_entered,
        help="A folder of images (searched recursively), an ImageFolder (one subfolder per class, "
             "optionally under train/ val/ test/), or a CSV manifest with a `path` column and an "
             "optional `label` column. Enter scans it.").strip()
    clicked = st.button("Scan and preview", key="new_scan", on_click=_new_attempt)
    clicked = bool(st.session_state.pop(_SCAN_ASKED, False)) or clicked
    # Always there, so the page keeps the same shape while a scan or a download blocks the run
    # (Streamlit shows the previous run's elements by position until they are replaced).
    slot = st.empty()
    if clicked:
        _scan(text, slot)
    state = st.session_state.get(PREVIEW_KEY)
    if not state:
        st.caption("The scan reads every image and shows what it found; nothing is written until you "
                   "press Create project.")
        return
    if state["text"] != text:
        st.info("The images path changed: press Scan and preview again.")
        return
    if state.get("error"):
        st.error(lit(state["error"]))
        return
    preview: SourcePreview = state["preview"]
    decisions = show_preview(preview, int(state["scan"]))
    plan: ImportPlan | None = None
    try:
        plan = build_plan(preview, decisions)
    except ValueError as exc:
        st.error(lit(exc))
        for merged in _merges_beside(preview, decisions):
            st.info(lit(merged[:1].upper() + merged[1:]))
    else:
        show_plan(plan)
    st.markdown("##### Encoder and model")
    choice = encoder_picker.pick_encoder("new", labels=plan.labeled if plan else None,
                                         pool=len(plan.imported) if plan else None)
    opts = _settings()
    ready = plan is not None and choice is not None
    create = st.button("Create project", type="primary", key="new_create", disabled=not ready,
                       on_click=_new_attempt)
    if plan is None:
        st.caption("Create project is off until the problem shown under the preview is solved.")
    if create and ready:
        assert plan is not None and choice is not None
        _create(root, name, plan, choice, opts)
