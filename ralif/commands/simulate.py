"""``ralif simulate``: the paper's simulation protocol on a features file, with reports."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ralif.head import DEFAULT_L2
from ralif.strategies import split_specs

NAME = "simulate"
HELP = "simulate active learning with true labels as the oracle and compare strategies against Random"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--features", type=Path, help=".npz with x_train, y_train, x_test, y_test")
    src.add_argument("--images", type=Path, help="ImageFolder with train/<class>/... and test/<class>/...")
    parser.add_argument("--model", choices=["clip-linear", "resnet18"], default="clip-linear",
                        help="with --images: a frozen encoder + linear head, or ResNet18 trained end to end")
    parser.add_argument("--encoder", default="clip:ViT-B-16:openai",
                        help="with --model clip-linear: encoder spec (see `ralif embed --help`)")
    parser.add_argument("--cache", type=Path, default=None, help="feature cache folder (default ./.ralif-cache)")
    parser.add_argument("--resnet-variant", choices=["cifar", "imagenet"], default="cifar",
                        help="with --model resnet18: CIFAR stem at 32 px from scratch, or the 224-px network")
    parser.add_argument("--epochs", type=int, default=None, help="with --model resnet18: epochs per cycle")
    parser.add_argument("--resnet-weights", default="auto",
                        help="with --resnet-variant imagenet: auto (ImageNet weights), none, or a file")
    parser.add_argument("--strategies", default="random,ralif",
                        help="comma-separated specs, e.g. random,uncertainty,coreset,badge,gradnorm,ralif")
    parser.add_argument("--initial", type=int, default=100, help="initial labeled set size (default 100)")
    parser.add_argument("--budget", type=int, default=100, help="labels added per cycle (default 100)")
    parser.add_argument("--cycles", type=int, default=9, help="active-learning cycles (default 9)")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds 0..S-1 (default 3)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds are FIRST..FIRST+S-1 (default 0); development runs use other seeds than reports")
    parser.add_argument("--l2", type=_l2_value, default=DEFAULT_L2,
                        help=f"head L2 strength, or cv: chosen from the labels by 3-fold cross-validation at "
                             f"every fit, the same for every strategy (default {DEFAULT_L2})")
    pool = parser.add_argument_group("derived pools (with --features)")
    pool.add_argument("--pool-classes", default="",
                      help="comma-separated class names to keep (default: all)")
    pool.add_argument("--pool-size", type=int, default=0,
                      help="stratified subsample of the pool to about this many rows (default: whole pool)")
    pool.add_argument("--imbalance", type=float, default=1.0,
                      help="long-tailed pool: most/least frequent class ratio, e.g. 10 or 100; the test "
                           "set is then balanced (default 1: the pool as it is)")
    pool.add_argument("--class-order", type=int, default=0,
                      help="with --imbalance: seed of the order of classes from frequent to rare")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--out", type=Path, required=True, help="output folder for results.json and reports")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _l2_value(text: str) -> float | str:
    if text.strip().lower() == "cv":
        return "cv"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number nor cv") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("the L2 strength must be positive")
    return value


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ralif.report import write_results
    from ralif.simulation import SimulationConfig, simulate

    for name in ("initial", "budget", "cycles", "seeds"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be at least 1")
    learner, y_train, extra = _data_source(args)
    cfg = SimulationConfig(
        strategies=split_specs(args.strategies), initial=args.initial, budget=args.budget,
        cycles=args.cycles, seeds=list(range(args.first_seed, args.first_seed + args.seeds)),
        l2=args.l2, device=args.device, extra=extra,
    )
    bar = tqdm(total=1, disable=args.quiet, unit="fit", dynamic_ncols=True)

    def progress(done: int, total: int, what: str) -> None:
        bar.total = total
        bar.set_description(what)
        bar.update(done - bar.n)

    results = simulate(learner, cfg, progress=progress, y_train=y_train)
    bar.close()
    paths = write_results(args.out, results)
    print(paths["md"].read_text())
    summary = {name: round(s["auca_ratio_mean"], 4) for name, s in results["strategies"].items()}
    print(json.dumps({"auca_ratio_mean": summary, "out": str(args.out)}))
    return 0


def _data_source(args: argparse.Namespace):
    """(learner or feature splits, oracle labels, config notes) for --features or --images."""
    import numpy as np

    from ralif.features import FeatureSplits, load_feature_splits

    if args.features is not None:
        from ralif.pools import PoolRecipe, build_pool

        data = load_feature_splits(args.features)
        recipe = PoolRecipe(
            classes=tuple(c.strip() for c in args.pool_classes.split(",") if c.strip()),
            pool_size=args.pool_size, imbalance=args.imbalance, class_order=args.class_order,
        )
        data = build_pool(data, recipe, source=str(args.features))
        extra = {"features": args.features.name, "pool": len(data.x_train), "dim": int(data.x_train.shape[1]),
                 "classes": data.num_classes, "test": len(data.x_test), **recipe.describe()}
        return data, data.y_train, extra

    from ralif.images import load_image_folder

    splits = load_image_folder(args.images)
    if "train" not in splits or "test" not in splits:
        raise ValueError(f"{args.images} needs train/ and test/ folders (ImageFolder layout) for a simulation")
    train, test = splits["train"], splits["test"]
    for name, lst in (("train", train), ("test", test)):
        if len(lst) == 0:
            raise ValueError(f"no readable images in {args.images / name}")
        if (lst.labels < 0).any():
            raise ValueError(f"{(lst.labels < 0).sum()} {name} images are not inside a class folder")
        if lst.problems:
            shown = "; ".join(f"{p}: {r}" for p, r in lst.problems[:3])
            print(f"skipped {len(lst.problems)} unreadable {name} files ({shown})")
    classes = train.classes
    extra = {"images": args.images.name, "model": args.model, "pool": len(train), "test": len(test),
             "classes": len(classes)}
    if args.model == "clip-linear":
        from ralif.encoders import build_encoder
        from ralif.feature_cache import cached_features

        encoder = build_encoder(args.encoder, device=args.device)
        x_tr = cached_features(encoder, train, args.cache, device=args.device)
        x_te = cached_features(encoder, test, args.cache, device=args.device)
        extra.update(encoder=encoder.id, dim=int(x_tr.shape[1]))
        data = FeatureSplits(x_tr, train.labels, x_te, test.labels, list(classes))
        return data, data.y_train, extra

    from ralif.learners import ResNetLearner, load_uint8_images
    from ralif.models.resnet import TrainConfig
    from ralif.models.resnet_model import required

    weights = None if str(args.resnet_weights).lower() == "none" else args.resnet_weights
    cfg = TrainConfig(variant=args.resnet_variant, epochs=args.epochs,
                      weights=weights if args.resnet_variant == "imagenet" else None)
    tr_imgs: np.ndarray | list[str]
    te_imgs: np.ndarray | list[str]
    if args.resnet_variant == "cifar":
        # Small images are decoded once and kept in memory; 224-px images stay on disk.
        tr_imgs = load_uint8_images(train.paths, required(cfg.image_size))
        te_imgs = load_uint8_images(test.paths, required(cfg.image_size))
    else:
        tr_imgs, te_imgs = list(train.paths), list(test.paths)
    learner = ResNetLearner(tr_imgs, te_imgs, test.labels, len(classes), cfg, device=args.device)
    extra.update(resnet_variant=args.resnet_variant, epochs=cfg.epochs)
    return learner, np.asarray(train.labels), extra
