"""Kept so that older imports keep working: :mod:`ralif.ui.text` is the one place for user text."""

from __future__ import annotations

from ralif.ui.text import JOINER, code, lit, no_autolink

__all__ = ["JOINER", "code", "lit", "no_autolink"]
