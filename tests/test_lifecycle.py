"""The round lifecycle (one owner of the rounds table, typed states and status), the app's round
rules as library calls, the pages' computations as functions, and the project package's layout."""

from __future__ import annotations

import ast
import time
from pathlib import Path

import numpy as np
import pytest

from ralif.evaluation import auca
from ralif.project import (
    Project,
    RoundState,
    RoundStatus,
    auca_against_random,
    majority_guess,
    run_next_round,
)
from ralif.project.lifecycle import RoundBook, RoundPhase
from ralif.project.store import ROUND_STATUSES

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "ralif/app/assets/demo"


def _demo(folder: Path, **kwargs) -> Project:
    return Project.create_demo(folder, assets=DEMO, **kwargs)


def test_round_states_are_the_stored_strings():
    assert tuple(s.value for s in RoundState) == ROUND_STATUSES
    assert RoundState.READY == "ready" and RoundPhase.SERVER_QUEUED == "server-queued"


def test_status_is_a_typed_record_that_reads_like_the_old_dict(tmp_path):
    project = _demo(tmp_path / "p")
    status = project.round_status()
    assert isinstance(status, RoundStatus)
    assert status.state is RoundState.READY and status.round == 1 and not status.active
    # The callers' dict access keeps working: keys, .get, ** and the row's other columns.
    assert status["status"] == "ready" and status.get("phase") == "done" and status.get("nope") is None
    merged = {**status, "phase": "training"}
    assert merged["round"] == 1 and merged["phase"] == "training"
    assert status["labeled_count"] == status.row["labeled_count"]
    assert {"round", "status", "phase", "progress", "error", "message", "job_path", "attempts"} <= set(status)
    assert "number" not in status


def test_reading_a_status_never_writes_reaping_is_explicit(tmp_path):
    project = _demo(tmp_path / "p", run_first_round=False)
    book = project.round_book
    gone = str(tmp_path / "p" / "jobs" / "never-written.json")
    number = book.claim(job_path=gone, mark_queued=True, for_server=True)
    # Claimed long ago by a worker whose status file never appeared.
    with project.store.write() as conn:
        conn.execute("UPDATE rounds SET started_at = ? WHERE number = ?", (time.time() - 3600, number))
    assert book.status().status == "running" and book.status().phase == "queued"
    assert book.status().status == "running"           # still: a read changed nothing
    book.reap()
    after = book.status()
    assert after.state is RoundState.FAILED and after.error == "the background worker never started"


def test_take_is_won_once_and_a_cancelled_round_is_not_taken(tmp_path):
    project = _demo(tmp_path / "p", run_first_round=False)
    book = project.round_book
    job = str(tmp_path / "p" / "jobs" / "r1.json")
    number = book.claim(job_path=job, mark_queued=True, for_server=True)
    assert book.queued_for_server() == (number, job)
    assert book.take(number, job) is True
    assert book.take(number, job) is False              # a second server loses
    assert book.queued_for_server() is None
    book.fail(number, "cancelled on request", only_if_running=True)
    assert book.take(number, job) is False


def test_a_round_runs_from_the_folder_without_the_facade(tmp_path):
    project = _demo(tmp_path / "p", run_first_round=False)
    summary = run_next_round(RoundBook.open(project.folder))
    assert summary["round"] == 1 and summary["selected"] == project.batch_size
    assert project.round_status().state is RoundState.READY and len(project.pending_batch()) == project.batch_size


# ----------------------------------------------------------------------------- the app's rules


def test_submit_with_unanswered_images_one_rule(tmp_path, monkeypatch):
    project = _demo(tmp_path / "p")
    started: list[int] = []
    monkeypatch.setattr(Project, "start_round", lambda self, *a, **k: started.append(1))
    batch = project.pending_batch()
    project.label(batch[0].image_id, batch[0].label.class_id or project.classes()[0].id)
    left = len(batch) - 1
    refused = project.submit_and_start(1)
    assert refused.kind == "warning" and refused.round is None
    assert refused.message == (f"{left} of {len(batch)} images of the batch still need a label or a skip; "
                               f"the batch was not submitted.")
    assert project.pending_round() == 1 and started == []
    done = project.submit_and_start(1, allow_unanswered=True)
    assert done.kind == "success" and done.round == 2 and started == [1]
    assert f"{left} unanswered images stay unlabeled" in done.message
    assert sum(project.label_of(b.image_id).state == "unlabeled" for b in batch) == left
    # A second Enter for the batch already submitted does nothing.
    assert project.submit_and_start(1).kind == ""


def test_a_queued_round_nobody_started_is_started(tmp_path, monkeypatch):
    project = _demo(tmp_path / "p", run_first_round=False)
    calls: list[str] = []
    monkeypatch.setattr(Project, "start_round", lambda self, *a, **k: calls.append("start"))
    monkeypatch.setattr(Project, "ensure_round_server", lambda self: calls.append("server"))
    assert project.resume_round() is None and calls == ["start"]
    project.run_round()
    assert project.resume_round() is None and calls == ["start", "server"]

    def broken(self, *a, **k):
        raise OSError("no space left")

    monkeypatch.setattr(Project, "ensure_round_server", broken)
    assert project.resume_round() == "Could not start the background worker: no space left"


