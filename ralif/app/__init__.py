"""The labeling app, shipped inside the package so that ``pip install ralif`` can run it.

This folder holds the Streamlit app: ``app.py`` (navigation and the Projects page), ``views/``
(one page per file, ordered by its number prefix; not ``pages``, which Streamlit would list on its
own before the app's navigation runs), ``.streamlit/config.toml`` (local-only server,
theme) and ``assets/`` (the bundled demo's images and embeddings). ``ralif app`` runs
``app.py`` from here. A source checkout keeps a thin top-level ``app.py`` and ``views/*.py`` that
run these same files with :func:`run_packaged`, so ``streamlit run app.py`` and the page tests
exercise the code that is installed.

Importing this module only locates files; it never imports Streamlit.
"""

from __future__ import annotations

import runpy
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent
ENTRY = "app.py"


def packaged_script() -> Path | None:
    """The app's entry script inside the package, or None where the pages are not installed."""
    script = APP_DIR / ENTRY
    return script if script.is_file() and (APP_DIR / "views").is_dir() else None


def run_packaged(relative: str) -> None:
    """Run ``APP_DIR / relative`` (``"app.py"`` or ``"views/1_Label.py"``) as the current Streamlit
    script. Streamlit reruns the calling file on every interaction; each run executes the packaged
    file afresh, as if Streamlit had been pointed at it."""
    target = (APP_DIR / relative).resolve()
    # A wrapper may only run the app's own files, never a path that leaves the package folder.
    if APP_DIR not in target.parents or not target.is_file():
        raise FileNotFoundError(f"{relative} is not a page of the installed app (looked in {APP_DIR})")
    runpy.run_path(str(target), run_name="__main__")
