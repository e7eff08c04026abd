"""Entry point of the ralif labeling app (``make app``): the navigation and the home page.

The home page opens a project or creates one. On the very first launch, when no project exists
yet, the bundled CIFAR-10 demo is created and opened, so the first thing a new user sees is a
batch to label (offline, on a CPU). Every other page is a file in ``views/``, listed in the order
of its number prefix. The folder is not named ``pages``: Streamlit lists a folder of that name beside
the main script by itself, and until a run calls ``st.navigation`` a new server would show that
listing (a sidebar entry "app", "Page not found" for ``/projects``) instead of this navigation.
"""

from __future__ import annotations

import re
from pathlib import Path

import streamlit as st

from ralif.project import Project, ProjectError
from ralif.ui import common, encoder_picker, errors, new_project, projects
from ralif.ui.state import client_id, current_project, projects_root, set_project
from ralif.ui.text import code, counted, lit

HERE = Path(__file__).resolve().parent
LABEL_PAGE = common.LABEL_PAGE
REPORT_KEY = new_project.REPORT_KEY
DEMO_TRIED_KEY = "ralif_demo_tried"



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
        # A form, so that Enter in the field opens the folder as the button does (outside a form
        # Enter only stores the text).
        with st.form("open_other_form", border=False):
            other = st.text_input("Project folder", key="open_other", placeholder="/data/my-project").strip()
            submitted = st.form_submit_button("Open folder", key="open_other_btn")
        if submitted:
            open_elsewhere(other)


def open_elsewhere(folder: str) -> None:
    """Open the project in ``folder`` and go to labeling; a clear box when it cannot be opened."""
    if not folder:
        st.error("Type the path of a project folder first.")
        return
    try:
        Project.open(folder)
    except errors.USER_ERRORS as exc:
        errors.show_error(exc, f"Cannot open {folder}.")
    else:
        set_project(folder)
        st.switch_page(LABEL_PAGE)


def import_report() -> None:
    """What the import of the project just created found: bad files by name, duplicates."""
    shown = st.session_state.get(REPORT_KEY)
    if not shown:
        return
    rep = shown["report"]
    folder = Path(shown["folder"])
    st.success(f"Created **{lit(folder.name)}**: {counted(rep['pool'], 'pool image')}, {rep['test']:,} held out, "
               f"{counted(len(rep['classes_added']), 'class', 'classes')}, {counted(rep['labels'], 'label')} "
               f"imported. The first batch "
               f"is being picked in the background.")
    if shown.get("error"):
        st.error(lit(shown["error"]))
    if rep["problems"]:
        st.warning(f"{counted(len(rep['problems']), 'file')} could not be read and "
                   f"{'was' if len(rep['problems']) == 1 else 'were'} skipped:")
        st.dataframe([{"file": Path(p).name, "folder": str(Path(p).parent), "reason": r}
                      for p, r in rep["problems"]], hide_index=True, width="stretch")
    if rep["duplicates"]:
        st.warning(f"{counted(rep['skipped_duplicates'], 'duplicate file')} skipped (identical bytes; the "
                   f"first copy is kept):")
        st.dataframe([{"kept": g[0], "skipped": ", ".join(Path(p).name for p in g[1:])}
                      for g in rep["duplicates"]], hide_index=True, width="stretch")
    if rep.get("label_conflicts"):
        n_conf = len(rep["label_conflicts"])
        st.warning(f"{counted(n_conf, 'image')} {'appears' if n_conf == 1 else 'appear'} under two different "
                   f"labels; each was imported once, without a label, so you can decide:")
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
    if project is not None:
        encoder_picker.encoder_settings(project)
    new_project.create_section(root)


def page_title(path: Path) -> str:
    """``views/2_Map.py`` -> ``Map`` (the number only orders the pages)."""
    return re.sub(r"^\d+[_ ]*", "", path.stem).replace("_", " ") or path.stem


def to_home() -> None:
    """``/projects``, the Projects page's name, leads to the page itself (served at ``/``)."""
    st.switch_page(home_page)


common.setup_page("ralif")
home_page = st.Page(home, title="Projects", icon=":material/home:", default=True)
common.set_home(home_page)
# The default page is served at / whatever its url_path: without this hidden alias, /projects
# (the page's name) would be "Page not found".
pages = [home_page, st.Page(to_home, title="Projects", url_path="projects", visibility="hidden")]


def page_order(path: Path) -> tuple[int, str]:
    """``views/2_Map.py`` -> ``(2, "2_Map.py")``: pages in the order of their number prefix."""
    number = re.match(r"\d+", path.name)
    return (int(number[0]) if number else 0, path.name)


# Each page's URL (/Label, /Map, ...) comes from its file name, not from its folder.
numbered = sorted((HERE / "views").glob("[0-9]*.py"), key=page_order)
pages += [st.Page(str(p.relative_to(HERE)), title=page_title(p)) for p in numbered]
try:
    st.navigation(pages).run()
except errors.USER_ERRORS as exc:
    # A file problem met while a page runs (disk full, read-only folder, a replaced project):
    # a clear box instead of a traceback, the details in the log it names.
    errors.show_error(exc, "This page could not be shown.")
