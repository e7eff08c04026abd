"""User text for Streamlit's Markdown: :func:`ralif.ui.text.lit`, plus no automatic links.

Streamlit's Markdown (GitHub flavour) turns bare ``http://...``, ``www.`` and ``name@host`` text into
live links after parsing, so escaping the characters does not stop it: a class named
``![p](http://host/x.png)`` still showed a link to ``host``. A WORD JOINER (U+2060, invisible and
zero-width) after ``http``/``https``/``www`` and before ``@`` keeps those patterns from matching,
and the text reads the same.
"""

from __future__ import annotations

import re

from ralif.ui import text as _text

_AUTOLINK = re.compile(r"(?i)(https?|www|ftp)(?=[:.])|(?=@)")
JOINER = "\u2060"


def no_autolink(text: object) -> str:
    return _AUTOLINK.sub(lambda m: (m.group(1) or "") + JOINER, str(text))


def lit(text: object) -> str:
    """``text`` shown literally in Markdown: no links (written or automatic), images, HTML, LaTeX,
    colours."""
    out = _text.lit(no_autolink(text))
    # A hyphen acts only at the start of a line (lists, rules) and newlines are gone, so inside the
    # text it is left plain: "CIFAR-10" stays readable in the Markdown source too.
    return out[:2] + out[2:].replace("\\-", "-")


def code(text: object) -> str:
    """``text`` as inline code (code spans are never linked)."""
    return _text.code(text)
