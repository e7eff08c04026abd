"""How the project database holds up as the pool grows: 10k, 100k and 1M image rows.

    python benchmarks/store_scale.py [--sizes 10000 100000 1000000] [--labeled-fraction 0.05]
                                     [--writes 200] [--repeat 7] [--workdir DIR] [--out FILE]

For each size a project is created through ``Project.create`` from an in-memory ImageList
(``decode=False``): the rows are real, the image files are not (no file is read or needed for a
store benchmark; thumbnails would show the "image unavailable" placeholder). 90% of the rows are
the pool and 10% the held-out set, every image has a hidden true class (as in the demo and in
simulation projects, the case where the Map and Progress pages read the most), 5% of the pool is
labeled (``--labeled-fraction``) and 0.5% skipped (bulk labels, one action per class), and five
rounds are recorded, each with a batch of 20 picks: four submitted and the fifth waiting with half
of its batch answered.

Timed, on the project as the app sees it:

* ``Project.open`` on a fresh connection (the first page run of a tab), and the first open of a
  project written by an older schema when ``--workdir`` holds one (that open migrates it);
* ``Project.label`` (one committed, fsynced write): new labels on unlabeled pool images and
  changes of existing labels, median and p95;
* a lasso label from the Map page (``bulk_label`` of 1,000 images) and undoing it;
* one render of the Label, Map and Progress pages: every query each page runs, through the same
  calls the pages make (listed in ``label_page``, ``map_page`` and ``progress_page``). The Map
  page's layout is a synthetic projection held in memory; its cached reads (true classes, pool
  list for predictions) are timed apart as "once per map / per model".

Every statement a page run sends is recorded and passed through ``EXPLAIN QUERY PLAN``; plans
that scan a whole table or index are listed under ``full_scans``. Built projects are kept under
``--workdir`` (``size-N/pristine``) and copied before each measurement, so a second run (after a
schema change, say) measures the same data and, the first time, the migration of the old file.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ralif import projection as proj
from ralif.images import ImageList
from ralif.project import Project
from ralif.project.store import DB_NAME, SCHEMA_VERSION, release

CLASSES = [f"class {k}" for k in range(10)]
TEST_FRACTION = 0.1
LABELED_FRACTION = 0.05
UNSURE_FRACTION = 0.005
ROUNDS = 5
BATCH = 20
RECENT = 24            # the Label page's "Recent" view shows this tab's last 24 answers
BROWSE_PAGE = 25       # earlier.PAGE_SIZE + 1: the browser asks one extra row to know if there is more
MAP_THUMBS = 12        # the Map page's selection panel shows up to 12 images
Step = tuple[str, Callable[[], Any]]


# ----------------------------------------------------------------------------- building


def _image_list(start: int, n: int, truth: np.ndarray) -> ImageList:
    # Paths spread over folders of 1,000 like a real photo collection; hashes are real sha256 digests
    # so the hash index has the same random key order as with real files.
    return ImageList(paths=[f"/data/ralif-bench/{k // 1000:04d}/img-{k:07d}.jpg" for k in range(start, start + n)],
                     labels=truth, classes=CLASSES,
                     hashes=[hashlib.sha256(b"img-%d" % k).hexdigest() for k in range(start, start + n)])


def build(folder: Path, n: int, labeled_fraction: float = LABELED_FRACTION, seed: int = 0) -> dict[str, Any]:
    """Create the benchmark project for ``n`` image rows in ``folder``; returns build timings."""
    rng = np.random.default_rng(seed)
    n_test = round(n * TEST_FRACTION)
    n_pool = n - n_test
    t0 = time.perf_counter()
    truth = rng.integers(0, len(CLASSES), n)
    project = Project.create(folder, _image_list(0, n_pool, truth[:n_pool]),
                             test=_image_list(n_pool, n_test, truth[n_pool:]), encoder="pixels:8",
                             known_labels="truth", simulated_oracle=True, decode=False, batch_size=BATCH,
                             seed=seed)
    t_create = time.perf_counter() - t0
    pool_ids = np.array([r[0] for r in project.store.query(
        "SELECT id FROM images WHERE split = 'pool' ORDER BY id")], dtype=np.int64)
    pool_truth = truth[:n_pool]
    order = rng.permutation(n_pool)
    n_lab = int(n_pool * labeled_fraction)
    n_uns = int(n_pool * UNSURE_FRACTION)
    labeled, unsure = order[:n_lab], order[n_lab:n_lab + n_uns]
    rest = order[n_lab + n_uns:]
    t0 = time.perf_counter()
    for k, c in enumerate(project.classes()):
        pick = labeled[pool_truth[labeled] == k]
        project.bulk_label(pool_ids[pick].tolist(), c.id, source="bulk")
    project.bulk_label(pool_ids[unsure].tolist(), None, source="bulk")
    t_labels = time.perf_counter() - t0
    # Rounds are recorded the way a finished round leaves them (selections + round row); training
    # and selection themselves are not what this benchmark measures.
    t0 = time.perf_counter()
    picks = rest[:ROUNDS * BATCH].reshape(ROUNDS, BATCH)
    now = time.time()
    with project.store.write() as conn:
        for r in range(1, ROUNDS + 1):
            last = r == ROUNDS
            if r > 1:
                conn.execute("INSERT INTO rounds(number, strategy, model_kind, batch_size, status, created_at)"
                             " VALUES (?, 'ralif', 'clip-linear', ?, 'queued', ?)", (r, BATCH, now))
            conn.execute(
                "UPDATE rounds SET status = ?, phase = 'done', started_at = ?, finished_at = ?, submitted_at = ?,"
                " seconds = ?, labeled_count = ?, accuracy = ?, test_count = ?, cold_start = ? WHERE number = ?",
                ("ready" if last else "submitted", now, now + 3, None if last else now + 60, 3.0,
                 n_lab + (r - 1) * BATCH, 0.5 + 0.05 * r, n_test, int(r == 1), r))
            conn.executemany(
                "INSERT INTO selections(round, image_id, rank, score, reason, predicted_class_id, confidence)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(r, int(pool_ids[i]), k + 1, float(rng.random()), "influence rank 1 of 20, benchmark", None, None)
                 for k, i in enumerate(picks[r - 1])])
    # Submitted batches were answered; the pending one is half done.
    classes = [c.id for c in project.classes()]
    answered = np.concatenate([picks[:-1].ravel(), picks[-1][:BATCH // 2]])
    for k in range(len(CLASSES)):
        ids = pool_ids[answered[pool_truth[answered] == k]].tolist()
        if ids:
            project.bulk_label(ids, classes[k], source="user")
    t_rounds = time.perf_counter() - t0
    project.store.query("PRAGMA wal_checkpoint(TRUNCATE)")
    release(folder / DB_NAME)
    return {"create_s": round(t_create, 2), "labels_s": round(t_labels, 2), "rounds_s": round(t_rounds, 2)}


def _db_bytes(folder: Path) -> int:
    return sum((folder / (DB_NAME + s)).stat().st_size for s in ("", "-wal") if (folder / (DB_NAME + s)).exists())


# ----------------------------------------------------------------------------- timing helpers


def stats_ms(values: list[float]) -> dict[str, float]:
    ms = sorted(v * 1000 for v in values)
    return {"n": len(ms), "median_ms": round(statistics.median(ms), 2),
            "p95_ms": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 2), "max_ms": round(ms[-1], 2)}


class Recorder:
    """Collects the statements sent on the project's connection (for EXPLAIN QUERY PLAN)."""

    def __init__(self) -> None:
        self.statements: dict[str, None] = {}
        self.on = False

    def __call__(self, sql: str) -> None:
        if self.on:
            self.statements[sql] = None


