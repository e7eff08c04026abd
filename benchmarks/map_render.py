"""Time to draw the Map page's figure from a stored projection, on a synthetic project.

    python benchmarks/map_render.py [--points 50000] [--labeled 2000] [--max-points 30000] [--repeat 5]
                                    [--out DIR]

The project is made of fake image records (no files are read: nothing here needs pixels) with
hidden true labels; ``--labeled`` of them are labeled, 100 are the pending batch and the layout is
a synthetic Gaussian mixture saved the way the projection worker saves it. Timed, as one page run
does them: reading the stored projection, reading labels and picks from the database
(``map_data``; the true classes, read once per map, are timed apart), building the WebGL figure
(``map_figure``), and turning it into the JSON Streamlit
sends to the browser (the same two plotly calls ``st.plotly_chart`` makes). Prints a Markdown
table; with --out also writes map_render.json there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ralif import projection as proj
from ralif.images import ImageList
from ralif.project import Project
from ralif.project.store import DB_NAME, release

CLASSES = [f"class {k}" for k in range(10)]


def make_project(folder: Path, n: int, labeled: int, seed: int = 0) -> tuple[Project, proj.Projection]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, len(CLASSES), n)
    images = ImageList(paths=[f"/synthetic/img-{i:07d}.jpg" for i in range(n)], labels=truth, classes=CLASSES,
                       hashes=[hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)])
    project = Project.create(folder, images, encoder="pixels:4", known_labels="truth", decode=False)
    ids = np.array([r[0] for r in project.store.query("SELECT id FROM images ORDER BY id")], dtype=np.int64)
    chosen = rng.choice(n, labeled, replace=False)
    for k, c in enumerate(project.classes()):
        project.bulk_label(ids[chosen[truth[chosen] == k]].tolist(), c.id, source="bulk")
    batch = rng.choice(np.setdiff1d(np.arange(n), chosen), 100, replace=False)
    with project.store.write() as conn:
        conn.executemany("INSERT INTO selections(round, image_id, rank, reason) VALUES (1, ?, ?, 'benchmark')",
                         [(int(ids[i]), r + 1) for r, i in enumerate(batch)])
    centres = rng.normal(scale=8.0, size=(len(CLASSES), 2))
    coords = (centres[truth] + rng.normal(size=(n, 2))).astype(np.float32)
    path = proj.save_projection(proj.projection_path(project, "pixels:4"), coords, ids, "pixels:4",
                                project.encoder_spec, {"method": "synthetic", "seed": seed})
    return project, proj.read_projection(path)


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    """(first call, median of the following ``repeat`` calls) in seconds, and the last result."""
    t = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return first, statistics.median(times), out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=50_000)
    ap.add_argument("--labeled", type=int, default=2_000)
    ap.add_argument("--max-points", type=int, default=proj.DEFAULT_MAX_POINTS)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    import plotly.io
    import plotly.tools

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        project, projection = make_project(Path(tmp) / "bench", args.points, args.labeled)
        setup = time.perf_counter() - t
        classes = project.classes()
        cids, names = [c.id for c in classes], [c.name for c in classes]
        rng = np.random.default_rng(1)
        probs = rng.dirichlet(np.full(len(cids), 0.3), len(projection.image_ids))
        pred = proj.PoolPredictions(projection.image_ids, *proj.predictions_from_proba(probs, cids), 1, "synthetic")

        steps: dict[str, tuple[float, float]] = {}
        first, med, loaded = timed(lambda: proj.read_projection(projection.path), args.repeat)
        steps["read stored projection"] = (first, med)
        first, med, truth = timed(lambda: proj.pool_truth(project, loaded), args.repeat)
        steps["true classes (once per map)"] = (first, med)
        first, med, data = timed(lambda: proj.map_data(project, loaded, truth), args.repeat)
        steps["labels and picks from the database"] = (first, med)
        results: dict[str, Any] = {}
        for mode in ("labels", "entropy"):
            first, med, fig = timed(lambda mode=mode: proj.map_figure(
                data, cids, names, color_by=mode, predictions=pred, pending_round=1,
                max_points=args.max_points), args.repeat)
            steps[f"figure ({mode})"] = (first, med)

            def to_browser(fig: Any = fig) -> str:
                return plotly.io.to_json(plotly.tools.return_figure_from_figure_or_data(fig, validate_figure=True),
                                         validate=False)

            first, med, spec = timed(to_browser, args.repeat)
            steps[f"figure to JSON ({mode})"] = (first, med)
            results[mode] = {"points_drawn": int(sum(len(tr.x) for tr in fig.data)), "traces": len(fig.data),
                             "json_mb": round(len(spec) / 2**20, 2)}
        release(project.folder / DB_NAME)

    per_run = sum(steps[k][1] for k in ("read stored projection", "labels and picks from the database",
                                        "figure (labels)", "figure to JSON (labels)"))
    report = {"command": "python benchmarks/map_render.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "points": args.points, "labeled": args.labeled, "max_points": args.max_points,
              "setup_seconds": round(setup, 2), "steps": {k: {"first_s": round(a, 4), "median_s": round(b, 4)}
                                                          for k, (a, b) in steps.items()},
              "page_run_seconds_labels_mode": round(per_run, 3),
              "first_view_seconds": round(per_run + steps["true classes (once per map)"][1], 3),
              "figures": results}
    print(f"Map figure from a stored projection: {args.points:,} points, {args.labeled:,} labeled, "
          f"at most {args.max_points:,} drawn (median of {args.repeat}; first call in brackets)\n")
    print("| step | seconds |\n|---|---|")
    for k, (a, b) in steps.items():
        print(f"| {k} | {b:.3f} ({a:.3f}) |")
    first_view = per_run + steps["true classes (once per map)"][1]
    print(f"| **page run after a label, labels mode** | **{per_run:.3f}** |")
    print(f"| **first view of the map (true classes read too)** | **{first_view:.3f}** |\n")
    for mode, r in results.items():
        print(f"{mode}: {r['points_drawn']:,} points in {r['traces']} traces, {r['json_mb']} MB of JSON")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "map_render.json").write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
