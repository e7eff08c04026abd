"""A batch that arrives between the Map page's choice of images and its write is not written: the
page asks ``bulk_label`` to leave the pending batch out inside its own transaction, and says what
was left out (the images are answered on the Label page)."""

from __future__ import annotations

from typing import Any

from test_labels_skip_pending import batch_arrives
from test_map_review import choose_class, lasso_unlabeled, last_bulk, press_label
from test_pages_map_progress_export import demo

from ralif.project import Project

__all__ = ["demo"]


def test_a_round_finishing_during_the_click_does_not_get_its_batch_labeled(demo: Project, monkeypatch) -> None:
    lasso = lasso_unlabeled(demo, monkeypatch, 6)
    points, ids, old_batch = lasso.points, sorted(lasso.ids), lasso.batch
    at, ship = choose_class(lasso.at, demo, "ship", points)
    assert at.button(key="map-apply-0").proto.label == "Label as ship: the 6 unlabeled images shown"
    # The round finishes after the page chose what to write, just before the write itself.
    late = ids[1:3]
    calls: list[dict[str, Any]] = []
    original = Project.bulk_label

    def racing(self: Project, image_ids: Any, class_id: int | None, source: str = "bulk", **kw: Any) -> Any:
        calls.append(kw)
        batch_arrives(self, [*late, *sorted(old_batch)[:5]], audit_ids=late[:1])
        return original(self, image_ids, class_id, source, **kw)

    monkeypatch.setattr(Project, "bulk_label", racing)
    at = press_label(at, points)
    assert not at.exception, at.exception
    assert calls == [{"skip_pending": True}]
    written = [i for i in ids if i not in late]
    assert last_bulk(demo) == written
    assert all(demo.label_of(i).state == "unlabeled" for i in late)
    assert all((demo.label_of(i).class_id, demo.label_of(i).source) == (ship.id, "map") for i in written)
    assert any("Labeled 4 images as ship" in s.value for s in at.success)
    assert any("2 image(s) were not labeled: a new batch to label arrived" in w.value for w in at.warning)
    # Undo offers (and takes back) exactly the images written.
    undo = at.button(key="map-undo")
    assert undo.proto.label == "Undo: labeling 4 images as ship"
    undo.click().run()
    assert all(demo.label_of(i).state == "unlabeled" for i in ids)
