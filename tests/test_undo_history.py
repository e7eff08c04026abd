"""Undo from the project's history: one action at a time (labels, bulk labels, class merges and
deletes), set-based, scoped to a tab and kept through a reload."""

from __future__ import annotations

from pathlib import Path

import pytest

from ralif.project import Project, ProjectError


def _ids(p: Project, n: int) -> list[int]:
    return [r.image_id for r in p.images_page(limit=n)]


def test_merge_and_delete_are_one_undoable_action_each(demo_project_no_round: Project) -> None:
    p = demo_project_no_round
    ids = _ids(p, 9)
    cat, dog, frog = (p.class_id(n) for n in ("cat", "dog", "frog"))
    p.bulk_label(ids[:3], cat)
    p.bulk_label(ids[3:6], dog)
    p.label(ids[6], frog)
    keys = {c.name: (c.hotkey, c.color) for c in p.classes()}
    assert p.merge_classes(cat, dog) == 3
    info = p.next_undo()
    assert info is not None and info.kind == "merge" and info.count == 3 and "'cat' into 'dog'" in info.summary
    undo = p.undo_action(info.id)
    assert undo.kind == "merge" and sorted(undo.restored) == sorted(ids[:3]) and undo.classes_restored == ["cat"]
    assert {c.name: (c.hotkey, c.color) for c in p.classes()} == keys
    assert [p.label_of(i).class_id for i in ids[:6]] == [cat] * 3 + [dog] * 3
    assert p.label_of(ids[0]).source == "bulk"
    assert p.truth_map()[cat] == cat
    with pytest.raises(ProjectError, match="undone already"):
        p.undo_action(info.id)
    # Delete, then a new class takes the deleted one's key: undo brings the class back, never with newt's key.
    assert p.delete_class(frog) == 1
    p.add_class("newt")
    newt_key = {c.name: c.hotkey for c in p.classes()}["newt"]
    assert newt_key == keys["frog"][0]
    undo = p.undo_last()
    assert undo is not None and undo.kind == "delete-class" and undo.restored == [ids[6]]
    assert p.label_of(ids[6]).class_name == "frog"
    back = {c.name: c for c in p.classes()}
    # Ten keys, eleven live classes now: frog comes back without one (the finder reaches it).
    assert back["frog"].color == keys["frog"][1] and back["frog"].hotkey is None
    assert back["newt"].hotkey == newt_key
    # A deleted class whose name was taken again cannot come back until the new one is renamed.
    p.delete_class(frog)
    p.add_class("frog")
    with pytest.raises(ProjectError, match="exists again"):
        p.undo_last()
    assert p.label_of(ids[6]).state == "unlabeled"   # the refused undo changed nothing


def test_undo_action_is_exact_and_leaves_newer_answers(demo_project_no_round: Project) -> None:
    p = demo_project_no_round
    ids = _ids(p, 4)
    ship, truck = p.class_id("ship"), p.class_id("truck")
    first = p.bulk_label(ids, ship).action_id
    p.label(ids[3], truck)
    other = Project.open(p.folder, client="other-tab")
    other.label(ids[2], truck)                      # another tab changes one image since
    assert first is not None
    res = p.undo_action(first)                      # not the newest: exactly that one
    assert res.restored == ids[:2] and res.conflicts == ids[2:]
    assert [p.label_of(i).state for i in ids[:2]] == ["unlabeled"] * 2
    assert p.label_of(ids[2]).class_id == truck and p.label_of(ids[3]).class_id == truck
    hist = p.label_history(ids[0])
    assert (hist[-1]["source"], hist[-1]["old_class"], hist[-1]["new_state"]) == ("undo", "ship", "cleared")


def test_undo_survives_a_reload_but_never_takes_another_tabs_newer_action(demo_project_no_round: Project) -> None:
    p = Project.open(demo_project_no_round.folder, client="tab-a")
    ids = _ids(p, 3)
    cat = p.class_id("cat")
    p.label(ids[0], cat)
    p.label(ids[1], cat)
    # A reload: the same browser comes back with a new client id and finds its actions.
    again = Project.open(p.folder, client="tab-a-reloaded")
    info = again.next_undo()
    assert info is not None and info.image_ids == [ids[1]] and info.first_label == "cat"
    assert info.first_path and info.summary == f"image {Path(info.first_path).name} set to 'cat'"
    assert again.undo_last().restored == [ids[1]]
    # Once it acts, an action the old page makes later is the other tab's own, not this one's.
    p.label(ids[2], cat)
    assert again.undo_last().restored == [ids[0]]
    assert again.undo_last() is None
    assert p.undo_last().restored == [ids[2]]


def test_merge_undo_is_set_based_at_scale(tmp_path) -> None:
    p = Project.create_demo(tmp_path / "demo", run_first_round=False)
    cat, dog = p.class_id("cat"), p.class_id("dog")
    # Many labels in one class: the merge and its undo are a few statements each, not a loop.
    n = 20_000
    with p.store.write() as conn:
        base = conn.execute("SELECT MAX(id) FROM images").fetchone()[0]
        conn.executemany("INSERT INTO images(id, path, content_hash, split, added_at) VALUES (?, ?, ?, 'pool', 0)",
                         [(base + k + 1, f"/x/{k}.jpg", f"h{k}") for k in range(n)])
    p.bulk_label([base + k + 1 for k in range(n)], cat)
    assert p.merge_classes(cat, dog) == n
    undo = p.undo_last()
    assert undo is not None and len(undo.restored) == n and not undo.conflicts
    assert {c.name: c.count for c in p.classes()}["cat"] == n
