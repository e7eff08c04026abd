"""The project's exceptions."""

from __future__ import annotations


class ProjectError(ValueError):
    """A request the project cannot carry out; the message says why and what to do."""


class RoundBusy(ProjectError):
    """A round is already running for this project."""
