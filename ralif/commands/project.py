"""``ralif project``: create, inspect, advance and export labeling projects from scripts."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from ralif.commands.preview import add_decision_argument, terminal_scan_progress

NAME = "project"
HELP = "Create, inspect, run rounds of and export labeling projects (what the app does, for scripts)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    create = sub.add_parser("create", help="create a project from an image folder or CSV manifest")
    create.add_argument("folder", type=Path, help="new (or empty) project folder")
    create.add_argument("--images", required=True,
                        help="image folder (plain or ImageFolder layout) or CSV manifest (path[, label])")
    create.add_argument("--name", default=None)
    create.add_argument("--model", choices=("clip-linear", "resnet18"), default="clip-linear")
    create.add_argument("--encoder", default=None,
                        help="encoder spec (default clip:ViT-B-16:openai; pixels:8 for resnet18's cold start); "
                             "also precomputed:FILE.npz or pixels:N")
    create.add_argument("--strategy", default="ralif", help="strategy spec (see `ralif strategies`)")
    create.add_argument("--batch-size", type=int, default=20)
    create.add_argument("--test", default=None,
                        help="held-out images (folder or CSV) or a fraction of the pool such as 0.1")
    create.add_argument("--classes", default=None, help="comma-separated class names, in display order")
    create.add_argument("--known-labels", choices=("import", "truth", "ignore"), default="import",
                        help="labels found in the source: import them, keep them hidden as the simulated "
                             "oracle's truth, or ignore them (default: import)")
    create.add_argument("--add-classes", action="store_true",
                        help="add label names that are not in --classes instead of refusing them")
    create.add_argument("--layout", choices=("auto", "imagefolder", "flat"), default="auto")
    create.add_argument("--oracle", action="store_true", help="switch the simulated oracle on")
    add_decision_argument(create)

    demo = sub.add_parser("demo", help="create the bundled CIFAR-10 demo project")
    demo.add_argument("folder", type=Path)
    demo.add_argument("--initial-labels", type=int, default=0)
    demo.add_argument("--batch-size", type=int, default=20)

    info = sub.add_parser("info", help="print settings, progress, classes and rounds as JSON")
    info.add_argument("folder", type=Path)

    rnd = sub.add_parser("round", help="run the queued (or failed) round now, in this process")
    rnd.add_argument("folder", type=Path)
    rnd.add_argument("--oracle-submit", type=int, default=0, metavar="N",
                     help="then answer each batch with the simulated oracle, submit it and run the next "
                          "round, N times (demos and simulations)")

    export = sub.add_parser("export", help="export labels (csv, json, imagefolder) or the model")
    export.add_argument("folder", type=Path)
    export.add_argument("--format", choices=("csv", "json", "imagefolder", "model"), default="csv")
    export.add_argument("--out", type=Path, default=None, help="destination (default: FOLDER/exports/...)")
    export.add_argument("--symlink", action="store_true", help="imagefolder: symbolic links instead of copies")
    export.add_argument("--split-folders", action="store_true", help="imagefolder: pool/ and test/ subfolders")
    export.add_argument("--include-unsure", action="store_true", help="csv/json: also list skipped images")
    export.add_argument("--overwrite", action="store_true", help="replace an existing destination folder")


def _test_source(value: str | None) -> str | float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return value


def _planned_source(args: argparse.Namespace) -> tuple[object, dict | None]:
    """The source as the preview's import plan (``--layout auto``), with the preview's summary;
    the detection is printed on stderr so that stdout stays JSON."""
    from ralif.folder_scan import build_plan, format_preview, parse_decisions, preview_source

    if args.layout != "auto":
        if args.decisions:
            raise ValueError("--as decides what each folder is and needs --layout auto")
        return args.images, None
    preview = preview_source(args.images, progress=terminal_scan_progress())
    plan = build_plan(preview, parse_decisions(args.decisions))
    print(format_preview(preview, plan), file=sys.stderr)
    summary = preview.to_dict()
    summary.pop("unreadable")   # the import report lists them
    summary["plan"] = {"decisions": plan.decisions, "classes": plan.classes, "labeled": plan.labeled,
                       "unlabeled": plan.unlabeled, "ignored": plan.ignored}
    return plan.image_lists(), summary


def run(args: argparse.Namespace) -> int:
    from ralif.project import Project

    if args.action == "create":
        classes = [c for c in (args.classes or "").split(",") if c.strip()] or None
        images, preview = _planned_source(args)
        project = Project.create(
            args.folder, images, name=args.name, model=args.model, encoder=args.encoder,
            strategy=args.strategy, batch_size=args.batch_size, test=_test_source(args.test), classes=classes,
            known_labels=args.known_labels, add_unknown_classes=args.add_classes, layout=args.layout,
            simulated_oracle=args.oracle)
        if project.import_report is None:   # create always records one; guards a library change
            raise RuntimeError(f"{project.folder}: the import left no report")
        report = asdict(project.import_report)
        report["problems"] = [f"{p}: {r}" for p, r in report["problems"]]
        print(json.dumps({"folder": str(project.folder), "import": report, "preview": preview,
                          "progress": asdict(project.progress())}, indent=2))
        return 0
    if args.action == "demo":
        project = Project.create_demo(args.folder, initial_labels=args.initial_labels, batch_size=args.batch_size)
        print(json.dumps({"folder": str(project.folder), "progress": asdict(project.progress())}, indent=2))
        return 0
    project = Project.open(args.folder)
    if args.action == "info":
        print(json.dumps(project.info(), indent=2, default=str))
        return 0
    if args.action == "round":
        results = [project.run_round()]
        for _ in range(args.oracle_submit):
            project.oracle_label_batch()
            project.submit_batch()
            results.append(project.run_round())
        print(json.dumps(results, indent=2))
        return 0
    try:
        if args.format == "csv":
            out = project.export_csv(args.out, include_unsure=args.include_unsure)
        elif args.format == "json":
            out = project.export_json(args.out, include_unsure=args.include_unsure)
        elif args.format == "imagefolder":
            out = project.export_imagefolder(args.out, mode="symlink" if args.symlink else "copy",
                                             split_folders=args.split_folders, overwrite=args.overwrite)
        else:
            out = project.export_model(args.out, overwrite=args.overwrite)
    except FileExistsError as exc:
        raise ValueError(f"{exc} (--overwrite replaces it)") from exc
    print(json.dumps({"format": args.format, "out": str(out)}))
    return 0
