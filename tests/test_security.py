"""Nothing exposed: the app listens on this machine only with XSRF protection on, no file a user
did not create is unpickled, and exports and project paths stay where they belong."""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import torch

from ralif.encoders import _load_state_dict
from ralif.project import Project, ProjectError

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "ralif/app/assets/demo"


def test_the_app_listens_on_this_machine_only_with_xsrf_protection() -> None:
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"
    assert config["server"]["enableXsrfProtection"] is True
    assert config["browser"]["gatherUsageStats"] is False
    app_rule = re.search(r"^app:.*?(?=^\S)", (ROOT / "Makefile").read_text() + "\nend:", re.DOTALL | re.MULTILINE)
    assert app_rule and "--server.address 127.0.0.1" in app_rule.group(0)
    assert "0.0.0.0" not in app_rule.group(0)


class _Payload:
    """What a hostile checkpoint carries: unpickling it would run code (here: write a file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "ran"))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    evil = tmp_path / "weights.pt"
    torch.save({"fc.weight": torch.zeros(2, 2), "trap": _Payload(marker)}, evil)
    with pytest.raises(Exception, match=r"(?i)weights only|unsupported|global"):
        _load_state_dict(str(evil))
    assert not marker.exists()


def test_the_library_never_unpickles_a_file() -> None:
    sources = {p: p.read_text() for p in (ROOT / "ralif").rglob("*.py")}
    for path, text in sources.items():
        assert "allow_pickle=True" not in text, path
        assert not re.search(r"pickle\.loads?\(", text), path
        for line in text.splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, (path, line)


def test_class_names_cannot_escape_the_export_folder(tmp_path: Path) -> None:
    project = Project.create_demo(tmp_path / "p", assets=DEMO, run_first_round=False)
    ids = [r.image_id for r in project.images_page(limit=6)]
    hostile = ["../../outside", "/abs/olute", "..", "a\\..\\b", "con", "x\x00y"]
    for image_id, name in zip(ids, hostile):
        cid = project.add_class(name.replace("\x00", "_"))
        project.label(image_id, cid)
    dest = tmp_path / "export" / "tree"
    project.export_imagefolder(dest)
    written = [p for p in dest.rglob("*") if p.is_file()]
    # One file per image, and the manifest of their class names (labels.csv) at the root.
    assert len(written) == len(hostile) + 1 and (dest / "labels.csv").is_file()
    real = dest.resolve()
    assert all(real in p.resolve().parents for p in written)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "p"]


def test_project_paths_are_checked(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no ralif project"):
        Project.open(tmp_path)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(ProjectError, match="not an empty folder"):
        Project.create(tmp_path / "taken", DEMO / "images" / "train")
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"


def test_a_project_named_in_the_url_must_be_a_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    root = tmp_path / "projects"
    monkeypatch.setenv("RALIF_PROJECTS", str(root))
    Project.create_demo(root / "demo", assets=DEMO, run_first_round=False)
    (tmp_path / "elsewhere").mkdir()
    for value in ("../elsewhere", str(tmp_path / "elsewhere"), "demo/../../elsewhere"):
        at = AppTest.from_file(str(ROOT / "views" / "4_Export.py"), default_timeout=60)
        at.query_params["project"] = value
        at.run()
        assert not at.exception
        assert any("No project is open" in i.value for i in at.info), value


def test_a_foreign_database_named_like_a_project_is_never_written(tmp_path: Path) -> None:
    folder = tmp_path / "not-mine"
    folder.mkdir()
    db = folder / "project.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, secret TEXT)")
    conn.execute("INSERT INTO accounts(secret) VALUES ('s3cret')")
    conn.commit()
    conn.close()
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    out = subprocess.run([sys.executable, "-m", "ralif", "project", "info", str(folder)], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert out.returncode == 1
    assert "not a ralif project" in out.stderr and str(db) in out.stderr
    with pytest.raises(ProjectError, match="not a ralif project"):
        Project.open(folder)
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in folder.iterdir()) == ["project.sqlite"]
