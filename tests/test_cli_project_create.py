"""``ralif project create`` (and the other actions' messages and help): options are checked before
the images are scanned, missing encoder weights are fetched or refused before anything is made,
errors speak the command line's options, and the plan says what is imported."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from helpers import make_images

import ralif.folder_scan
import ralif.project.session
import ralif.weights
from ralif.cli import main as cli_main
from ralif.commands import project as project_command
from ralif.project import Project, ProjectError
from ralif.project.store import DB_NAME
from ralif.project.validation import DEFAULT_BATCH


def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("Downloading")]
    assert len(lines) == 1, err
    assert lines[0].startswith("ralif project: error: "), err
    return lines[0]


@pytest.fixture()
def src(tmp_path: Path) -> Path:
    make_images(tmp_path / "src", per_class=4)
    return tmp_path / "src"


@pytest.fixture()
def no_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any reading of the image source fails the test."""
    def scanned(*args: object, **kwargs: object) -> None:
        raise AssertionError("the images were read before the options were checked")

    monkeypatch.setattr(ralif.folder_scan, "preview_source", scanned)
    monkeypatch.setattr(ralif.folder_scan, "scan_folder", scanned)
    monkeypatch.setattr(ralif.project.session, "read_source", scanned)


BAD_OPTIONS = [
    (["--strategy", "ralif(fraction=2)"], "--strategy ralif(fraction=2)"),
    (["--batch-size", "0"], "--batch-size 0"),
    (["--test", "1.5"], "--test 1.5"),
    (["--test", "/no/such/held-out"], "--test /no/such/held-out"),
    (["--encoder", "foo:bar"], "foo:bar"),
    (["--classes", "cat," + "x" * 300], "at most 200 characters"),
]


@pytest.mark.parametrize("layout", ["auto", "flat"])
@pytest.mark.parametrize(("options", "said"), BAD_OPTIONS, ids=[o[0][0] + o[0][1][:10] for o in BAD_OPTIONS])
def test_options_are_checked_before_the_scan(tmp_path: Path, src: Path, no_scan: None, capsys,
                                             layout: str, options: list[str], said: str) -> None:
    dest = tmp_path / "p"
    assert cli_main(["project", "create", str(dest), "--images", str(src), "--layout", layout, *options]) == 1
    assert said in _one_line_error(capsys.readouterr().err)
    assert not dest.exists()


def test_a_bad_as_decision_is_refused_before_the_scan(tmp_path: Path, src: Path, no_scan: None, capsys) -> None:
    assert cli_main(["project", "create", str(tmp_path / "p"), "--images", str(src), "--as", "cat=bogus"]) == 1
    assert "--as cat=bogus" in _one_line_error(capsys.readouterr().err)


def test_a_taken_destination_is_refused_before_the_scan(tmp_path: Path, src: Path, no_scan: None,
                                                       capsys) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    assert cli_main(["project", "create", str(busy), "--images", str(src)]) == 1
    assert "is not an empty folder" in _one_line_error(capsys.readouterr().err)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / DB_NAME).write_bytes(b"")
    assert cli_main(["project", "create", str(taken), "--images", str(src)]) == 1
    line = _one_line_error(capsys.readouterr().err)
    assert "already holds a project" in line and "Project.open" not in line
    assert f"ralif project info {taken}" in line


def test_the_library_checks_a_held_out_fraction_before_reading(tmp_path: Path, src: Path, no_scan: None) -> None:
    with pytest.raises(ProjectError, match="held-out fraction"):
        Project.create(tmp_path / "p", src, encoder="pixels:2", test=1.5)
    with pytest.raises(FileNotFoundError, match="test source not found"):
        Project.create(tmp_path / "p", src, encoder="pixels:2", test=tmp_path / "missing")
    assert not (tmp_path / "p").exists()


# ----------------------------------------------------------------------------- encoder weights


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def empty_weight_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))          # open_clip's legacy ~/.cache/clip
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)


