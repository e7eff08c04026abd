"""CSV cells that spreadsheets show as text: what the exports write and the CSV readers read back.

A spreadsheet runs a cell starting with ``=``, ``+``, ``-`` or ``@`` as a formula, so a class or file
name written there could run as one when the file is opened.
"""

from __future__ import annotations

from typing import Any

# What a spreadsheet reads as the start of a formula; a tab or a line break first is skipped by some.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_QUOTED = frozenset((*_FORMULA_START, "'"))


def spreadsheet_cell(value: Any) -> Any:
    """``value`` as a CSV cell that a spreadsheet shows as text and never runs as a formula: text
    starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading ``'``. So
    does text starting with ``'`` followed by one of those (or by another ``'``), so that
    :func:`from_spreadsheet_cell` always gives back the text as it was. Numbers stay as they are."""
    if isinstance(value, str) and (value.startswith(_FORMULA_START) or (value[:1] == "'" and value[1:2] in _QUOTED)):
        return "'" + value
    return value


def from_spreadsheet_cell(text: str) -> str:
    """The text :func:`spreadsheet_cell` was given (for readers of the CSV files written here)."""
    return text[1:] if text[:1] == "'" and text[1:2] in _QUOTED else text
