"""Labeling projects: storage durability and concurrency, classes, labels, rounds, exports, CLI.

Most tests run in-process on the bundled demo (CIFAR-10 subset with precomputed embeddings) or
on tiny generated images with the model-free ``pixels`` encoder; processes are started only where
the property needs them (a killed writer, two concurrent writers, the background worker).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ralif.cli import main as cli_main
from ralif.project import Project, ProjectError, RoundBusy
from ralif.project import rounds as rounds_mod
from ralif.project.exports import safe_folder_name
from ralif.project.store import DB_NAME, SCHEMA_VERSION, release

DEMO = Path(__file__).resolve().parents[1] / "ralif/app/assets/demo"
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _png(path: Path, color: tuple[int, int, int], variant: int, size: int = 8) -> Path:
    arr = np.empty((size, size, 3), dtype=np.uint8)
    arr[:] = color
    # A per-file pixel keeps every file's bytes distinct (identical files count as duplicates).
    arr[0, 0] = (variant % 256, variant // 256 % 256, 7)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


RED, BLUE = (220, 30, 30), (30, 30, 220)


def _colors_folder(root: Path, per_class: int = 6, start: int = 0) -> Path:
    for i in range(per_class):
        _png(root / "red" / f"r{start + i:03d}.png", RED, start + i)
        _png(root / "blue" / f"b{start + i:03d}.png", BLUE, 100 + start + i)
    return root


def _reopen(folder: Path) -> Project:
    # A fresh connection, as a restarted app would have.
    release(folder / DB_NAME)
    return Project.open(folder)


def _demo(folder: Path, **kwargs) -> Project:
    return Project.create_demo(folder, assets=DEMO, **kwargs)


def _run_py(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


# ----------------------------------------------------------------------------- storage


def test_store_pragmas_and_schema_version(tmp_path):
    project = _demo(tmp_path / "p", run_first_round=False)
    conn = sqlite3.connect(project.folder / DB_NAME)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    assert project.store.query_one("PRAGMA synchronous")[0] == 2  # FULL
    assert project.store.query_one("PRAGMA foreign_keys")[0] == 1
    # The indexes a label write and a page load rely on.
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"images_split", "labels_class", "label_history_image", "selections_rank"} <= indexes
    conn.execute("INSERT INTO schema_version VALUES (?, 0)", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(ProjectError, match="newer ralif"):
        _reopen(project.folder)


def test_create_open_roundtrip_keeps_pending_batch(tmp_path):
    project = _demo(tmp_path / "p")
    batch = [(b.image_id, b.rank, b.reason) for b in project.pending_batch()]
    assert len(batch) == 20
    # Another process sees exactly the same batch.
    code = ("import json, sys\nfrom ralif.project import Project\n"
            "p = Project.open(sys.argv[1])\n"
            "print(json.dumps([[b.image_id, b.rank, b.reason] for b in p.pending_batch()]))")
    out = _run_py(code, str(project.folder))
    assert out.returncode == 0, out.stderr
    assert [tuple(x) for x in json.loads(out.stdout)] == batch
    again = _reopen(project.folder)
    assert [(b.image_id, b.rank, b.reason) for b in again.pending_batch()] == batch
    assert again.progress().round == 1 and again.progress().pending == 20
    with pytest.raises(ProjectError, match="already holds a project"):
        _demo(project.folder)
    with pytest.raises(FileNotFoundError, match="no ralif project"):
        Project.open(tmp_path / "nowhere")


@posix_only
def test_label_survives_sigkill_right_after_label_returns(tmp_path):
    project = _demo(tmp_path / "p", run_first_round=False)
    image_id = project.images_page(limit=5)[3].image_id
    cls = project.class_id("frog")
    code = ("import sys, time\nfrom ralif.project import Project\n"
            "p = Project.open(sys.argv[1])\n"
            "r = p.label(int(sys.argv[2]), int(sys.argv[3]))\n"
            "print(r.version, flush=True)\n"
            "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(project.folder), str(image_id), str(cls)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
    assert line.strip() == "1", proc.stderr.read()
    state = _reopen(project.folder).label_of(image_id)
    assert (state.state, state.class_id, state.version) == ("labeled", cls, 1)


def test_two_processes_labeling_lose_nothing_and_see_conflicts(tmp_path):
    project = _demo(tmp_path / "p", run_first_round=False)
    ids = [r.image_id for r in project.images_page(limit=40)]
    go = tmp_path / "go"
    code = ("import json, os, sys, time\nfrom ralif.project import Project\n"
            "p = Project.open(sys.argv[1], client=sys.argv[2])\n"
            "ids = json.loads(sys.argv[4])\n"
            "while not os.path.exists(sys.argv[5]): time.sleep(0.002)\n"
            "n = 0\n"
            "for i in ids:\n"
            "    n += p.label(i, int(sys.argv[3]), expected_version=0).conflict\n"
            "print(n)\n")
    cats, dogs = project.class_id("cat"), project.class_id("dog")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(project.folder), name, str(cls),
                               json.dumps(order), str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
             for name, cls, order in (("a", cats, ids), ("b", dogs, ids[::-1]))]
    time.sleep(0.5)
    go.touch()
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    conflicts = sum(int(o[0]) for o in outs)
    # Each image was written twice from version 0: exactly the second writer saw a conflict.
    assert conflicts == len(ids)
    project = _reopen(project.folder)
    for i in ids:
        state = project.label_of(i)
        history = project.label_history(i)
        assert state.version == 2 and len(history) == 2
        assert state.class_id == history[-1]["new_class_id"]      # last write wins
        assert history[-1]["old_class_id"] == history[0]["new_class_id"]  # nothing overwritten unseen


def test_version_conflict_between_two_tabs(tmp_path):
    folder = _demo(tmp_path / "p", run_first_round=False).folder
    tab1, tab2 = Project.open(folder, client="tab1"), Project.open(folder, client="tab2")
    image = tab1.images_page(limit=1)[0].image_id
    cat, dog = tab1.class_id("cat"), tab1.class_id("dog")
    seen = tab1.label_of(image).version
    assert tab2.label(image, dog).written
    r = tab1.label(image, cat, expected_version=seen, on_conflict="reject")
    assert r.conflict and not r.written and r.previous.class_id == dog
    assert tab1.label_of(image).class_id == dog
    r = tab1.label(image, cat, expected_version=seen)
    assert r.conflict and r.written and r.version == 2 and r.previous.class_name == "dog"
    assert tab1.label(image, cat, expected_version=2).conflict is False
    # Undo is per tab: tab2's last action now conflicts with tab1's later write and is left alone.
    undo = tab2.undo_last()
    assert undo.restored == [] and undo.conflicts == [image]
    assert tab1.label_of(image).class_id == cat


# ----------------------------------------------------------------------------- classes and labels


def test_classes_rename_merge_delete_labels_follow(tmp_path):
    project = _demo(tmp_path / "p", run_first_round=False)
    ids = [r.image_id for r in project.images_page(limit=9)]
    cat, dog, frog = (project.class_id(n) for n in ("cat", "dog", "frog"))
    project.bulk_label(ids[:3], cat)
    project.bulk_label(ids[3:6], dog)
    project.label(ids[6], frog)
    project.rename_class(cat, "kitty")
    assert project.label_of(ids[0]).class_name == "kitty"
    with pytest.raises(ProjectError, match="already exists"):
        project.rename_class(dog, "kitty")
    assert project.merge_classes(cat, dog) == 3
    assert {project.label_of(i).class_id for i in ids[:6]} == {dog}
    assert "kitty" not in [c.name for c in project.classes()]
    assert project.progress().per_class["dog"] == 6
    hist = project.label_history(ids[0])
    assert (hist[-1]["old_class"], hist[-1]["new_class"], hist[-1]["source"]) == ("kitty", "dog", "merge")
    assert project.label_of(ids[0]).source == "bulk"  # a merge does not change who labeled it
    # The hidden truth is kept as it was; the oracle and the evaluation read it through the merge.
    assert project.store.query_one("SELECT COUNT(*) FROM images WHERE true_class_id = ?", (cat,))[0] > 0
    assert project.truth_map()[cat] == dog
    assert project.delete_class(dog) == 6
    states = [project.label_of(i) for i in ids[:6]]
    assert all(s.state == "unlabeled" for s in states)
    assert [s.version for s in states] == [3, 3, 3, 2, 2, 2]  # labeled, (merged,) cleared
    assert project.label_history(ids[0])[-1]["old_class"] == "dog"
    assert project.label_of(ids[6]).class_name == "frog"
    with pytest.raises(ProjectError, match="deleted"):
        project.label(ids[0], dog)
    assert project.progress().labeled == 1
    new = project.add_class("dog")  # the name is free again
    assert project.label(ids[0], new).state == "labeled"
    assert project.progress().per_class["dog"] == 1


def test_bulk_label_undo_and_unsure(tmp_path):
    project = _demo(tmp_path / "p", run_first_round=False)
    ids = [r.image_id for r in project.images_page(limit=6)]
    ship = project.class_id("ship")
    project.label(ids[0], project.class_id("truck"))
    result = project.bulk_label(ids[:5], ship)
    assert (result.changed, result.unchanged) == (5, 0)
    assert project.bulk_label(ids[:5], ship).changed == 0
    with pytest.raises(ProjectError, match="not in this project"):
        project.bulk_label([ids[0], 10**9], ship)
    assert project.label_of(ids[1]).class_id == ship  # the failed bulk changed nothing
    undo = project.undo_last()
    assert sorted(undo.restored) == sorted(ids[:5]) and undo.kind == "bulk"
    assert project.label_of(ids[0]).class_name == "truck"
    assert project.label_of(ids[1]).state == "unlabeled"
    skipped = project.label(ids[5], None)
    assert skipped.state == "unsure" and project.progress().unsure == 1
    assert project.unlabel(ids[5]).state == "unlabeled"
    assert project.undo_last().restored == [ids[5]]
    assert project.label_of(ids[5]).state == "unsure"
    assert project.undo_last().kind == "label"
    assert project.undo_last().restored == [ids[0]]
    assert project.undo_last() is None
    assert project.progress().labeled == 0


def test_csv_import_unknown_labels_refused_or_added(tmp_path):
    imgs = tmp_path / "imgs"
    rows = [("a.png", "cat", RED), ("b.png", "bird", BLUE), ("c.png", "fish", (0, 200, 0)), ("d.png", "", RED)]
    for i, (name, _, color) in enumerate(rows):
        _png(imgs / name, color, i)
    manifest = imgs / "labels.csv"
    manifest.write_text("path,label\n" + "".join(f"{n},{y}\n" for n, y, _ in rows))
    with pytest.raises(ProjectError, match="bird, fish") as err:
        Project.create(tmp_path / "p1", manifest, classes=["cat", "dog"], encoder="pixels:2")
    assert "add_unknown_classes" in str(err.value)
    assert not (tmp_path / "p1").exists()  # nothing half-made is left behind
    project = Project.create(tmp_path / "p2", manifest, classes=["cat", "dog"], encoder="pixels:2",
                             add_unknown_classes=True)
    assert [c.name for c in project.classes()] == ["cat", "dog", "bird", "fish"]
    assert project.import_report.labels == 3
    assert project.progress().labeled == 3 and project.progress().unlabeled == 1
    # Labels for images already in the project, from a second CSV.
    more = tmp_path / "more.csv"
    more.write_text(f"path,label\n{imgs / 'd.png'},whale\n")
    with pytest.raises(ProjectError, match="whale"):
        project.import_labels(more)
    assert project.import_labels(more, add_unknown_classes=True).changed == 1


def test_bad_and_duplicate_files_are_reported(tmp_path):
    src = _colors_folder(tmp_path / "src", per_class=3)
    (src / "red" / "empty.png").write_bytes(b"")
    (src / "red" / "text.jpg").write_text("not an image")
    (src / "blue" / "copy.png").write_bytes((src / "blue" / "b000.png").read_bytes())
    project = Project.create(tmp_path / "p", src, encoder="pixels:2")
    report = project.import_report
    bad = {Path(p).name: why for p, why in report.problems}
    assert set(bad) == {"empty.png", "text.jpg"} and "empty" in bad["empty.png"]
    assert [sorted(Path(p).name for p in g) for g in report.duplicates] == [["b000.png", "copy.png"]]
    assert report.skipped_duplicates == 1 and report.added == 6 and report.labels == 6
    # Adding the same folder again adds nothing; a copy under a new name is a duplicate.
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "again.png").write_bytes((src / "red" / "r000.png").read_bytes())
    _png(extra / "new.png", RED, 999)
    again = project.add_images(extra, layout="flat")
    assert again.added == 1 and again.duplicates and again.skipped_duplicates == 1
    assert project.add_images(src).already_present == 6


def test_held_out_fraction(tmp_path):
    src = _colors_folder(tmp_path / "src", per_class=10)
    project = Project.create(tmp_path / "p", src, encoder="pixels:2", test=0.25)
    progress = project.progress()
    assert (progress.pool, progress.test) == (15, 5)
    assert progress.test_labeled == 5  # imported labels of held-out images are the reference


# ----------------------------------------------------------------------------- rounds


def test_cold_start_batch_is_diverse_and_the_right_size(tmp_path):
    # One big cluster and four small ones: a diverse batch of five must visit every cluster,
    # which a random pick almost never does.
    src = tmp_path / "src"
    colors = [(200, 200, 200), (200, 0, 0), (0, 200, 0), (0, 0, 200), (0, 0, 0)]
    for i in range(60):
        _png(src / f"x{i:03d}.png", colors[0], i)
    for k, color in enumerate(colors[1:]):
        for i in range(3):
            _png(src / f"c{k}{i}.png", color, 500 + 10 * k + i)
    project = Project.create(tmp_path / "p", src, encoder="pixels:2", batch_size=5, layout="flat")
    result = project.run_round()
    assert result["cold_start"] and result["selected"] == 5
    batch = project.pending_batch()
    picked = {np.asarray(Image.open(b.path))[4, 4].tobytes() for b in batch}
    assert len(picked) == 5
    assert all("k-means++" in b.reason and b.label.state == "unlabeled" for b in batch)

    demo = _demo(tmp_path / "demo")
    batch = demo.pending_batch()
    assert len(batch) == 20 and len({b.image_id for b in batch}) == 20
    truth = [demo.store.query_one("SELECT true_class_id, split FROM images WHERE id = ?", (b.image_id,))
             for b in batch]
    assert all(split == "pool" for _, split in truth)
    assert len({t for t, _ in truth}) >= 6


def test_full_round_on_demo_assets(tmp_path):
    project = _demo(tmp_path / "p", initial_labels=10, batch_size=25)
    status = project.round_status()
    assert status["status"] == "ready" and not status["cold_start"]
    assert status["labeled_count"] == 10 and status["test_count"] == 500
    assert 0.15 < status["accuracy"] <= 1.0
    batch = project.pending_batch()
    labeled = {r.image_id for r in project.images_page("labeled", limit=100)}
    assert len(batch) == 25 and not labeled & {b.image_id for b in batch}
    # One label per class: the default picks typical images first, and says so; the audit share
    # (10 %) is drawn at random.
    picked = [b for b in batch if "typicality pick" in b.reason]
    assert len(picked) == 25 - 2 and all("1.0 labels per class, fewer than 3" in b.reason for b in picked)
    assert all(b.predicted_class for b in batch)
    meta = json.loads(project.current_model_path().with_suffix(".json").read_text())
    assert meta["class_names"][:2] == ["airplane", "automobile"] and meta["encoder_id"].startswith("precomputed:")
    # The simulated oracle answers the batch, the batch is submitted, the next round follows.
    assert project.oracle_answer(batch[0].image_id) is not None
    assert project.oracle_label_batch().changed == 25
    assert project.progress().pending_done == 25
    assert project.submit_batch() == 2
    assert project.pending_batch() == []
    with pytest.raises(ProjectError, match="no pending batch"):
        project.submit_batch()
    with pytest.raises(ValueError, match="unknown strategy"):
        project.update_settings(strategy="nonsense")
    project.update_settings(keep_models=1)
    second = project.run_round()
    assert second["labeled"] == 35 and second["selected"] == 25
    # 3.5 labels per class: influence picks now, each with its score and reason.
    picked = [b for b in project.pending_batch() if "influence rank" in b.reason]
    assert len(picked) == 25 - 2 and all(b.score is not None and b.predicted_class for b in picked)
    labeled = {r.image_id for r in project.images_page("labeled", limit=100)}
    assert not labeled & {b.image_id for b in project.pending_batch()}
    assert [r["status"] for r in project.rounds()] == ["submitted", "ready"]
    assert [p.name for p in (project.folder / "models").glob("*.safetensors")] == ["round-0002.safetensors"]
    names, probs = project.predict([b.path for b in batch[:3]])
    assert len(names) == 3 and np.allclose(probs.sum(1), 1.0)
    project.set_oracle(False)
    with pytest.raises(ProjectError, match="oracle is off"):
        project.oracle_answer(batch[0].image_id)


def test_a_batch_picked_through_the_least_sure_gate_says_so(tmp_path):
    # The default gate applies from 100 labels per class; a lower gate_from reaches it on the demo.
    project = _demo(tmp_path / "p", initial_labels=40, batch_size=20, run_first_round=False)
    project.update_settings(strategy="ralif(gate_from=3)")
    project.run_round()
    picked = [b for b in project.pending_batch() if "influence rank" in b.reason]
    assert picked and all("among the 10% of images the model is least sure of" in b.reason for b in picked)
    project.update_settings(strategy="ralif")  # 4 labels per class: below the default's 100
    project.oracle_label_batch()
    project.submit_batch()
    project.run_round()
    picked = [b for b in project.pending_batch() if "influence rank" in b.reason]
    assert picked and not any("least sure" in b.reason for b in picked)


def test_failed_round_keeps_labels_and_model_and_can_be_retried(tmp_path, monkeypatch):
    project = _demo(tmp_path / "p", initial_labels=10)
    first_model = project.current_model_path()
    project.oracle_label_batch()
    project.submit_batch()
    labels_before = project.progress().labeled

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("ralif.head.fit_head", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        project.run_round()
    status = project.round_status()
    assert status["status"] == "failed" and status["phase"] == "failed"
    assert "disk on fire" in status["error"]
    assert project.progress().labeled == labels_before
    assert project.current_model_path() == first_model and first_model.is_file()
    assert project.pending_batch() == []
    monkeypatch.undo()
    assert project.run_round()["selected"] == 20
    assert project.round_status()["attempts"] == 2
    assert project.current_model_path() != first_model


def test_round_in_background_worker(tmp_path):
    project = _demo(tmp_path / "p", initial_labels=10, run_first_round=False)
    job = project.start_round(threads=1)
    with pytest.raises(RoundBusy):
        project.start_round()
    with pytest.raises(RoundBusy):
        project.run_round()
    phases = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = project.round_status()
        phases.append(status["phase"])
        if status["status"] in ("ready", "failed"):
            break
        time.sleep(0.05)
    assert status["status"] == "ready", status
    assert status["phase"] == "done" and status["accuracy"] is not None
    assert phases[0] in ("queued", "starting", "extracting", "training", "selecting", "saving", "done")
    final = job.wait(30)
    assert final["state"] == "done" and final["phase"] == "done"
    assert len(project.pending_batch()) == 20


def test_resnet18_project_round(tmp_path):
    src = tmp_path / "src"
    rows = []
    for i in range(8):
        rows.append((_png(src / f"r{i}.png", RED, i, size=16), "red" if i < 3 else ""))
        rows.append((_png(src / f"b{i}.png", BLUE, 50 + i, size=16), "blue" if i < 3 else ""))
    manifest = src / "m.csv"
    manifest.write_text("path,label\n" + "".join(f"{p.name},{y}\n" for p, y in rows))
    project = Project.create(tmp_path / "p", manifest, model="resnet18", batch_size=4,
                             resnet={"epochs": 1, "batch_size": 4, "amp": False})
    result = project.run_round()
    assert not result["cold_start"] and result["selected"] == 4
    meta = json.loads(project.current_model_path().with_suffix(".json").read_text())
    assert meta["format"] == "ralif-resnet18" and meta["class_names"] == ["blue", "red"]
    model = project.load_model()
    assert model.kind == "resnet18"
    assert model.predict_proba([str(rows[0][0])]).shape == (1, 2)


# ----------------------------------------------------------------------------- exports and CLI


def test_exports_parse_and_imagefolder_stays_inside(tmp_path):
    project = _demo(tmp_path / "p", run_first_round=False)
    ids = [r.image_id for r in project.images_page(limit=8)]
    names = ["../../evil", "a/b", "CON", ".hidden"]
    for i, name in enumerate(names):
        cid = project.class_id(["cat", "dog", "frog", "ship"][i])
        project.rename_class(cid, name)
        project.bulk_label(ids[2 * i:2 * i + 2], cid, source="user")
    project.label(ids[0], None)  # skipped images are not exported as labels
    rows = list(csv.DictReader(project.export_csv().open()))
    assert list(rows[0]) == ["path", "label", "round", "time", "source", "split", "image_id"]
    assert len(rows) == 7 and {r["label"] for r in rows} == set(names)
    assert all(r["time"].endswith("+00:00") and Path(r["path"]).is_file() for r in rows)
    doc = json.loads(project.export_json(include_unsure=True).read_text())
    assert len(doc["labels"]) == 8 and set(names) <= set(doc["classes"])

    before = set(os.listdir(tmp_path))
    dest = tmp_path / "out" / "tree"
    project.export_imagefolder(dest)
    # Every image, and the manifest of their class names at the root.
    files = [Path(d) / f for d, _, fs in os.walk(dest) for f in fs if Path(d, f) != dest / "labels.csv"]
    assert len(files) == 7 and (dest / "labels.csv").is_file()
    assert all(os.path.realpath(f).startswith(os.path.realpath(dest) + os.sep) for f in files)
    assert all(f.parent.parent == dest for f in files)
    assert set(os.listdir(tmp_path)) == before | {"out"}
    assert not (tmp_path / "evil").exists() and not (tmp_path.parent / "evil").exists()
    assert safe_folder_name("../../evil", "x") == "_.._evil" and safe_folder_name("..", "x") == "x"
    assert safe_folder_name("CON", "x") == "CON_"
    with pytest.raises(FileExistsError):
        project.export_imagefolder(dest)
    links = project.export_imagefolder(dest, mode="symlink", split_folders=True, overwrite=True)
    linked = [Path(d) / f for d, _, fs in os.walk(links) for f in fs if Path(d, f) != links / "labels.csv"]
    assert len(linked) == 7 and all(p.is_symlink() and p.parent.parent.name == "pool" for p in linked)
    assert not list(dest.parent.glob(".*"))  # no temporary leftovers


def test_predict_cli_round_trip(tmp_path, capsys):
    src = _colors_folder(tmp_path / "train", per_class=4)
    project = Project.create(tmp_path / "p", src, encoder="pixels:2", batch_size=2)
    assert project.run_round()["cold_start"] is False  # imported labels of two classes
    new = tmp_path / "new"
    _png(new / "x1.png", RED, 300)
    _png(new / "x2.png", BLUE, 301)
    _png(new / "x3.png", BLUE, 302)
    (new / "broken.png").write_text("nope")
    out = tmp_path / "preds.csv"
    assert cli_main(["predict", "--model", str(project.folder), "--images", str(new), "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 3 and summary["bad_files"]["count"] == 1
    preds = {Path(r["path"]).name: r["prediction"] for r in csv.DictReader(out.open())}
    assert preds == {"x1.png": "red", "x2.png": "blue", "x3.png": "blue"}
    exported = project.export_model(tmp_path / "model")
    out2 = tmp_path / "preds2.csv"
    assert cli_main(["predict", "--model", str(exported), "--images", str(new), "--out", str(out2),
                     "--probabilities"]) == 0
    rows = list(csv.DictReader(out2.open()))
    assert {Path(r["path"]).name: r["prediction"] for r in rows} == preds
    assert {"p_blue", "p_red"} <= set(rows[0])
    # The scripting command: info and export.
    capsys.readouterr()
    assert cli_main(["project", "info", str(project.folder)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["progress"]["labeled"] == 8 and info["rounds"][0]["status"] == "ready"
    assert cli_main(["project", "export", str(project.folder), "--format", "json",
                     "--out", str(tmp_path / "l.json")]) == 0
    assert len(json.loads((tmp_path / "l.json").read_text())["labels"]) == 8
    assert cli_main(["predict", "--model", str(tmp_path / "missing"), "--images", str(new)]) == 1


def test_rounds_module_is_usable_without_a_model(tmp_path):
    project = _demo(tmp_path / "p", run_first_round=False)
    with pytest.raises(ProjectError, match="no model"):
        project.load_model()
    table = rounds_mod.EmbeddingTable(DEMO / "embeddings.npz")
    assert table.features.shape == (2500, 1024)
    with pytest.raises(ValueError, match="no row"):
        table.features_for([str(tmp_path / "unknown.jpg")])
