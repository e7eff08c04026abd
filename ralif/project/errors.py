"""The project's exceptions."""

from __future__ import annotations


class ProjectError(ValueError):
    """A request the project cannot carry out; the message says why and what to do."""


class RoundBusy(ProjectError):
    """A round is already running for this project."""


class DestinationExists(FileExistsError):
    """An export's destination exists and overwriting was not asked for; ``path`` names it, so a caller
    can word its own remedy (the command line's ``--overwrite``)."""

    def __init__(self, path: object) -> None:
        super().__init__(f"{path} exists; choose another destination or pass overwrite=True")
        self.path = str(path)
