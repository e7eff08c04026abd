"""User text (class, project and file names, messages quoting them) made safe for Streamlit's Markdown.

Streamlit renders captions, titles, markdown, buttons' labels and messages as Markdown with its own
extensions (``:red[...]``, ``$...$`` LaTeX, emoji shortcodes, raw HTML where allowed). A name typed by a
user must show as typed: an image link in a class name would make the browser fetch an outside URL.
``lit`` escapes every character that Markdown or those extensions could act on, so the text renders
literally wherever it is interpolated into Markdown.

Escaping alone does not stop GitHub-flavoured Markdown's automatic links: bare ``http://...``,
``www.`` and ``name@host`` text becomes a live link after parsing, so a class named
``![p](http://host/x.png)`` still showed a link to ``host``. A WORD JOINER (U+2060, invisible and
zero-width) after ``http``/``https``/``www``/``ftp`` and before ``@`` keeps those patterns from
matching, and the text reads the same.
"""

from __future__ import annotations

import re

# Every ASCII punctuation character may be backslash-escaped in CommonMark; ``lit`` escapes those of
# them that can act where they stand (tests/test_ui_text.py renders every case with a CommonMark parser).
_PUNCT = re.compile(r"([!-/:-@\[-`{-~])")
_AUTOLINK = re.compile(r"(?i)(https?|www|ftp)(?=[:.])|(?=@)")
JOINER = "\u2060"
# Punctuation that Markdown and Streamlit's extensions never act on inside one line of text.
_INERT = set(",!('\"/;?%^{}")


def no_autolink(text: object) -> str:
    """``text`` with a zero-width joiner where an automatic link would otherwise start."""
    return _AUTOLINK.sub(lambda m: (m.group(1) or "") + JOINER, str(text))


def lit(text: object) -> str:
    """``text`` escaped so that Markdown shows it literally (no links, written or automatic, images,
    HTML, LaTeX, colours)."""
    s = no_autolink(str(text).replace("\r", " ").replace("\n", " "))
    lead = len(s) - len(s.lstrip())
    number = re.match(r"\s*\d*", s)
    after_number = number.end() if number is not None and number.end() > lead else -1

    def escape(m: re.Match[str]) -> str:
        ch, i = m.group(1), m.start()
        # A backslash is read out by screen readers wherever the text is also an input's accessible
        # name, so only characters that can act where they stand are escaped. Newlines are gone, so
        # block markers act only first (a list, heading, quote or rule; a number's "." or ")" an
        # ordered list); a colon before a space is no directive or shortcode; "!" and "(" act only
        # with a "[" or "]", which are escaped; "&" only starts an entity before a name or "#"; "_"
        # between two letters or digits can neither open nor close emphasis (CommonMark's flanking
        # rule), so "golden_retriever" stays as typed.
        if ch in _INERT:
            return ch
        if ch in "-+#>=" and i != lead:
            return ch
        if ch in ".)" and i != after_number:
            return ch
        if ch == ":" and (i + 1 == len(s) or s[i + 1].isspace()):
            return ch
        if ch == "&" and not (i + 1 < len(s) and (s[i + 1].isalnum() or s[i + 1] == "#")):
            return ch
        if ch == "_" and 0 < i < len(s) - 1 and s[i - 1].isalnum() and s[i + 1].isalnum():
            return ch
        return "\\" + ch

    return _PUNCT.sub(escape, s)


def code(text: object) -> str:
    """``text`` as inline code that cannot be closed early by a backtick inside it (code spans are
    never linked)."""
    s = str(text).replace("\r", " ").replace("\n", " ")
    run = max((len(m) for m in re.findall(r"`+", s)), default=0)
    fence = "`" * (run + 1)
    pad = " " if s.startswith("`") or s.endswith("`") or not s else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def counted(n: int, word: str, plural: str | None = None) -> str:
    """``n`` with ``word`` agreeing in number ("1 image", "2,000 images"); ``plural`` where adding an
    s is wrong ("class", "classes")."""
    return f"{n:,} {word if n == 1 else plural or word + 's'}"
