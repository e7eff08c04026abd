"""Image data: scanning folders, ImageFolder layouts and CSV manifests, validation, RGB loading.

Every file is checked once when a collection is scanned (PIL ``verify()`` plus a real decode), so
that bad files are reported by name and skipped instead of crashing a long feature extraction.
Each image also gets the sha256 of its bytes, which identifies it in the feature cache and finds
duplicates.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import os
import unicodedata
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from PIL import features as _pil_features
from torch.utils.data import Dataset

from ralif.csv_cells import from_spreadsheet_cell as cell

_AVIF = bool(_pil_features.check("avif"))
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
                             | ({".avif"} if _AVIF else set()))
# Formats people often have that cannot be decoded here. They are reported by name instead of being
# passed over like any other file, so that a folder of phone photos does not just look empty.
UNSUPPORTED_IMAGE_FORMATS = {
    ".heic": "HEIC", ".heif": "HEIF", ".jxl": "JPEG XL", ".svg": "SVG", ".psd": "Photoshop",
    ".dng": "camera raw", ".cr2": "camera raw", ".cr3": "camera raw", ".nef": "camera raw",
    ".arw": "camera raw", ".orf": "camera raw", ".rw2": "camera raw", ".raf": "camera raw",
    **({} if _AVIF else {".avif": "AVIF"}),
}
SPLIT_NAMES = ("train", "val", "test")
# Kernel pseudo-file systems: their files look regular with a size of 0 but generate their content
# when read (/proc/self/environ, say), so they are refused before anything reads them.
_PSEUDO_FS_ROOTS = ("/proc/", "/sys/", "/dev/")
_HASH_CHUNK = 1 << 20
_CHECK_CHUNK = 64
_WHITE = (255, 255, 255)


class ImageDecodeError(RuntimeError):
    """An image that cannot be decoded; the message names the file."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot decode image {path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass
class ImageList:
    """An ordered collection of valid images with optional labels: ``labels`` holds class indices
    into ``classes`` (-1: unknown), ``hashes`` the sha256 of each file's bytes, ``problems`` the
    files skipped with the reason, ``duplicates`` groups of paths with identical bytes,
    ``label_conflicts`` (path, why) for images a manifest lists under two different labels (kept
    once, unlabeled), ``repeated_rows`` the manifest rows that list an image again."""

    paths: list[str]
    labels: np.ndarray
    classes: list[str]
    hashes: list[str]
    problems: list[tuple[str, str]] = field(default_factory=list)
    duplicates: list[list[str]] = field(default_factory=list)
    root: str | None = None
    label_conflicts: list[tuple[str, str]] = field(default_factory=list)
    repeated_rows: int = 0

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if not (len(self.paths) == len(self.labels) == len(self.hashes)):
            raise ValueError(
                f"paths ({len(self.paths)}), labels ({len(self.labels)}) and hashes "
                f"({len(self.hashes)}) must have the same length"
            )

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageList:
        """The images at ``indices`` (same classes; problems and duplicates are not carried)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        return ImageList(
            paths=[self.paths[i] for i in idx],
            labels=self.labels[idx],
            classes=list(self.classes),
            hashes=[self.hashes[i] for i in idx],
            root=self.root,
        )


# A plain folder scan gives the same structure, with every label unknown.
ImageScan = ImageList


def hash_file(path: str | os.PathLike[str]) -> str:
    """sha256 hex digest of a file's bytes, read in chunks so large files never sit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def is_image_file(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _check_pixel_limit(im: Image.Image) -> None:
    # PIL only warns between MAX_IMAGE_PIXELS and twice that; the warning is treated as an error
    # here too, and checked by hand because warning filters are process-wide and not thread-safe.
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and im.width * im.height > limit:
        raise Image.DecompressionBombError(
            f"{im.width}x{im.height} = {im.width * im.height} pixels exceeds the limit of "
            f"{limit} pixels (PIL.Image.MAX_IMAGE_PIXELS)"
        )


