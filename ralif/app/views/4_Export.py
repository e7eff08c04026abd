"""Export page: labels as CSV or JSON, the labeled images as an ImageFolder tree, the current model.

Every export is written by the library (atomically, under ``<project>/exports/`` unless another
folder is given) and the page shows where it went; CSV, JSON and the model can also be downloaded.
"""

from __future__ import annotations

import datetime as dt
import io
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import streamlit as st

from ralif.project.exports import model_classes_note
from ralif.ui import common, errors
from ralif.ui.state import require_project
from ralif.ui.text import code, lit

common.setup_page("Export")
project = require_project()
common.sidebar(project)
st.title("Export")

progress = project.progress()
st.caption(f"{progress.labeled:,} labeled and {progress.unsure:,} skipped pool images, "
           f"{progress.test_labeled:,} labeled held-out images. Exports go to "
           f"{code(common.display_path(project.folder / 'exports'))} "
           f"unless you name another folder.")
if project.readonly:
    st.info("This project is open read-only (its folder cannot be written): name a folder you can write "
            "for the labels and the ImageFolder export.")

# Paths of this tab's exports of this project, so their download buttons survive reruns (and a
# project opened next in the tab does not offer the last one's files).
DONE_KEY = f"export_done:{project.folder}"
done: dict[str, str] = st.session_state.setdefault(DONE_KEY, {})


def _dest(folder: str, stem: str, suffix: str) -> Path | None:
    """``<folder>/<stem>-<time><suffix>`` for a folder typed by the user, or None for the default place."""
    if not folder.strip():
        return None
    return Path(folder.strip()).expanduser() / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}{suffix}"


def _zip_folder(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, f"{folder.name}/{f.relative_to(folder)}")
    return buf.getvalue()


EXPORT_ERRORS: tuple[type[BaseException], ...] = (*errors.USER_ERRORS, ValueError)


def _run(kind: str, export: Callable[[], Path]) -> None:
    try:
        path = export()
    except EXPORT_ERRORS as exc:
        errors.show_error(exc, f"{kind} export failed.")
        return
    done[kind] = str(path)
    st.toast(f"{kind} written to {code(common.display_path(path))}")


def _written(kind: str, mime: str | None = None) -> None:
    """Where the last export of ``kind`` went, and a download for files and the model."""
    path = Path(done[kind]) if kind in done else None
    if path is None or not path.exists():
        return
    st.success(f"Written to {code(common.display_path(path))}")
    # wrap: a long file name takes a second line in a narrow column instead of being cut off.
    if path.is_file():
        st.download_button(f"Download {lit(path.name)}", path.read_bytes(), file_name=path.name, mime=mime,
                           key=f"dl-{kind}", on_click="ignore", icon=":material/download:", wrap=True)
    elif kind == "Model":
        st.download_button(f"Download {lit(path.name)}.zip", _zip_folder(path), file_name=f"{path.name}.zip",
                           mime="application/zip", key=f"dl-{kind}", on_click="ignore",
                           icon=":material/download:", wrap=True)


labels_col, model_col = st.columns(2, gap="large")
with labels_col:
    st.subheader("Labels")
    unsure = st.checkbox("Include skipped (unsure) images", value=False, key="export_unsure",
                         help="They get an empty label and state 'unsure'.")
    dest = st.text_input("Folder (optional)", key="export_labels_dest",
                         placeholder="default: the project's exports folder")
    # A row that is as wide as its buttons (and wraps when the column is narrow): columns of fixed
    # shares cut the buttons' words off at 1280 pixels.
    buttons = st.container(horizontal=True)
    if buttons.button("Export labels as CSV", type="primary", key="export_csv",
                      disabled=not (progress.labeled or unsure)):
        _run("CSV", lambda: project.export_csv(_dest(dest, "labels", ".csv"), include_unsure=unsure))
    if buttons.button("Export labels as JSON", key="export_json", disabled=not (progress.labeled or unsure)):
        _run("JSON", lambda: project.export_json(_dest(dest, "labels", ".json"), include_unsure=unsure))
    _written("CSV", "text/csv")
    _written("JSON", "application/json")
    st.caption("CSV columns: path, label, round, time (UTC), source, split, image_id. JSON: the class names in "
               "order and one record per label.")

    st.subheader("ImageFolder")
    mode = st.radio("Files", ["copy", "symlink"], horizontal=True, key="export_mode",
                    format_func={"copy": "Copies", "symlink": "Symbolic links (no extra space)"}.get)
    split = st.checkbox("Separate pool/ and test/ folders", key="export_split")
    folder = st.text_input("Folder (optional)", key="export_folder_dest",
                           placeholder="default: exports/imagefolder-<time>")
    if st.button("Export ImageFolder", key="export_imagefolder", disabled=not progress.labeled, wrap=True):
        target = Path(folder).expanduser() if folder.strip() else None
        _run("ImageFolder", lambda: project.export_imagefolder(target, mode=mode or "copy", split_folders=split))
    _written("ImageFolder")
    st.caption("One folder per class (names made safe for every file system), ready for torchvision's "
               "ImageFolder, and labels.csv with every image's class as named here: import that file to "
               "get the same class names back.")

with model_col:
    st.subheader("Model")
    weights = project.current_model_path()
    if weights is None:
        st.info("No model yet: it is trained by the first round that has labels of at least two classes.")
    else:
        st.caption(f"The model of the last round: {code(weights.name)}. The export holds its weights and a JSON "
                   f"description (classes, encoder), loadable with `ralif predict --model <folder>`.")
        # Classes renamed, merged or deleted since that round: the export maps to the current ones.
        note = model_classes_note(project)
        if note is not None:
            st.info(note)
        if st.button("Export model", type="primary", key="export_model", wrap=True):
            _run("Model", lambda: project.export_model())
        _written("Model")

# The whole width: in a half column the table's last column was out of sight.
st.subheader("Earlier exports")
exports = sorted((project.folder / "exports").glob("[!.]*"), key=lambda f: f.stat().st_mtime, reverse=True)
if exports:
    st.dataframe([{"name": f.name + ("/" if f.is_dir() else ""),
                   "written": dt.datetime.fromtimestamp(f.stat().st_mtime).strftime("%Y-%m-%d %H:%M:%S"),
                   "size": f"{f.stat().st_size / 1024:,.1f} KiB" if f.is_file() else "folder"}
                  for f in exports[:50]], hide_index=True)
else:
    st.caption("None yet.")
