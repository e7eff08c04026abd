"""User text (class, project and file names, messages quoting them) made safe for Streamlit's Markdown.

Streamlit renders captions, titles, markdown, buttons' labels and messages as Markdown with its own
extensions (``:red[...]``, ``$...$`` LaTeX, emoji shortcodes, raw HTML where allowed). A name typed by a
user must show as typed: an image link in a class name would make the browser fetch an outside URL.
``lit`` escapes every character that Markdown or those extensions could act on, so the text renders
literally wherever it is interpolated into Markdown.
"""

from __future__ import annotations

import re

# Every ASCII punctuation character may be backslash-escaped in CommonMark; escaping all of them is
# simpler and safer than choosing the ones that matter in each context.
_PUNCT = re.compile(r"([!-/:-@\[-`{-~])")


def lit(text: object) -> str:
    """``text`` escaped so that Markdown shows it literally (no links, images, HTML, LaTeX, colours)."""
    s = str(text).replace("\r", " ").replace("\n", " ")
    return _PUNCT.sub(r"\\\1", s)


def code(text: object) -> str:
    """``text`` as inline code that cannot be closed early by a backtick inside it."""
    s = str(text).replace("\r", " ").replace("\n", " ")
    run = max((len(m) for m in re.findall(r"`+", s)), default=0)
    fence = "`" * (run + 1)
    pad = " " if s.startswith("`") or s.endswith("`") or not s else ""
    return f"{fence}{pad}{s}{pad}{fence}"