def unsupported_reason(name: str) -> str | None:
    """Why a file that looks like an image cannot be read, or None for any other file."""
    fmt = UNSUPPORTED_IMAGE_FORMATS.get(os.path.splitext(name)[1].lower())
    if fmt is None:
        return None
    return f"{fmt} images are not supported; convert them to JPEG or PNG"


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"decompression bomb guard: {exc}"
    if isinstance(exc, OSError) and exc.errno == errno.ELOOP:
        return "symbolic link loop"
    if isinstance(exc, UnidentifiedImageError):
        return "not an image (PIL cannot identify the format)"
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    text = str(exc) or type(exc).__name__
    if "truncated" in text.lower():
        return f"truncated image: {text}"
    return f"corrupt image: {text}"


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_file(path: str, decode: bool) -> tuple[str | None, str | None]:
    """(content hash, None) for a readable image, (None, reason) otherwise."""
    if not _is_utf8(path):
        # Bytes that are not UTF-8 (a name from an old archive, say) come back from the OS as lone
        # surrogates, which no database or CSV export can store: the file is reported, not imported.
        part = next((q for q in Path(path).parts if not _is_utf8(q)), path)
        return None, f"the name {os.fsencode(part)!r} is not valid UTF-8 text; rename it"
    if why := unsupported_reason(path):
        return None, why
    try:
        if os.path.islink(path) and not os.path.exists(path):
            try:
                os.stat(path)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    return None, "symbolic link loop (following the link never reaches a file)"
            return None, "broken symbolic link"
        if not os.path.isfile(path):
            return None, "not a regular file"
        real = os.path.realpath(path)
        if real.startswith(_PSEUDO_FS_ROOTS):
            return None, f"not a regular file (a system file, {real}, not an image)"
        if os.path.getsize(path) == 0:
            return None, "empty file (0 bytes)"
        with Image.open(path) as im:
            _check_pixel_limit(im)
            im.verify()
        if decode:
            # verify() does not read JPEG scan data, so truncation only shows in a real decode;
            # draft() lets JPEG decode at 1/8 scale, which still reads every byte.
            with Image.open(path) as im:
                im.draft("RGB", (64, 64))
                im.load()
        return hash_file(path), None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError,
            Image.DecompressionBombWarning, MemoryError) as exc:
        return None, _describe_error(exc)


def check_images(paths: Sequence[str], decode: bool = True,
                 progress: Callable[[int, int], None] | None = None,
                 workers: int | None = None) -> list[tuple[str | None, str | None]]:
    """(sha256, None) for each readable image and (None, reason) for each bad one, in order.

    ``progress(done, total)`` is called after every chunk of files, for a progress bar.
    """
    if progress is None:
        return _check_files(paths, decode, workers)
    total = len(paths)
    out: list[tuple[str | None, str | None]] = []
    progress(0, total)
    for start in range(0, total, _CHECK_CHUNK):
        out += _check_files(paths[start:start + _CHECK_CHUNK], decode, workers)
        progress(len(out), total)
    return out


def _check_files(paths: Sequence[str], decode: bool = True,
                 workers: int | None = None) -> list[tuple[str | None, str | None]]:
    if workers is None:
        workers = min(8, os.cpu_count() or 1)
    # Warning filters are global, so setting them here (before any worker starts) is seen by every
    # worker thread; PIL's own DecompressionBombWarning then surfaces as an exception.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        if workers <= 1 or len(paths) < 2:
            return [_check_file(p, decode) for p in paths]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(lambda p: _check_file(p, decode), paths))


def _find_duplicates(paths: Sequence[str], hashes: Sequence[str]) -> list[list[str]]:
    groups: dict[str, list[str]] = {}
    for p, h in zip(paths, hashes):
        groups.setdefault(h, []).append(p)
    return sorted(sorted(g) for g in groups.values() if len(g) > 1)


