"""What an image source holds, shown before a project is made from it, and the plan to import it.

:func:`preview_source` scans a folder or CSV manifest (every file checked, with a progress
callback) and groups the images by top folder (or, for a manifest, by label): each group has its
image count, a few sample paths for thumbnails and a proposed decision, ``class``, ``unlabeled`` or
``ignore``. Folders whose names say the images have no label (``unlabeled``, ``unknown``,
``todo``, ...) are proposed as unlabeled, never as a class. :func:`build_plan` applies the
decisions, the user's overrides winning, and gives an :class:`ImportPlan` without writing
anything; ``plan.image_lists()`` is what ``Project.create`` and ``Project.add_images`` take.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ralif.images import (
    SPLIT_NAMES,
    ImageList,
    canonical_spellings,
    check_images,
    is_image_file,
    load_manifest,
    no_images_error,
    sort_class_names,
    unsupported_reason,
    walk_folders_once,
    walk_image_files,
)
from ralif.project.validation import MAX_CLASS_NAME

DECISIONS = ("class", "unlabeled", "ignore")
LOOSE_KEY = "."           # images directly in the scanned folder (or in a split folder)
NO_LABEL_KEY = ""         # manifest rows with an empty label
_SAMPLES = 4
# The order in which Project.create reads the plan's lists: of identical files, the first in this
# order (then in scan order) is the one imported.
_SPLIT_ORDER = ("all", "train", "val", "test")

# Compared after lower-casing, dropping separators and trailing digits ("_Unlabeled-2" -> "unlabeled").
_UNLABELED_WORDS = frozenset({
    "unlabeled", "unlabelled", "unlabel", "nolabel", "nolabels", "notlabeled", "notlabelled",
    "tolabel", "tobelabeled", "tobelabelled", "unknown", "unknowns", "unsorted", "todo", "none",
    "unclassified", "uncategorized", "uncategorised", "unannotated", "nan", "null",
})
_UNLABELED_PREFIXES = ("unlabeled", "unlabelled", "nolabel", "tolabel", "unsorted", "unknown")
# Names that are sometimes a real class and sometimes a dump: kept as a class, with a note.
_MAYBE_UNLABELED_WORDS = frozenset({"misc", "miscellaneous", "other", "others", "mixed", "various",
                                    "inbox", "new", "raw", "review", "tocheck"})
_MANIFEST_NO_LABEL = frozenset({"?", "-", "--", "n/a"})
_SEPARATORS = re.compile(r"[\s_\-.]+")

ProgressFn = Callable[[int, int], None]


def _counted(n: int, word: str, plural: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else plural or word + 's'}"


def _squash(name: str) -> str:
    return _SEPARATORS.sub("", name.strip().lower()).rstrip("0123456789")


def looks_unlabeled(name: str) -> bool:
    """Whether a folder or label name says its images have no label (case and separators ignored)."""
    if name.strip().lower() in _MANIFEST_NO_LABEL:
        return True
    word = _squash(name)
    return bool(word) and (word in _UNLABELED_WORDS or word.startswith(_UNLABELED_PREFIXES))


def maybe_unlabeled(name: str) -> bool:
    """Names such as ``misc`` or ``other``: possibly a class, possibly a dump of unsorted images."""
    return _squash(name) in _MAYBE_UNLABELED_WORDS


@dataclass
class SourceGroup:
    """One top folder (or one label of a manifest) and what is proposed for it.

    ``key`` is what a decision names: the folder name, ``"."`` for images lying directly in the
    scanned folder, or the label text (``""`` for rows without a label).
    """

    key: str
    title: str                      # shown to the user (literally, never as Markdown)
    count: int                      # readable images
    samples: list[str]              # a few readable image paths, for thumbnails
    proposed: str                   # class, unlabeled or ignore
    reason: str                     # why it is proposed so
    per_split: dict[str, int] = field(default_factory=dict)
    unreadable: int = 0
    can_be_class: bool = True
    note: str | None = None
    problem: str | None = None      # why the name cannot be a class (the images can come unlabeled)
    paths: list[str] = field(default_factory=list, repr=False)
    hashes: list[str] = field(default_factory=list, repr=False)
    splits: list[str] = field(default_factory=list, repr=False)


@dataclass
class SourcePreview:
    """A scanned source: its layout, groups, unreadable files, duplicates and the other files (not
    images, so passed over), each with why."""

    source: str
    kind: str                       # "folder" or "manifest"
    layout: str                     # class-folders, class-folders+unlabeled, splits, flat, mixed, manifest
    description: str
    groups: list[SourceGroup]
    problems: list[tuple[str, str]]
    duplicates: list[list[str]]
    notes: list[str] = field(default_factory=list)
    other_files: list[tuple[str, str]] = field(default_factory=list)
    label_conflicts: list[tuple[str, str]] = field(default_factory=list)   # a manifest's, (path, why)

    @property
    def total(self) -> int:
        return sum(g.count for g in self.groups)

    def group(self, key: str) -> SourceGroup:
        for g in self.groups:
            if g.key == key:
                return g
        raise KeyError(key)

    def proposed(self) -> dict[str, str]:
        """The proposed decision of every group, by key."""
        return {g.key: g.proposed for g in self.groups}

    def to_dict(self) -> dict:
        """A JSON-ready summary (no full path lists)."""
        return {
            "source": self.source, "kind": self.kind, "layout": self.layout,
            "description": self.description, "images": self.total, "notes": list(self.notes),
            "groups": [{"key": g.key, "title": g.title, "images": g.count, "per_split": g.per_split,
                        "unreadable": g.unreadable, "proposed": g.proposed, "reason": g.reason,
                        "note": g.note, "problem": g.problem, "samples": g.samples} for g in self.groups],
            "unreadable": [f"{p}: {r}" for p, r in self.problems],
            "duplicates": self.duplicates,
            "other_files": [f"{p}: {r}" for p, r in self.other_files],
            "label_conflicts": [f"{p}: {r}" for p, r in self.label_conflicts],
        }


@dataclass(frozen=True)
class PlanEntry:
    path: str
    label: str | None               # class name, or None for an unlabeled image
    split: str                      # "all", "train", "val" (pool) or "test" (held out)
    sha256: str


@dataclass
class ImportPlan:
    """What an import will add; nothing has been written.

    ``entries`` holds every image the decisions keep, identical copies included: the import sees
    them all and reports the copies it skips. ``imported`` is what the project will hold (the first
    of each set of identical files, as the import keeps it, without a label when the copies disagree
    on one); the counts and the summary are of ``imported``, so the preview says what is imported.
    ``listed_conflicts`` are the images a manifest lists under two labels, ``merged`` says which
    folders (or labels) make one class."""

    source: str
    entries: list[PlanEntry]
    decisions: dict[str, str]
    problems: list[tuple[str, str]]
    ignored: int
    imported: list[PlanEntry] = field(init=False, repr=False)
    duplicates: list[list[str]] = field(init=False)      # [the copy kept, the copies skipped ...]
    label_conflicts: list[str] = field(init=False)
    listed_conflicts: list[tuple[str, str]] = field(default_factory=list)
    merged: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.imported, self.duplicates, self.label_conflicts = _as_imported(self.entries)
        # Only those the decisions import: an ignored row's conflict changes nothing.
        unlabeled = {e.path for e in self.imported if e.label is None}
        self.listed_conflicts = [(p, why) for p, why in self.listed_conflicts if p in unlabeled]
        self.label_conflicts = [f"{p}: {why}" for p, why in self.listed_conflicts] + self.label_conflicts

    @property
    def classes(self) -> list[str]:
        return sort_class_names(e.label for e in self.imported if e.label is not None)

    @property
    def labeled(self) -> int:
        return sum(e.label is not None for e in self.imported)

    @property
    def unlabeled(self) -> int:
        return len(self.imported) - self.labeled

    @property
    def skipped(self) -> int:
        """Identical copies that are not imported."""
        return len(self.entries) - len(self.imported)

    def pairs(self) -> list[tuple[str, str | None]]:
        """(path, label or None) for every image to import, in scan order."""
        return [(e.path, e.label) for e in self.imported]

    def summary(self) -> str:
        text = (f"{_counted(len(self.classes), 'class', 'classes')}, {_counted(self.labeled, 'labeled image')}, "
                f"{self.unlabeled:,} unlabeled, {self.ignored:,} ignored")
        if self.skipped:
            text += f", {_counted(self.skipped, 'identical copy', 'identical copies')} skipped"
        return text

    def image_lists(self) -> dict[str, ImageList]:
        """The plan as ImageLists by split (``all``/``train``/``val`` go to the pool, ``test`` is
        held out): pass it as ``images`` to ``Project.create`` or ``Project.add_images``. Files were
        checked by the scan and are not read again."""
        # Every label of the entries, also one only a skipped copy has: the import drops it then.
        classes = sort_class_names(e.label for e in self.entries if e.label is not None)
        index = {c: i for i, c in enumerate(classes)}
        out: dict[str, ImageList] = {}
        for split in sorted({e.split for e in self.entries}, key=_SPLIT_ORDER.index):
            chosen = [e for e in self.entries if e.split == split]
            out[split] = ImageList(
                paths=[e.path for e in chosen],
                labels=np.asarray([index[e.label] if e.label is not None else -1 for e in chosen],
                                  dtype=np.int64),
                classes=list(classes),
                hashes=[e.sha256 for e in chosen],
                # Unreadable files are reported once, with the first list.
                problems=list(self.problems) if not out else [],
                root=self.source,
                label_conflicts=list(self.listed_conflicts) if not out else [],
            )
        return out


def _as_imported(entries: Sequence[PlanEntry]) -> tuple[list[PlanEntry], list[list[str]], list[str]]:
    """(the entries the import keeps, the groups of identical files, the images imported without a
    label because their copies disagree), by the rule of ``Project.create``'s import: the first copy
    in reading order is kept, unlabeled when the copies carry two different labels."""
    order = sorted(range(len(entries)), key=lambda i: _SPLIT_ORDER.index(entries[i].split))
    groups: dict[str, list[int]] = {}
    for i in order:
        groups.setdefault(entries[i].sha256, []).append(i)
    kept: dict[int, PlanEntry] = {}
    duplicates: list[list[str]] = []
    conflicts: list[str] = []
    for members in groups.values():
        first = entries[members[0]]
        kept[members[0]] = first
        if len(members) == 1:
            continue
        duplicates.append([entries[i].path for i in members])
        names = sorted({n for n in (entries[i].label for i in members) if n is not None})
        if len(names) > 1:
            kept[members[0]] = replace(first, label=None)
            conflicts.append(f"{first.path}: the same image has the labels {' and '.join(names)}; "
                             f"imported without a label")
    return [kept[i] for i in sorted(kept)], duplicates, conflicts


# ----------------------------------------------------------------------------- scanning


def _samples(paths: Sequence[str], n: int) -> list[str]:
    if len(paths) <= n:
        return list(paths)
    # Spread over the folder so the thumbnails are not n near-identical burst shots.
    return [paths[int(i)] for i in np.linspace(0, len(paths) - 1, n).round().astype(int)]


def _duplicates(paths: Sequence[str], hashes: Sequence[str]) -> list[list[str]]:
    groups: dict[str, list[str]] = {}
    for p, h in zip(paths, hashes):
        groups.setdefault(h, []).append(p)
    return sorted(g for g in groups.values() if len(g) > 1)


def _propose(key: str, only_folder: bool) -> tuple[str, str, bool, str | None]:
    """(decision, reason, can be a class, note) for a folder named ``key``."""
    if key == LOOSE_KEY:
        return "unlabeled", "images not inside any folder have no label", False, None
    if looks_unlabeled(key):
        return "unlabeled", f"the name {key!r} says these images have no label", True, None
    if only_folder:
        return ("unlabeled", "the only folder: one class alone cannot train a classifier", True, None)
    note = (f"{key!r} may be a real class or a folder of unsorted images; choose unlabeled if it "
            f"is the latter") if maybe_unlabeled(key) else None
    return "class", "a folder of images: its name becomes the class", True, note


def _group_of(rel_parts: tuple[str, ...], split_names: Mapping[str, str]) -> tuple[str, str]:
    """(group key, split) of an image from its path parts relative to the scanned folder."""
    split = "all"
    parts = rel_parts
    if len(parts) > 1 and parts[0] in split_names:
        split, parts = split_names[parts[0]], parts[1:]
    return (parts[0] if len(parts) > 1 else LOOSE_KEY), split


def scan_folder(root: str | os.PathLike[str], *, decode: bool = True, samples: int = _SAMPLES,
                progress: ProgressFn | None = None) -> SourcePreview:
    """Scan a folder: every image checked (``progress(done, total)`` as files are read), grouped by
    top folder (class folders inside ``train/``, ``val/`` and ``test/`` are grouped by class)."""
    path = os.path.abspath(os.fspath(root))
    if not os.path.isdir(path):
        raise (FileNotFoundError(f"image folder not found: {path}") if not os.path.exists(path)
               else ValueError(f"not a folder: {path}"))
    files, unsupported = walk_image_files(path)
    checked = check_images(files, decode=decode, progress=progress)
    split_names = {e.name: e.name.lower() for e in os.scandir(path)
                   if e.is_dir() and e.name.lower() in SPLIT_NAMES and not e.name.startswith(".")}
    groups: dict[str, SourceGroup] = {}
    problems = list(unsupported)
    for p, (digest, why) in zip(files, checked):
        key, split = _group_of(Path(os.path.relpath(p, path)).parts, split_names)
        g = groups.get(key)
        if g is None:
            title = "(images not in a folder)" if key == LOOSE_KEY else key
            g = groups[key] = SourceGroup(key, title, 0, [], "class", "")
        if digest is None:
            problems.append((p, why or "unreadable"))
            g.unreadable += 1
            continue
        g.count += 1
        g.paths.append(p)
        g.hashes.append(digest)
        g.splits.append(split)
        g.per_split[split] = g.per_split.get(split, 0) + 1
    kept = [g for g in groups.values() if g.count]
    if not kept:
        raise no_images_error(path, problems)
    folders = [g for g in kept if g.key != LOOSE_KEY]
    for g in kept:
        g.samples = _samples(g.paths, samples)
        g.proposed, g.reason, g.can_be_class, g.note = _propose(
            g.key, only_folder=len(folders) == 1 and len(kept) == 1)
        g.problem = class_name_problem(g.key) if g.can_be_class else None
    # By the name as shown (spaces collapsed), so a ' cat' sorts beside the 'cat' it merges with.
    kept.sort(key=lambda g: (g.key == LOOSE_KEY, g.proposed != "class", " ".join(g.key.split()).lower()))
    layout, description = _describe(path, kept, split_names)
    notes = []
    csvs = sorted(e.name for e in os.scandir(path) if e.is_file() and e.name.lower().endswith(".csv"))
    if csvs:
        notes.append(f"{', '.join(csvs)} found beside the images: to take labels from a CSV manifest, "
                     f"choose the CSV file itself as the source")
    notes += [f"{g.title}: {g.note}" for g in kept if g.note]
    all_paths = [p for g in kept for p in g.paths]
    all_hashes = [h for g in kept for h in g.hashes]
    return SourcePreview(path, "folder", layout, description, kept, problems,
                         _duplicates(all_paths, all_hashes), notes, _other_files(path))


def _other_files(root: str) -> list[tuple[str, str]]:
    """(path, why) of the files the image walk passes over (a notes.txt beside the images, say): a
    file left out without a word looks like an image that went missing. Hidden files are left
    out, as the walk leaves them; folder links are followed once, as the walk follows them."""
    found: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in walk_folders_once(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if f.startswith(".") or is_image_file(f) or unsupported_reason(f):
                continue
            ext = os.path.splitext(f)[1]
            found.append((os.path.join(dirpath, f), f"not an image file ({ext} files are not read)" if ext
                          else "not an image file (no file extension)"))
    found.sort(key=lambda pr: Path(os.path.relpath(pr[0], root)).parts)
    return found


def _describe(root: str, groups: list[SourceGroup], split_names: Mapping[str, str]) -> tuple[str, str]:
    n_img = sum(g.count for g in groups)
    if not groups:
        return "empty", f"no readable images in {root}"
    loose = any(g.key == LOOSE_KEY for g in groups)
    classes = [g for g in groups if g.proposed == "class"]
    unl = [g for g in groups if g.proposed == "unlabeled" and g.key != LOOSE_KEY]
    if split_names:
        splits = ", ".join(sorted(set(split_names.values())))
        return "splits", (f"ImageFolder with split folders ({splits}): {_counted(len(classes), 'class folder')}, "
                          f"{_counted(n_img, 'image')}")
    if not classes and not unl:
        return "flat", f"a flat folder of {_counted(n_img, 'image')} without labels"
    extra = (f" plus {_counted(len(unl), 'folder')} that {'looks' if len(unl) == 1 else 'look'} unlabeled"
             if unl else "")
    if loose:
        return "mixed", (f"{_counted(len(classes), 'class folder')}{extra} and images lying directly in the "
                         f"folder (taken as unlabeled): {_counted(n_img, 'image')}")
    layout = "class-folders+unlabeled" if unl else "class-folders"
    return layout, f"{_counted(len(classes), 'class folder')}{extra}: {_counted(n_img, 'image')}"


def scan_manifest(csv_path: str | os.PathLike[str], *, decode: bool = True, samples: int = _SAMPLES,
                  progress: ProgressFn | None = None) -> SourcePreview:
    """A CSV manifest (``path`` and optional ``label`` columns) grouped by label; rows with an empty
    label or one that says "unknown" are proposed as unlabeled."""
    images = load_manifest(csv_path, decode=decode, progress=progress)
    conflicts = len(images.label_conflicts)
    groups: dict[str, SourceGroup] = {}
    for p, h, y in zip(images.paths, images.hashes, images.labels.tolist()):
        key = images.classes[y] if y >= 0 else NO_LABEL_KEY
        g = groups.get(key)
        if g is None:
            if key == NO_LABEL_KEY:
                g = SourceGroup(key, "(no label)", 0, [], "unlabeled", "", can_be_class=False)
            elif looks_unlabeled(key):
                g = SourceGroup(key, key, 0, [], "unlabeled", f"the label {key!r} says these images have "
                                                              f"no label")
            else:
                g = SourceGroup(key, key, 0, [], "class", "the label column names this class",
                                note=(f"{key!r} may be a real class or a bucket of unsorted images"
                                      if maybe_unlabeled(key) else None))
            groups[key] = g
        g.count += 1
        g.paths.append(p)
        g.hashes.append(h)
        g.splits.append("all")
        g.per_split["all"] = g.count
    kept = sorted(groups.values(), key=lambda g: (g.proposed != "class", g.key.lower()))
    for g in kept:
        g.samples = _samples(g.paths, samples)
        g.problem = class_name_problem(g.key) if g.can_be_class else None
    if NO_LABEL_KEY in groups:
        empty = groups[NO_LABEL_KEY].count - conflicts
        groups[NO_LABEL_KEY].reason = ", and ".join(
            ([f"{_counted(empty, 'row')} with an empty label"] if empty else [])
            + ([f"{_counted(conflicts, 'image')} listed under two different labels"] if conflicts else []))
    classes = sum(g.proposed == "class" for g in kept)
    unl = sum(g.count for g in kept if g.proposed == "unlabeled")
    description = (f"CSV manifest: {_counted(len(images), 'image')}, {_counted(classes, 'label')} used as "
                   f"{'a class' if classes == 1 else 'classes'}, {_counted(unl, 'row')} without a usable label")
    notes = [f"{g.title}: {g.note}" for g in kept if g.note]
    if images.repeated_rows:
        notes.append(f"{_counted(images.repeated_rows, 'row')} {'repeats' if images.repeated_rows == 1 else 'repeat'} "
                     f"an image listed before (imported once)")
    return SourcePreview(os.path.abspath(os.fspath(csv_path)), "manifest", "manifest", description, kept,
                         list(images.problems), _duplicates(images.paths, images.hashes), notes,
                         label_conflicts=list(images.label_conflicts))


def preview_source(source: str | os.PathLike[str], *, decode: bool = True, samples: int = _SAMPLES,
                   progress: ProgressFn | None = None) -> SourcePreview:
    """:func:`scan_manifest` for a ``.csv`` file, :func:`scan_folder` for a folder."""
    path = Path(os.fspath(source)).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise ValueError(f"{path} is a file but not a CSV manifest (a 'path' column, optional 'label')")
        return scan_manifest(path, decode=decode, samples=samples, progress=progress)
    return scan_folder(path, decode=decode, samples=samples, progress=progress)


# ----------------------------------------------------------------------------- deciding


def parse_decisions(items: Iterable[str]) -> dict[str, str]:
    """``["unlabeled=class", "junk=ignore"]`` (the CLI's ``--as`` values) as a mapping."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, decision = item.rpartition("=")
        if not sep:
            raise ValueError(f"--as {item!r}: expected FOLDER=class, FOLDER=unlabeled or FOLDER=ignore")
        out[key] = decision.strip().lower()
    return out


def _resolve_key(preview: SourcePreview, key: str) -> str:
    keys = [g.key for g in preview.groups]
    if key in keys:
        return key
    stripped = key.strip().rstrip("/\\")
    folded = [k for k in keys if k.lower() == stripped.lower()]
    if len(folded) == 1:
        return folded[0]
    shown = ", ".join(repr(k) for k in keys)
    raise ValueError(f"{key!r} is not a folder or label found in {preview.source} (found: {shown})")


def build_plan(preview: SourcePreview, decisions: Mapping[str, str] | None = None) -> ImportPlan:
    """The import plan: the proposed decisions, with ``decisions`` (by group key) overriding them.

    Raises ``ValueError`` for an unknown key or decision, a ``class`` decision for images that have
    no folder or label to name the class, or a plan that imports nothing.
    """
    chosen = preview.proposed()
    for key, decision in (decisions or {}).items():
        real = _resolve_key(preview, key)
        decision = decision.strip().lower()
        if decision not in DECISIONS:
            raise ValueError(f"{key!r}: the decision must be one of {', '.join(DECISIONS)}, not {decision!r}")
        if decision == "class" and not preview.group(real).can_be_class:
            raise ValueError(f"{preview.group(real).title} cannot be a class: there is no folder or label "
                             f"name to call it; choose unlabeled or ignore")
        chosen[real] = decision
    refused = [g for g in preview.groups if chosen[g.key] == "class" and g.problem]
    if refused:
        what = "folder" if preview.kind == "folder" else "label"
        text = "; ".join(f"the {what} {g.key!r} cannot be a class: {g.problem}" for g in refused)
        raise ValueError(f"{text[:1].upper()}{text[1:]}. Rename the {what}{'s' if len(refused) > 1 else ''}, "
                         f"or import {'its' if len(refused) == 1 else 'their'} images as unlabeled or ignore them")
    entries: list[PlanEntry] = []
    ignored = 0
    for g in preview.groups:
        decision = chosen[g.key]
        if decision == "ignore":
            ignored += g.count
            continue
        label = g.key if decision == "class" else None
        entries += [PlanEntry(p, label, s, h) for p, h, s in zip(g.paths, g.hashes, g.splits)]
    if not entries:
        raise ValueError(f"nothing to import from {preview.source}: every folder is ignored or empty")
    # Names that differ only in case or spaces are one class (as the import makes them): the
    # preview counts and names it as the project will.
    spelling = canonical_spellings(e.label for e in entries if e.label is not None)
    entries = [e if e.label is None else replace(e, label=spelling[" ".join(e.label.split())]) for e in entries]
    merged = _merged([g for g in preview.groups if chosen[g.key] == "class"], spelling,
                     "folders" if preview.kind == "folder" else "labels")
    return ImportPlan(preview.source, entries, chosen, list(preview.problems), ignored,
                      listed_conflicts=list(preview.label_conflicts), merged=merged)


def class_name_problem(name: str) -> str | None:
    """Why a folder or label name cannot be a class name, or None when it can."""
    size = len(" ".join(name.split()))
    if not size:
        return "the name is only spaces"
    if size > MAX_CLASS_NAME:
        return f"the name has {size:,} characters; a class name can have at most {MAX_CLASS_NAME}"
    return None


def _merged(groups: Sequence[SourceGroup], spelling: Mapping[str, str], what: str) -> list[str]:
    """A sentence for each class that several of ``groups`` (those decided as classes) make."""
    by_class: dict[str, list[SourceGroup]] = {}
    for g in groups:
        by_class.setdefault(spelling[" ".join(g.key.split())], []).append(g)
    out = []
    for name, members in by_class.items():
        if len(members) < 2:
            continue
        images: dict[str, int] = {}
        for g in members:
            clean = " ".join(g.key.split())
            images[clean] = images.get(clean, 0) + g.count
        most = sum(n == images[name] for n in images.values()) == 1
        why = ("" if len(images) == 1 else " (the spelling most of their images use)" if most
               else " (as many images use each spelling: the first found is kept)")
        parts = [f"{g.key!r} ({_counted(g.count, 'image')})" for g in members]
        listed = f"{', '.join(parts[:-1])} and {parts[-1]}"
        out.append(f"{what} {listed} are one class, {name!r}{why}: class names do not tell case and "
                   f"spacing apart")
    return out


# ----------------------------------------------------------------------------- text


def format_preview(preview: SourcePreview, plan: ImportPlan | None = None, *, limit: int = 10) -> str:
    """The preview as plain text for a terminal (names are printed literally)."""
    decisions = plan.decisions if plan is not None else preview.proposed()
    lines = [f"Source: {preview.source}", f"Layout: {preview.description}"]
    width = max([len(g.title) for g in preview.groups] + [6])
    lines.append(f"  {'FOLDER' if preview.kind == 'folder' else 'LABEL':<{width}}  {'IMAGES':>7}  "
                 f"{'AS':<9}  WHY")
    for g in preview.groups:
        decision = decisions.get(g.key, g.proposed)
        why = g.reason if decision == g.proposed else "your choice"
        bad = f" ({g.unreadable} unreadable)" if g.unreadable else ""
        lines.append(f"  {g.title:<{width}}  {g.count:>7,}  {decision:<9}  {why}{bad}")
    for title, files in (("Unreadable files", preview.problems), ("Other files, not images", preview.other_files)):
        if files:
            lines.append(f"{title}: {len(files):,} (skipped)")
            lines += [f"  {p}: {r}" for p, r in files[:limit]]
            if len(files) > limit:
                lines.append(f"  ... and {len(files) - limit:,} more")
    duplicates = plan.duplicates if plan is not None else preview.duplicates
    if duplicates:
        lines.append(f"Identical files: {_counted(len(duplicates), 'group')} (the first copy is kept)")
        lines += [f"  {' = '.join(d)}" for d in duplicates[:limit]]
    lines += [f"Note: {n}" for n in preview.notes]
    if plan is not None:
        lines += [f"Note: {n}" for n in plan.merged]
        if plan.label_conflicts:
            lines.append(f"Under two different labels: {_counted(len(plan.label_conflicts), 'image')} "
                         f"(imported once, without a label)")
            lines += [f"  {c}" for c in plan.label_conflicts[:limit]]
        lines.append(f"Plan: {plan.summary()}")
    lines.append("Change a decision with --as NAME=class|unlabeled|ignore"
                 + (" ('.' names the images not in a folder)." if preview.kind == "folder" else "."))
    return "\n".join(lines)