@pytest.mark.parametrize("how", ["unreachable", "offline"])
def test_missing_weights_that_cannot_be_downloaded_create_nothing(tmp_path: Path, src: Path, no_scan: None,
                                                                  empty_weight_caches: None, capsys,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  how: str) -> None:
    if how == "offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:   # the download is tried, against a server that refuses at once
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    dest = tmp_path / "p"
    assert cli_main(["project", "create", str(dest), "--images", str(src),
                     "--encoder", "clip:ViT-B-16:openai"]) == 1
    line = _one_line_error(capsys.readouterr().err)
    assert "weights of open_clip ViT-B-16" in line and "No project was created" in line
    assert "Fixes: (1)" in line and "--encoder pixels:N" in line
    assert "--pretrained" not in line                    # project create has no such option
    assert not dest.exists()


def test_missing_weights_are_downloaded_before_the_scan(tmp_path: Path, src: Path, empty_weight_caches: None,
                                                        monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    events: list[str] = []

    def fake_download(source: ralif.weights.WeightsSource, **kwargs: object) -> Path:
        events.append(f"download {source.spec}")
        return tmp_path / "weights.safetensors"

    scan = ralif.folder_scan.preview_source

    def recorded_scan(*args: object, **kwargs: object) -> object:
        events.append("scan")
        return scan(*args, **kwargs)

    monkeypatch.setattr(ralif.weights, "download", fake_download)
    monkeypatch.setattr(ralif.folder_scan, "preview_source", recorded_scan)
    assert cli_main(["project", "create", str(tmp_path / "p"), "--images", str(src),
                     "--encoder", "clip:ViT-B-16:openai"]) == 0
    assert events == ["download clip:ViT-B-16:openai", "scan"]
    assert Project.open(tmp_path / "p").settings["encoder"] == "clip:ViT-B-16:openai"


# ----------------------------------------------------------------------------- messages


def test_a_missing_project_names_the_command_that_makes_one(tmp_path: Path, capsys) -> None:
    for action in ("info", "round", "export"):
        assert cli_main(["project", action, str(tmp_path / "nothing")]) == 1
        line = _one_line_error(capsys.readouterr().err)
        assert "Project.create" not in line and f"ralif project create {tmp_path / 'nothing'}" in line


def test_an_existing_export_destination_names_overwrite(demo_project: Project, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    assert cli_main(["project", "export", str(demo_project.folder), "--format", "imagefolder",
                     "--out", str(out)]) == 1
    line = _one_line_error(capsys.readouterr().err)
    assert "overwrite=True" not in line and "--overwrite" in line and str(out) in line


# ----------------------------------------------------------------------------- help and the plan


def _help(*argv: str, capsys) -> str:
    with pytest.raises(SystemExit):
        cli_main([*argv, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_every_create_and_demo_option_has_help_with_its_default(capsys) -> None:
    text = _help("project", "create", capsys=capsys)
    assert "project name shown in the app (default: the folder's name)" in text
    assert "(default: clip-linear)" in text
    assert f"images asked per round (default: {DEFAULT_BATCH})" in text
    assert "(default: auto)" in text
    text = _help("project", "demo", capsys=capsys)
    assert "folder new (or empty) project folder" in text
    assert "one class after the other (default: 0: a cold start)" in text
    assert f"images asked per round (default: {DEFAULT_BATCH})" in text
    assert project_command.DEFAULT_BATCH == DEFAULT_BATCH


@pytest.mark.parametrize(("known", "said"), [
    ("truth", "Plan: 3 classes, 0 labeled images: the 12 known labels are kept hidden as the simulated "
              "oracle's truth (--known-labels truth); 12 unlabeled, 0 ignored"),
    ("ignore", "Plan: 0 labeled images: the 12 known labels are ignored (--known-labels ignore); "
               "12 unlabeled, 0 ignored"),
    ("import", "Plan: 3 classes, 12 labeled images, 0 unlabeled, 0 ignored"),
])
def test_the_plan_says_what_is_imported(tmp_path: Path, src: Path, capsys, known: str, said: str) -> None:
    assert cli_main(["project", "create", str(tmp_path / "p"), "--images", str(src), "--encoder", "pixels:2",
                     "--known-labels", known]) == 0
    out, err = capsys.readouterr()
    assert said in err.splitlines()
    report = json.loads(out)
    assert report["import"]["labels"] == (12 if known == "import" else 0)
    assert report["preview"]["plan"]["labels_imported"] == report["import"]["labels"]