def run_page(steps: list[Step], repeat: int, recorder: Recorder) -> dict[str, Any]:
    """Each step's median over ``repeat`` page runs, and the median of the runs' totals."""
    per_step: dict[str, list[float]] = {name: [] for name, _ in steps}
    totals = []
    recorder.on = True
    for _ in range(repeat):
        total = 0.0
        for name, fn in steps:
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            per_step[name].append(dt)
            total += dt
        totals.append(total)
        recorder.on = False
    return {"total_ms": round(statistics.median(totals) * 1000, 2),
            "first_run_ms": round(totals[0] * 1000, 2),
            "steps_ms": {k: round(statistics.median(v) * 1000, 2) for k, v in per_step.items()}}


_WATCHED = {"images", "labels", "label_history", "selections", "actions"}
_NAME = re.compile(r"\b(?:FROM|JOIN)\s+(\w+)(?:\s+(?:AS\s+)?(\w+))?", re.IGNORECASE)


def full_scans(conn: sqlite3.Connection, statements: list[str]) -> dict[str, list[str]]:
    """Statements whose plan scans a whole table or index of one of the big tables."""
    out: dict[str, list[str]] = {}
    for sql in statements:
        words = sql.split(None, 1)
        if not words or words[0].upper() not in ("SELECT", "WITH", "INSERT", "UPDATE", "DELETE"):
            continue
        # Plans name a table by its alias when it has one.
        alias = {t.lower(): t.lower() for t in _WATCHED}
        for table, name in _NAME.findall(sql):
            if name and name.upper() not in ("WHERE", "ON", "ORDER", "GROUP", "LIMIT", "LEFT", "CROSS", "JOIN"):
                alias[name.lower()] = table.lower()
        try:
            plan = [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql)]
        except sqlite3.Error:
            continue
        if any(m and alias.get(m.group(1).lower()) in _WATCHED
               for m in (re.match(r"SCAN (\w+)", line) for line in plan)):
            out[re.sub(r"\s+", " ", sql.strip())[:300]] = plan
    return out


