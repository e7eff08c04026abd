"""The rules a project's inputs follow: settings, class names, label sources, image sources."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ralif.project.errors import ProjectError
from ralif.project.store import LABEL_SOURCES

if TYPE_CHECKING:
    from ralif.images import ImageList

MODEL_KINDS = ("clip-linear", "resnet18")
DEFAULT_ENCODER = {"clip-linear": "clip:ViT-B-16:openai", "resnet18": "pixels:8"}
KNOWN_LABELS = ("import", "truth", "ignore")
LAYOUTS = ("auto", "imagefolder", "flat")
DEFAULT_BATCH = 20
FOLDERS = ("cache", "models", "exports", "jobs")
UNDOABLE = ("label", "unlabel", "bulk", "oracle")
MAX_CLASS_NAME = 200        # characters, after spaces are collapsed


def check_source(source: str) -> None:
    if source not in LABEL_SOURCES:
        raise ProjectError(f"label source must be one of {', '.join(LABEL_SOURCES)}, not {source!r}")


def clean_name(name: str) -> str:
    if not isinstance(name, str):
        raise ProjectError(f"a class name must be text, got {type(name).__name__}")
    cleaned = " ".join(name.split())
    if not cleaned:
        raise ProjectError("a class name cannot be empty")
    if len(cleaned) > MAX_CLASS_NAME:
        raise ProjectError(f"a class name can have at most {MAX_CLASS_NAME} characters")
    return cleaned


def validate_strategy(spec: str) -> str:
    from ralif.strategies import make_strategy

    make_strategy(spec)
    return spec.strip()


def validate_encoder(spec: str) -> str:
    """Catch a mistyped spec at creation; weights themselves are only loaded by the first round."""
    kind, _, rest = spec.strip().partition(":")
    kind = kind.lower()
    if kind == "precomputed":
        if not Path(rest).expanduser().is_file():
            raise ProjectError(f"embeddings file not found: {rest!r} (encoder spec {spec!r})")
        return f"precomputed:{Path(rest).expanduser().resolve()}"
    if kind == "pixels":
        from ralif.project.rounds import pixel_size

        pixel_size(spec)
    elif kind not in ("clip", "open_clip", "openclip") and not kind.startswith("resnet18"):
        raise ProjectError(f"unknown encoder spec {spec!r}; use clip:<model>:<weights>, resnet18:<weights>, "
                           f"resnet18-32:<weights>, precomputed:<file.npz> or pixels[:N]")
    return spec.strip()


def validate_batch(n: Any) -> int:
    if isinstance(n, bool) or int(n) != n or int(n) < 1:
        raise ProjectError(f"batch size must be a positive integer, got {n!r}")
    return int(n)


def read_source(source: Any, layout: str, decode: bool) -> dict[str, ImageList]:
    """An image source as ImageLists by split name (``all``, ``train``, ``val``, ``test``)."""
    from ralif.images import ImageList, load_image_folder, load_manifest, scan_images

    if isinstance(source, ImageList):
        return {"all": source}
    if isinstance(source, dict) and all(isinstance(v, ImageList) for v in source.values()):
        return dict(source)
    if layout not in LAYOUTS:
        raise ProjectError(f"layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
    path = Path(os.fspath(source)).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise ProjectError(f"{path} is a file but not a CSV manifest (a 'path' column, optional 'label')")
        return {"all": load_manifest(path, decode=decode)}
    if not path.exists():
        raise FileNotFoundError(f"image source not found: {path}")
    if layout == "flat":
        return {"all": scan_images(path, decode=decode)}
    if layout == "auto":
        # The preview's reading: folders named like "unlabeled" (and loose images) are unlabeled,
        # never a class. A single class folder stays a class here (the preview proposes it as
        # unlabeled, for a person to confirm); the first round then says why it cannot train.
        from ralif.folder_scan import build_plan, looks_unlabeled, scan_folder

        try:
            preview = scan_folder(path, decode=decode, samples=0)
            keep = {g.key: "class" for g in preview.groups
                    if g.proposed == "unlabeled" and g.can_be_class and not looks_unlabeled(g.key)}
            return build_plan(preview, keep).image_lists()
        except ValueError as exc:
            raise ProjectError(str(exc)) from None
    return load_image_folder(path, decode=decode)
