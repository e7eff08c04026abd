"""The grid's write path without a browser: undo from the project's history (reload-proof, shown
with its picture, confirmed when it reaches past the batch on screen), writes that fail on the
disk or folder kept as unsent, guesses for removed classes, and Enter with unanswered images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ralif.project import Project
from ralif.project.store import DiskFullError, ReadOnlyError
from ralif.ui.grid import TabMemory, apply_events, batch_items, class_args

GRID_KEY = "label_grid"


class Grid:
    """What the grid component sends: every event with a unique id, the outbox resent until acked."""

    def __init__(self) -> None:
        self.n = 0
        self.outbox: list[dict[str, Any]] = []

    def send(self, **event: Any) -> dict[str, Any]:
        self.n += 1
        self.outbox.append({"id": f"ev-{self.n}", **event})
        return {"outbox": list(self.outbox)}

    def ack(self, acked: list[str]) -> None:
        self.outbox = [e for e in self.outbox if e["id"] not in acked]


def _apply(project: Project, grid: Grid, memory: TabMemory, **event: Any):
    out = apply_events(project, grid.send(**event), memory, GRID_KEY)
    grid.ack(out.acked)
    return out


def test_undo_in_the_batch_is_immediate_and_shows_the_image(demo_project_no_round: Project) -> None:
    p = demo_project_no_round
    ids = [r.image_id for r in p.images_page(limit=4)]
    cat = p.class_id("cat")
    grid, memory = Grid(), TabMemory()
    _apply(p, grid, memory, type="label", image_id=ids[0], class_id=cat, version=0)
    _apply(p, grid, memory, type="label", image_id=ids[1], class_id=cat, version=0)
    out = _apply(p, grid, memory, type="undo", on_screen=ids, titles=[f"#{k + 1}" for k in range(len(ids))])
    assert p.label_of(ids[1]).state == "unlabeled" and p.label_of(ids[0]).class_id == cat
    note = memory.current_notice(GRID_KEY)
    # Named as its tile is (#2), never by the project's internal image id; what was taken back, and what is left.
    assert note is not None and note["text"] == 'Undone: #2 is no longer "cat"; it has no answer now.'
    assert note["thumb"].startswith("data:image/jpeg;base64,") and note["caption"] == "#2: cat"
    assert out.focus_hint is not None and out.focus_hint["image_id"] == ids[1]


def test_an_undone_answer_says_what_the_image_has_again(demo_project_no_round: Project) -> None:
    p = demo_project_no_round
    ids = [r.image_id for r in p.images_page(limit=2)]
    cat, dog = p.class_id("cat"), p.class_id("dog")
    titles = ["#1", "#2"]
    grid, memory = Grid(), TabMemory()

    def undone() -> str:
        _apply(p, grid, memory, type="undo", on_screen=ids, titles=titles)
        return memory.current_notice(GRID_KEY)["text"]

    _apply(p, grid, memory, type="label", image_id=ids[0], class_id=cat, version=0)
    _apply(p, grid, memory, type="label", image_id=ids[0], class_id=dog, version=1)
    assert undone() == 'Undone: #1 is no longer "dog"; it is "cat" again.'
    _apply(p, grid, memory, type="label", image_id=ids[0], class_id=None, version=p.label_of(ids[0]).version)
    assert undone() == 'Undone: #1 is no longer skipped; it is "cat" again.'
    _apply(p, grid, memory, type="clear", image_id=ids[0], version=p.label_of(ids[0]).version)
    assert undone() == 'Undone: the removal of the answer of #1; it is "cat" again.'
    # A page drawn before tiles were named in the event: the image's file name, not its id.
    _apply(p, grid, memory, type="undo", on_screen=ids)
    name = Path(p.store.query("SELECT path FROM images WHERE id = ?", (ids[0],))[0][0]).name
    text = memory.current_notice(GRID_KEY)["text"]
    assert text == f'Undone: image "{name}" is no longer "cat"; it has no answer now.'


def test_undo_past_the_batch_on_screen_needs_a_second_u(demo_project_no_round: Project) -> None:
    p = demo_project_no_round
    rows = p.images_page(limit=4)
    ids = [r.image_id for r in rows]
    dog = p.class_id("dog")
    grid, memory = Grid(), TabMemory()
    _apply(p, grid, memory, type="label", image_id=ids[0], class_id=dog, version=0)
    # A new batch on screen that does not hold that image: the first u names it and changes nothing.
    _apply(p, grid, memory, type="undo", on_screen=ids[1:])
    assert p.label_of(ids[0]).class_id == dog
    note = memory.current_notice(GRID_KEY)
    assert note is not None and note["kind"] == "warn" and "Press u again" in note["text"]
    name = Path(rows[0].path).name
    assert f"image {name} set to" in note["text"] and note["thumb"] and note["caption"] == f"{name}: dog"
    _apply(p, grid, memory, type="undo", on_screen=ids[1:])
    assert p.label_of(ids[0]).state == "unlabeled"
    # Nothing left: said so, nothing else changes.
    _apply(p, grid, memory, type="undo", on_screen=ids)
    assert "Nothing left to undo" in memory.current_notice(GRID_KEY)["text"]


def test_undo_survives_a_reload(demo_project_no_round: Project) -> None:
    folder = demo_project_no_round.folder
    before = Project.open(folder, client="tab-1")
    ids = [r.image_id for r in before.images_page(limit=3)]
    _apply(before, Grid(), TabMemory(), type="bulk", image_ids=ids, class_id=before.class_id("ship"))
    # A reload: a new session, so a new client id and an empty tab memory.
    after, memory = Project.open(folder, client="tab-2"), TabMemory()
    _apply(after, Grid(), memory, type="undo", on_screen=ids)
    assert [after.label_of(i).state for i in ids] == ["unlabeled"] * 3
    assert memory.current_notice(GRID_KEY)["text"].startswith("Undone: a bulk label of 3 images")


@pytest.mark.parametrize("error", [DiskFullError, ReadOnlyError])
def test_a_write_that_fails_on_the_folder_stays_unsent_and_goes_through_later(
        demo_project_no_round: Project, monkeypatch: pytest.MonkeyPatch, error: type[Exception]) -> None:
    p = demo_project_no_round
    ids = [r.image_id for r in p.images_page(limit=2)]
    cat, dog = p.class_id("cat"), p.class_id("dog")
    grid, memory = Grid(), TabMemory()
    real = Project.label

    def failing(self: Project, *args: Any, **kwargs: Any) -> Any:
        raise error(f"the project folder {self.folder} cannot be written")

    monkeypatch.setattr(Project, "label", failing)
    grid.send(type="label", image_id=ids[0], class_id=cat, version=0)
    out = _apply(p, grid, memory, type="label", image_id=ids[1], class_id=dog, version=0)
    assert out.acked == [] and out.unsaved == 2 and len(grid.outbox) == 2
    note = memory.current_notice(GRID_KEY)
    assert note is not None and note["kind"] == "error" and str(p.folder) in note["text"]
    assert "sent again automatically" in note["text"]
    assert p.label_of(ids[0]).state == "unlabeled"
    # Writing works again: the grid's next resend (the same outbox) is applied, in order, once.
    monkeypatch.setattr(Project, "label", real)
    out = apply_events(p, {"outbox": list(grid.outbox)}, memory, GRID_KEY)
    assert out.acked == ["ev-1", "ev-2"] and out.unsaved == 0
    assert (p.label_of(ids[0]).class_id, p.label_of(ids[1]).class_id) == (cat, dog)
    again = apply_events(p, {"outbox": list(grid.outbox)}, memory, GRID_KEY)
    assert again.acked == ["ev-1", "ev-2"] and p.label_of(ids[0]).version == 1


def test_guesses_for_removed_classes_are_not_offered(tmp_path: Path) -> None:
    # Some labels up front, so the first batch comes from a model and carries its guesses.
    p = Project.create_demo(tmp_path / "demo", initial_labels=40)
    batch = p.pending_batch()
    guessed = [b for b in batch if b.predicted_class_id is not None]
    assert guessed, "the model made no guesses"
    gone = guessed[0].predicted_class_id
    name = guessed[0].predicted_class
    p.delete_class(gone)
    items = {it["id"]: it for it in batch_items(p.pending_batch(), 32, p.classes())}
    for b in batch:
        it = items[b.image_id]
        if b.predicted_class_id == gone:
            assert it["predicted_class_id"] is None and it["guess_gone"] == name and it["confidence"] is None
        else:
            assert it["predicted_class_id"] == b.predicted_class_id and it["guess_gone"] is None


def test_class_args_carry_the_stored_keys_and_colours(demo_project_no_round: Project) -> None:
    p = demo_project_no_round
    before = {c["name"]: (c["key"], c["color"]) for c in class_args(p.classes())}
    p.delete_class(p.class_id("airplane"))
    p.merge_classes(p.class_id("cat"), p.class_id("dog"))
    after = {c["name"]: (c["key"], c["color"]) for c in class_args(p.classes())}
    assert after == {n: v for n, v in before.items() if n not in ("airplane", "cat")}


def test_enter_with_unanswered_images_follows_the_library_rule(demo_project: Project) -> None:
    p = demo_project
    batch = p.pending_batch()
    first = batch[0].image_id
    grid, memory = Grid(), TabMemory()
    _apply(p, grid, memory, type="label", image_id=first, class_id=p.class_id("cat"), version=0)
    out = _apply(p, grid, memory, type="submit", round=p.pending_round(), allow_unanswered=True)
    assert out.submit == p.pending_round() and out.allow_unanswered
    refused = p.submit_and_start(out.submit, allow_unanswered=False)
    assert refused.kind == "warning" and f"{len(batch) - 1} of {len(batch)}" in refused.message
    done = p.submit_and_start(out.submit, allow_unanswered=out.allow_unanswered)
    assert done.kind == "success" and f"{len(batch) - 1} unanswered images stay unlabeled" in done.message
    assert p.label_of(first).state == "labeled"
    assert all(p.label_of(b.image_id).state == "unlabeled" for b in batch[1:])
