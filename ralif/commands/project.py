"""``ralif project``: create, inspect, advance and export labeling projects from scripts."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ralif.commands.preview import add_decision_argument, terminal_scan_progress

NAME = "project"
HELP = "Create, inspect, run rounds of and export labeling projects (what the app does, for scripts)."
# Project.create's default batch size (ralif.project.validation.DEFAULT_BATCH), spelled here so that
# building the parser does not import the project library.
DEFAULT_BATCH = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    create = sub.add_parser("create", help="create a project from an image folder or CSV manifest")
    create.add_argument("folder", type=Path, help="new (or empty) project folder")
    create.add_argument("--images", required=True,
                        help="image folder (plain or ImageFolder layout) or CSV manifest (path[, label])")
    create.add_argument("--name", default=None, help="project name shown in the app (default: the folder's name)")
    create.add_argument("--model", choices=("clip-linear", "resnet18"), default="clip-linear",
                        help="model trained each round: clip-linear (a linear head on encoder features) or "
                             "resnet18 (a network trained on the pixels) (default: %(default)s)")
    create.add_argument("--encoder", default=None,
                        help="encoder spec (default clip:ViT-B-16:openai; pixels:8 for resnet18's cold start); "
                             "also clip:MODEL:/path/to/checkpoint, precomputed:FILE.npz or pixels:N. Weights "
                             "not on this machine are downloaded before anything is created")
    create.add_argument("--strategy", default="ralif",
                        help="strategy spec (see `ralif strategies`) (default: %(default)s)")
    create.add_argument("--batch-size", type=int, default=DEFAULT_BATCH,
                        help="images asked per round (default: %(default)s)")
    create.add_argument("--test", default=None,
                        help="held-out images (folder or CSV) or a fraction of the pool such as 0.1")
    create.add_argument("--classes", default=None, help="comma-separated class names, in display order")
    create.add_argument("--known-labels", choices=("import", "truth", "ignore"), default="import",
                        help="labels found in the source: import them, keep them hidden as the simulated "
                             "oracle's truth, or ignore them (default: import)")
    create.add_argument("--add-classes", action="store_true",
                        help="add label names that are not in --classes instead of refusing them")
    create.add_argument("--layout", choices=("auto", "imagefolder", "flat"), default="auto",
                        help="how to read --images: auto (as `ralif preview` proposes; --as changes it), "
                             "imagefolder (one folder per class) or flat (every image unlabeled) "
                             "(default: %(default)s)")
    create.add_argument("--oracle", action="store_true",
                        help="switch the simulated oracle on (it answers from labels kept with "
                             "--known-labels truth)")
    add_decision_argument(create)

    demo = sub.add_parser("demo", help="create the bundled CIFAR-10 demo project")
    demo.add_argument("folder", type=Path, help="new (or empty) project folder")
    demo.add_argument("--initial-labels", type=int, default=0, metavar="N",
                      help="label N pool images up front from the hidden truth, one class after the other "
                           "(default: %(default)s: a cold start)")
    demo.add_argument("--batch-size", type=int, default=DEFAULT_BATCH,
                      help="images asked per round (default: %(default)s)")

    info = sub.add_parser("info", help="print settings, progress, classes and rounds as JSON")
    info.add_argument("folder", type=Path, help="project folder")

    rnd = sub.add_parser("round", help="run the queued (or failed) round now, in this process",
                         description="Run the queued (or failed) round now, in this process. A batch "
                                     "waiting to be labeled is labeled in the app (`ralif app`) and "
                                     "submitted there; with --oracle-submit the simulated oracle answers "
                                     "it instead (projects with hidden true labels: --known-labels truth, "
                                     "the demo).")
    rnd.add_argument("folder", type=Path, help="project folder")
    rnd.add_argument("--oracle-submit", type=int, default=0, metavar="N",
                     help="answer N batches with the simulated oracle (needs hidden true labels), "
                          "submitting each and running the next round: a batch already waiting is "
                          "answered first, otherwise the queued round runs first (demos and simulations)")

    export = sub.add_parser("export", help="export labels (csv, json, imagefolder) or the model")
    export.add_argument("folder", type=Path, help="project folder")
    export.add_argument("--format", choices=("csv", "json", "imagefolder", "model"), default="csv",
                        help="what to export (default: %(default)s)")
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


def _check_create(args: argparse.Namespace) -> str:
    """Every option of ``create`` that can be checked without reading the images, checked before
    the scan (which decodes every image: minutes for a large folder); returns the encoder spec."""
    from ralif.folder_scan import DECISIONS, parse_decisions
    from ralif.project.store import DB_NAME
    from ralif.project.validation import (
        DEFAULT_ENCODER,
        clean_name,
        validate_batch,
        validate_encoder,
        validate_strategy,
    )

    folder = args.folder.expanduser().resolve()
    if (folder / DB_NAME).exists():
        raise ValueError(f"{folder} already holds a project; choose a new project folder, or work with this "
                         f"one (`ralif project info {args.folder}`, `ralif project round {args.folder}`)")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ValueError(f"{folder} exists and is not an empty folder; choose a new (or empty) project folder")
    images = Path(args.images).expanduser()
    if not images.exists():
        raise FileNotFoundError(f"--images {args.images}: no such folder or CSV manifest")
    encoder = validate_encoder(args.encoder or DEFAULT_ENCODER[args.model])
    try:
        validate_strategy(args.strategy)
    except ValueError as exc:
        raise ValueError(f"--strategy {args.strategy}: {exc}") from exc
    if args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size}: give a number of images, 1 or more")
    validate_batch(args.batch_size)
    test = _test_source(args.test)
    if isinstance(test, float):
        if not 0 < test < 1:
            raise ValueError(f"--test {args.test}: a held-out fraction must be between 0 and 1 (such as 0.1); "
                             f"or give a folder or CSV manifest of held-out images")
    elif test is not None and not Path(test).expanduser().exists():
        raise FileNotFoundError(f"--test {test}: no such folder or CSV manifest (or give a fraction such as 0.1)")
    for name in (args.classes or "").split(","):
        if name.strip():
            clean_name(name)
    if args.decisions:
        if args.layout != "auto":
            raise ValueError("--as decides what each folder is and needs --layout auto")
        for key, decision in parse_decisions(args.decisions).items():
            if decision not in DECISIONS:
                raise ValueError(f"--as {key}={decision}: the decision must be one of {', '.join(DECISIONS)}")
    return encoder


def _ensure_weights(encoder: str) -> None:
    """The encoder's pretrained weights on this machine, downloaded when they are not; refused with
    what to do instead when they cannot be had (nothing is created then)."""
    from ralif.weights import (
        WeightsUnavailable,
        download,
        local_file,
        source_for_spec,
        terminal_download_progress,
    )

    try:
        source = source_for_spec(encoder)
    except ImportError as exc:
        raise RuntimeError(f"--encoder {encoder} needs a package that is not installed: {exc}") from exc
    except ValueError as exc:
        raise ValueError(f"--encoder {encoder}: {exc}") from exc
    if source is None or local_file(source) is not None:
        return
    print(f"Downloading the weights of {source.title} (--encoder {encoder}) ...", file=sys.stderr)
    try:
        download(source, progress=terminal_download_progress(source.title))
    except WeightsUnavailable as exc:
        fixes = [*exc.fixes,
                 "with `ralif project create`: --encoder precomputed:FILE.npz or --encoder pixels:N needs no "
                 "weights, --model resnet18 trains a network from scratch, and --encoder "
                 "clip:MODEL:/path/to/checkpoint uses a weights file you have"]
        raise ValueError(f"{exc.message} No project was created. Fixes: "
                         + " ".join(f"({i}) {f}" for i, f in enumerate(fixes, 1))) from None


def _plan_line(plan: Any, known_labels: str) -> str:
    """The preview's ``Plan:`` line, saying what the import makes of the labels it found."""
    if known_labels == "import" or not plan.labeled:
        return f"Plan: {plan.summary()}"
    images = plan.labeled + plan.unlabeled
    if known_labels == "truth":
        text = (f"{len(plan.classes):,} classes, 0 labeled images: the {plan.labeled:,} known labels are "
                f"kept hidden as the simulated oracle's truth (--known-labels truth)")
    else:
        text = f"0 labeled images: the {plan.labeled:,} known labels are ignored (--known-labels ignore)"
    text += f"; {images:,} unlabeled, {plan.ignored:,} ignored"
    if plan.skipped:
        text += f", {plan.skipped:,} identical {'copy' if plan.skipped == 1 else 'copies'} skipped"
    return f"Plan: {text}"


