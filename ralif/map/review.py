"""Which images of a map selection a bulk label may write, and what its button must say.

A lasso or box can take in hundreds of images while the review panel shows a page of thumbnails at
a time. A bulk label writes only images that were shown on a review page (and left ticked): a label
is a person's answer, so nobody may give it for pictures nobody looked at. The images of the batch
waiting on the Label page are never candidates: its audit images must be answered there, without
the model's hints the map gives, and leaving out only those would tell the user which ones they are
(the audit's answers are an unbiased sample only while nobody knows), so the whole batch stays.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from ralif.map.data import UNLABELED


@dataclass(frozen=True)
class Candidates:
    """A selection split for review: what may be labeled, in review order, and what may not."""

    ids: np.ndarray          # selected images a bulk label may write, ascending: the review pages' order
    in_batch: int            # selected images of the batch waiting on the Label page (never labeled here)
    settled: int             # selected images left out because they have a label or a skip already

    def pages(self, size: int) -> int:
        return max(1, -(-len(self.ids) // size))

    def page(self, number: int, size: int) -> np.ndarray:
        """The ids shown on review page ``number`` (from 1)."""
        return self.ids[(number - 1) * size: number * size]


def candidates(selected: np.ndarray, state: np.ndarray, batch: Collection[int], only_new: bool) -> Candidates:
    """Split ``selected`` (ascending ids, ``state`` aligned with them: UNLABELED, LABELED or UNSURE)
    into the images a bulk label may write and counts of those it may not; ``batch``: the image ids
    of the pending round's batch."""
    selected = np.asarray(selected, dtype=np.int64)
    in_batch = np.isin(selected, np.fromiter(batch, dtype=np.int64, count=len(batch)))
    settled = ~in_batch & (np.asarray(state) != UNLABELED) if only_new else np.zeros(len(selected), dtype=bool)
    return Candidates(selected[~in_batch & ~settled], int(in_batch.sum()), int(settled.sum()))


def bulk_targets(ids: np.ndarray, seen: Collection[int], left_out: Collection[int]) -> np.ndarray:
    """The images of ``ids`` a bulk label writes: shown on a review page and not left out."""
    ids = np.asarray(ids, dtype=np.int64)
    keep = np.fromiter((i in seen and i not in left_out for i in ids.tolist()), dtype=bool, count=len(ids))
    return ids[keep]


def page_numbers(ids: np.ndarray, chosen: np.ndarray, size: int) -> list[int]:
    """The review pages (from 1) holding any of ``chosen`` when ``ids`` are paged ``size`` at a time."""
    at = np.flatnonzero(np.isin(np.asarray(ids, dtype=np.int64), np.asarray(chosen, dtype=np.int64)))
    return sorted({int(i) // size + 1 for i in at.tolist()})


def page_ranges(pages: list[int]) -> str:
    """``[1, 2, 3, 5]`` as ``"1–3, 5"``."""
    parts: list[str] = []
    for k, n in enumerate(pages):
        if k and pages[k - 1] == n - 1:
            continue
        end = n
        while end + 1 in pages:
            end += 1
        parts.append(str(n) if end == n else f"{n}–{end}")
    return ", ".join(parts)


def button_text(targets: np.ndarray, ids: np.ndarray, page: int, size: int, only_new: bool, what: str) -> str:
    """The bulk label button's words: exactly how many images it writes and which ones they are
    (those shown now, or those of the review pages named), the class first so that a narrow
    panel that cuts the text still shows it. ``what`` is shown as given: escape it."""
    n = len(targets)
    kind = ("unlabeled " if only_new else "") + ("image" if n == 1 else "images")
    pages = page_numbers(ids, targets, size)
    if not n:
        return f"No {kind} shown to label"
    if pages == [page]:
        return f"Label as {what}: the {n:,} {kind} shown"
    where = f"page {pages[0]}" if len(pages) == 1 else f"pages {page_ranges(pages)}"
    return f"Label as {what}: the {n:,} {kind} reviewed on {where}"
