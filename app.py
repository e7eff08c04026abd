"""Entry point of the ralif labeling app (``make app``): the navigation and the home page.

The home page opens a project or creates one. On the very first launch, when no project exists
yet, the bundled CIFAR-10 demo is created and opened, so the first thing a new user sees is a
batch to label (offline, on a CPU). Every other page is a file in ``pages/``, listed in the order
of its number prefix.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path

import streamlit as st

from ralif.project import Project, ProjectError
from ralif.strategies import REGISTRY
from ralif.ui import common, errors, projects, round_panel
from ralif.ui.literal import code, lit
from ralif.ui.state import client_id, current_project, projects_root, set_project

HERE = Path(__file__).resolve().parent
LABEL_PAGE = "pages/1_Label.py"
REPORT_KEY = "ralif_import_report"
DEMO_TRIED_KEY = "ralif_demo_tried"

MODELS = {"clip-linear": "CLIP ViT-B/16 + linear head (recommended)",
          "resnet18": "ResNet18 trained on your labels"}
MODEL_HELP = ("CLIP: a frozen image encoder (its weights are downloaded once, then cached) with a linear "
              "classifier retrained every round; fast on a CPU. ResNet18: the whole network is trained on "
              "your labels every round; slower, a GPU helps.")
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
    "ignore": "Ignore them",
}


def first_launch(root: Path) -> None:
    """No project at all: make the demo and go straight to labeling it."""
    if projects.find_projects(root) or st.session_state.get(DEMO_TRIED_KEY):
        return
    st.session_state[DEMO_TRIED_KEY] = True
    try:
        with st.spinner("Creating the demo project (2,000 CIFAR-10 images) and its first batch…"):
            demo = projects.ensure_demo(root, client_id())
    except (FileNotFoundError, ProjectError, OSError) as exc:
        common.flash("warning", f"The demo project could not be created: {lit(exc)}")
        return
    set_project(demo)
    common.flash("success", "Welcome! This is the demo project: label the batch with the number keys, "
                            "then press Enter.")
    st.switch_page(LABEL_PAGE)


def project_list(root: Path, project: Project | None) -> None:
    st.subheader("Projects")
    st.caption(f"Projects live in {code(common.display_path(root))} "
               "(set `RALIF_PROJECTS` to use another folder).")
    found = [projects.summarize(f) for f in projects.find_projects(root)]
    if not found:
        st.info("No project yet. Create one below.")
    for s in found:
        cols = st.columns([4, 3, 2])
        is_open = project is not None and project.folder == s.folder.resolve()
        cols[0].markdown(f"**{lit(s.name)}**" + (" · open" if is_open else "") + f"  \n{code(s.folder.name)}")
        if s.error:
            cols[1].error(lit(s.error))
            continue
        cols[1].markdown(f"{s.labeled:,} of {s.pool:,} labeled  \nround {s.round} · {lit(s.status or 'no round')}")
        if cols[2].button("Continue labeling" if is_open else "Open", key=f"open-{s.folder.name}",
                          type="primary" if is_open else "secondary"):
            set_project(s.folder)
            st.switch_page(LABEL_PAGE)

    with st.expander("Open a project folder elsewhere"):
        other = st.text_input("Project folder", key="open_other", placeholder="/data/my-project").strip()
        if st.button("Open folder", key="open_other_btn"):
            try:
                Project.open(other)
            except errors.USER_ERRORS as exc:
                errors.show_error(exc, f"Cannot open {other}.")
            else:
                set_project(other)
                st.switch_page(LABEL_PAGE)


def create_form(root: Path) -> None:
    st.subheader("New project")
    with st.form("create"):
        name = st.text_input("Project name", placeholder="e.g. Street signs", key="new_name")
        source_text = st.text_input(
            "Images", key="new_source", placeholder="/data/photos  or  /data/imagefolder  or  /data/list.csv",
            help="A folder of images (searched recursively), an ImageFolder (one subfolder per class, "
                 "optionally under train/ val/ test/), or a CSV manifest with a `path` column and an "
                 "optional `label` column.")
        c1, c2 = st.columns(2)
        layout = c1.selectbox("Folder layout", ["auto", "imagefolder", "flat"], key="new_layout",
                              help="auto: subfolders are classes when every image sits in one; "
                                   "flat: ignore subfolders")
        known = c2.selectbox("Labels found in the source", list(KNOWN), format_func=KNOWN.get,
                             key="new_known")
        model = c1.selectbox("Model", list(MODELS), format_func=MODELS.get, help=MODEL_HELP, key="new_model")
        names = ["ralif"] + [n for n in REGISTRY if n != "ralif"]
        strategy = c2.selectbox("Selection strategy", names, key="new_strategy",
                                format_func=lambda n: STRATEGY_HELP.get(n, n), help=STRATEGY_DOC)
        batch_size = c1.number_input("Batch size", min_value=1, max_value=1000, value=20, step=1,
                                     key="new_batch", help="Images to label per round")
        held = c2.selectbox("Held-out set (scores the model after every round)", list(HELD), key="new_held",
                            format_func=HELD.get)
        share = c1.slider("Held-out share (with 'A share of the images')", 0.05, 0.5, 0.1, 0.05,
                          key="new_share")
        held_path = c2.text_input("Held-out folder or CSV (with 'A separate folder or CSV')",
                                  key="new_held_path")
        with st.expander("Advanced"):
            spec = st.text_input("Strategy options", placeholder="ralif(rule=single)", key="new_spec",
                                 help="A full strategy spec overrides the choice above; "
                                      "`python -m ralif strategies` lists the options.")
        if not st.form_submit_button("Create project", type="primary"):
            return

    source, problem = projects.check_source(source_text)
    test: object = None
    if problem is None and held == "share":
        test = float(share)
    elif problem is None and held == "path":
        test, held_problem = projects.check_source(held_path)
        if held_problem:
            problem = f"Held-out set: {held_problem}"
    if problem is None and not name.strip():
        problem = "Give the project a name."
    if problem or source is None:
        st.error(lit(problem))
        return
    try:
        with st.spinner("Reading and checking every image…"):
            new, report = projects.create_project(
                root, name, source, model=model, strategy=spec.strip() or strategy,
                batch_size=int(batch_size), test=test, known_labels=known, layout=layout, client=client_id())
    except ProjectError as exc:
        st.error(f"The project was not created: {lit(exc)}")
        return
    set_project(new.folder)
    error = round_panel.start(new)
    st.session_state[REPORT_KEY] = {"folder": str(new.folder), "report": asdict(report), "error": error}
    st.rerun()


def import_report() -> None:
    """What the import of the project just created found: bad files by name, duplicates."""
    shown = st.session_state.get(REPORT_KEY)
    if not shown:
        return
    rep = shown["report"]
    folder = Path(shown["folder"])
    st.success(f"Created **{lit(folder.name)}**: {rep['pool']:,} pool images, {rep['test']:,} held out, "
               f"{len(rep['classes_added'])} classes, {rep['labels']:,} labels imported. The first batch "
               f"is being picked in the background.")
    if shown.get("error"):
        st.error(lit(shown["error"]))
    if rep["problems"]:
        st.warning(f"{len(rep['problems'])} file(s) could not be read and were skipped:")
        st.dataframe([{"file": Path(p).name, "folder": str(Path(p).parent), "reason": r}
                      for p, r in rep["problems"]], hide_index=True, width="stretch")
    if rep["duplicates"]:
        st.warning(f"{rep['skipped_duplicates']} duplicate file(s) skipped (identical bytes; the first copy "
                   f"is kept):")
        st.dataframe([{"kept": g[0], "skipped": ", ".join(Path(p).name for p in g[1:])}
                      for g in rep["duplicates"]], hide_index=True, width="stretch")
    if rep.get("label_conflicts"):
        st.warning(f"{len(rep['label_conflicts'])} image(s) appear under two different labels; each was "
                   f"imported once, without a label, so you can decide:")
        st.dataframe([{"image": text} for text in rep["label_conflicts"]], hide_index=True, width="stretch")
    if st.button("Start labeling", type="primary", key="report_go"):
        st.session_state.pop(REPORT_KEY, None)
        st.switch_page(LABEL_PAGE)


def home() -> None:
    """Projects: open one, create one, see what an import found."""
    root = projects_root()
    first_launch(root)
    project = current_project(stop_on_error=False)
    common.sidebar(project)
    st.title("ralif: label images with active learning")
    st.caption("ralif picks the images whose labels should help the model most (RALIF: influence "
               "functions on the model's last layer) and retrains in the background after every batch.")
    common.show_flash()
    import_report()
    project_list(root, project)
    create_form(root)


def page_title(path: Path) -> str:
    """``pages/2_Map.py`` -> ``Map`` (the number only orders the pages)."""
    return re.sub(r"^\d+[_ ]*", "", path.stem).replace("_", " ") or path.stem


common.setup_page("ralif")
home_page = st.Page(home, title="Projects", icon=":material/home:", default=True, url_path="projects")
common.set_home(home_page)
pages = [home_page]
numbered = sorted((HERE / "pages").glob("[0-9]*.py"),
                  key=lambda p: (int(re.match(r"\d+", p.name)[0]), p.name))
pages += [st.Page(str(p.relative_to(HERE)), title=page_title(p)) for p in numbered]
try:
    st.navigation(pages).run()
except errors.USER_ERRORS as exc:
    # A file problem met while a page runs (disk full, read-only folder, a replaced project):
    # a clear box instead of a traceback, the details in the log it names.
    errors.show_error(exc, "This page could not be shown.")
