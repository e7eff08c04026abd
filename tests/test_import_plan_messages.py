"""What the preview and the plan say before a project is made from one's own folder or CSV: an image
a manifest lists under two labels, repeated rows, folders that make one class, names too long to be a
class, a manifest with no rows."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_project import BLUE, RED, _png

from ralif.folder_scan import build_plan, format_preview, preview_source
from ralif.images import load_manifest
from ralif.project.validation import MAX_CLASS_NAME


def _manifest(root: Path, lines: list[str]) -> Path:
    for i, name in enumerate(("truck/0021.png", "truck/0022.png", "car/0001.png", "car/0002.png")):
        _png(root / name, RED if i < 2 else BLUE, i)
    csv = root / "labels.csv"
    csv.write_text("path,label\n" + "".join(f"{line}\n" for line in lines))
    return csv


def test_an_image_listed_under_two_labels_is_a_conflict_imported_once_without_a_label(tmp_path: Path) -> None:
    csv = _manifest(tmp_path, ["truck/0021.png,<i>it</i>", "truck/0022.png,truck", "car/0001.png,car",
                               "car/0002.png,car", "truck/0021.png,other"])
    images = load_manifest(csv)
    assert images.problems == [], "the file is readable: it is no problem"
    assert sorted(Path(p).name for p in images.paths) == ["0001.png", "0002.png", "0021.png", "0022.png"]
    label = {Path(p).name: (images.classes[y] if y >= 0 else None)
             for p, y in zip(images.paths, images.labels.tolist())}
    assert label["0021.png"] is None
    assert [(Path(p).name, why) for p, why in images.label_conflicts] == [
        ("0021.png", "the manifest lists it under the labels '<i>it</i>' and 'other'; imported without a label")]
    # Neither label becomes a class on the strength of that row alone.
    assert images.classes == ["car", "truck"]

    preview = preview_source(csv)
    assert preview.problems == []
    plan = build_plan(preview)
    assert plan.unlabeled == 1 and plan.labeled == 3
    assert len(plan.label_conflicts) == 1 and "'<i>it</i>' and 'other'" in plan.label_conflicts[0]
    assert preview.group("").reason == "1 image listed under two different labels"
    # Ignoring the rows without a label leaves no conflict to report.
    assert build_plan(preview, {"": "ignore"}).label_conflicts == []
    # The import is given the conflict with the first list.
    assert [len(lst.label_conflicts) for lst in plan.image_lists().values()] == [1]
    assert "imported without a label" in format_preview(preview, plan)


def test_an_identical_repeated_row_is_imported_once_and_is_no_problem(tmp_path: Path) -> None:
    csv = _manifest(tmp_path, ["truck/0021.png,truck", "truck/0022.png,truck", "car/0001.png,car",
                               "truck/0021.png,truck", "car/0002.png,", "car/0002.png,car", "gone.png,car",
                               "gone.png,car"])
    images = load_manifest(csv)
    assert [(Path(p).name, why) for p, why in images.problems] == [("gone.png", "file not found")]
    assert images.label_conflicts == [] and images.repeated_rows == 2
    assert {Path(p).name: images.classes[y] for p, y in zip(images.paths, images.labels.tolist())} == {
        "0021.png": "truck", "0022.png": "truck", "0001.png": "car", "0002.png": "car"}
    preview = preview_source(csv)
    assert [Path(p).name for p, _ in preview.problems] == ["gone.png"]
    assert "2 rows repeat an image listed before (imported once)" in preview.notes
    plan = build_plan(preview)
    assert plan.label_conflicts == [] and plan.labeled == 4


def test_labels_that_differ_only_in_case_are_no_conflict(tmp_path: Path) -> None:
    csv = _manifest(tmp_path, ["truck/0021.png,Truck", "truck/0021.png,truck ", "car/0001.png,car"])
    images = load_manifest(csv)
    assert images.label_conflicts == [] and images.labels.tolist()[0] >= 0


@pytest.mark.parametrize(("body", "said"), [("", "has no rows under its header"),
                                            ("\n\n", "has no rows under its header"),
                                            (",cat\n , dog\n", "has no path in any of its 2 rows")])
def test_a_manifest_without_rows_says_so(tmp_path: Path, body: str, said: str) -> None:
    csv = tmp_path / "header.csv"
    csv.write_text("path,label\n" + body)
    with pytest.raises(ValueError) as caught:
        preview_source(csv)
    text = str(caught.value)
    assert text.startswith(f"the manifest {csv} {said}: ")
    assert "looked for" not in text and "no readable images" not in text


def test_a_manifest_whose_files_are_all_missing_names_the_rows_not_extensions(tmp_path: Path) -> None:
    csv = tmp_path / "gone.csv"
    csv.write_text("path,label\na.png,cat\nb.png,dog\n")
    with pytest.raises(ValueError, match=r"none of the 2 files it lists can be read.*a\.png: file not found") as caught:
        load_manifest(csv)
    assert "looked for" not in str(caught.value)


def _folders(root: Path, names: dict[str, int]) -> Path:
    n = 0
    for name, count in names.items():
        for i in range(count):
            _png(root / name / f"{i}.png", RED, n)
            n += 1
    return root


def test_folders_that_make_one_class_are_named_with_the_spelling_kept(tmp_path: Path) -> None:
    root = _folders(tmp_path / "src", {"Dog": 1, "dog": 3, "cat": 2, " lead trail ": 1, "lead trail": 2})
    preview = preview_source(root)
    plan = build_plan(preview)
    assert plan.classes == ["cat", "dog", "lead trail"]
    assert plan.merged == [
        "folders 'Dog' (1 image) and 'dog' (3 images) are one class, 'dog' (the spelling most of their "
        "images use): class names do not tell case and spacing apart",
        "folders ' lead trail ' (1 image) and 'lead trail' (2 images) are one class, 'lead trail': class "
        "names do not tell case and spacing apart"]
    # A folder that is not a class merges with nothing.
    assert build_plan(preview, {"Dog": "unlabeled", " lead trail ": "ignore"}).merged == []
    assert "Note: folders 'Dog' (1 image) and 'dog' (3 images) are one class" in format_preview(preview, plan)


def test_a_tie_says_which_spelling_is_kept_and_why(tmp_path: Path) -> None:
    root = _folders(tmp_path / "src", {"Dog": 2, "dog": 2, "cat": 2})
    plan = build_plan(preview_source(root))
    assert plan.merged == ["folders 'Dog' (2 images) and 'dog' (2 images) are one class, 'Dog' (as many "
                           "images use each spelling: the first found is kept): class names do not tell "
                           "case and spacing apart"]


def test_a_name_too_long_for_a_class_is_flagged_before_create(tmp_path: Path) -> None:
    long = "x" * (MAX_CLASS_NAME + 1)
    root = _folders(tmp_path / "src", {long: 2, "cat": 2, "dog": 2})
    preview = preview_source(root)
    group = preview.group(long)
    assert group.problem == f"the name has {MAX_CLASS_NAME + 1} characters; a class name can have at most " \
                            f"{MAX_CLASS_NAME}"
    assert preview.group("cat").problem is None
    with pytest.raises(ValueError) as caught:
        build_plan(preview)
    assert str(caught.value) == (
        f"The folder {long!r} cannot be a class: the name has {MAX_CLASS_NAME + 1} characters; a class name "
        f"can have at most {MAX_CLASS_NAME}. Rename the folder, or import its images as unlabeled or "
        f"ignore them")
    assert build_plan(preview, {long: "unlabeled"}).unlabeled == 2
    # Exactly the limit is fine (spaces at the ends do not count).
    ok = _folders(tmp_path / "ok", {f" {'y' * MAX_CLASS_NAME} ": 2, "cat": 2})
    assert len(build_plan(preview_source(ok)).classes) == 2


def test_a_manifest_label_too_long_for_a_class_is_flagged(tmp_path: Path) -> None:
    long = "z" * (MAX_CLASS_NAME + 5)
    csv = _manifest(tmp_path, [f"truck/0021.png,{long}", "car/0001.png,car"])
    preview = preview_source(csv)
    assert preview.group(long).problem is not None
    with pytest.raises(ValueError, match=r"^The label 'z+' cannot be a class: the name has 205 characters"):
        build_plan(preview)


def test_a_folder_named_only_with_spaces_cannot_be_a_class(tmp_path: Path) -> None:
    root = _folders(tmp_path / "src", {"   ": 2, "cat": 2, "dog": 2})
    preview = preview_source(root)
    assert preview.group("   ").problem == "the name is only spaces"
    with pytest.raises(ValueError, match=r"^The folder '   ' cannot be a class: the name is only spaces\. "):
        build_plan(preview)
    assert build_plan(preview, {"   ": "ignore"}).classes == ["cat", "dog"]


def test_the_project_s_import_report_lists_a_manifest_label_conflict(tmp_path: Path) -> None:
    from ralif.project import Project

    csv = _manifest(tmp_path / "src", ["truck/0021.png,truck", "truck/0022.png,truck", "car/0001.png,car",
                                       "car/0002.png,car", "truck/0021.png,car"])
    project = Project.create(tmp_path / "p", csv, encoder="pixels:2")
    report = project.import_report
    assert len(report.label_conflicts) == 1 and "0021.png" in report.label_conflicts[0]
    assert "imported without a label" in report.label_conflicts[0]
