"""Bad input, case by case: what a user gets when a file, folder, manifest, feature file or model
is not what ralif expects.

Each test goes through the path a user takes (``Project.create`` / ``add_images`` from a folder,
ImageFolder or CSV manifest, ``run_round``, the ``ralif project`` and ``ralif predict`` commands,
the feature-file reader behind ``ralif simulate``, ``load_model``) and checks two things: the
message names the problem and the file, and nothing already labeled is lost. docs/reliability.md
lists the cases with the test for each. Images are tiny and generated; the model-free ``pixels``
encoder keeps rounds fast.
"""

from __future__ import annotations

import csv
import json
import os
import struct
import sys
import threading
import unicodedata
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_images import _jpeg_bytes
from test_project import BLUE, RED, _colors_folder, _png

from ralif.cli import main as cli_main
from ralif.encoders import PrecomputedEmbeddings
from ralif.features import load_feature_splits
from ralif.images import ImageDecodeError, scan_images
from ralif.project import Project, ProjectError
from ralif.project.rounds import load_model, pixel_features

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX symbolic links and file names")


# ----------------------------------------------------------------------------- helpers


def _labels(project: Project) -> dict[int, tuple[str, int | None, int]]:
    """Every image's label state, to compare before and after a failure."""
    out = {}
    for split in ("pool", "test"):
        for row in project.images_page("all", split=split, limit=100_000):
            out[row.image_id] = (row.label.state, row.label.class_id, row.label.version)
    return out


def _project(tmp_path: Path, per_class: int = 3, **kwargs) -> Project:
    """A small project with imported labels of two classes (red, blue)."""
    src = _colors_folder(tmp_path / "src", per_class=per_class)
    kwargs.setdefault("encoder", "pixels:2")
    return Project.create(tmp_path / "project", src, **kwargs)


def _noise_png(path: Path, seed: int, size: int = 16) -> Path:
    # Noise does not compress, so the middle of the file is pixel data (IDAT), not a header.
    arr = np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _corrupt(path: Path) -> Path:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 16] = bytes(b ^ 0xFF for b in data[mid:mid + 16])
    path.write_bytes(bytes(data))
    return path


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels: a decompression bomb's shape."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def _problems(report_or_list) -> dict[str, str]:
    items = report_or_list.problems if hasattr(report_or_list, "problems") else report_or_list
    return {Path(p).name: why for p, why in items}


def _embeddings(path: Path, image_paths: list[Path], dim: int = 4, seed: int = 0) -> np.ndarray:
    feats = np.random.default_rng(seed).normal(size=(len(image_paths), dim)).astype(np.float32)
    np.savez(path, features=feats, paths=np.array([os.path.relpath(p, path.parent) for p in image_paths]))
    return feats


# ----------------------------------------------------------------------------- broken files


def test_corrupt_image_is_skipped_at_import_and_named_when_it_breaks_a_round(tmp_path):
    src = _colors_folder(tmp_path / "src", per_class=3)
    _corrupt(_noise_png(src / "red" / "corrupt.png", seed=1))
    project = Project.create(tmp_path / "p", src, encoder="pixels:2")
    assert "corrupt" in _problems(project.import_report)["corrupt.png"]
    assert project.progress().labeled == 6
    before = _labels(project)

    # A file damaged after the import: the round fails naming it, and labels stay as they were.
    victim = Path(project.images_page(limit=1)[0].path)
    good = victim.read_bytes()
    victim.write_bytes(good[:20] + b"garbage" * 10)
    with pytest.raises(ImageDecodeError, match=victim.name):
        project.run_round()
    status = project.round_status()
    assert status["status"] == "failed" and victim.name in status["error"]
    assert _labels(project) == before and project.current_model_path() is None
    victim.write_bytes(good)
    assert project.run_round()["cold_start"] is False  # fixed file: the same round just runs


