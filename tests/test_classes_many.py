"""A project with 1,000 classes: every class gets a colour, the first ten keep keys 1-9 and 0, the
rest are reached by name, and reading the classes stays cheap for a page run."""

from __future__ import annotations

import time

from ralif.project import Project
from ralif.project.schema import HOTKEYS, PALETTE
from ralif.ui.grid import class_args


def test_a_thousand_classes(demo_project_no_round: Project) -> None:
    p = demo_project_no_round
    names = [f"species {k:04d} ({'ab'[k % 2]})" for k in range(990)]
    for name in names:
        p.add_class(name)
    classes = p.classes()
    assert len(classes) == 1000 and len({c.name for c in classes}) == 1000
    assert [c.hotkey for c in classes[:10]] == list(HOTKEYS)
    assert all(c.hotkey is None for c in classes[10:])
    assert all(c.color in PALETTE for c in classes)
    # Colours are spread evenly: no colour is used more than once more than another.
    uses = [sum(c.color == col for c in classes) for col in PALETTE]
    assert max(uses) - min(uses) <= 1
    # What the grid is given names every class with its key and colour.
    args = class_args(classes)
    assert [a["name"] for a in args] == [c.name for c in classes]
    assert {a["key"] for a in args[10:]} == {None} and args[0]["key"] == "1"
    # A class found by part of its name (what the finder does) is one class; a deleted one is gone.
    hits = [c for c in classes if "0417" in c.name]
    assert len(hits) == 1
    p.delete_class(hits[0].id)
    t0 = time.perf_counter()
    for _ in range(5):
        classes = p.classes()
    per_call = (time.perf_counter() - t0) / 5
    assert len(classes) == 999 and not any("0417" in c.name for c in classes)
    # A page run reads the classes two or three times; on a loaded 2-core machine this is ~5 ms.
    assert per_call < 0.5, per_call
