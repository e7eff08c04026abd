"""``ralif preview``: what a folder or CSV manifest holds, and what a new project would import."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

NAME = "preview"
HELP = ("Scan an image folder or CSV manifest and show what a project would import: layout, classes, "
        "folders that look unlabeled, unreadable and duplicate files. Nothing is written.")


def add_decision_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--as", dest="decisions", action="append", default=[], metavar="NAME=DECISION",
                        help="override the decision for a top folder (or a manifest label): class, "
                             "unlabeled or ignore; '.' names the images not in any folder (repeatable)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="image folder or CSV manifest (path[, label])")
    add_decision_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the preview and plan as JSON")
    parser.add_argument("--no-decode", action="store_true",
                        help="check headers only (faster; truncated JPEGs are then found later)")


def terminal_scan_progress() -> Callable[[int, int], None] | None:
    """A progress callback drawing on stderr when it is a terminal, else None."""
    if not sys.stderr.isatty():
        return None
    from ralif.encoders import terminal_progress

    state: dict[str, object] = {}

    def update(done: int, total: int) -> None:
        if "bar" not in state:
            state["bar"] = terminal_progress(total, "checking images")
        bar = state["bar"]
        if callable(bar):
            bar(done, total)

    return update


def run(args: argparse.Namespace) -> int:
    from ralif.folder_scan import build_plan, format_preview, parse_decisions, preview_source

    preview = preview_source(args.source, decode=not args.no_decode, progress=terminal_scan_progress())
    plan = build_plan(preview, parse_decisions(args.decisions))
    if args.json:
        out = preview.to_dict()
        out["plan"] = {"decisions": plan.decisions, "classes": plan.classes, "labeled": plan.labeled,
                       "unlabeled": plan.unlabeled, "ignored": plan.ignored}
        print(json.dumps(out, indent=2))
    else:
        print(format_preview(preview, plan))
    return 0
