"""User text rendered through Markdown stays literal: no image, link, HTML, LaTeX or colour directive."""

from __future__ import annotations

import re

import pytest

from ralif.ui.text import JOINER, code, lit

HOSTILE = [
    "![p](http://127.0.0.1:9/x.png)",
    "[click](http://example.invalid)",
    "<img src=x onerror=alert(1)>",
    "$x^2$",
    ":red[alarm]",
    "**bold** _it_ `code`",
    "# heading",
    "a|b|c",
    "line\nbreak",
]


def _unescape(s: str) -> str:
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", s)


@pytest.mark.parametrize("name", HOSTILE)
def test_lit_escapes_every_markdown_character(name):
    out = lit(name)
    assert _unescape(out).replace(JOINER, "") == name.replace("\n", " ")
    # No unescaped punctuation is left for Markdown to act on.
    assert not re.search(r"(?<!\\)[!\[\]()<>$:*_`#|]", out.replace("\\\\", ""))


def test_lit_keeps_plain_text_and_unicode():
    assert lit("dog") == "dog"
    assert lit("Ünïcode ネコ 3") == "Ünïcode ネコ 3"


@pytest.mark.parametrize("name", ["a`b", "``x", "plain", ""])
def test_code_fence_outlasts_backticks_inside(name):
    out = code(name)
    fence = re.match(r"`+", out).group(0)
    assert fence not in name
    assert out.endswith(fence)