def test_truncated_image_is_named_by_the_project_command(tmp_path, capsys):
    src = _colors_folder(tmp_path / "src", per_class=3)
    jpeg = _jpeg_bytes(size=(16, 16))
    (src / "blue" / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    code = cli_main(["project", "create", str(tmp_path / "p"), "--images", str(src), "--encoder", "pixels:2"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [p for p in out["import"]["problems"] if "cut.jpg" in p and "truncated" in p]
    assert out["progress"]["labeled"] == 6


def test_zero_byte_files_are_named_and_an_all_bad_folder_adds_nothing(tmp_path):
    project = _project(tmp_path)
    before = _labels(project)
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "empty.png").write_bytes(b"")
    _png(extra / "fine.png", RED, 500)
    report = project.add_images(extra, layout="flat")
    assert _problems(report) == {"empty.png": "empty file (0 bytes)"} and report.added == 1
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (only_bad / "zero.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match=r"no readable images.*zero\.jpg: empty file \(0 bytes\)"):
        project.add_images(only_bad)
    assert {k: v for k, v in _labels(project).items() if k in before} == before


def test_non_image_files_are_named_or_ignored(tmp_path, capsys):
    src = _colors_folder(tmp_path / "src", per_class=3)
    (src / "red" / "photo.jpg").write_text("a text file with an image's name")
    (src / "red" / "IMG_0001.HEIC").write_bytes(b"\0\0\0\x18ftypheic")
    (src / "blue" / "notes.txt").write_text("read me")  # not an image name: not looked at
    project = Project.create(tmp_path / "p", src, encoder="pixels:2")
    bad = _problems(project.import_report)
    assert set(bad) == {"photo.jpg", "IMG_0001.HEIC"}
    assert "not an image" in bad["photo.jpg"]
    assert "HEIC" in bad["IMG_0001.HEIC"] and "convert" in bad["IMG_0001.HEIC"]
    assert project.progress().labeled == 6
    project.run_round()
    # Predicting on the same folder lists the same files as bad and predicts the rest.
    assert cli_main(["predict", "--model", str(project.folder), "--images", str(src),
                     "--out", str(tmp_path / "pred.csv")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 6 and summary["bad_files"]["count"] == 2
    assert any("photo.jpg" in line for line in summary["bad_files"]["first"])
    # A folder of nothing but phone photos says why, instead of just "empty".
    heic = tmp_path / "heic"
    heic.mkdir()
    (heic / "a.heic").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"a\.heic: HEIC images are not supported"):
        Project.create(tmp_path / "p2", heic, encoder="pixels:2")


def test_decompression_bombs_are_refused_before_decoding(tmp_path):
    src = _colors_folder(tmp_path / "src", per_class=3)
    (src / "red" / "bomb.png").write_bytes(_png_claiming(100_000, 100_000))   # 10^10 pixels: PIL raises
    (src / "red" / "big.png").write_bytes(_png_claiming(10_000, 10_000))      # 10^8: PIL only warns
    project = Project.create(tmp_path / "p", src, encoder="pixels:2")
    bad = _problems(project.import_report)
    assert set(bad) == {"bomb.png", "big.png"}
    assert all("decompression bomb" in why for why in bad.values())
    assert project.progress().labeled == 6


# ----------------------------------------------------------------------------- unusual image modes


def _gray(path: Path) -> None:
    Image.new("L", (16, 16), 128).save(path.with_suffix(".png"))


def _cmyk(path: Path) -> None:
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path.with_suffix(".jpg"), quality=95)


def _rgba(path: Path) -> None:
    # Fully transparent red: shown over white, it is white, not red.
    Image.new("RGBA", (16, 16), (255, 0, 0, 0)).save(path.with_suffix(".png"))


def _deep(path: Path) -> None:
    # A quarter of the 16-bit range; a plain 8-bit clip would make it white.
    Image.fromarray(np.full((16, 16), 16384, dtype=np.uint16)).save(path.with_suffix(".png"))


def _animated(path: Path) -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(path.with_suffix(".gif"), save_all=True, append_images=frames[1:])


@pytest.mark.parametrize("make, expected", [
    pytest.param(_gray, (128, 128, 128), id="grayscale"),
    pytest.param(_cmyk, "red", id="cmyk"),
    pytest.param(_rgba, (255, 255, 255), id="rgba"),
    pytest.param(_deep, (64, 64, 64), id="16-bit"),
    pytest.param(_animated, (255, 0, 0), id="animated-gif"),
])
def test_image_modes_are_imported_and_used_as_rgb(tmp_path, make, expected):
    src = _colors_folder(tmp_path / "src", per_class=3)
    make(src / "red" / "odd")
    project = Project.create(tmp_path / "p", src, encoder="pixels:2", batch_size=1)
    assert project.import_report.problems == []
    odd = [r for r in project.images_page(limit=100) if Path(r.path).stem == "odd"]
    assert len(odd) == 1 and odd[0].label.state == "labeled"
    pixel = pixel_features([odd[0].path], 2)[0][:3] * 255
    if expected == "red":
        assert pixel[0] > 200 and pixel[1] < 60 and pixel[2] < 60
    else:
        assert np.allclose(pixel, expected, atol=2)
    assert project.run_round()["model"] is not None
    _, probs = project.predict([odd[0].path])
    assert probs.shape == (1, 2) and np.isfinite(probs).all()


# ----------------------------------------------------------------------------- names and folders


def test_unicode_and_spaces_in_names_round_trip(tmp_path, capsys):
    root = tmp_path / "dossier été ü"
    paths = []
    for i in range(3):
        paths.append(_png(root / "chat noir 🐈" / f"photo {i}, été (copy).png", RED, i))
        paths.append(_png(root / "犬 inu" / f"犬 {i} 'q'.png", BLUE, 50 + i))
    project = Project.create(tmp_path / "projet à espaces", root, encoder="pixels:2", batch_size=1)
    assert project.import_report.problems == []
    assert [c.name for c in project.classes()] == ["chat noir 🐈", "犬 inu"]
    project.run_round()
    rows = list(csv.DictReader(project.export_csv().open(encoding="utf-8")))
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in paths)
    assert {r["label"] for r in rows} == {"chat noir 🐈", "犬 inu"}
    out = tmp_path / "prédictions.csv"
    assert cli_main(["predict", "--model", str(project.folder), "--images", str(root),
                     "--out", str(out)]) == 0
    capsys.readouterr()
    preds = {Path(r["path"]).name: r["prediction"] for r in csv.DictReader(out.open(encoding="utf-8"))}
    assert preds["photo 0, été (copy).png"] == "chat noir 🐈" and preds["犬 0 'q'.png"] == "犬 inu"
    exported = project.export_imagefolder(tmp_path / "export ü")
    assert sorted(os.listdir(exported)) == ["chat noir 🐈", "labels.csv", "犬 inu"]


def test_manifest_unicode_forms_and_legacy_encodings(tmp_path):
    imgs = tmp_path / "imgs"
    nfd_name = unicodedata.normalize("NFD", "café.png")
    _png(imgs / nfd_name, RED, 1)
    _png(imgs / "b.png", BLUE, 2)
    # Written with the composed "é" (as most editors do) while the file name is decomposed.
    manifest = imgs / "labels.csv"
    manifest.write_text(f"path,label\n{unicodedata.normalize('NFC', 'café.png')},rouge\nb.png,bleu\n",
                        encoding="utf-8")
    project = Project.create(tmp_path / "p", manifest, encoder="pixels:2")
    assert project.import_report.problems == [] and project.progress().labeled == 2
    # A manifest saved in a legacy code page names the file, the line and the fix.
    legacy = imgs / "excel.csv"
    legacy.write_bytes("path,label\nb.png,bleu\ncafé.png,rouge\n".encode("cp1252"))
    with pytest.raises(ValueError, match=r"excel\.csv is not UTF-8 text \(byte 0xe9 on line 3\).*UTF-8"):
        Project.create(tmp_path / "p2", legacy, encoder="pixels:2")
    assert not (tmp_path / "p2").exists()


@posix_only
def test_file_name_that_is_not_utf8_is_named_not_a_crash(tmp_path):
    src = _colors_folder(tmp_path / "src", per_class=3)
    raw = os.fsencode(src / "red") + b"/caf\xe9.png"
    try:
        with open(raw, "wb") as f:
            f.write((src / "red" / "r000.png").read_bytes() + b"\0")
    except OSError:
        pytest.skip("this file system only stores UTF-8 names")
    project = Project.create(tmp_path / "p", src, encoder="pixels:2")
    (_, why), = project.import_report.problems
    assert "caf\\xe9.png" in why and "not valid UTF-8" in why and "rename" in why
    assert project.progress().labeled == 6
    # The command's JSON report can print it too.
    assert json.dumps(project.import_report.problems)


@posix_only
def test_symlink_loops_end_and_links_keep_their_class(tmp_path):
    src = _colors_folder(tmp_path / "src", per_class=2)
    os.symlink(src, src / "red" / "loop")                       # a folder inside itself
    os.symlink(src / "red", src / "blue" / "also_red")          # a class folder reached from another
    os.symlink(src / "red" / "a.png", src / "red" / "b.png")    # two files pointing at each other
    os.symlink(src / "red" / "b.png", src / "red" / "a.png")
    outside = _colors_folder(tmp_path / "outside", per_class=1, start=50)
    os.symlink(outside / "blue", src / "blue" / "more")          # a link out of the folder is followed
    result: dict[str, Project] = {}
    worker = threading.Thread(target=lambda: result.update(p=Project.create(tmp_path / "p", src,
                                                                            encoder="pixels:2")), daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "creating the project did not finish"
    project = result["p"]
    assert _problems(project.import_report) == {"a.png": "symbolic link loop (following the link never "
                                                          "reaches a file)",
                                                "b.png": "symbolic link loop (following the link never "
                                                         "reaches a file)"}
    rows = project.images_page(limit=100)
    assert len(rows) == 5 and len({r.path for r in rows}) == 5
    labels = {Path(r.path).name: r.label.class_name for r in rows}
    assert labels == {"r000.png": "red", "r001.png": "red", "b000.png": "blue", "b001.png": "blue",
                      "b050.png": "blue"}


def test_empty_folder_is_refused_and_leaves_nothing_behind(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=f"no readable images in {empty}"):
        Project.create(tmp_path / "p", empty, encoder="pixels:2")
    assert not (tmp_path / "p").exists()
    (empty / "cats").mkdir()   # empty class folders are no better
    (empty / "dogs").mkdir()
    assert cli_main(["project", "create", str(tmp_path / "p"), "--images", str(empty),
                     "--encoder", "pixels:2"]) == 1
    assert "no readable images" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()
    project = _project(tmp_path)
    before = _labels(project)
    with pytest.raises(ValueError, match="no readable images"):
        project.add_images(empty)
    assert _labels(project) == before


# ----------------------------------------------------------------------------- classes


def test_single_class_starts_cold_and_says_two_classes_are_needed(tmp_path, capsys):
    src = tmp_path / "src"
    rows = [(_png(src / f"c{i}.png", (200, 20 * i, 0), i), "cat" if i < 3 else "") for i in range(6)]
    (src / "m.csv").write_text("path,label\n" + "".join(f"{p.name},{y}\n" for p, y in rows))
    project = Project.create(tmp_path / "p", src / "m.csv", encoder="pixels:2", batch_size=2)
    before = _labels(project)
    result = project.run_round()
    assert result["cold_start"] and result["model"] is None and result["selected"] == 2
    assert all("fewer than two classes labeled" in b.reason for b in project.pending_batch())
    with pytest.raises(ProjectError, match="at least two classes"):
        project.load_model()
    assert cli_main(["predict", "--model", str(project.folder), "--images", str(src)]) == 1
    assert "at least two classes" in capsys.readouterr().err
    assert _labels(project) == before


def test_single_class_with_everything_labeled_says_why_there_is_no_model(tmp_path):
    src = tmp_path / "src"
    for i in range(4):
        _png(src / "cat" / f"c{i}.png", (200, 20 * i, 0), i)
    project = Project.create(tmp_path / "p", src, encoder="pixels:2")
    before = _labels(project)
    with pytest.raises(ValueError, match=r"only cat has labels.*at least two classes"):
        project.run_round()
    assert "at least two classes" in project.round_status()["error"]
    assert _labels(project) == before


def test_class_with_no_examples_is_kept_in_the_model(tmp_path):
    project = _project(tmp_path, classes=["red", "blue", "green"], batch_size=2)
    grey = project.add_class("grey")    # added later, also without examples
    assert {c.name: c.count for c in project.classes()} == {"red": 3, "blue": 3, "green": 0, "grey": 0}
    before = _labels(project)
    assert project.run_round()["model"] is not None
    model = project.load_model()
    assert model.class_names == ["red", "blue", "green", "grey"]
    names, probs = project.predict([str(tmp_path / "src" / "red" / "r000.png")])
    assert names == ["red"] and probs.shape == (1, 4) and np.allclose(probs.sum(), 1.0)
    assert project.pending_batch() == []    # every image was labeled: nothing to ask
    assert _labels(project) == before and project.class_id("grey") == grey


def test_more_than_100_classes(tmp_path, capsys):
    src = tmp_path / "src"
    rng = np.random.default_rng(0)
    lines = ["path,label"]
    for k in range(120):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        lines.append(f"{_png(src / f'k{k:03d}.png', color, k).name},class {k:03d}")
        if k % 4 == 0:
            lines.append(f"{_png(src / f'u{k:03d}.png', color, 1000 + k).name},")
    (src / "m.csv").write_text("\n".join(lines) + "\n")
    project = Project.create(tmp_path / "p", src / "m.csv", encoder="pixels:2", batch_size=5)
    assert len(project.classes()) == 120 and project.progress().labeled == 120
    result = project.run_round()
    assert result["selected"] == 5 and not result["cold_start"]
    assert len(load_model(project.folder).class_names) == 120
    out = tmp_path / "pred.csv"
    assert cli_main(["predict", "--model", str(project.folder), "--images", str(src / "m.csv"),
                     "--out", str(out), "--probabilities"]) == 0
    capsys.readouterr()
    header = next(csv.reader(out.open()))
    assert len([h for h in header if h.startswith("p_")]) == 120
    assert len(json.loads(project.export_json().read_text())["classes"]) == 120


def test_unknown_label_names_in_a_csv_are_listed(tmp_path, capsys):
    imgs = tmp_path / "imgs"
    rows = [("a.png", "cat", RED), ("b.png", "bird", BLUE), ("c.png", "fish", RED), ("d.png", "dog", BLUE)]
    for i, (name, _, color) in enumerate(rows):
        _png(imgs / name, color, i)
    manifest = imgs / "labels.csv"
    manifest.write_text("path,label\n" + "".join(f"{n},{y}\n" for n, y, _ in rows))
    with pytest.raises(ProjectError,
                       match=r"2 label names are not classes.*bird, fish.*add_unknown_classes"):
        Project.create(tmp_path / "p", manifest, classes=["cat", "dog"], encoder="pixels:2")
    assert not (tmp_path / "p").exists()
    assert cli_main(["project", "create", str(tmp_path / "p"), "--images", str(manifest),
                     "--classes", "cat,dog", "--encoder", "pixels:2"]) == 1
    assert "bird, fish" in capsys.readouterr().err
    # Labels for a project that exists: refused as a whole, so its labels stay as they were.
    project = Project.create(tmp_path / "p", manifest, classes=["cat", "dog"], encoder="pixels:2",
                             add_unknown_classes=True)
    before = _labels(project)
    more = tmp_path / "more.csv"
    more.write_text(f"path,label\n{imgs / 'a.png'},dog\n{imgs / 'b.png'},whale\n")
    with pytest.raises(ProjectError, match=r"1 label name in more\.csv is not a class of this project: whale"):
        project.import_labels(more)
    assert _labels(project) == before


def test_duplicate_images_are_reported_and_kept_once(tmp_path):
    src = _colors_folder(tmp_path / "src", per_class=3)
    (src / "red" / "copy.png").write_bytes((src / "red" / "r000.png").read_bytes())
    project = Project.create(tmp_path / "p", src, encoder="pixels:2")
    report = project.import_report
    assert [sorted(Path(p).name for p in g) for g in report.duplicates] == [["copy.png", "r000.png"]]
    assert report.skipped_duplicates == 1 and project.progress().labeled == 6
    before = _labels(project)
    # The same file twice in a manifest, and files already in the project.
    manifest = tmp_path / "again.csv"
    manifest.write_text(f"path\n{src / 'red' / 'r001.png'}\n{src / 'red' / 'r001.png'}\n")
    again = project.add_images(manifest)
    assert _problems(again) == {}, "a repeated row is read once, and is no unreadable file"
    assert again.already_present == 1 and again.added == 0
    assert _labels(project) == before


def test_duplicate_with_two_different_labels_is_not_resolved_silently(tmp_path):
    src = _colors_folder(tmp_path / "src", per_class=3)
    (src / "blue" / "same_as_r000.png").write_bytes((src / "red" / "r000.png").read_bytes())
    project = Project.create(tmp_path / "p", src, encoder="pixels:2")
    conflicts = getattr(project.import_report, "label_conflicts", [])
    assert len(conflicts) == 1
    assert all(word in conflicts[0] for word in ("blue", "red", "r000.png", "same_as_r000.png"))
    copies = [r for r in project.images_page(limit=100)
              if Path(r.path).name in ("r000.png", "same_as_r000.png")]
    assert len(copies) == 1 and copies[0].label.state == "unlabeled"


# ----------------------------------------------------------------------------- features and models


def test_features_with_nan_or_inf_are_refused_with_where(tmp_path):
    # The simulation's feature file.
    x = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    y = np.arange(20) % 2
    x_bad = x.copy()
    x_bad[4, 1] = np.nan
    x_bad[9, 0] = np.inf
    np.savez(tmp_path / "splits.npz", x_train=x_bad, y_train=y, x_test=x, y_test=y)
    with pytest.raises(ValueError, match=r"splits\.npz: x_train has 2 rows with NaN or inf values "
                                         r"\(rows 4, 9\)"):
        load_feature_splits(tmp_path / "splits.npz")
    # Precomputed embeddings, as the embed command and the feature cache read them.
    images = scan_images(_colors_folder(tmp_path / "src", per_class=3))
    feats = _embeddings(tmp_path / "emb.npz", [Path(p) for p in images.paths])
    feats[2, 0] = np.nan
    np.savez(tmp_path / "emb.npz", features=feats,
             paths=np.array([os.path.relpath(p, tmp_path) for p in images.paths]))
    with pytest.raises(ValueError, match=rf"emb\.npz holds NaN or inf values for 1 of 6 images, e\.g\. "
                                         rf".*{Path(images.paths[2]).name}"):
        PrecomputedEmbeddings(tmp_path / "emb.npz").features_for(images)
    # A project whose embeddings hold NaN: the round fails, labels and the model stay.
    project = Project.create(tmp_path / "p", tmp_path / "src", encoder=f"precomputed:{tmp_path / 'emb.npz'}")
    before = _labels(project)
    with pytest.raises(ValueError, match=r"NaN or inf values.*1 of 6"):
        project.run_round()
    assert "NaN or inf" in project.round_status()["error"]
    assert _labels(project) == before and project.current_model_path() is None


def test_nan_embeddings_in_a_project_name_the_file_and_image(tmp_path):
    src = _colors_folder(tmp_path / "src", per_class=3)
    images = sorted(src.rglob("*.png"))
    feats = _embeddings(tmp_path / "emb.npz", images)
    feats[0, 0] = np.inf
    np.savez(tmp_path / "emb.npz", features=feats,
             paths=np.array([os.path.relpath(p, tmp_path) for p in images]))
    project = Project.create(tmp_path / "p", src, encoder=f"precomputed:{tmp_path / 'emb.npz'}")
    with pytest.raises(ValueError, match=rf"emb\.npz.*NaN or inf.*{images[0].name}"):
        project.run_round()


def test_embedding_rows_that_do_not_match_the_images(tmp_path):
    src = _colors_folder(tmp_path / "src", per_class=3)
    images = sorted(src.rglob("*.png"))
    emb = tmp_path / "emb.npz"
    _embeddings(emb, images[:4])    # two images have no row
    project = Project.create(tmp_path / "p", src, encoder=f"precomputed:{emb}")
    before = _labels(project)
    with pytest.raises(ValueError, match=rf"2 of 6 images have no row in {emb}, e\.g\. .*{images[4].name}"):
        project.run_round()
    assert project.round_status()["status"] == "failed" and "no row" in project.round_status()["error"]
    assert _labels(project) == before
    # A file whose paths and rows disagree in number.
    feats = np.zeros((6, 4), np.float32)
    np.savez(emb, features=feats, paths=np.array([os.path.relpath(p, tmp_path) for p in images[:5]]))
    with pytest.raises(ValueError, match=r"emb\.npz: 5 paths for feature array of shape \(6, 4\)"):
        project.run_round()
    # Rows matched by position only (no paths): the count must agree.
    np.save(tmp_path / "plain.npy", feats[:5])
    with pytest.raises(ValueError, match=r"plain\.npy has 5 rows but there are 6 images"):
        PrecomputedEmbeddings(tmp_path / "plain.npy").features_for(scan_images(src))
    # Once the file is right, the same round runs and the labels are all still there.
    _embeddings(emb, images)
    assert project.run_round()["model"] is not None
    assert _labels(project) == before


def test_checkpoint_from_another_encoder_is_refused(tmp_path, capsys):
    src = _colors_folder(tmp_path / "src", per_class=3)
    images = sorted(src.rglob("*.png"))
    emb = tmp_path / "emb.npz"
    _embeddings(emb, images, dim=4)
    project = Project.create(tmp_path / "p", src, encoder=f"precomputed:{emb}")
    project.run_round()
    exported = project.export_model(tmp_path / "model")
    # The embeddings are recomputed with another encoder (other size) after training.
    _embeddings(emb, images, dim=6, seed=1)
    with pytest.raises(ValueError, match=r"trained on features of precomputed:sha256-\w+ but .* now gives"):
        project.predict([str(images[0])])
    assert cli_main(["predict", "--model", str(exported), "--images", str(src)]) == 1
    assert "was trained on features of" in capsys.readouterr().err
    # A model description without the encoder id (written by hand, or by an older version).
    sidecar = next(exported.glob("*.json"))
    meta = json.loads(sidecar.read_text())
    meta.pop("encoder_id")
    meta["encoder_spec"] = "pixels:2"
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"expects 4 values per image, so they come from another encoder"):
        load_model(exported).predict_proba([str(images[0])])
    # Encoder weights of another network: the round names the file, labels stay.
    other = tmp_path / "not_resnet.pth"
    torch.save({"weight": torch.zeros(2, 2), "bias": torch.zeros(2)}, other)
    project2 = Project.create(tmp_path / "p2", src, encoder=f"resnet18-32:{other}")
    before = _labels(project2)
    with pytest.raises(RuntimeError, match=r"not_resnet\.pth does not match resnet18"):
        project2.run_round()
    assert _labels(project2) == before


def test_npz_with_object_arrays_names_the_file_and_why(tmp_path):
    # Object arrays would need pickle to load, and a pickle can run code: refused, and said so.
    emb = tmp_path / "emb.npz"
    np.savez(emb, features=np.zeros((2, 4), np.float32), paths=np.array(["a.png", None], dtype=object))
    with pytest.raises(ValueError, match=r"the array 'paths' in .*emb\.npz holds Python objects "
                                         r"\(dtype=object\), which are refused: loading them would need pickle"):
        PrecomputedEmbeddings(emb)
    plain = tmp_path / "plain.npy"
    np.save(plain, np.array([[1.0], [None]], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"plain\.npy holds Python objects .*need pickle"):
        PrecomputedEmbeddings(plain)
    x = np.zeros((3, 2), np.float32)
    y = np.array([0, 1, 0])
    np.savez(tmp_path / "splits.npz", x_train=x, y_train=y, x_test=x, y_test=y,
             classes=np.array(["cat", {"not": "text"}], dtype=object))
    with pytest.raises(ValueError, match=r"the array 'classes' in .*splits\.npz holds Python objects"):
        load_feature_splits(tmp_path / "splits.npz")


@posix_only
def test_links_to_system_files_are_not_regular_files(tmp_path):
    src = _colors_folder(tmp_path / "src", per_class=3)
    os.symlink("/proc/self/environ", src / "red" / "environ.png")
    if os.path.exists("/dev/null"):
        os.symlink("/dev/null", src / "blue" / "null.jpg")
    project = Project.create(tmp_path / "p", src, encoder="pixels:2")
    bad = _problems(project.import_report)
    assert bad["environ.png"].startswith("not a regular file") and "empty" not in bad["environ.png"]
    if "null.jpg" in bad:
        assert bad["null.jpg"] == "not a regular file"
    assert project.progress().labeled == 6
