"""Shared test settings and fixtures (the plain helpers they use are in tests/helpers.py)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers import DEMO


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> Iterator[None]:
    # Tests run many small tensor operations on shared cores, where one thread is much faster than
    # oversubscribed ones; the library's own default (all cores) is for real workloads.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture()
def demo_assets(tmp_path: Path) -> Path:
    """A private copy of the demo's assets, for tests that alter its image files."""
    return Path(shutil.copytree(DEMO, tmp_path / "assets"))


@pytest.fixture()
def demo_project(tmp_path: Path):
    """A fresh demo project (the shipped demo assets, its first round run) in ``tmp_path/demo``."""
    from ralif.project import Project

    return Project.create_demo(tmp_path / "demo", assets=DEMO)


@pytest.fixture()
def demo_project_no_round(tmp_path: Path):
    """A fresh demo project whose first round has not run (no model yet)."""
    from ralif.project import Project

    return Project.create_demo(tmp_path / "demo", assets=DEMO, run_first_round=False)
