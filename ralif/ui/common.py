"""Pieces every page uses: page setup, the sidebar, one-shot messages, the progress line."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import streamlit as st
from streamlit.errors import StreamlitAPIException

import ralif
from ralif.project import Progress, Project
from ralif.ui.text import code, lit
from ralif.worker import FINAL_STATES

_FLASH_KEY = "ralif_flash"
# The Label page as st.switch_page names it (relative to the app's main script).
LABEL_PAGE = "views/1_Label.py"
# The home page as the navigation knows it (set by app.py on every run), for links back to it.
_HOME: Any = None


def setup_page(title: str) -> None:
    st.set_page_config(page_title=f"{title} · ralif", page_icon="🏷️", layout="wide")


def flash(kind: str, text: str) -> None:
    """A message to show on the next page run (after an action that reruns the page)."""
    if text:
        st.session_state.setdefault(_FLASH_KEY, []).append((kind, text))


def show_flash() -> None:
    for kind, text in st.session_state.pop(_FLASH_KEY, []):
        show(kind, text)


def show(kind: str, text: str) -> None:
    """``text`` is Markdown: user text in it must have gone through :func:`ralif.ui.text.lit`."""
    if not text:
        return
    {"success": st.success, "warning": st.warning, "error": st.error}.get(kind, st.info)(text)


def sidebar(project: Project | None, prog: Progress | None = None) -> None:
    """The open project in the sidebar (``prog``: its progress, when the page has it already)."""
    with st.sidebar:
        if project is not None:
            st.markdown(f"**{lit(project.name)}**")
            prog = prog or project.progress()
            st.caption(f"{prog.labeled:,} of {prog.pool:,} labeled · round {prog.round}")
            st.caption(code(display_path(project.folder)))
        st.caption(f"ralif {ralif.__version__}")


def display_path(path: str | os.PathLike[str]) -> str:
    """A path as a person reads it: relative to the working folder when inside it, ``~/...`` when
    inside the home folder, else absolute."""
    p = Path(path).resolve()
    for base, prefix in ((Path.cwd(), ""), (Path.home(), "~/")):
        try:
            rel = p.relative_to(base.resolve())
        except ValueError:
            continue
        return prefix + str(rel) if str(rel) != "." else (prefix.rstrip("/") or ".")
    return str(p)


def is_weights_file(weights: str) -> bool:
    """Whether the weights part of an encoder spec is a file (a tag such as ``openai`` is not)."""
    return os.path.isabs(weights) or "/" in weights or "\\" in weights


def encoder_label(spec: str, model: str | None = None, resnet: Mapping[str, Any] | None = None) -> str:
    """The encoder as the encoder choice names it, without the machine's folders (a file by its
    name); a spec no choice names as it is. Plain text, to be escaped with ``lit`` before it goes
    into Markdown.

    ``model`` and ``resnet``: the project's model kind and ResNet settings. A ResNet18 model is
    named by them: its spec (``pixels:8``) only serves the first batch, picked before any network
    is trained, and would tell a person nothing."""
    if model == "resnet18":
        variant = str((resnet or {}).get("variant") or "cifar")
        return "ResNet18 ImageNet, fine-tuned every round" if variant == "imagenet" else "ResNet18 from scratch"
    kind, _, rest = spec.partition(":")
    kind = kind.lower()
    if kind == "precomputed":
        return f"precomputed embeddings ({Path(rest).name})"
    if kind in ("clip", "open_clip", "openclip"):
        name, _, weights = rest.partition(":")
        if is_weights_file(weights):
            return f"CLIP {name}, weights from {Path(weights).name}"
        return f"CLIP {name} ({weights or 'openai'})"
    if kind == "resnet18" and rest == "imagenet":
        return "ResNet18 ImageNet, frozen + linear head"
    if kind.startswith("resnet18") and is_weights_file(rest):
        return f"ResNet18, weights from {Path(rest).name}"
    return spec


def job_progress(status: Mapping[str, Any] | None, describe: Callable[[Mapping[str, Any]], str]) -> None:
    """A background job's progress bar, for a fragment that polls the job: once the job is over the
    whole page runs again, to show what it made."""
    status = status or {}
    if status.get("state") in FINAL_STATES:
        st.rerun()
    fraction = float((status.get("progress") or {}).get("fraction") or 0.0)
    st.progress(min(1.0, fraction), text=describe(status))


def progress_line(prog: Progress) -> str:
    """Labeled / pool, skipped, round and the batch's state as one Markdown line."""
    parts = [f"**{prog.labeled:,}** of {prog.pool:,} images labeled"]
    if prog.unsure:
        parts.append(f"{prog.unsure:,} skipped")
    parts.append(f"round **{prog.round}**")
    if prog.pending:
        parts.append(f"batch: {prog.pending_done} of {prog.pending} answered")
    return " · ".join(parts)


def class_counts_line(prog: Progress) -> str:
    """Labels per class as one Markdown line (class names escaped: they are user text)."""
    if not prog.per_class:
        return "No classes yet: add them on the Classes page."
    return " · ".join(f"{lit(name)} {n:,}" for name, n in prog.per_class.items())


def set_home(page: Any) -> None:
    global _HOME
    _HOME = page


def home_link(label: str = "Go to projects") -> None:
    try:
        st.page_link(_HOME if _HOME is not None else "app.py", label=label, icon=":material/home:")
    except StreamlitAPIException:
        # A page run on its own (without the app's navigation) has no home page to link to.
        st.caption("Open the Projects page of the app.")


def plot_text(text: object) -> str:
    """User text for a Plotly label: Plotly reads a few HTML tags (links among them) in labels,
    so ``<``, ``>`` and ``&`` are given as entities, which it shows literally."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
