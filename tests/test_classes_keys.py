"""A class's key and colour belong to it: stored, kept through every class edit, migrated from
the order they used to follow; merges never rewrite the hidden true classes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from ralif.project import Project
from ralif.project import store as store_mod
from ralif.project.insights import through_merges
from ralif.project.schema import HOTKEYS, PALETTE
from ralif.project.store import DB_NAME, release


def _keys(project: Project) -> dict[str, tuple[str | None, str]]:
    return {c.name: (c.hotkey, c.color) for c in project.classes()}


def test_keys_and_colours_survive_rename_reorder_merge_delete(demo_project_no_round: Project) -> None:
    p = demo_project_no_round
    before = _keys(p)
    # The demo's ten classes take 1-9, 0 in their order and ten different colours.
    assert [k for k, _ in before.values()] == list(HOTKEYS)
    assert len({c for _, c in before.values()}) == 10
    p.rename_class(p.class_id("cat"), "kitty")
    p.reorder_classes([c.id for c in reversed(p.classes())])
    p.delete_class(p.class_id("automobile"))
    p.merge_classes(p.class_id("dog"), p.class_id("kitty"))
    after = _keys(p)
    expected = {("kitty" if n == "cat" else n): v for n, v in before.items() if n not in ("automobile", "dog")}
    assert after == expected
    # A new class takes the first free key (automobile's 2) and a colour no live class uses.
    p.add_class("zebra")
    zebra = _keys(p)["zebra"]
    assert zebra[0] == before["automobile"][0]
    assert zebra[1] not in {c for _, c in expected.values()}
    p.add_class("yak")
    assert _keys(p)["yak"][0] == before["dog"][0]
    # Past the tenth, a class has no key (the finder reaches it) but still its own colour.
    p.add_class("xerus")
    assert _keys(p)["xerus"][0] is None and _keys(p)["xerus"][1] in PALETTE


def test_merge_keeps_hidden_truth_and_evaluation_maps_it(demo_project_no_round: Project) -> None:
    p = demo_project_no_round
    cat, dog = p.class_id("cat"), p.class_id("dog")
    truth_before = p.store.query("SELECT id, true_class_id FROM images ORDER BY id")
    n_cat = sum(1 for r in truth_before if r[1] == cat)
    assert n_cat > 0
    p.merge_classes(cat, dog)
    assert p.store.query("SELECT id, true_class_id FROM images ORDER BY id") == truth_before
    mapping = p.truth_map()
    assert mapping[cat] == dog and mapping[dog] == dog
    truth = np.array([r[1] for r in truth_before])
    mapped = through_merges(truth, mapping)
    assert (mapped[truth == cat] == dog).all() and (mapped[truth != cat] == truth[truth != cat]).all()
    # The oracle answers a former cat with dog; merges chain.
    p.set_oracle(True)
    a_cat = next(int(r[0]) for r in truth_before if r[1] == cat)
    assert p.oracle_answer(a_cat) == dog
    bird = p.class_id("bird")
    p.merge_classes(dog, bird)
    assert p.truth_map()[cat] == bird and p.oracle_answer(a_cat) == bird
    # A class deleted without a merge counts as nothing.
    p.delete_class(bird)
    assert cat not in p.truth_map() and p.oracle_answer(a_cat) is None
    assert through_merges(np.array([cat, -1]), p.truth_map()).tolist() == [-1, -1]


def test_old_project_keeps_the_keys_it_showed(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "demo"
    # A project as the previous ralif wrote it (schema 2): keys followed the live classes' order.
    with monkeypatch.context() as m:
        m.setattr(store_mod, "MIGRATIONS", store_mod.MIGRATIONS[:2])
        m.setattr(store_mod, "SCHEMA_VERSION", 2)
        old = Project.create_demo(folder, run_first_round=False)
        # What the previous ralif's delete and reorder left (its code read no key column).
        with old.store.write() as conn:
            conn.execute("UPDATE classes SET deleted = 1 WHERE name = 'automobile'")
            conn.execute("UPDATE classes SET position = 100 - position")
        release(folder / DB_NAME)
    conn = sqlite3.connect(folder / DB_NAME)
    assert "hotkey" not in [r[1] for r in conn.execute("PRAGMA table_info(classes)")]
    conn.close()
    q = Project.open(folder)
    keys = _keys(q)
    names = [c.name for c in q.classes()]
    assert names[0] == "truck" and names[-1] == "airplane"
    assert [keys[n][0] for n in names] == list(HOTKEYS[:9])
    assert [keys[n][1] for n in names] == list(PALETTE[:9])
    # The migrated project gives a new class the free key 0.
    q.add_class("zebra")
    assert _keys(q)["zebra"][0] == "0"


def test_undoing_chained_merges_out_of_order(demo_project_no_round: Project) -> None:
    p = demo_project_no_round
    cat, dog, bird = (p.class_id(n) for n in ("cat", "dog", "bird"))
    first = p.merge_classes(cat, dog)
    assert first >= 0
    a1 = p.next_undo()
    p.merge_classes(dog, bird)
    assert p.truth_map()[cat] == bird
    assert a1 is not None
    p.undo_action(a1.id)                     # the older merge first: cat is back on its own
    assert p.truth_map()[cat] == cat and p.truth_map()[dog] == bird
    p.undo_last()                            # then dog comes back; cat stays itself
    assert (p.truth_map()[cat], p.truth_map()[dog]) == (cat, dog)
    p.delete_class(cat)                      # deleting cat now maps its truth nowhere
    assert cat not in p.truth_map()


def test_set_class_key_swaps_and_refuses_a_non_key(demo_project_no_round: Project) -> None:
    import pytest

    from ralif.project import ProjectError

    p = demo_project_no_round
    cat, dog = p.class_id("cat"), p.class_id("dog")
    before = _keys(p)
    p.set_class_key(cat, before["dog"][0])
    after = _keys(p)
    assert (after["cat"][0], after["dog"][0]) == (before["dog"][0], before["cat"][0])
    assert {n: v for n, v in after.items() if n not in ("cat", "dog")} == {
        n: v for n, v in before.items() if n not in ("cat", "dog")}
    p.set_class_key(dog, None)
    assert _keys(p)["dog"][0] is None
    with pytest.raises(ProjectError, match="class key"):
        p.set_class_key(cat, "x")
