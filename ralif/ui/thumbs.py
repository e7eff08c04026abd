"""Image thumbnails for the labeling grid, as data URIs the grid component can show directly.

The component runs in its own frame and cannot read files, so each image travels inside the
render message. Small images (CIFAR's 32 px) are enlarged with bicubic resampling so a person can
judge them; large photos are reduced, so a batch stays a few hundred kilobytes.
"""

from __future__ import annotations

import base64
import io
import os

import streamlit as st
from PIL import Image, ImageOps

# Large photos keep twice the tile size so they stay sharp on high-density screens.
_DENSITY = 2


def _render(path: str, px: int) -> str:
    try:
        with Image.open(path) as im:
            im.draft("RGB", (px * _DENSITY, px * _DENSITY))
            im = ImageOps.exif_transpose(im)
            im = im.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return placeholder(px)
    w, h = im.size
    longest = max(w, h)
    if longest < px:
        scale = px / longest
        im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BICUBIC)
    elif longest > px * _DENSITY:
        im.thumbnail((px * _DENSITY, px * _DENSITY), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=88)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


@st.cache_data(max_entries=8192, show_spinner=False)
def _cached(path: str, mtime_ns: int, size: int, px: int) -> str:
    # mtime and size are part of the key so an edited file is shown as it is now.
    return _render(path, px)


def thumbnail(path: str, px: int = 160) -> str:
    """A JPEG data URI of the image at ``path`` fitting a ``px`` square (enlarged when smaller)."""
    try:
        stat = os.stat(path)
    except OSError:
        return placeholder(px)
    return _cached(path, stat.st_mtime_ns, stat.st_size, px)


def placeholder(px: int) -> str:
    """A grey square with a cross, for a file that is gone or cannot be decoded."""
    far = px - 20
    svg = (f"<svg xmlns='http://www.w3.org/2000/svg' width='{px}' height='{px}'>"
           f"<rect width='100%' height='100%' fill='#e4e6ea'/>"
           f"<path d='M20 20L{far} {far}M{far} 20L20 {far}' stroke='#b0b5bf' stroke-width='4'/>"
           "<text x='50%' y='92%' text-anchor='middle' font-size='12' fill='#6b7280'>image unavailable</text>"
           "</svg>")
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode("ascii")
