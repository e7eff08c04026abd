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

# Every ASCII punctuation character may be backslash-escaped in CommonMark; escaping all of them is
# simpler and safer than choosing the ones that matter in each context.
_PUNCT = re.compile(r"([!-/:-@\[-`{-~])")
_AUTOLINK = re.compile(r"(?i)(https?|www|ftp)(?=[:.])|(?=@)")
JOINER = "\u2060"


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
        # Newlines are gone, so a few characters act only where they stand first: a hyphen starts a
        # list or rule, a period after a number an ordered list; a comma never acts, nor a colon
        # before a space (a directive or shortcode needs a letter after it). Left plain, messages
        # such as "CIFAR-10" or "RuntimeError: disk full." read the same in the Markdown source.
        if ch == "," or (ch == "-" and i != lead) or (ch == "." and i != after_number):
            return ch
        if ch == ":" and (i + 1 == len(s) or s[i + 1].isspace()):
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