# ----------------------------------------------------------------------------- the pages


def label_page(p: Project, recent: list[int], classes: list[int]) -> list[Step]:
    """One run of views/1_Label.py with a pending batch and no new events (what each helper of
    ralif/ui calls, in page order), plus the "Relabel earlier images" panel in its default
    "Recent" view."""
    return [
        ("round_status (ensure_running)", p.round_status),
        ("progress", p.progress),
        ("name (sidebar)", lambda: p.name),
        ("round_status (status_panel)", p.round_status),
        ("round_status (status fragment)", p.round_status),
        ("pending_batch", p.pending_batch),
        ("classes", p.classes),
        ("settings (oracle button)", lambda: p.settings),
        ("pending_round (grid)", p.pending_round),
        (f"image x{len(recent)} (recent view)", lambda: [p.image(i) for i in recent]),
        ("classes (browse grid)", p.classes),
    ]


def browse_views(p: Project, classes: list[int], last_pool_id: int) -> list[Step]:
    """The "Browse all" view instead of "Recent": the class options, then one page of each filter."""
    rare = classes[-1]
    return [
        ("classes (filter options)", p.classes),
        ("images_page all", lambda: p.images_page("all", limit=BROWSE_PAGE)),
        ("images_page all, last page", lambda: p.images_page("all", after_id=last_pool_id - 30,
                                                             limit=BROWSE_PAGE)),
        ("images_page unlabeled", lambda: p.images_page("unlabeled", limit=BROWSE_PAGE)),
        ("images_page labeled", lambda: p.images_page("labeled", limit=BROWSE_PAGE)),
        ("images_page unsure", lambda: p.images_page("unsure", limit=BROWSE_PAGE)),
        ("images_page class", lambda: p.images_page(rare, limit=BROWSE_PAGE)),
        ("images_page labeled, test split", lambda: p.images_page("labeled", split="test", limit=BROWSE_PAGE)),
        ("images_page all, test split", lambda: p.images_page("all", split="test", limit=BROWSE_PAGE)),
    ]


