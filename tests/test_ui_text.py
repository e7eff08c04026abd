"""User text rendered through Markdown stays literal: no image, link, HTML, LaTeX or colour directive."""

from __future__ import annotations

import html
import random
import re

import pytest
from markdown_it import MarkdownIt

from ralif.ui.text import JOINER, code, lit

# CommonMark with GFM's tables and strikethrough: what Streamlit's Markdown renders beyond the core,
# except its own extensions (colours, LaTeX, shortcodes), which every name below also covers.
MD = MarkdownIt("commonmark").enable(["strikethrough", "table"])

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
    "1. first", "2) second", "- item", "+ item", "> quote", "=== rule", "--- rule", "# h", "&amp; &#95;",
    "_lead", "trail_", "a_b_c", "a__b__c", "a _b_ c", "a*b*c", "a~b~c", "x(y)", "a)_b_(c", "<http://x.y>",
]


def rendered(markdown: str, start: str = "<p>", end: str = "</p>") -> str:
    """The text a reader sees of ``markdown`` between ``start`` and ``end``; fails on any other element."""
    out = MD.render(markdown).strip()
    assert out.startswith(start) and out.endswith(end), out
    inner = out[len(start):len(out) - len(end)]
    assert "<" not in inner, out
    return html.unescape(inner).replace(JOINER, "")


def _unescape(s: str) -> str:
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", s)


@pytest.mark.parametrize("name", HOSTILE)
def test_lit_escapes_every_markdown_character(name):
    out = lit(name)
    assert _unescape(out).replace(JOINER, "") == name.replace("\n", " ")
    # The characters that act anywhere in a line are never left plain.
    assert not re.search(r"(?<!\\)[\[\]<$*`|~]", out.replace("\\\\", ""))


def test_lit_keeps_plain_text_and_unicode():
    assert lit("dog") == "dog"
    assert lit("Ünïcode ネコ 3") == "Ünïcode ネコ 3"


@pytest.mark.parametrize("name", HOSTILE)
def test_lit_renders_as_typed(name):
    assert rendered(lit(name)) == name.replace("\n", " ")
    bold = rendered(f"**{lit(name)}** · 3 images", "<p><strong>", "</strong> · 3 images</p>")
    assert bold == name.replace("\n", " ")


def test_lit_renders_as_typed_on_random_punctuation():
    rng = random.Random(0)
    alphabet = "ab1 é" + "".join(chr(c) for c in range(33, 127) if not chr(c).isalnum())
    for _ in range(3000):
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        if name.strip() != name:
            continue  # a paragraph drops spaces at its ends: the app shows those names otherwise
        assert rendered(lit(name)) == name, (name, lit(name))
        assert rendered(f"**{lit(name)}** ·", "<p><strong>", "</strong> ·</p>") == name, (name, lit(name))


@pytest.mark.parametrize("name, shown", [
    ("golden_retriever", "golden_retriever"), ("cat (wild)", "cat (wild)"), ("O'Brien's / 2", "O'Brien's / 2"),
    ("cats & dogs", "cats & dogs"), ("C# vs F#", "C# vs F#"), ("50% off!", "50% off!"),
])
def test_lit_leaves_everyday_names_unescaped(name, shown):
    """An input's accessible name is its label as written: a screen reader would read every backslash."""
    assert lit(name) == shown


@pytest.mark.parametrize("name", ["a`b", "``x", "plain", ""])
def test_code_fence_outlasts_backticks_inside(name):
    out = code(name)
    fence = re.match(r"`+", out).group(0)
    assert fence not in name
    assert out.endswith(fence)
