""""Open a project folder elsewhere" is a form: Enter in its path field submits it (the browser side
of that is in test_home_enter_and_url_browser.py), so a typed path opens, and a bad or empty one
gets a clear box."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_images
from streamlit.testing.v1 import AppTest

from ralif.project import Project

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def at(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("RALIF_PROJECTS", str(tmp_path / "projects"))
    monkeypatch.setattr(Project, "start_round", lambda self, *a, **k: None)
    make_images(tmp_path / "imgs", per_class=2)
    Project.create(tmp_path / "projects" / "here", tmp_path / "imgs", encoder="pixels:2", batch_size=2)
    Project.create(tmp_path / "elsewhere" / "shop", tmp_path / "imgs", encoder="pixels:2", batch_size=2)
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    app.session_state["ralif_demo_tried"] = True
    return app.run()


def _open(at: AppTest, folder: str) -> AppTest:
    at.text_input(key="open_other").input(folder)
    at.button(key="open_other_btn").click()
    return at.run()


def test_the_path_field_and_its_button_are_one_form(at: AppTest) -> None:
    field, button = at.text_input(key="open_other"), at.button(key="open_other_btn")
    assert field.proto.form_id and field.proto.form_id == button.proto.form_id
    assert button.proto.is_form_submitter


def test_a_project_folder_opens_and_bad_ones_say_why(at: AppTest, tmp_path: Path) -> None:
    _open(at, "")
    assert not at.exception, at.exception
    assert any("Type the path of a project folder" in e.value for e in at.error)
    _open(at, str(tmp_path / "nowhere"))
    assert any("Cannot open" in e.value and "no ralif project" in e.value for e in at.error)
    _open(at, str(tmp_path / "elsewhere" / "shop"))
    assert not at.exception, at.exception
    assert at.session_state["ralif_project_dir"] == str(tmp_path / "elsewhere" / "shop")
    assert [t.value for t in at.title] == ["Label · shop"]
