"""The Label page while answers cannot be written, with Streamlit's AppTest (the grid's events are
sent as in tests/test_app.py): the grid is told why they wait, its failure message goes once they
are saved, and a submit that fails leaves the page and its grid in place. Also the search of the
"Relabel earlier images" panel, which covers every image of the chosen filter, a page at a time.
The same in a real browser: tests/test_unsaved_answers_browser.py."""

from __future__ import annotations

from typing import Any

import pytest
from test_app import demo, grid_args, no_worker, page, projects_dir, send, texts  # noqa: F401

from ralif.project import Project
from ralif.project.dbfile import disk_full, read_only
from ralif.project.store import Store
from ralif.ui.earlier import PAGE_SIZE

EARLIER_VIEW = "ralif_earlier_view"


def _refuse_writes(monkeypatch: pytest.MonkeyPatch, fault: Any) -> None:
    def fail(self: Store) -> None:
        raise fault(str(self.folder))

    monkeypatch.setattr(Store, "write", fail)


def test_the_grid_is_told_why_answers_wait_and_when_they_are_saved(
        demo: Project, no_worker: list[str], monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    at = page("views/1_Label.py", demo).run()
    a, b = (x.image_id for x in demo.pending_batch()[:2])
    cat = demo.class_id("cat")
    events = [{"id": f"w-{i}", "type": "label", "image_id": i, "class_id": cat, "version": 0} for i in (a, b)]
    real_write = Store.write
    _refuse_writes(monkeypatch, disk_full)
    send(at, "label_grid", *events)
    args = grid_args(at)
    assert args["save_problem"] == "the disk is full"
    assert args["notice"]["kind"] == "error" and "Not saved yet (2 action(s)" in args["notice"]["text"]
    assert "Not saved yet" in texts(at)
    # The reason follows the latest failure.
    _refuse_writes(monkeypatch, read_only)
    send(at, "label_grid", *events, seq=2)
    assert grid_args(at)["save_problem"] == "the project is read-only"

    # Writes work again: the resent answers are written, and nothing on the page or in the grid still
    # says they are not saved.
    monkeypatch.setattr(Store, "write", real_write)
    send(at, "label_grid", *events, seq=3)
    assert not at.exception
    assert [demo.label_of(i).class_name for i in (a, b)] == ["cat", "cat"]
    args = grid_args(at)
    assert args["save_problem"] is None and {e["id"] for e in events} <= set(args["acked"])
    assert args["notice"]["kind"] == "" and args["notice"]["text"].startswith("Saved:")
    assert "Not saved" not in texts(at)
    # A later run says nothing more about it.
    send(at, "label_grid", *events, seq=4)
    assert grid_args(at)["save_problem"] is None and "Not saved" not in texts(at)


def test_a_submit_that_cannot_be_written_keeps_the_page_and_the_grid(
        demo: Project, no_worker: list[str], monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    at = page("views/1_Label.py", demo).run()
    batch = [x.image_id for x in demo.pending_batch()]
    number = demo.pending_round()
    real_write = Store.write
    _refuse_writes(monkeypatch, disk_full)
    send(at, "label_grid", {"id": "s-1", "type": "submit", "round": number, "allow_unanswered": True})
    assert not at.exception
    boxes = " ".join(e.value for e in at.error)
    assert "The batch was not submitted" in boxes and "is full" in boxes
    assert "This page could not be shown" not in boxes
    # The batch is still there to label, and the grid says what happened.
    args = grid_args(at)
    assert [i["id"] for i in args["items"]] == batch
    assert args["notice"]["kind"] == "error"
    assert args["notice"]["text"].startswith("The batch was not submitted: the disk is full.")
    assert demo.pending_round() == number and no_worker == []

    # With space again the same Enter submits.
    monkeypatch.setattr(Store, "write", real_write)
    send(at, "label_grid", {"id": "s-2", "type": "submit", "round": number, "allow_unanswered": True}, seq=2)
    assert not at.exception
    assert demo.pending_round() != number and str(demo.folder) in no_worker


def _matches(project: Project, which: str | int, text: str) -> list[int]:
    """The search as the panel once did it, over every image at once."""
    return [r.image_id for r in project.images_page(which, limit=10**6) if text.lower() in r.path.lower()]


def matching_ids(project: Project, which: str | int, split: str, text: str, *, after_id: int = 0,
                 limit: int = PAGE_SIZE) -> list[int]:
    return [r.image_id for r in project.images_page(which, split=split, after_id=after_id, limit=limit,
                                                    path_contains=text)]


def test_the_name_search_pages_through_every_image_of_the_filter(demo: Project) -> None:  # noqa: F811
    # Many matches: page after page, each picking up after the last id of the one before.
    want = _matches(demo, "all", "AIRPLANE/")
    assert len(want) > 2 * PAGE_SIZE
    got, after = [], 0
    while True:
        ids = matching_ids(demo, "all", "pool", "AIRPLANE/", after_id=after, limit=PAGE_SIZE)
        got += ids
        if len(ids) < PAGE_SIZE:
            break
        after = ids[-1]
    assert got == want
    # The text is taken literally: "_" and "%" are no wildcards.
    assert matching_ids(demo, "all", "pool", "0_") == [] and matching_ids(demo, "all", "pool", "%") == []
    # Only among the images of the filter.
    last = demo.images_page("all", limit=10**6)[-1]
    demo.label(last.image_id, demo.class_id("cat"))
    name = last.path.rsplit("/", 2)
    needle = "/".join(name[-2:])
    assert matching_ids(demo, "labeled", "pool", needle) == [last.image_id]
    assert matching_ids(demo, demo.class_id("cat"), "pool", needle) == [last.image_id]
    assert matching_ids(demo, demo.class_id("dog"), "pool", needle) == []
    assert matching_ids(demo, "unlabeled", "pool", needle) == []
    assert matching_ids(demo, "all", "test", needle) == []


def _browse(at: Any) -> list[dict[str, Any]]:
    return grid_args(at, "browse_grid")["items"]


def test_the_panel_finds_images_beyond_its_first_page(demo: Project, no_worker: list[str]) -> None:  # noqa: F811
    everything = demo.images_page("all", limit=10**6)
    last = everything[-1]
    needle = "/".join(last.path.rsplit("/", 2)[-2:])
    at = page("views/1_Label.py", demo)
    at.session_state[EARLIER_VIEW] = "Browse all"
    at.run()
    assert last.image_id not in {i["id"] for i in _browse(at)}
    at.selectbox(key="earlier_which").select("All").run()
    at.text_input(key="earlier_name").input(needle).run()
    assert not at.exception
    assert [i["id"] for i in _browse(at)] == [last.image_id]
    assert "No images match" not in texts(at)
    # The caption shows the text searched for as typed.
    assert any("whose path contains" in c.value for c in at.caption)

    # A search with more matches than a page: the next page goes on where the first stopped.
    at.text_input(key="earlier_name").input("AIRPLANE/").run()
    want = _matches(demo, "all", "AIRPLANE/")
    first = [i["id"] for i in _browse(at)]
    assert first == want[:PAGE_SIZE]
    at.button(key="earlier_next").click().run()
    assert [i["id"] for i in _browse(at)] == want[PAGE_SIZE:2 * PAGE_SIZE]
