"""``ralif predict``: classify image files with a project's trained model (or an exported one)."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

NAME = "predict"
HELP = "Predict classes of images with a trained project model (a project folder, exported model folder or file)."
_SHOW_BAD = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=Path,
                        help="project folder (its current model), an exported model folder, or the model's "
                             ".safetensors/.json file")
    parser.add_argument("--images", required=True, type=Path,
                        help="folder of images (searched recursively) or a CSV manifest with a 'path' column")
    parser.add_argument("--out", type=Path, default=None,
                        help="write predictions to this CSV (default: print them)")
    parser.add_argument("--probabilities", action="store_true",
                        help="add one probability column per class")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")


def _cache_root(model: Path) -> Path | None:
    from ralif.project.store import DB_NAME

    # Features computed for a project's own images are reused from its cache.
    return model / "cache" if model.is_dir() and (model / DB_NAME).is_file() else None


def run(args: argparse.Namespace) -> int:
    from ralif.csv_cells import spreadsheet_cell
    from ralif.images import load_manifest, scan_images
    from ralif.project.exports import check_output_path
    from ralif.project.rounds import load_model

    if args.out is not None:
        # A destination that cannot take the CSV is refused before the model and images are loaded.
        args.out = args.out.expanduser()
        check_output_path(args.out, what="the predictions CSV (--out)")
    model = load_model(args.model, device=args.device)
    source = args.images.expanduser()
    images = load_manifest(source) if source.is_file() and source.suffix.lower() == ".csv" else scan_images(source)
    probs = model.predict_proba(images.paths, cache_root=_cache_root(args.model), device=args.device,
                                hashes=images.hashes)
    top = probs.argmax(1)
    fields = ["path", "prediction", "confidence"]
    if args.probabilities:
        fields += [f"p_{name}" for name in model.class_names]
    buf = io.StringIO()
    writer = csv.writer(buf)
    # Class names and file names are user text, and the file is read in spreadsheets.
    writer.writerow([spreadsheet_cell(f) for f in fields])
    for i, path in enumerate(images.paths):
        row = [spreadsheet_cell(path), spreadsheet_cell(model.class_names[top[i]]), f"{probs[i, top[i]]:.4f}"]
        if args.probabilities:
            row += [f"{p:.4f}" for p in probs[i]]
        writer.writerow(row)
    if args.out is None:
        sys.stdout.write(buf.getvalue())
    else:
        from ralif.atomic import atomic_write

        args.out.parent.mkdir(parents=True, exist_ok=True)
        data = buf.getvalue().encode("utf-8")
        atomic_write(args.out, lambda f: f.write(data))
    summary = {
        "images": len(images.paths),
        "model": model.kind,
        "classes": model.class_names,
        # A model trained before classes were renamed, merged or deleted: its columns' classes.
        **({"trained_classes": model.meta.get("trained_class_names")} if model.column_map is not None else {}),
        "encoder": model.encoder_id,
        "out": str(args.out) if args.out else None,
        "bad_files": {"count": len(images.problems),
                      "first": [f"{p}: {r}" for p, r in images.problems[:_SHOW_BAD]]},
    }
    # With predictions on stdout, the summary goes to stderr so the CSV stays clean.
    print(json.dumps(summary, indent=2), file=sys.stderr if args.out is None else sys.stdout)
    return 0
