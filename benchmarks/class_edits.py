"""How long a class merge, a class delete and their undo take when a class holds many labels.

Each is one history action written set-based (a few SQL statements, no Python loop over images).
A demo project gets ``--labels`` extra pool images labeled with one class; then: merge it into
another class, undo the merge, delete it, undo the delete. Reports seconds per step (median of
``--repeat`` runs, each on a fresh project).

    RALIF_THREADS=1 python benchmarks/class_edits.py --labels 20000 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from ralif.project import Project


def one_run(labels: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        p = Project.create_demo(Path(tmp) / "demo", run_first_round=False)
        cat, dog = p.class_id("cat"), p.class_id("dog")
        with p.store.write() as conn:
            base = conn.execute("SELECT MAX(id) FROM images").fetchone()[0]
            ids = [base + k + 1 for k in range(labels)]
            conn.executemany("INSERT INTO images(id, path, content_hash, split, added_at) VALUES (?, ?, ?, 'pool', 0)",
                             [(i, f"/none/{i}.jpg", f"h{i}") for i in ids])
        p.bulk_label(ids, cat)
        out = {}
        for name, step in (("merge", lambda: p.merge_classes(cat, dog)), ("undo merge", p.undo_last),
                           ("delete", lambda: p.delete_class(cat)), ("undo delete", p.undo_last)):
            t0 = time.perf_counter()
            step()
            out[name] = time.perf_counter() - t0
        assert {c.name: c.count for c in p.classes()}["cat"] >= labels
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labels", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    runs = [one_run(args.labels) for _ in range(args.repeat)]
    result = {k: round(statistics.median(r[k] for r in runs), 4) for k in runs[0]}
    print(json.dumps({"labels": args.labels, "repeat": args.repeat, "seconds": result}, indent=1))


if __name__ == "__main__":
    main()