def map_page(p: Project, projection: proj.Projection, truth: np.ndarray, lasso: list[int]) -> list[Step]:
    """One run of views/2_Map.py right after a label (so its cached map data is rebuilt), with a
    lasso selection shown in the side panel. The projection file's own reading is not a store
    cost and is left out (the page caches it by file time)."""

    def change_marks() -> Any:
        # views/2_Map.py: _change_marks
        return (p.store.query_one("SELECT COALESCE(MAX(id), 0) FROM label_history")[0],
                p.store.query_one("SELECT COUNT(*), COALESCE(MAX(round), 0) FROM selections"),
                p.store.query_one("SELECT COUNT(*), COALESCE(SUM(deleted), 0) FROM classes"))

    sample = [lasso[int(k)] for k in np.unique(np.linspace(0, len(lasso) - 1, MAP_THUMBS).astype(int))]
    return [
        ("name + progress (sidebar)", lambda: (p.name, p.progress())),
        ("encoder_spec (find_projection_file)", lambda: p.encoder_spec),
        ("_change_marks", change_marks),
        ("map_data (labels, picks, pool count)", lambda: proj.map_data(p, projection, truth)),
        ("current_model_path", p.current_model_path),
        ("projection_staleness", lambda: proj.projection_staleness(p, projection, 0)),
        ("pending_round", p.pending_round),
        ("classes (figure)", p.classes),
        ("classes (selection panel)", p.classes),
        (f"image x{len(sample)} (selection thumbnails)", lambda: [p.image(i) for i in sample]),
    ]


def map_cached(p: Project, projection: proj.Projection) -> list[Step]:
    """Reads the Map page caches: true classes once per map (and class change), the pool list
    once per new model (pool_predictions; the prediction itself is not a store cost)."""
    return [("pool_truth (once per map)", lambda: proj.pool_truth(p, projection)),
            ("pool_images (once per model)", lambda: proj.pool_images(p))]


def progress_page(p: Project) -> list[Step]:
    """One run of views/3_Progress.py on a simulation project whose Random reference is stored
    (the read path of every run once it has been computed)."""
    return [
        ("name + progress (sidebar)", lambda: (p.name, p.progress())),
        ("progress", p.progress),
        ("rounds", p.rounds),
        ("settings (simulated_oracle)", lambda: p.settings),
        ("simulation_reference", lambda: proj.simulation_reference(p)),
        ("read_random_baseline: simulation_reference", lambda: proj.simulation_reference(p)),
        ("read_random_baseline: key (settings, classes)", lambda: (p.encoder_spec, p.settings, p.classes())),
        ("strategy", lambda: p.strategy),
    ]


# ----------------------------------------------------------------------------- one size