def _planned_source(args: argparse.Namespace) -> tuple[object, dict | None]:
    """The source as the preview's import plan (``--layout auto``), with the preview's summary;
    the detection is printed on stderr so that stdout stays JSON."""
    from ralif.folder_scan import build_plan, format_preview, parse_decisions, preview_source

    if args.layout != "auto":
        return args.images, None
    preview = preview_source(args.images, progress=terminal_scan_progress())
    plan = build_plan(preview, parse_decisions(args.decisions))
    lines = format_preview(preview, plan).splitlines()
    lines = [_plan_line(plan, args.known_labels) if line.startswith("Plan: ") else line for line in lines]
    print("\n".join(lines), file=sys.stderr)
    summary = preview.to_dict()
    summary.pop("unreadable")   # the import report lists them
    summary["plan"] = {"decisions": plan.decisions, "classes": plan.classes, "labeled": plan.labeled,
                       "unlabeled": plan.unlabeled, "ignored": plan.ignored, "known_labels": args.known_labels,
                       "labels_imported": plan.labeled if args.known_labels == "import" else 0}
    return plan.image_lists(), summary


def _open(folder: Path) -> Any:
    from ralif.project import Project
    from ralif.project.store import DB_NAME

    if not (folder.expanduser() / DB_NAME).is_file():
        raise FileNotFoundError(f"no ralif project in {folder}: create one with "
                                f"`ralif project create {folder} --images SOURCE` or `ralif project demo {folder}`")
    return Project.open(folder)


