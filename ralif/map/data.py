"""The arrays the map draws, aligned with a stored layout's rows: each image's label state and
class, its hidden true class, each round's picks; which rows to draw; what a lasso selected."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ralif.map.layout import Projection
from ralif.project import Project
from ralif.project.schema import PENDING_ROUND

# Points drawn in the browser (labeled and selected points always come on top of these).
DEFAULT_MAX_POINTS = 30_000

UNLABELED, LABELED, UNSURE = 0, 1, 2


@dataclass
class MapData:
    """Everything the map draws, aligned with the projection's rows."""

    image_ids: np.ndarray
    x: np.ndarray
    y: np.ndarray
    state: np.ndarray            # UNLABELED, LABELED or UNSURE
    class_id: np.ndarray         # current label's class id, -1 if none
    true_class_id: np.ndarray    # hidden true class id (demos, simulations), -1 if unknown
    selections: dict[int, np.ndarray] = field(default_factory=dict)   # round -> rows it picked
    missing: int = 0             # pool images the projection does not hold (added after it was made)
    # The round whose batch waits on the Label page, read with ``selections``: a page that read it
    # apart could take a batch that has just arrived for earlier picks and show the model's guesses.
    pending_round: int | None = None

    @property
    def has_truth(self) -> bool:
        return bool((self.true_class_id >= 0).any())

    def pending_rows(self, pending_round: int | None = None) -> np.ndarray:
        """Rows of the batch waiting on the Label page (``pending_round`` when given, else the
        one read with the data)."""
        number = self.pending_round if pending_round is None else pending_round
        return self.selections.get(number, np.zeros(0, np.int64)) if number is not None else np.zeros(0, np.int64)


def pool_truth(project: Project, projection: Projection) -> np.ndarray:
    """Hidden true class id of every projected image (-1 where unknown). Changes only when
    classes are merged, so callers may keep it longer than the labels."""
    with project.store.read() as conn:
        cur = conn.cursor()
        # Plain tuples: numpy converts them about three times faster than sqlite3.Row objects,
        # which matters at a million pool images.
        cur.row_factory = None
        rows = cur.execute("SELECT i.id, t.live_id FROM images i"
                           " JOIN class_truth t ON t.class_id = i.true_class_id"
                           " WHERE i.split = 'pool'").fetchall()
    table = np.array(rows, dtype=np.int64).reshape(-1, 2)
    truth = np.full(len(projection.image_ids), -1, dtype=np.int64)
    at = projection.rows_of(table[:, 0])
    truth[at[at >= 0]] = table[at >= 0, 1]
    return truth


def map_data(project: Project, projection: Projection, truth: np.ndarray | None = None) -> MapData:
    """Label state and class of every projected pool image, each round's picks, and (unless
    given) the true classes. Reads the labels table, not the images: its size follows the labels
    made, so a million-image pool costs little more than a small one."""
    with project.store.read() as conn:
        cur = conn.cursor()
        # Plain tuples, not sqlite3.Row: this runs after every label, over every label.
        cur.row_factory = None
        labels = cur.execute(
            "SELECT image_id, COALESCE(class_id, -1), CASE state WHEN 'labeled' THEN 1 WHEN 'unsure' THEN 2"
            " ELSE 0 END FROM labels WHERE state != 'cleared'").fetchall()
        picks = cur.execute("SELECT round, image_id FROM selections ORDER BY round, rank").fetchall()
        pending = cur.execute(PENDING_ROUND).fetchone()[0]
        sizes = project.store.image_counts(conn)
        pool = sizes["pool"].images if "pool" in sizes else 0
    n = len(projection.image_ids)
    table = np.array(labels, dtype=np.int64).reshape(-1, 3)
    state = np.zeros(n, dtype=np.int8)
    class_id = np.full(n, -1, dtype=np.int64)
    at = projection.rows_of(table[:, 0])     # held-out images are not on the map: -1, dropped
    ok = at >= 0
    state[at[ok]] = table[ok, 2]
    class_id[at[ok]] = np.where(table[ok, 2] == LABELED, table[ok, 1], -1)
    selections: dict[int, np.ndarray] = {}
    if picks:
        pk = np.array(picks, dtype=np.int64)
        prow = projection.rows_of(pk[:, 1])
        for rnd in np.unique(pk[:, 0]):
            sel = (pk[:, 0] == rnd) & (prow >= 0)
            selections[int(rnd)] = prow[sel]
    truth = pool_truth(project, projection) if truth is None else truth
    # Images are never removed from a project, so pool images beyond the mapped ones are new ones.
    return MapData(projection.image_ids, projection.coords[:, 0], projection.coords[:, 1], state, class_id, truth,
                   selections, missing=max(0, pool - n), pending_round=None if pending is None else int(pending))


def display_rows(n: int, keep: np.ndarray, max_points: int = DEFAULT_MAX_POINTS, seed: int = 0) -> np.ndarray:
    """Rows to draw: every row in ``keep`` (a boolean mask: labeled, selected) plus a fixed random
    sample of the others, up to ``max_points`` in all. The sample depends only on the seed and on
    which rows are kept, so points do not jump between page runs."""
    keep = np.asarray(keep, dtype=bool)
    others = np.flatnonzero(~keep)
    room = max(0, int(max_points) - int(keep.sum()))
    if len(others) > room:
        priority = np.random.default_rng(seed).random(n)[others]
        others = np.sort(others[np.argpartition(priority, room)[:room]]) if room else others[:0]
    return np.union1d(np.flatnonzero(keep), others)


def selected_image_ids(selection: Mapping[str, Any] | None) -> np.ndarray:
    """Image ids of the points in a plotly selection event, read from each point's customdata.

    Point indices are not used: they count within a trace, and with several traces (one per
    class, overlays) the same index names different images.
    """
    if not selection:
        return np.zeros(0, dtype=np.int64)
    ids = []
    for point in selection.get("points", []) or []:
        data = point.get("customdata")
        if isinstance(data, (list, tuple)):
            data = data[0] if data else None
        if data is None:
            continue
        try:
            ids.append(int(data))
        except (TypeError, ValueError):
            continue
    return np.unique(np.asarray(ids, dtype=np.int64))


def align_ids(ids: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Position of each id of ``want`` in the ascending ``ids``, -1 where absent."""
    if not len(ids):
        return np.full(len(want), -1, dtype=np.int64)
    pos = np.minimum(np.searchsorted(ids, want), len(ids) - 1)
    return np.where(ids[pos] == want, pos, -1)
