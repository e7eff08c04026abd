"""Exports of a project's labels and model.

Every export is written under a temporary name and moved into place with ``os.replace``, so a
reader (or a crash) never sees a half-written file or folder; an existing export folder is swapped
with the new one in one step where the system allows (:func:`ralif.atomic.replace_dir`), so a
crash while replacing it does not leave it missing either. ImageFolder exports turn class names
into safe folder names: nothing a user typed as a class name can reach outside the export folder;
the tree's ``labels.csv`` (a manifest: ``path,label``) keeps each image's class name as it is, so
importing that file (not the folders) gives back the same classes.
An exported model speaks the project's current classes: its columns are mapped through the renames,
merges and deletions made since its round (:func:`ralif.project.checkpoints.map_classes`).
CSV files are opened in spreadsheets, which run a cell starting with ``=``, ``+``, ``-`` or ``@`` as
a formula: such text cells get a leading ``'`` (:func:`ralif.csv_cells.spreadsheet_cell`), which the
manifest and label readers take off again.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ralif.atomic import atomic_write, replace_dir, sweep_temps, temp_path
from ralif.csv_cells import spreadsheet_cell
from ralif.project.dbfile import file_fault
from ralif.project.errors import DestinationExists, ProjectError

if TYPE_CHECKING:
    from ralif.project.session import Project

EXPORT_MODES = ("copy", "symlink")
_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}
_MAX_NAME = 100
# The manifest at the root of an ImageFolder export: every image's path in the tree and its class.
IMAGEFOLDER_MANIFEST = "labels.csv"


def safe_folder_name(name: str, fallback: str) -> str:
    """A folder name for ``name`` that is one path component on every common file system:
    no separators, no ``.``/``..``, no characters Windows forbids, no reserved device names."""
    cleaned = _UNSAFE.sub("_", name).strip().strip(".").strip()
    if cleaned.split(".")[0].lower() in _RESERVED:
        cleaned = f"{cleaned}_"
    cleaned = cleaned[:_MAX_NAME].rstrip(". ")
    return cleaned or fallback


def _timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def _iso(t: float | None) -> str:
    return "" if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def _default_dest(project: Project, stem: str, suffix: str = "") -> Path:
    return project.folder / "exports" / f"{stem}-{_timestamp()}{suffix}"


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """A failed write names the export it was for: a full disk or a read-only folder as
    :class:`~ralif.project.store.DiskFullError` / ``ReadOnlyError``, anything else with the file."""
    try:
        yield
    except OSError as exc:
        mapped = file_fault(exc, path)
        if mapped is not None:
            raise mapped from exc
        if exc.filename is None and exc.errno is not None:
            # A system error without a file name (a failed write() says only "[Errno 5] ..."): the
            # same kind of error, naming the export.
            raise type(exc)(exc.errno, f"{exc.strerror} (writing the export {path})", str(path)) from exc
        raise


def check_output_path(path: str | os.PathLike[str], *, folder: bool = False, overwrite: bool = True,
                      what: str = "the export") -> None:
    """Refuse, before any work is done, a destination ``what`` cannot be written to: for a file
    (``folder=False``) an existing folder; for a folder an existing file, or an existing folder
    without ``overwrite``; and, for both, a place whose nearest existing folder above is a file or is
    not writable (missing folders below it are created by the export). Raises :class:`ProjectError`,
    :class:`~ralif.project.errors.DestinationExists` or :class:`~ralif.project.store.ReadOnlyError`,
    each naming the path."""
    path = Path(path)
    if folder:
        if path.exists() and not path.is_dir():
            raise ProjectError(f"{path} is a file, and {what} is a folder: choose a folder name")
        if path.is_dir() and not overwrite:
            raise DestinationExists(path)
    elif path.is_dir():
        raise ProjectError(f"{path} is a folder, and {what} is a file: give a file name "
                           f"(a new one inside that folder, for example)")
    # The nearest existing folder above the destination must take new entries.
    above = path.absolute().parent
    while not above.exists() and above != above.parent:
        above = above.parent
    if not above.is_dir():
        raise ProjectError(f"{path} cannot be written: {above} is a file, not a folder")
    if not os.access(above, os.W_OK | os.X_OK):
        denied = PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(above))
        raise file_fault(denied, path) or denied


def _atomic_text(path: Path, text: str) -> Path:
    data = text.encode("utf-8")
    with _writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write(path, lambda f: f.write(data))


def label_rows(project: Project, include_unsure: bool = False) -> list[dict[str, Any]]:
    """Labeled images (and skipped ones with ``include_unsure``) in image order."""
    states = ("labeled", "unsure") if include_unsure else ("labeled",)
    rows = project.store.query(
        "SELECT i.id, i.path, i.split, c.name, l.state, l.round, l.created_at, l.source FROM labels l"
        " JOIN images i ON i.id = l.image_id LEFT JOIN classes c ON c.id = l.class_id"
        f" WHERE l.state IN ({','.join('?' * len(states))}) ORDER BY i.id", states)
    return [{"image_id": r[0], "path": r[1], "split": r[2], "label": r[3] if r[4] == "labeled" else "",
             "state": r[4], "round": r[5], "time": _iso(r[6]), "source": r[7]} for r in rows]


def export_labels_csv(project: Project, dest: str | os.PathLike[str] | None = None,
                      include_unsure: bool = False) -> Path:
    """CSV with ``path, label, round, time, source, split, image_id`` (time in UTC, ISO 8601);
    text cells a spreadsheet would run as a formula are written as :func:`spreadsheet_cell` says."""
    path = Path(dest) if dest is not None else _default_dest(project, "labels", ".csv")
    check_output_path(path, what="the CSV export")
    buf = io.StringIO()
    fields = ["path", "label", "round", "time", "source", "split", "image_id"]
    if include_unsure:
        fields.insert(2, "state")
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: spreadsheet_cell(v) for k, v in row.items()} for row in label_rows(project, include_unsure))
    return _atomic_text(path, buf.getvalue())


def export_labels_json(project: Project, dest: str | os.PathLike[str] | None = None,
                       include_unsure: bool = False) -> Path:
    """JSON: project name, class names in order, and one record per label."""
    path = Path(dest) if dest is not None else _default_dest(project, "labels", ".json")
    check_output_path(path, what="the JSON export")
    doc = {"project": project.name, "exported_at": _iso(time.time()),
           "classes": [c.name for c in project.classes()], "labels": label_rows(project, include_unsure)}
    return _atomic_text(path, json.dumps(doc, indent=1, ensure_ascii=False) + "\n")


def _inside(path: Path, root: Path) -> bool:
    try:
        return os.path.commonpath([os.path.realpath(path), os.path.realpath(root)]) == os.path.realpath(root)
    except ValueError:
        return False


def _replace_dir(tmp: Path, dest: Path, overwrite: bool) -> None:
    if dest.exists() and not overwrite:
        raise DestinationExists(dest)
    replace_dir(tmp, dest)


def _temp_dir(dest: Path) -> Path:
    # What earlier exports to ``dest`` left when they were killed goes first.
    sweep_temps(dest.parent, dest.name)
    tmp = temp_path(dest)
    tmp.mkdir()
    return tmp


def export_imagefolder(project: Project, dest: str | os.PathLike[str] | None = None, mode: str = "copy",
                       split_folders: bool = False, overwrite: bool = False) -> Path:
    """An ImageFolder tree ``dest/<class>/<file>`` (``dest/<pool|test>/<class>/...`` with
    ``split_folders``) of every labeled image, as copies or symbolic links.

    Class folder names are sanitised (see :func:`safe_folder_name`); names that sanitise alike
    get the class id appended. File names that collide get the image id appended. The tree's root
    holds ``labels.csv`` (``path,label``: each file relative to the root and its class name as
    written), a manifest that imports with the real class names.
    """
    if mode not in EXPORT_MODES:
        raise ValueError(f"mode must be one of {', '.join(EXPORT_MODES)}, not {mode!r}")
    dest = Path(dest) if dest is not None else _default_dest(project, "imagefolder")
    dest = dest.expanduser().absolute()
    check_output_path(dest, folder=True, overwrite=overwrite, what="the ImageFolder export")
    with _writing(dest):
        return _write_imagefolder(project, dest, mode, split_folders, overwrite)


def _write_imagefolder(project: Project, dest: Path, mode: str, split_folders: bool, overwrite: bool) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    rows = project.store.query(
        "SELECT i.id, i.path, i.split, l.class_id, c.name FROM labels l JOIN images i ON i.id = l.image_id"
        " JOIN classes c ON c.id = l.class_id WHERE l.state = 'labeled' ORDER BY i.id")
    folders: dict[int, str] = {}
    # The manifest beside the class folders keeps its name.
    taken: set[str] = {IMAGEFOLDER_MANIFEST}
    for c in project.classes():
        base = safe_folder_name(c.name, f"class-{c.id}")
        # Case-insensitive file systems would merge "Cat" and "cat".
        name = base if base.lower() not in taken else f"{base}-{c.id}"
        taken.add(name.lower())
        folders[c.id] = name
    tmp = _temp_dir(dest)
    try:
        used: set[str] = set()
        manifest: list[tuple[str, str]] = []
        for image_id, src, split, class_id, class_name in rows:
            sub = Path(split) / folders[class_id] if split_folders else Path(folders[class_id])
            fname = os.path.basename(src)
            key = f"{sub}/{fname}".lower()
            if key in used:
                stem, ext = os.path.splitext(fname)
                fname = f"{stem}-{image_id}{ext}"
                key = f"{sub}/{fname}".lower()
            used.add(key)
            target = tmp / sub / fname
            if target.parent == tmp or not _inside(target.parent, tmp):
                raise ValueError(f"refusing to write {target}: outside the export folder")
            target.parent.mkdir(parents=True, exist_ok=True)
            if mode == "symlink":
                os.symlink(os.path.abspath(src), target)
            else:
                shutil.copy2(src, target)
            manifest.append(((sub / fname).as_posix(), class_name))
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["path", "label"])
        writer.writerows([spreadsheet_cell(path), spreadsheet_cell(name)] for path, name in manifest)
        (tmp / IMAGEFOLDER_MANIFEST).write_text(buf.getvalue(), encoding="utf-8", newline="")
        _replace_dir(tmp, dest, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def model_classes_note(project: Project) -> str | None:
    """One plain sentence (no user text in it) when the current model was trained before the latest
    class change, else None."""
    from ralif.project.checkpoints import project_mapping, read_sidecar

    weights = project.current_model_path()
    try:
        meta = None if weights is None else read_sidecar(weights.with_suffix(".json"))
    except (OSError, ValueError):
        return None  # the export itself says what is wrong with the file
    try:
        mapping = None if meta is None else project_mapping(project.store, meta)
    except ValueError:
        return ("The model was trained on classes that are now deleted or merged into one, so it cannot be "
                "exported; the next round trains a model on the current classes.")
    if mapping is None or not mapping.changed:
        return None
    added = len(mapping.unknown)
    unknown = (f", except the {added} added since, which it cannot predict" if added > 1
               else ", except the one added since, which it cannot predict" if added else "")
    return (f"The model was trained before the latest class changes: the export maps its predictions to the "
            f"current classes{unknown}, and the next round trains a model on them.")


def export_model(project: Project, dest: str | os.PathLike[str] | None = None, overwrite: bool = False) -> Path:
    """A folder with the current model's weights and JSON (class names, encoder id), loadable with
    :func:`ralif.project.rounds.load_model` and ``ralif predict --model``.

    The model predicts the project's current classes: where classes were renamed, merged or deleted
    since its round, the JSON maps its columns to them (:func:`ralif.project.checkpoints.map_classes`).
    A model that cannot be mapped (fewer than two of its classes left) is refused."""
    from ralif.project.checkpoints import project_mapping, read_sidecar
    from ralif.project.errors import ProjectError

    weights = project.current_model_path()
    if weights is None:
        raise ProjectError("no model has been trained yet: label images of at least two classes and run a round")
    sidecar = weights.with_suffix(".json")
    meta = read_sidecar(sidecar)
    try:
        mapping = project_mapping(project.store, meta)
    except ValueError as exc:
        raise ProjectError(f"the model cannot be exported: {exc}") from exc
    out_meta = meta if mapping is None else mapping.sidecar(meta)
    dest = Path(dest) if dest is not None else _default_dest(project, f"model-round-{meta.get('round', 0):04d}")
    dest = dest.expanduser().absolute()
    check_output_path(dest, folder=True, overwrite=overwrite, what="the model export")
    with _writing(dest):
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temp_dir(dest)
        try:
            shutil.copy2(weights, tmp / weights.name)
            if out_meta is meta:
                shutil.copy2(sidecar, tmp / sidecar.name)
            else:
                (tmp / sidecar.name).write_text(json.dumps(out_meta, indent=2, ensure_ascii=False) + "\n",
                                                encoding="utf-8")
            _replace_dir(tmp, dest, overwrite)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return dest