def _has_truth(project: Any) -> bool:
    """Whether pool images carry hidden true labels, for the simulated oracle to answer from."""
    with project.store.read() as conn:
        sizes = project.store.image_counts(conn)
    return "pool" in sizes and sizes["pool"].truths > 0


def _oracle_answer(project: Any) -> None:
    """The simulated oracle answers the pending batch: --oracle-submit asks for it, so the project's
    oracle setting (the app's "Simulated oracle" switch) is switched on for this answer only."""
    if project.store.get_setting("simulated_oracle", False):
        project.oracle_label_batch()
        return
    project.set_oracle(True)
    try:
        project.oracle_label_batch()
    finally:
        project.set_oracle(False)


def _run_rounds(project: Any, args: argparse.Namespace) -> int:
    if args.oracle_submit < 0:
        raise ValueError(f"--oracle-submit {args.oracle_submit}: give a number of batches, 0 or more")
    truth = _has_truth(project)
    if args.oracle_submit and not truth:
        raise ValueError(f"--oracle-submit needs hidden true labels for the simulated oracle to answer from, "
                         f"and {project.folder} has none (create the project with --known-labels truth); "
                         f"label its batches in the app instead (`ralif app {args.folder.parent}`)")
    waiting = project.pending_round()
    if waiting is not None and not args.oracle_submit:
        prog = project.progress()
        oracle = (f", or have the simulated oracle answer it: `ralif project round {args.folder} --oracle-submit 1`"
                  if truth else "")
        raise ValueError(f"round {waiting}'s batch ({prog.pending_done} of {prog.pending} images answered) is "
                         f"waiting to be labeled: label and submit it in the app (`ralif app {args.folder.parent}`),"
                         f" which then runs the next round{oracle}")
    results: list[dict[str, Any]] = []
    try:
        if waiting is None:
            results.append(project.run_round())
        for _ in range(args.oracle_submit):
            _oracle_answer(project)
            project.submit_batch()
            results.append(project.run_round())
    except KeyboardInterrupt:
        if results:
            print(json.dumps(results, indent=2))
        last = project.rounds()[-1] if project.rounds() else None
        again = ""
        if last is not None and last["status"] == "failed":
            again = f"; round {last['number']} is marked failed and `ralif project round {args.folder}` runs it again"
        print(f"ralif project: interrupted (Ctrl-C){again}", file=sys.stderr)
        return 130
    print(json.dumps(results, indent=2))
    return 0


def run(args: argparse.Namespace) -> int:
    from ralif.project import DestinationExists, Project

    if args.action == "create":
        # Options first, then the weights, then the scan: a mistake costs no image decoding.
        _ensure_weights(_check_create(args))
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
        if args.batch_size < 1:
            raise ValueError(f"--batch-size {args.batch_size}: give a number of images, 1 or more")
        if args.initial_labels < 0:
            raise ValueError(f"--initial-labels {args.initial_labels}: give a number of images, 0 or more")
        project = Project.create_demo(args.folder, initial_labels=args.initial_labels, batch_size=args.batch_size)
        print(json.dumps({"folder": str(project.folder), "progress": asdict(project.progress())}, indent=2))
        return 0
    project = _open(args.folder)
    if args.action == "info":
        print(json.dumps(project.info(), indent=2, default=str))
        return 0
    if args.action == "round":
        return _run_rounds(project, args)
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
    except DestinationExists as exc:
        # The library's text names its own parameter (overwrite=True); say the CLI's options.
        raise ValueError(f"{exc.path} exists; choose another --out, or pass --overwrite to replace it") from exc
    print(json.dumps({"format": args.format, "out": str(out)}))
    return 0