def _walked_anyway(target: str, root_real: str) -> bool:
    """Whether the walk reaches the real folder ``target`` under its own name: inside the root and
    not under a hidden folder."""
    if not (target == root_real or target.startswith(root_real.rstrip(os.sep) + os.sep)):
        return False
    return not any(part.startswith(".") for part in Path(os.path.relpath(target, root_real)).parts)


def walk_folders_once(root: str) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk`` with links to folders followed, each real folder once, so link loops end; the
    caller may prune ``dirnames`` in place, as with ``os.walk``."""
    visited: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in visited:
            dirnames[:] = []
            continue
        visited.add(real)
        yield dirpath, dirnames, filenames


def _walk_images(root: str, recursive: bool,
                 unsupported: list[tuple[str, str]] | None = None) -> list[str]:
    """Image paths under ``root`` in sorted order; hidden entries are skipped.

    Symbolic links to folders are followed, each real folder once, so link loops end instead of
    recursing forever. A link to a folder the walk reaches anyway (inside ``root``, not hidden) is
    not followed: that folder is read under its own name, so in an ImageFolder its images keep
    their own class whichever name sorts first. Files in a known but unsupported format go to
    ``unsupported``.
    """
    found: list[str] = []
    root_real = os.path.realpath(root)
    for dirpath, dirnames, filenames in walk_folders_once(root):
        if recursive:
            dirnames[:] = sorted(
                d for d in dirnames if not d.startswith(".")
                and not (os.path.islink(os.path.join(dirpath, d))
                         and _walked_anyway(os.path.realpath(os.path.join(dirpath, d)), root_real)))
        else:
            dirnames[:] = []
        for f in filenames:
            if f.startswith("."):
                continue
            if is_image_file(f):
                found.append(os.path.join(dirpath, f))
            elif unsupported is not None and (why := unsupported_reason(f)):
                unsupported.append((os.path.join(dirpath, f), why))
    found.sort(key=lambda p: Path(os.path.relpath(p, root)).parts)
    if unsupported is not None:
        unsupported.sort(key=lambda pr: Path(os.path.relpath(pr[0], root)).parts)
    return found


def walk_image_files(root: str | os.PathLike[str], recursive: bool = True
                     ) -> tuple[list[str], list[tuple[str, str]]]:
    """(image paths in sorted order, (path, reason) of files in an unsupported format) under
    ``root``; nothing is opened. Hidden entries are skipped and folder links followed once."""
    unsupported: list[tuple[str, str]] = []
    return _walk_images(os.fspath(root), recursive, unsupported), unsupported


def _require_dir(root: str | os.PathLike[str]) -> str:
    path = os.path.abspath(os.fspath(root))
    if not os.path.exists(path):
        raise FileNotFoundError(f"image folder not found: {path}")
    if not os.path.isdir(path):
        raise ValueError(f"not a folder: {path}")
    return path


def _build_list(paths: Sequence[str], labels: Sequence[int], classes: list[str], root: str | None,
                problems: Iterable[tuple[str, str]] = (), decode: bool = True,
                progress: Callable[[int, int], None] | None = None) -> ImageList:
    checked = check_images(paths, decode=decode, progress=progress)
    keep = [i for i, (h, _) in enumerate(checked) if h is not None]
    all_problems = list(problems) + [(p, r) for p, (_, r) in zip(paths, checked) if r is not None]
    good_paths = [paths[i] for i in keep]
    good_hashes = [checked[i][0] for i in keep]
    return ImageList(
        paths=good_paths,
        labels=np.asarray([labels[i] for i in keep], dtype=np.int64),
        classes=classes,
        hashes=good_hashes,  # type: ignore[arg-type]
        problems=all_problems,
        duplicates=_find_duplicates(good_paths, good_hashes),  # type: ignore[arg-type]
        root=root,
    )


def no_images_error(where: str, problems: Sequence[tuple[str, str]], listed: int | None = None) -> ValueError:
    """The error for a folder (or a manifest, given the number of files it ``listed``) without images."""
    if listed is not None:
        msg = f"no readable images in {where}: none of the {listed:,} files it lists can be read"
    else:
        exts = ", ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
        msg = f"no readable images in {where} (looked for {exts})"
    if problems:
        first = "; ".join(f"{os.path.basename(p)}: {r}" for p, r in problems[:3])
        msg += f"; {len(problems)} file(s) were skipped, e.g. {first}"
    return ValueError(msg)


def scan_images(root: str | os.PathLike[str], recursive: bool = True,
                decode: bool = True) -> ImageScan:
    """All readable images under ``root`` (labels unknown), in sorted path order.

    Bad files are listed in ``problems`` and left out. ``decode=False`` skips the full decode
    (faster, but truncated JPEGs then only fail at load time). Raises ``ValueError`` when the
    folder holds no readable image.
    """
    path = _require_dir(root)
    unsupported: list[tuple[str, str]] = []
    files = _walk_images(path, recursive, unsupported)
    scan = _build_list(files, [-1] * len(files), [], path, problems=unsupported, decode=decode)
    if not scan.paths:
        raise no_images_error(path, scan.problems)
    return scan


def _split_dirs(root: str) -> dict[str, str]:
    splits = {}
    for entry in sorted(os.listdir(root)):
        if entry.lower() in SPLIT_NAMES and os.path.isdir(os.path.join(root, entry)):
            splits[entry.lower()] = os.path.join(root, entry)
    return splits


def _folder_entries(split_root: str, unsupported: list[tuple[str, str]] | None = None
                    ) -> list[tuple[str, str | None]]:
    """(path, class name or None) for every image; the class is the first folder level."""
    entries = []
    for p in _walk_images(split_root, recursive=True, unsupported=unsupported):
        parts = Path(os.path.relpath(p, split_root)).parts
        entries.append((p, parts[0] if len(parts) > 1 else None))
    return entries


def class_key(name: str) -> str:
    """What two class names are compared by: 'Cat', ' cat ' and 'CAT' (or a composed and a
    decomposed 'é') name one class to a person, and two such classes split its labels in two."""
    folded = unicodedata.normalize("NFC", " ".join(name.split())).casefold()
    # casefold() can leave text that is no longer NFC (it expands some letters); normalise again.
    return unicodedata.normalize("NFC", folded)


def canonical_spellings(names: Iterable[str], live: Iterable[str] = ()) -> dict[str, str]:
    """Each of ``names`` (one per labeled image; spaces collapsed) mapped to the class it means: the
    ``live`` class with the same :func:`class_key`, else the spelling most of ``names`` use (the first
    seen on a tie), so folders 'cat' (3 images) and 'Cat' (2) make one class 'cat', not two."""
    counts: dict[str, int] = {}
    for name in names:
        clean = " ".join(name.split())
        counts[clean] = counts.get(clean, 0) + 1
    chosen = {class_key(n): n for n in live}
    best: dict[str, str] = {}
    for name, n in counts.items():
        key = class_key(name)
        if key not in chosen and (key not in best or n > counts[best[key]]):
            best[key] = name
    chosen.update(best)
    return {name: chosen[class_key(name)] for name in counts}


def sort_class_names(names: Iterable[str]) -> list[str]:
    """Unique class names in label-index order: by value when every name is a number, else sorted."""
    unique = set(names)
    # Numeric class names ("2", "10") sort by value so that label indices follow the numbers.
    if unique and all(n.lstrip("-").isdigit() for n in unique):
        return sorted(unique, key=int)
    return sorted(unique)


def load_image_folder(root: str | os.PathLike[str], decode: bool = True) -> dict[str, ImageList]:
    """An ImageFolder layout: ``root/<class>/...`` or ``root/{train,val,test}/<class>/...``.

    Returns one ImageList per split (``"all"`` when there are no split folders). Class indices are
    shared by every split. Images directly inside a split folder (in no class folder) get label -1.
    """
    path = _require_dir(root)
    split_roots = _split_dirs(path) or {"all": path}
    unsupported: dict[str, list[tuple[str, str]]] = {name: [] for name in split_roots}
    entries = {name: _folder_entries(sr, unsupported[name]) for name, sr in split_roots.items()}
    classes = sort_class_names(c for es in entries.values() for _, c in es if c is not None)
    index = {c: i for i, c in enumerate(classes)}
    result = {}
    for name, es in entries.items():
        paths = [p for p, _ in es]
        labels = [index[c] if c is not None else -1 for _, c in es]
        result[name] = _build_list(paths, labels, classes, split_roots[name], problems=unsupported[name],
                                   decode=decode)
    if not any(len(v) for v in result.values()):
        raise no_images_error(path, [pr for v in result.values() for pr in v.problems])
    return result


def load_manifest(csv_path: str | os.PathLike[str], decode: bool = True,
                  progress: Callable[[int, int], None] | None = None) -> ImageList:
    """Images listed in a CSV with a ``path`` column and an optional ``label`` column.

    Relative paths are resolved against the CSV's folder. Empty labels are unknown (-1). Files that
    are missing or unreadable are reported in ``problems``; the CSV order is kept. A file listed in
    several rows is imported once: with their label when they agree (up to case and spaces, an empty
    label agreeing with any), else without one and reported in ``label_conflicts``, as the import
    does for identical files in two class folders. ``progress(done, total)`` follows the file checks.
    """
    csv_file = os.path.abspath(os.fspath(csv_path))
    if not os.path.isfile(csv_file):
        raise FileNotFoundError(f"manifest not found: {csv_file}")
    base = os.path.dirname(csv_file)
    try:
        with open(csv_file, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = {(c or "").strip().lower(): c for c in (reader.fieldnames or [])}
            if "path" not in columns:
                raise ValueError(f"manifest {csv_file} has no 'path' column (columns: "
                                 f"{', '.join(c for c in columns if c) or 'none'})")
            path_col, label_col = columns["path"], columns.get("label")
            # The exports quote cells a spreadsheet would run as formulas (ralif.csv_cells): unquoted here.
            rows = [(cell((r.get(path_col) or "").strip()), cell((r.get(label_col) or "").strip()) if label_col else "")
                    for r in reader]
    except UnicodeDecodeError as exc:
        # Spreadsheet programs often save CSV in a legacy code page, and the bare codec error names
        # neither the file nor the fix. Its offset is within one read buffer, so the position is
        # found again on the whole file.
        raw = Path(csv_file).read_bytes()
        try:
            raw.decode("utf-8")
            where = ""
        except UnicodeDecodeError as bad:
            line = raw[:bad.start].count(b"\n") + 1
            where = f" (byte 0x{raw[bad.start]:02x} on line {line})"
        raise ValueError(f"manifest {csv_file} is not UTF-8 text{where}; save it as CSV UTF-8") from exc
    if not any(rel for rel, _ in rows):
        what = f"has no path in any of its {len(rows):,} rows" if rows else "has no rows under its header"
        raise ValueError(f"the manifest {csv_file} {what}: list one image per row, its path and optionally "
                         f"its label")
    rows_of: dict[str, list[str]] = {}      # file -> the label of each row that lists it
    problems: list[tuple[str, str]] = []
    missing: set[str] = set()
    for rel, label in rows:
        if not rel:
            continue
        full = os.path.normpath(os.path.join(base, os.path.expanduser(rel)))
        if full not in rows_of and not os.path.exists(full) and not os.path.islink(full):
            # A manifest written on one system may spell accented names in the other Unicode
            # normal form than the file system holds them (macOS vs Linux); both are tried.
            forms = (unicodedata.normalize(form, full) for form in ("NFC", "NFD"))
            other = next((alt for alt in forms if alt != full and os.path.exists(alt)), None)
            if other is None:
                if full not in missing:
                    missing.add(full)
                    problems.append((full, "file not found"))
                continue
            full = other
        rows_of.setdefault(full, []).append(label)
    paths = list(rows_of)
    agreed = {p: _agreed_label(labels) for p, labels in rows_of.items()}
    names = [agreed[p][0] for p in paths]
    classes = sort_class_names(n for n in names if n)
    index = {c: i for i, c in enumerate(classes)}
    images = _build_list(paths, [index[n] if n else -1 for n in names], classes, base,
                         problems=problems, decode=decode, progress=progress)
    if not images.paths:
        raise no_images_error(csv_file, images.problems, listed=len(paths) + len(missing))
    for p in images.paths:
        if labels := agreed[p][1]:
            images.label_conflicts.append((p, f"the manifest lists it under the labels "
                                              f"{' and '.join(map(repr, labels))}; imported without a label"))
        else:
            images.repeated_rows += len(rows_of[p]) - 1
    return images


def _agreed_label(labels: Sequence[str]) -> tuple[str, list[str]]:
    """(the label the manifest rows listing one file agree on, or ""; the labels they disagree on)."""
    first: dict[str, str] = {}
    for name in labels:
        if name:
            first.setdefault(class_key(name), name)
    if len(first) > 1:
        return "", list(first.values())
    return next(iter(first.values()), ""), []


def _high_depth_to_l(im: Image.Image) -> Image.Image:
    # Pillow's own conversion clips 16-bit values at 255 (almost all white); rescale instead.
    arr = np.asarray(im).astype(np.float32)
    if im.mode.startswith("I;16"):
        arr = arr / 257.0
    elif im.mode == "F":
        arr = arr * 255.0 if arr.size and float(arr.max()) <= 1.0 else arr
    elif arr.size and float(arr.max()) > 255.0:
        # 32-bit integer images from 16-bit files carry the 0..65535 range.
        arr = arr / 257.0
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB; transparency is composited over white."""
    if im.mode == "RGB":
        return im
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    if has_alpha:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if im.mode.startswith("I") or im.mode == "F":
        return _high_depth_to_l(im).convert("RGB")
    return im.convert("RGB")


