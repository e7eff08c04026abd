"""The rules of a map bulk label as library calls: which selected images may be written, which
were shown, and what the button says."""

from __future__ import annotations

import numpy as np

from ralif.map.data import LABELED, UNLABELED, UNSURE
from ralif.map.review import bulk_targets, button_text, candidates, page_numbers, page_ranges


def test_the_batch_is_never_a_candidate_and_labeled_images_only_when_asked() -> None:
    ids = np.arange(10, 20)
    state = np.array([UNLABELED] * 6 + [LABELED, LABELED, UNSURE, UNLABELED])
    batch = {11, 16, 19, 99}
    new = candidates(ids, state, batch, only_new=True)
    assert new.ids.tolist() == [10, 12, 13, 14, 15] and new.in_batch == 3 and new.settled == 2
    every = candidates(ids, state, batch, only_new=False)
    assert every.ids.tolist() == [10, 12, 13, 14, 15, 17, 18] and every.in_batch == 3 and every.settled == 0
    assert candidates(ids, state, set(), only_new=True).ids.tolist() == [10, 11, 12, 13, 14, 15, 19]


def test_pages_and_targets() -> None:
    cand = candidates(np.arange(50), np.zeros(50, np.int8), set(), only_new=True)
    assert cand.pages(24) == 3 and cand.page(3, 24).tolist() == [48, 49]
    seen = set(cand.page(1, 24).tolist()) | set(cand.page(3, 24).tolist())
    targets = bulk_targets(cand.ids, seen, {0, 30})
    assert targets.tolist() == [*range(1, 24), 48, 49]
    assert page_numbers(cand.ids, targets, 24) == [1, 3]
    assert page_ranges([1, 2, 3, 5, 7, 8]) == "1–3, 5, 7–8"


def test_the_button_says_how_many_and_which() -> None:
    ids = np.arange(50)
    assert button_text(ids[:9], ids, 1, 24, True, "cat") == "Label as cat: the 9 unlabeled images shown"
    assert button_text(ids[30:31], ids, 2, 24, False, "cat") == "Label as cat: the 1 image shown"
    assert button_text(ids[:30], ids, 2, 24, True, "cat") == (
        "Label as cat: the 30 unlabeled images reviewed on pages 1–2")
    assert button_text(ids[:3], ids, 2, 24, True, "cat") == "Label as cat: the 3 unlabeled images reviewed on page 1"
    assert button_text(ids[:0], ids, 1, 24, True, "cat") == "No unlabeled images shown to label"