def test_change_marks_move_with_labels_rounds_and_classes(tmp_path):
    project = _demo(tmp_path / "p")
    first = project.change_marks()
    assert first.selections == (project.batch_size, 1)
    image = project.pending_batch()[0].image_id
    project.label(image, project.classes()[0].id)
    second = project.change_marks()
    assert second.history > first.history and second.classes == first.classes
    project.add_class("zebra")
    assert project.change_marks().classes == (first.classes[0] + 1, first.classes[1])
    assert project.change_marks().as_tuple()[1] == first.selections


def test_majority_guess():
    ids = np.array([3, 5, 8, 13])
    classes = np.array([7, 2, 2, 7])
    assert majority_guess(ids, classes, [5, 8, 13]) == 2
    assert majority_guess(ids, classes, [3, 13, 99]) == 7          # unknown ids are ignored
    assert majority_guess(ids, classes, [3, 5]) == 2               # a tie: the lowest class id
    assert majority_guess(ids, classes, [4, 99]) is None
    assert majority_guess(np.array([], dtype=np.int64), np.array([]), [1]) is None


def test_auca_against_random_per_seed():
    acc = np.array([0.2, 0.5, 0.6, 0.7])
    rand = np.array([[0.2, 0.4, 0.5, 0.6], [0.2, 0.3, 0.5, 0.65]])
    summary = auca_against_random(acc, rand)
    assert summary is not None
    assert summary.mean_ratio == pytest.approx(auca(acc) / auca(rand.mean(0)))
    assert summary.per_seed == pytest.approx([auca(acc) / auca(r) for r in rand])
    assert summary.mean_ratio > 1.0
    assert auca_against_random(acc[:2], rand[:, :2]) is None
    with pytest.raises(ValueError, match="covers 3 rounds"):
        auca_against_random(acc, rand[:, :3])


# ----------------------------------------------------------------------------- layout


def _imports(path: Path) -> list[tuple[str, list[str], bool]]:
    """(module, names, under TYPE_CHECKING) for each ``from ralif... import`` of a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    guarded = {id(n) for node in ast.walk(tree)
               if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    return [(node.module, [a.name for a in node.names], id(node) in guarded) for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ralif")]


def test_project_package_layout():
    package = ROOT / "ralif" / "project"
    for path in sorted(package.glob("*.py")):
        assert path.read_text(encoding="utf-8").count("\n") <= 600, f"{path.name} is over 600 lines"
        for module, names, guarded in _imports(path):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            assert not private, f"{path.name} imports private {module}.{private}"
            if path.name not in ("session.py", "__init__.py") and module == "ralif.project.session":
                assert guarded, f"{path.name} imports the Project facade"
    for name in ("rounds.py", "round_server.py", "lifecycle.py"):
        text = (package / name).read_text(encoding="utf-8")
        assert "project._" not in text and "ralif.project.session" not in text, name


def test_round_inputs_read_every_label_state_and_the_truth_through_merges(tmp_path):
    """The round's snapshot reads only the labels table and the held-out truth; checked against
    each image's state as the project reports it one by one."""
    project = _demo(tmp_path / "p", run_first_round=False)
    pool = [r.image_id for r in project.images_page(limit=12)]
    test = [r.image_id for r in project.images_page(split="test", limit=4)]
    cat, dog, frog = (project.class_id(n) for n in ("cat", "dog", "frog"))
    project.bulk_label(pool[:3], cat)
    project.bulk_label(pool[3:6], dog)
    project.label(pool[6], None)            # unsure: neither labeled nor asked again
    project.label(pool[7], frog)
    project.unlabel(pool[7])                # cleared: asked again
    project.label(test[0], frog)            # a person's label on a held-out image beats the truth
    project.merge_classes(cat, dog)         # truth and labels of "cat" now read as "dog"
    inputs = project.round_book.inputs(1)

    names = inputs.class_names
    pool_ids = inputs.pool_ids.tolist()
    states = {i: project.label_of(i) for i in pool_ids}
    want_labeled = [p for p, i in enumerate(pool_ids) if states[i].state == "labeled"]
    assert inputs.labeled_pos.tolist() == want_labeled and len(want_labeled) == 6
    assert [names[k] for k in inputs.labeled_y] == [states[pool_ids[p]].class_name for p in want_labeled]
    assert set(names[k] for k in inputs.labeled_y) == {"dog"}
    want_candidates = [p for p, i in enumerate(pool_ids) if states[i].state not in ("labeled", "unsure")]
    assert inputs.candidate_pos.tolist() == want_candidates
    assert pool_ids.index(pool[7]) in want_candidates and pool_ids.index(pool[6]) not in want_candidates

    truth = project.truth_map()
    raw = dict(project.store.query("SELECT id, true_class_id FROM images WHERE split = 'test'"))
    test_ids = inputs.test_ids.tolist()
    expected = {i: (frog if i == test[0] else truth.get(raw[i], raw[i])) for i in test_ids if raw[i] is not None}
    got = {test_ids[p]: inputs.class_ids[k] for p, k in zip(inputs.test_pos.tolist(), inputs.test_y.tolist())}
    assert got == expected and cat not in got.values() and len(got) == len(test_ids)
