"""Faults of a project's surroundings met by rounds, exports and the app's processes: a read-only
folder, a full disk, two processes labeling one project at once, a command-line round while labels
are written, and EXIF-rotated photographs. Each is refused or handled with a message that names the
file or folder, and no acknowledged label is lost."""

from __future__ import annotations

import base64
import errno
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ralif.project import Project, RoundState
from ralif.project import exports as exports_mod
from ralif.project import rounds as rounds_mod
from ralif.project.features import pixel_features
from ralif.project.store import DB_NAME, DiskFullError, ReadOnlyError, release
from ralif.ui.thumbs import thumbnail

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "ralif/app/assets/demo"
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "RALIF_THREADS": "1"}


def _no_space(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


# ----------------------------------------------------------------------------- read-only


def test_a_read_only_project_opens_without_making_folders_and_reads(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    project = Project.create_demo(folder, assets=DEMO, run_first_round=False)
    project.label(project.images_page(limit=1)[0].image_id, project.classes()[0].id)
    release(folder / DB_NAME)
    for sub in ("cache", "exports", "jobs", "models"):
        if not any((folder / sub).iterdir()):
            (folder / sub).rmdir()
    before = sorted(p.name for p in folder.iterdir() if p.is_dir())

    opened = Project.open(folder, readonly=True)
    assert opened.readonly
    # (SQLite may add its log's index beside the database; no working folder is made.)
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == before, "opening read-only made folders"
    info = opened.info()
    assert info["progress"]["labeled"] == 1
    out = opened.export_csv(tmp_path / "elsewhere" / "labels.csv")
    assert out.read_text().count("\n") == 2
    with pytest.raises(ReadOnlyError, match="read-only") as caught:
        opened.label(opened.images_page("unlabeled", limit=1)[0].image_id, opened.classes()[0].id)
    assert str(folder) in str(caught.value)
    with pytest.raises(ReadOnlyError, match="read-only"):
        opened.start_round()
    assert opened.start_round_notice() is not None
    assert "read-only" in str(opened.start_round_notice())
    release(folder / DB_NAME)


# ----------------------------------------------------------------------------- full disk


def test_an_export_on_a_full_disk_names_the_file(demo_project: Project, monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    project = demo_project
    project.label(project.pending_batch()[0].image_id, project.classes()[0].id)
    dest = tmp_path / "out" / "labels.csv"
    monkeypatch.setattr(exports_mod, "atomic_write", _no_space)
    with pytest.raises(DiskFullError, match="disk is full") as caught:
        project.export_csv(dest)
    assert str(dest) in str(caught.value)
    assert "Errno" not in str(caught.value)
    with pytest.raises(DiskFullError) as caught_json:
        project.export_json(tmp_path / "out" / "labels.json")
    assert "labels.json" in str(caught_json.value)
    monkeypatch.undo()
    assert project.export_csv(dest) == dest


def _answer_batch(project: Project) -> None:
    classes = project.classes()
    for i, item in enumerate(project.pending_batch()):
        project.label(item.image_id, classes[i % len(classes)].id)


def test_a_round_that_cannot_save_its_model_fails_with_that_reason(demo_project: Project,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    project = demo_project
    _answer_batch(project)
    project.submit_batch()
    labeled = project.progress().labeled
    monkeypatch.setattr(rounds_mod, "save_linear_head", _no_space)
    with pytest.raises(DiskFullError):
        project.run_round()
    status = project.round_status()
    assert status.state is RoundState.FAILED
    assert "disk is full" in str(status.error) and "Errno" not in str(status.error)
    assert str(project.folder / "models" / "round-0002.safetensors") in str(status.error)
    assert project.progress().labeled == labeled
    # Space again: the same round runs.
    monkeypatch.undo()
    project.run_round()
    assert project.round_status().state is RoundState.READY


def test_a_round_whose_failure_cannot_be_written_keeps_its_own_reason(demo_project: Project,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    project = demo_project
    _answer_batch(project)
    project.submit_batch()
    monkeypatch.setattr(rounds_mod, "save_linear_head", _no_space)
    book = project.round_book

    def fail(*args: object, **kwargs: object) -> None:
        raise DiskFullError("the disk holding the project folder is full")

    monkeypatch.setattr(book, "fail", fail)
    with pytest.raises(DiskFullError) as caught:
        project.run_round()
    # The error the caller sees is the round's, not the one met while recording it.
    assert "round-0002.safetensors" in str(caught.value)


def test_a_round_that_cannot_start_on_a_full_disk_is_failed_with_the_reason(
        demo_project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    from ralif.project import session as session_mod

    project = demo_project
    _answer_batch(project)
    project.submit_batch()
    monkeypatch.setattr(session_mod, "write_queued_status", _no_space)
    message = project.start_round_notice()
    assert message is not None and "disk is full" in message and "jobs" in message
    status = project.round_status()
    assert status.state is RoundState.FAILED and "disk is full" in str(status.error)


# ----------------------------------------------------------------------------- two writers

_LABELER = textwrap.dedent("""
    import json, sys, time
    from ralif.project import Project
    folder, which, n, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    p = Project.open(folder, client=f"proc-{which}")
    classes = [c.id for c in p.classes()]
    ids = [r.image_id for r in p.images_page("all", limit=2000)]
    mine = ids[which::2][:n] + ids[-20:]          # the last 20 images are labeled by both
    done = []
    with open(out, "w") as f:
        for k, image_id in enumerate(mine):
            cid = classes[(k + which) % len(classes)]
            p.label(image_id, cid)
            # Acknowledged: the call returned, so the label is durable; written down only now.
            f.write(json.dumps([image_id, cid, time.time()]) + "\\n")
            f.flush()
    print("done", flush=True)
""")


def _acknowledged(path: Path) -> list[tuple[int, int, float]]:
    return [tuple(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def test_two_processes_label_one_project_at_once_and_lose_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    Project.create_demo(folder, assets=DEMO, run_first_round=False)
    release(folder / DB_NAME)
    outs = [tmp_path / f"acks-{i}.jsonl" for i in (0, 1)]
    procs = [subprocess.Popen([sys.executable, "-c", _LABELER, str(folder), str(i), "150", str(outs[i])],
                              env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (0, 1)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    acks = [a for o in outs for a in _acknowledged(o)]
    assert len(acks) == 2 * 170
    project = Project.open(folder)
    # Every acknowledged answer is in the history; the current label of each image is the answer
    # acknowledged last.
    for image_id, cid, _ in acks:
        assert any(h["new_class_id"] == cid for h in project.label_history(image_id)), (image_id, cid)
    last: dict[int, tuple[int, float]] = {}
    for image_id, cid, t in acks:
        if image_id not in last or t >= last[image_id][1]:
            last[image_id] = (cid, t)
    current = {r.image_id: r.label.class_id for r in project.images_page("labeled", limit=5000)}
    assert set(current) == set(last)
    shared = {i for i, _, _ in _acknowledged(outs[0])} & {i for i, _, _ in _acknowledged(outs[1])}
    assert len(shared) == 20
    # Images only one process labeled have exactly its answer.
    for image_id, (cid, _) in last.items():
        if image_id not in shared:
            assert current[image_id] == cid


def test_a_command_line_round_while_labels_are_written_loses_none(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    project = Project.create_demo(folder, assets=DEMO)
    _answer_batch(project)
    project.submit_batch()
    release(folder / DB_NAME)
    out = tmp_path / "acks.jsonl"
    labeler = subprocess.Popen([sys.executable, "-c", _LABELER, str(folder), "0", "300", str(out)],
                               env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cli = subprocess.run([sys.executable, "-m", "ralif", "project", "round", str(folder)], env=ENV,
                         capture_output=True, text=True, timeout=300, check=False)
    _, err = labeler.communicate(timeout=300)
    assert labeler.returncode == 0, err
    assert cli.returncode == 0, cli.stderr
    result = json.loads(cli.stdout)
    assert result[0]["round"] == 2
    reopened = Project.open(folder)
    assert reopened.round_status().state is RoundState.READY
    for image_id, cid, _ in _acknowledged(out):
        assert any(h["new_class_id"] == cid for h in reopened.label_history(image_id)), (image_id, cid)
    assert len(reopened.pending_batch()) > 0


# ----------------------------------------------------------------------------- EXIF


def _scene() -> Image.Image:
    """An upright picture whose halves differ, so a rotation shows in its pixels."""
    y, x = np.mgrid[0:96, 0:64]
    arr = np.stack([x * 4, y * 2, np.where(y < 32, 230, 20)], axis=-1).astype(np.uint8)
    return Image.fromarray(arr)


def _decoded(uri: str) -> np.ndarray:
    data = base64.b64decode(uri.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32)


def test_an_exif_rotated_jpeg_matches_the_upright_image(tmp_path: Path) -> None:
    upright = _scene()
    upright_path = tmp_path / "upright.jpg"
    upright.save(upright_path, quality=95)
    # As a camera held sideways writes it: the sensor's pixels, turned, with orientation 6
    # ("rotate 90° clockwise to show").
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated_path = tmp_path / "rotated.jpg"
    stored.save(rotated_path, quality=95, exif=exif)
    bare_path = tmp_path / "bare.jpg"
    stored.save(bare_path, quality=95)
    with Image.open(rotated_path) as im:
        assert im.size == (96, 64) and im.getexif().get(0x0112) == 6

    feats = pixel_features([str(upright_path), str(rotated_path), str(bare_path)], 16)
    same = float(np.abs(feats[0] - feats[1]).mean())
    turned = float(np.abs(feats[0] - feats[2]).mean())
    assert same < 0.02, f"features of the EXIF-rotated file differ from the upright one by {same:.3f}"
    assert turned > 5 * same + 0.05, "the check would not see a rotation"

    a, b, c = (_decoded(thumbnail(str(p), 64)) for p in (upright_path, rotated_path, bare_path))
    assert a.shape == b.shape == (96, 64, 3) and c.shape == (64, 96, 3)
    assert float(np.abs(a - b).mean()) < 6.0
