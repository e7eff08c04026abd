"""The preview before a project is made: layouts, folders that look unlabeled, decisions, the plan."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import pytest
from test_project import BLUE, RED, _png

from ralif.cli import main as cli_main
from ralif.folder_scan import (
    build_plan,
    format_preview,
    looks_unlabeled,
    maybe_unlabeled,
    parse_decisions,
    preview_source,
    scan_folder,
)
from ralif.project import Project

GREEN = (30, 200, 30)


def _mixed(root: Path, per_class: int = 3, unlabeled: int = 5, loose: int = 0) -> Path:
    """Class folders red/green/blue, an ``unlabeled/`` folder and optionally loose images."""
    n = 0
    for name, color in (("red", RED), ("green", GREEN), ("blue", BLUE)):
        for i in range(per_class):
            _png(root / name / f"{name}{i}.png", color, n)
            n += 1
    for i in range(unlabeled):
        _png(root / "unlabeled" / f"u{i}.png", (i * 40 % 256, 90, 90), 1000 + i)
    for i in range(loose):
        _png(root / f"loose{i}.png", (10, 10, 10), 2000 + i)
    return root


def _tree(root: Path) -> list[tuple[str, int, float]]:
    return sorted((str(p), p.stat().st_size, p.stat().st_mtime) for p in root.rglob("*"))


@pytest.mark.parametrize("name", ["unlabeled", "Unlabelled", "UNKNOWN", "unsorted", "todo", "_unlabeled",
                                  "no_label", "No-Labels", "none", "to label", "unlabeled-2", "un_labeled",
                                  "Uncategorized", "to_be_labelled"])
def test_names_that_say_unlabeled(name):
    assert looks_unlabeled(name)


@pytest.mark.parametrize("name", ["cat", "Ankle boot", "nonexistent_species", "label", "known", "2",
                                  "misc", "other", "pool"])
def test_names_that_are_classes(name):
    assert not looks_unlabeled(name)


def test_misc_and_other_are_kept_as_classes_with_a_note(tmp_path):
    root = _mixed(tmp_path / "src", unlabeled=0)
    _png(root / "misc" / "m.png", (1, 2, 3), 77)
    preview = scan_folder(root)
    assert maybe_unlabeled("Misc") and preview.group("misc").proposed == "class"
    assert any("misc" in n and "unsorted" in n for n in preview.notes)


def test_class_folders_plus_unlabeled_folder(tmp_path):
    root = _mixed(tmp_path / "src", per_class=3, unlabeled=5)
    before = _tree(root)
    seen: list[tuple[int, int]] = []
    preview = scan_folder(root, samples=2, progress=lambda d, t: seen.append((d, t)))
    assert preview.layout == "class-folders+unlabeled"
    assert preview.description.startswith("3 class folders plus 1 folder that looks unlabeled: 14 images")
    assert [(g.key, g.count, g.proposed) for g in preview.groups] == [
        ("blue", 3, "class"), ("green", 3, "class"), ("red", 3, "class"), ("unlabeled", 5, "unlabeled")]
    assert "no label" in preview.group("unlabeled").reason
    for g in preview.groups:
        assert len(g.samples) == 2 and all(Path(s).is_file() and Path(s).parent.name == g.key for s in g.samples)
    assert seen[0] == (0, 14) and seen[-1] == (14, 14)
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(seen))

    plan = build_plan(preview)
    assert plan.classes == ["blue", "green", "red"]
    assert (plan.labeled, plan.unlabeled, plan.ignored) == (9, 5, 0)
    assert plan.summary() == "3 classes, 9 labeled images, 5 unlabeled, 0 ignored"
    pairs = dict(plan.pairs())
    assert pairs[str(root / "unlabeled" / "u0.png")] is None
    assert pairs[str(root / "red" / "red1.png")] == "red"
    assert _tree(root) == before          # nothing written by the scan or the plan

    project = Project.create(tmp_path / "p", plan.image_lists(), encoder="pixels:2")
    progress = project.progress()
    assert progress.pool == 14 and progress.labeled == 9
    assert sorted(c.name for c in project.classes()) == ["blue", "green", "red"]


def test_user_decisions_override_the_proposal(tmp_path):
    root = _mixed(tmp_path / "src", per_class=2, unlabeled=3, loose=2)
    preview = scan_folder(root)
    assert preview.layout == "mixed"
    assert preview.group(".").proposed == "unlabeled" and preview.group(".").count == 2
    plan = build_plan(preview, {"unlabeled": "class", "Green": "ignore"})
    assert plan.classes == ["blue", "red", "unlabeled"]
    assert (plan.labeled, plan.unlabeled, plan.ignored) == (7, 2, 2)
    assert not any("green" in p for p, _ in plan.pairs())
    with pytest.raises(ValueError, match=r"'purple' is not a folder or label found in .*'blue'"):
        build_plan(preview, {"purple": "class"})
    with pytest.raises(ValueError, match="must be one of class, unlabeled, ignore, not 'maybe'"):
        build_plan(preview, {"red": "maybe"})
    with pytest.raises(ValueError, match=r"\(images not in a folder\) cannot be a class"):
        build_plan(preview, {".": "class"})
    with pytest.raises(ValueError, match="nothing to import"):
        build_plan(preview, {k: "ignore" for k in preview.proposed()})
    assert parse_decisions(["a=b=class", "x=IGNORE"]) == {"a=b": "class", "x": "ignore"}
    with pytest.raises(ValueError, match="expected FOLDER=class"):
        parse_decisions(["unlabeled"])


def test_flat_folder_and_single_folder_are_unlabeled(tmp_path):
    flat = tmp_path / "flat"
    for i in range(4):
        _png(flat / f"{i}.png", RED, i)
    preview = scan_folder(flat)
    assert preview.layout == "flat" and [(g.key, g.proposed) for g in preview.groups] == [(".", "unlabeled")]
    assert build_plan(preview).classes == []
    one = tmp_path / "one"
    for i in range(3):
        _png(one / "photos" / f"{i}.png", RED, i)
    preview = scan_folder(one)
    assert preview.group("photos").proposed == "unlabeled" and "only folder" in preview.group("photos").reason
    assert build_plan(preview, {"photos": "class"}).classes == ["photos"]


def test_splits_unreadable_and_duplicate_files(tmp_path):
    root = tmp_path / "src"
    for split, start in (("train", 0), ("test", 50)):
        for i in range(2):
            _png(root / split / "cat" / f"c{i}.png", RED, start + i)
            _png(root / split / "dog" / f"d{i}.png", BLUE, 100 + start + i)
    _png(root / "train" / "Unknown" / "u.png", GREEN, 300)
    (root / "train" / "cat" / "broken.png").write_bytes(b"not a png")
    (root / "train" / "dog" / "same.png").write_bytes((root / "train" / "dog" / "d0.png").read_bytes())
    (root / "labels.csv").write_text("path,label\n")
    preview = scan_folder(root)
    assert preview.layout == "splits" and "test, train" in preview.description
    cat = preview.group("cat")
    assert cat.per_split == {"train": 2, "test": 2} and cat.unreadable == 1
    assert preview.group("Unknown").proposed == "unlabeled"
    assert [(Path(p).name, "not an image" in r) for p, r in preview.problems] == [("broken.png", True)]
    assert [sorted(Path(p).name for p in d) for d in preview.duplicates] == [["d0.png", "same.png"]]
    assert any("labels.csv" in n and "CSV file itself" in n for n in preview.notes)
    lists = build_plan(preview).image_lists()
    assert sorted(lists) == ["test", "train"] and len(lists["test"]) == 4
    assert lists["train"].problems and not lists["test"].problems
    project = Project.create(tmp_path / "p", lists, encoder="pixels:2")
    progress = project.progress()
    assert progress.test == 4 and progress.labeled == 4   # the duplicate is kept once
    assert any("broken.png" in p for p, _ in project.import_report.problems)


def test_manifest_rows_without_a_usable_label_are_unlabeled(tmp_path):
    imgs = tmp_path / "imgs"
    rows = [("a.png", "cat", RED), ("b.png", "dog", BLUE), ("c.png", "", GREEN), ("d.png", "unknown", RED),
            ("e.png", "?", BLUE), ("f.png", "cat", GREEN)]
    for i, (name, _, color) in enumerate(rows):
        _png(imgs / name, color, i)
    manifest = imgs / "labels.csv"
    manifest.write_text("path,label\n" + "".join(f"{n},{y}\n" for n, y, _ in rows) + "gone.png,cat\n")
    preview = preview_source(manifest)
    assert preview.kind == "manifest" and preview.layout == "manifest"
    assert {g.title: (g.count, g.proposed) for g in preview.groups} == {
        "cat": (2, "class"), "dog": (1, "class"), "(no label)": (1, "unlabeled"), "unknown": (1, "unlabeled"),
        "?": (1, "unlabeled")}
    assert [(Path(p).name, r) for p, r in preview.problems] == [("gone.png", "file not found")]
    plan = build_plan(preview)
    assert plan.classes == ["cat", "dog"] and plan.unlabeled == 3
    assert build_plan(preview, {"unknown": "class"}).classes == ["cat", "dog", "unknown"]
    with pytest.raises(ValueError, match=r"\(no label\) cannot be a class"):
        build_plan(preview, {"": "class"})


def test_empty_source_says_so(tmp_path):
    (tmp_path / "empty" / "cats").mkdir(parents=True)
    with pytest.raises(ValueError, match="no readable images in"):
        scan_folder(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        scan_folder(tmp_path / "missing")
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(ValueError, match="not a CSV manifest"):
        preview_source(tmp_path / "x.txt")


def test_preview_command_and_create_with_overrides(tmp_path, capsys):
    root = _mixed(tmp_path / "src", per_class=2, unlabeled=3)
    assert cli_main(["preview", str(root)]) == 0
    out = capsys.readouterr().out
    assert "Layout: 3 class folders plus 1 folder that looks unlabeled: 9 images" in out
    assert [line.split()[:3] for line in out.splitlines() if line.startswith("  unlabeled")] == [
        ["unlabeled", "3", "unlabeled"]]
    assert "Plan: 3 classes, 6 labeled images, 3 unlabeled, 0 ignored" in out
    assert cli_main(["preview", str(root), "--json", "--as", "unlabeled=class", "--as", "red=ignore"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["plan"]["classes"] == ["blue", "green", "unlabeled"] and data["plan"]["ignored"] == 2
    assert cli_main(["preview", str(root), "--as", "violet=class"]) == 1
    assert "'violet' is not a folder or label found" in capsys.readouterr().err

    # Create reports the same detection and applies the same overrides.
    assert cli_main(["project", "create", str(tmp_path / "p"), "--images", str(root), "--encoder", "pixels:2"]) == 0
    captured = capsys.readouterr()
    assert "Layout: 3 class folders plus 1 folder that looks unlabeled" in captured.err
    result = json.loads(captured.out)
    assert result["preview"]["plan"]["unlabeled"] == 3 and result["progress"]["labeled"] == 6
    assert sorted(result["import"]["classes_added"]) == ["blue", "green", "red"]
    assert cli_main(["project", "create", str(tmp_path / "p2"), "--images", str(root), "--encoder", "pixels:2",
                     "--as", "green=unlabeled"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["progress"]["labeled"] == 4 and result["progress"]["pool"] == 9
    assert cli_main(["project", "create", str(tmp_path / "p3"), "--images", str(root), "--encoder", "pixels:2",
                     "--layout", "flat", "--as", "green=class"]) == 1
    assert "--as decides what each folder is and needs --layout auto" in capsys.readouterr().err
    assert not (tmp_path / "p3").exists()


@pytest.mark.skipif(os.name == "nt", reason="POSIX file names")
def test_hostile_folder_names_are_kept_literally(tmp_path):
    root = tmp_path / "src"
    name = "![p](http:example.invalid) <b>x <img src=x> $x$ :red[y]"
    for i in range(2):
        _png(root / name / f"{i}.png", RED, i)
        _png(root / "plain" / f"{i}.png", BLUE, 10 + i)
    preview = scan_folder(root)
    assert preview.group(name).title == name and build_plan(preview).classes == sorted([name, "plain"])


def test_library_create_reads_a_mixed_folder_as_the_preview_does(tmp_path: Path) -> None:
    # Project.create with the default layout: `unlabeled/` and loose images are unlabeled, never
    # a class; the class folders keep their labels.
    src = _mixed(tmp_path / "src", per_class=3, unlabeled=5, loose=2)
    project = Project.create(tmp_path / "p", src, encoder="pixels:2")
    assert sorted(c.name for c in project.classes()) == ["blue", "green", "red"]
    progress = project.progress()
    assert (progress.labeled, progress.pool) == (9, 16)


def test_library_create_keeps_a_single_class_folder_as_a_class(tmp_path: Path) -> None:
    # Only the name decides: one folder of cats stays "cat" (the preview asks a person instead).
    for i in range(3):
        _png(tmp_path / "src" / "cat" / f"c{i}.png", RED, i)
    project = Project.create(tmp_path / "p", tmp_path / "src", encoder="pixels:2")
    assert [c.name for c in project.classes()] == ["cat"] and project.progress().labeled == 3


def test_the_plan_counts_what_the_created_project_holds(tmp_path):
    """Identical files are counted once, as the import keeps them: the first copy in reading order,
    without a label when the copies carry two; a copy in an ignored folder is no copy at all."""
    root = _mixed(tmp_path / "src", per_class=3, unlabeled=5)
    for i in (0, 1):
        (root / "unlabeled" / f"u{i}-copy.png").write_bytes((root / "unlabeled" / f"u{i}.png").read_bytes())
    (root / "blue" / "red-again.png").write_bytes((root / "red" / "red0.png").read_bytes())
    (root / "junk").mkdir()
    (root / "junk" / "green-again.png").write_bytes((root / "green" / "green0.png").read_bytes())
    preview = scan_folder(root)
    assert len(preview.duplicates) == 4            # the scan lists every set of identical files
    plan = build_plan(preview, {"junk": "ignore"})
    assert plan.summary() == "3 classes, 8 labeled images, 6 unlabeled, 1 ignored, 3 identical copies skipped"
    assert sorted(Path(d[0]).name for d in plan.duplicates) == ["red-again.png", "u0-copy.png", "u1-copy.png"]
    assert [c.split(":")[0] for c in plan.label_conflicts] == [str(root / "blue" / "red-again.png")]
    assert dict(plan.pairs())[str(root / "blue" / "red-again.png")] is None

    project = Project.create(tmp_path / "p", plan.image_lists(), encoder="pixels:2")
    progress, report = project.progress(), project.import_report
    assert (progress.labeled, progress.pool - progress.labeled) == (plan.labeled, plan.unlabeled)
    assert sorted(c.name for c in project.classes()) == plan.classes
    assert report.skipped_duplicates == plan.skipped == 3
    assert sorted(map(sorted, report.duplicates)) == sorted(map(sorted, plan.duplicates))
    assert len(report.label_conflicts) == len(plan.label_conflicts) == 1
    assert "3 identical copies skipped" in format_preview(preview, plan)


def test_other_files_are_listed_with_why_they_are_skipped(tmp_path):
    root = _mixed(tmp_path / "src", per_class=2, unlabeled=2)
    (root / "unlabeled" / "notes.txt").write_text("to do")
    (root / "README").write_text("photos")
    (root / ".DS_Store").write_bytes(b"x")                 # hidden: left out, as the image walk does
    (root / "red" / "photo.heic").write_bytes(b"x")       # an image format that is not read: a problem
    preview = scan_folder(root)
    assert [(Path(p).name, r) for p, r in preview.other_files] == [
        ("README", "not an image file (no file extension)"),
        ("notes.txt", "not an image file (.txt files are not read)")]
    assert [Path(p).name for p, _ in preview.problems] == ["photo.heic"]
    text = format_preview(preview)
    assert "Other files, not images: 2 (skipped)" in text and "notes.txt: not an image file" in text
    assert len(preview.to_dict()["other_files"]) == 2


def test_counts_agree_in_number(tmp_path):
    root = tmp_path / "src"
    _png(root / "red" / "r.png", RED, 0)
    _png(root / "unlabeled" / "u.png", BLUE, 1)
    preview = scan_folder(root)
    assert preview.description == "1 class folder plus 1 folder that looks unlabeled: 2 images"
    assert build_plan(preview).summary() == "1 class, 1 labeled image, 1 unlabeled, 0 ignored"
    flat = tmp_path / "flat"
    _png(flat / "only.png", RED, 2)
    assert scan_folder(flat).description == "a flat folder of 1 image without labels"
