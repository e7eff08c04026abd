"""``ralif weights``: which encoder choices have their weights here, and downloading them."""

from __future__ import annotations

import argparse
import json

NAME = "weights"
HELP = ("List the encoder choices with where their weights are and what each will do, or download "
        "the weights of one (resumable, hash-checked, into the standard caches).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    lst = sub.add_parser("list", help="the encoder choices, their weights and what each will do")
    lst.add_argument("--clip", default="ViT-B-16:openai", metavar="MODEL:TAG",
                     help="the CLIP model and pretrained tag to describe (default: %(default)s)")
    lst.add_argument("--labels", type=int, default=None, help="labels you will start with (for advice)")
    lst.add_argument("--json", action="store_true",
                     help="print the choices as a JSON list (key, spec, weights_present, weights_path, "
                          "download_bytes, status, ...) instead of text")
    dl = sub.add_parser("download", help="download the weights of an encoder spec")
    dl.add_argument("spec", help="clip:<model>:<tag> or resnet18:imagenet (an unknown spec, model or tag is "
                                 "refused with the valid choices)")
    dl.add_argument("--endpoint", default=None,
                    help="server to download from (default: HF_ENDPOINT for CLIP tags, "
                         "RALIF_TORCH_MODELS_URL for torchvision files, else the official hosts)")


def run(args: argparse.Namespace) -> int:
    if args.action == "download":
        from ralif.weights import download, source_for_spec, terminal_download_progress

        source = source_for_spec(args.spec)
        if source is None:
            raise ValueError(f"{args.spec!r} needs no download (random weights, a local file or features)")
        path = download(source, progress=terminal_download_progress(source.title), endpoint=args.endpoint)
        print(json.dumps({"spec": source.spec, "path": str(path), "present": path.is_file()}))
        return 0
    from ralif.encoder_catalog import encoder_choices, recommended

    model, _, tag = args.clip.partition(":")
    choices = encoder_choices(labels=args.labels, clip_model=model, clip_tag=tag or "openai")
    best = recommended(choices, labels=args.labels)
    if args.json:
        print(json.dumps([{"key": c.key, "title": c.title, "spec": c.spec, "model": c.model,
                           "weights_present": c.weights_present, "weights_path": c.weights_path,
                           "download_bytes": c.download_bytes, "size_is_estimate": c.size_is_estimate,
                           "status": c.status_text(), "what_happens": c.what_happens, "warning": c.warning,
                           "recommended": c.key == best.key} for c in choices], indent=2))
        return 0
    for c in choices:
        mark = "  (recommended)" if c.key == best.key else ""
        print(f"{c.title}{mark}\n  spec: {c.spec or '(choose a file)'}\n  {c.status_text()}\n  {c.what_happens}")
        if c.warning:
            print(f"  warning: {c.warning}")
    return 0
