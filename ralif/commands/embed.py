"""``ralif embed``: compute the features of a folder (or CSV manifest) into the feature cache."""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

NAME = "embed"
HELP = "Compute image features with a frozen encoder and store them in the feature cache."
_SHOW_BAD = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", required=True,
                        help="folder of images (searched recursively) or a CSV manifest with a 'path' column")
    parser.add_argument("--encoder", default="clip:ViT-B-16:openai",
                        help="encoder spec: clip:<model>:<tag|none|checkpoint>, resnet18:<imagenet|none|file>, "
                             "resnet18-32:<...> or precomputed:<file.npz> (default: %(default)s)")
    parser.add_argument("--pretrained", default=None,
                        help="weights for the encoder, overriding the spec's last part: a tag, 'none', "
                             "or a local checkpoint file")
    parser.add_argument("--cache", default=None,
                        help="feature cache folder (default: ./.ralif-cache)")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="images encoded at a time; lower it if the device runs out of memory "
                             "(default: %(default)s)")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="image decoding processes (default: a quarter of the CPUs, up to 4, on CPU; "
                             "all but one, up to 8, on CUDA)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="default: cuda when available")
    parser.add_argument("--output", default=None,
                        help="also write the features to this .npz (features, paths, hashes); '.npz' is "
                             "added to a name without it, and the summary's 'output' gives the path written")


def _with_weights(spec: str, weights: str) -> str:
    kind, _, rest = spec.partition(":")
    if kind.lower() in ("clip", "open_clip", "openclip"):
        model_name = rest.partition(":")[0] or "ViT-B-16"
        return f"{kind}:{model_name}:{weights}"
    if kind.lower() == "precomputed":
        raise ValueError("--pretrained does not apply to precomputed embeddings")
    return f"{kind}:{weights}"


def output_path(output: str) -> str:
    """The file ``--output`` writes: absolute, with ``.npz`` added as ``np.savez`` would."""
    path = os.path.abspath(os.path.expanduser(output))
    return path if path.lower().endswith(".npz") else path + ".npz"


def _write_npz(path: str, features: np.ndarray, paths: np.ndarray, hashes: np.ndarray) -> None:
    from ralif.atomic import atomic_write

    os.makedirs(os.path.dirname(path), exist_ok=True)
    # Into a temporary file beside it, then renamed over it: never a half-written archive.
    atomic_write(path, lambda f: np.savez(f, features=features, paths=paths, hashes=hashes))


def run(args: argparse.Namespace) -> int:
    from ralif.encoders import build_encoder
    from ralif.feature_cache import default_cache_root, fill_cache
    from ralif.images import load_manifest, scan_images

    if args.batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    output = output_path(args.output) if args.output else None
    if output is not None:
        from ralif.project.exports import check_output_path

        # Refused before the images are scanned and encoded, not after; a folder given as --output
        # is refused as such (not written beside it as <folder>.npz).
        given = os.path.abspath(os.path.expanduser(args.output))
        check_output_path(given if os.path.isdir(given) else output, what="the features file (--output)")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was given but no CUDA device is available")
    start = time.perf_counter()
    source = os.path.abspath(args.images)
    if os.path.isfile(source) and source.lower().endswith(".csv"):
        images = load_manifest(source)
    else:
        images = scan_images(source)
    scan_seconds = time.perf_counter() - start

    spec = _with_weights(args.encoder, args.pretrained) if args.pretrained else args.encoder
    encoder = build_encoder(spec, device=args.device)
    cache_root = args.cache or default_cache_root()
    result = fill_cache(encoder, images, cache_root=cache_root, batch_size=args.batch_size,
                        num_workers=args.num_workers)
    if output is not None:
        _write_npz(output, features=result.features, paths=np.array(images.paths),
                   hashes=np.array(images.hashes))

    seconds = time.perf_counter() - start
    summary = {
        "images": len(images),
        "encoder": encoder.id,
        "dim": encoder.dim,
        "cache": os.path.abspath(cache_root),
        "output": output,
        "hits": result.hits,
        "misses": result.misses,
        "computed": result.computed,
        "bad_files": {
            "count": len(images.problems),
            "first": [f"{os.path.relpath(p, images.root or source)}: {r}"
                      for p, r in images.problems[:_SHOW_BAD]],
        },
        "duplicates": {
            "groups": len(images.duplicates),
            "files": sum(len(g) for g in images.duplicates),
        },
        "scan_seconds": round(scan_seconds, 3),
        "feature_seconds": round(result.seconds, 3),
        "seconds": round(seconds, 3),
        # Throughput of the encoder on the images actually computed (cache hits cost ~nothing).
        "images_per_s": round(result.computed / result.seconds, 2) if result.computed and result.seconds else None,
    }
    print(json.dumps(summary, indent=2))
    return 0