def load_rgb(path: str | os.PathLike[str], size: int | None = None, *,
             min_side: int | None = None) -> Image.Image:
    """Decode an image as RGB (first frame of animations, EXIF orientation applied).

    ``size`` bounds the longest side (aspect kept). ``min_side`` only allows a cheaper reduced-scale
    JPEG decode that keeps both sides at least that long, for a transform that resizes anyway.
    Raises ``ImageDecodeError`` naming the file when it cannot be decoded.
    """
    name = os.fspath(path)
    draft = size or min_side
    try:
        with Image.open(name) as im:
            _check_pixel_limit(im)
            if draft:
                im.draft("RGB", (draft, draft))
            im.load()
            # exif_transpose returns a copy, so the result outlives the file handle.
            rgb = to_rgb(ImageOps.exif_transpose(im))
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError,
            MemoryError) as exc:
        raise ImageDecodeError(name, _describe_error(exc)) from exc
    if size is not None and max(rgb.size) > size:
        rgb.thumbnail((size, size), Image.Resampling.BICUBIC)
    return rgb


def _to_tensor(im: Image.Image) -> torch.Tensor:
    arr = np.asarray(im, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


class ImageDataset(Dataset):
    """``(transform(image), index)`` for each image of an ImageList.

    The index travels with the tensor so batches can be matched back to the list whatever the
    loader's order. ``min_side`` is passed to ``load_rgb`` for faster JPEG decoding. A file that
    fails to decode raises ``ImageDecodeError`` naming it.
    """

    def __init__(self, images: ImageList,
                 transform: Callable[[Image.Image], torch.Tensor] | None = None,
                 min_side: int | None = None) -> None:
        self.images = images
        self.transform = transform or _to_tensor
        self.min_side = min_side

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(load_rgb(self.images.paths[index], min_side=self.min_side)), index