def measure(pristine: Path, work: Path, writes: int, repeat: int, seed: int = 0) -> dict[str, Any]:
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(pristine, work)
    db = work / DB_NAME
    old_version = sqlite3.connect(db).execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
    out: dict[str, Any] = {"db_bytes": _db_bytes(work), "schema_before_open": old_version}

    t0 = time.perf_counter()
    project = Project.open(work)
    out["first_open_ms"] = round((time.perf_counter() - t0) * 1000, 2)
    out["migrated"] = old_version != SCHEMA_VERSION
    if out["migrated"]:
        out["db_bytes_after_migration"] = _db_bytes(work)
    opens = []
    for _ in range(repeat):
        release(db)
        t0 = time.perf_counter()
        project = Project.open(work, client="bench-tab")
        opens.append(time.perf_counter() - t0)
    out["open"] = stats_ms(opens)

    rec = Recorder()
    project.store._conn.set_trace_callback(rec)
    conn = project.store._conn
    rng = np.random.default_rng(seed + 1)
    classes = [c.id for c in project.classes()]
    counts = dict(project.store.query("SELECT split, COUNT(*) FROM images GROUP BY split"))
    out["rows"] = {"images": sum(counts.values()), "pool": counts.get("pool", 0), "test": counts.get("test", 0),
                   **{t: project.store.query_one(f"SELECT COUNT(*) FROM {t}")[0]
                      for t in ("labels", "label_history", "actions", "selections", "rounds")}}

    # -- label writes: new labels on random unlabeled pool images, then changes of earlier ones
    pool_max = project.store.query_one("SELECT MAX(id) FROM images WHERE split = 'pool'")[0]
    targets: list[int] = []
    while len(targets) < writes:
        for i in rng.integers(1, pool_max + 1, writes * 2):
            row = project.store.query_one("SELECT i.split, l.state FROM images i LEFT JOIN labels l"
                                          " ON l.image_id = i.id WHERE i.id = ?", (int(i),))
            if row and row[0] == "pool" and row[1] is None and int(i) not in targets:
                targets.append(int(i))
            if len(targets) == writes:
                break
    rec.on = True
    new_t = []
    for k, image_id in enumerate(targets):
        t0 = time.perf_counter()
        res = project.label(image_id, classes[k % len(classes)], expected_version=0)
        new_t.append(time.perf_counter() - t0)
        assert res.written
    change_t = []
    for k, image_id in enumerate(targets[: max(50, writes // 4)]):
        t0 = time.perf_counter()
        project.label(image_id, classes[(k + 1) % len(classes)], expected_version=1)
        change_t.append(time.perf_counter() - t0)
    rec.on = False
    out["label_write_new"] = stats_ms(new_t)
    out["label_write_change"] = stats_ms(change_t)
    out["label_write_all"] = stats_ms(new_t + change_t)
    write_sql = list(rec.statements)
    rec.statements.clear()

    # -- page runs
    pool_ids = np.array([r[0] for r in project.store.query("SELECT id FROM images WHERE split = 'pool' ORDER BY id")],
                        dtype=np.int64)
    projection = proj.Projection(coords=rng.normal(size=(len(pool_ids), 2)).astype(np.float32), image_ids=pool_ids,
                                 encoder_id="pixels:8", encoder_spec=project.encoder_spec,
                                 params={"seed": 0}, path=None)
    truth = proj.pool_truth(project, projection)
    recent = targets[-RECENT:][::-1]
    lasso_rows = np.sort(rng.choice(len(pool_ids), 1000, replace=False))
    lasso = pool_ids[lasso_rows].tolist()
    pages: dict[str, Any] = {}
    scans: dict[str, dict[str, list[str]]] = {}
    for name, steps in (("label", label_page(project, recent, classes)),
                        ("label_browse_views", browse_views(project, classes, int(pool_ids[-1]))),
                        ("map", map_page(project, projection, truth, lasso)),
                        ("map_cached_reads", map_cached(project, projection)),
                        ("progress", progress_page(project))):
        rec.statements.clear()
        pages[name] = run_page(steps, repeat, rec)
        scans[name] = full_scans(conn, list(rec.statements))
    out["pages"] = pages

    # -- a lasso label on the Map page and its undo
    rec.statements.clear()
    rec.on = True
    t0 = time.perf_counter()
    res = project.bulk_label(lasso, classes[0], source="map")
    out["bulk_label_1000_ms"] = round((time.perf_counter() - t0) * 1000, 2)
    t0 = time.perf_counter()
    undo = project.undo_last()
    out["undo_bulk_ms"] = round((time.perf_counter() - t0) * 1000, 2)
    rec.on = False
    assert res.changed and undo is not None and len(undo.restored) == res.changed
    scans["writes"] = full_scans(conn, write_sql + list(rec.statements))
    out["full_scans"] = {k: v for k, v in scans.items() if v}
    project.store._conn.set_trace_callback(None)
    release(db)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--labeled-fraction", type=float, default=LABELED_FRACTION,
                    help="share of the pool labeled before the measurements")
    ap.add_argument("--writes", type=int, default=200, help="new labels timed (then a quarter as many changes)")
    ap.add_argument("--repeat", type=int, default=7, help="page runs per page (medians reported)")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="keep built projects here and reuse them (default: a temporary folder)")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args()

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="ralif-store-scale-")
        args.workdir = Path(tmp.name)
    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "sqlite": sqlite3.sqlite_version},
        "schema_version": SCHEMA_VERSION, "labeled_fraction": args.labeled_fraction, "sizes": {}}
    try:
        for n in args.sizes:
            base = args.workdir / (f"size-{n}" if args.labeled_fraction == LABELED_FRACTION
                                   else f"size-{n}-labeled-{args.labeled_fraction:g}")
            pristine = base / "pristine"
            entry: dict[str, Any] = {}
            if not (pristine / DB_NAME).is_file():
                if base.exists():
                    shutil.rmtree(base)
                entry["build"] = build(pristine, n, args.labeled_fraction)
            entry.update(measure(pristine, base / "work", args.writes, args.repeat))
            shutil.rmtree(base / "work", ignore_errors=True)
            result["sizes"][str(n)] = entry
            print(json.dumps({n: {k: entry[k] for k in ("label_write_all", "first_open_ms")}}), flush=True)
    finally:
        if tmp is not None:
            tmp.cleanup()
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
