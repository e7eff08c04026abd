"""``ralif simulate``: the paper's simulation protocol on a features file, with reports."""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

from ralif.head import DEFAULT_L2
from ralif.strategies import split_specs

NAME = "simulate"
DEFAULT_ENCODER = "clip:ViT-B-16:openai"
HELP = "simulate active learning with true labels as the oracle and compare strategies against Random"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--features", type=Path, help=".npz with x_train, y_train, x_test, y_test")
    src.add_argument("--images", type=Path, help="ImageFolder with train/<class>/... and test/<class>/...")
    parser.add_argument("--model", choices=["clip-linear", "resnet18"], default=None,
                        help="with --images: a frozen encoder + linear head (default clip-linear), or ResNet18 "
                             "trained end to end; with --features a linear head is always trained on the "
                             "file's features, and resnet18 is refused")
    parser.add_argument("--encoder", default=None,
                        help=f"with --images --model clip-linear: encoder spec (default {DEFAULT_ENCODER}; "
                             f"see `ralif embed --help`)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="with --images --model clip-linear: feature cache folder (default ./.ralif-cache)")
    parser.add_argument("--resnet-variant", choices=["cifar", "imagenet"], default=None,
                        help="with --model resnet18: CIFAR stem at 32 px from scratch (default cifar), or the "
                             "224-px network")
    parser.add_argument("--epochs", type=int, default=None, help="with --model resnet18: epochs per cycle")
    parser.add_argument("--resnet-weights", default=None,
                        help="with --resnet-variant imagenet: auto (ImageNet weights, the default), none, or a file")
    parser.add_argument("--strategies", default="random,ralif",
                        help="comma-separated specs, e.g. random,uncertainty,coreset,badge,gradnorm,ralif "
                             "(at least one). Random is always run as the reference every result is relative "
                             "to, listed or not; a strategy listed twice runs once")
    parser.add_argument("--initial", type=int, default=100, help="initial labeled set size (default 100)")
    parser.add_argument("--budget", type=int, default=100, help="labels added per cycle (default 100)")
    parser.add_argument("--cycles", type=int, default=9, help="active-learning cycles, at least 2 (default 9)")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds 0..S-1 (default 3)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds are FIRST..FIRST+S-1 (default 0); development runs use other seeds than reports")
    parser.add_argument("--l2", type=_l2_value, default=DEFAULT_L2,
                        help=f"head L2 strength, or cv: chosen from the labels by 3-fold cross-validation at "
                             f"every fit, the same for every strategy (default {DEFAULT_L2})")
    pool = parser.add_argument_group("derived pools (with --features)")
    pool.add_argument("--pool-classes", default="",
                      help="comma-separated class names to keep, each once, at least 2 (default: all)")
    pool.add_argument("--pool-size", type=int, default=0,
                      help="stratified subsample of the pool to about this many rows, at least one per class: "
                           "each class is rounded down but keeps one sample (default: whole pool)")
    pool.add_argument("--imbalance", type=float, default=1.0,
                      help="long-tailed pool: most/least frequent class ratio, e.g. 10 or 100; the test "
                           "set is then balanced (default 1: the pool as it is)")
    pool.add_argument("--class-order", type=int, default=0,
                      help="with --imbalance: seed of the order of classes from frequent to rare")
    parser.add_argument("--device", default=None,
                        help="cpu, cuda, cuda:N or mps (default: cuda when present)")
    parser.add_argument("--out", type=Path, required=True,
                        help="output folder for results.json and reports (created if missing; checked first). "
                             "Ctrl-C saves the seeds already finished there, marked partial (exit 130)")
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
    from ralif.simulation import SimulationConfig, SimulationInterrupted, simulate

    # Everything that can be checked without the data is checked before any work, --out included.
    specs = _check_arguments(args)
    created = _prepare_out(args.out)
    try:
        learner, y_train, extra = _data_source(args)
        cfg = SimulationConfig(
            strategies=specs, initial=args.initial, budget=args.budget,
            cycles=args.cycles, seeds=list(range(args.first_seed, args.first_seed + args.seeds)),
            l2=args.l2, device=args.device, extra=extra,
        )
        bar = tqdm(total=1, disable=args.quiet, unit="fit", dynamic_ncols=True)

        def progress(done: int, total: int, what: str) -> None:
            bar.total = total
            bar.set_description(what)
            bar.update(done - bar.n)

        try:
            results = simulate(learner, cfg, progress=progress, y_train=y_train)
        finally:
            bar.close()
    except SimulationInterrupted as stop:
        if stop.results is None:
            _remove_created(created)
            print(f"ralif simulate: interrupted before any seed finished; nothing saved to {args.out}",
                  file=sys.stderr)
            return 130
        write_results(args.out, stop.results)
        print(f"ralif simulate: interrupted; PARTIAL result of {len(stop.seeds_done)} of "
              f"{len(stop.seeds_requested)} seeds (finished seeds only) saved to {args.out}", file=sys.stderr)
        return 130
    except BaseException:
        _remove_created(created)
        raise
    paths = write_results(args.out, results)
    print(paths["md"].read_text())
    summary = {name: round(s["auca_ratio_mean"], 4) for name, s in results["strategies"].items()}
    print(json.dumps({"auca_ratio_mean": summary, "out": str(args.out)}))
    return 0


# Options that apply to --images only, and the derived-pool options (with their neutral values) of --features.
_IMAGE_ONLY = ("model", "encoder", "cache", "resnet_variant", "epochs", "resnet_weights")
_POOL_OPTIONS = (("pool_classes", ""), ("pool_size", 0), ("imbalance", 1.0), ("class_order", 0))
_DEVICE = re.compile(r"(cpu|cuda(:\d+)?|mps|auto)")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_arguments(args: argparse.Namespace) -> list[str]:
    """Refuse every argument that is wrong on its own or in its combination; returns the strategy specs."""
    from ralif.simulation import CYCLES_MESSAGE
    from ralif.strategies import make_strategy

    for name in ("initial", "budget", "seeds"):
        if getattr(args, name) < 1:
            raise ValueError(f"{_flag(name)} must be at least 1")
    if args.cycles < 2:
        raise ValueError(f"--cycles must be at least 2, got {args.cycles}: {CYCLES_MESSAGE}")
    for name in ("first_seed", "class_order"):
        if getattr(args, name) < 0:
            raise ValueError(f"{_flag(name)} must be 0 or more (it seeds a random generator)")
    if args.epochs is not None and args.epochs < 1:
        raise ValueError("--epochs must be at least 1")
    specs = split_specs(args.strategies)
    if not specs:
        raise ValueError("--strategies is empty: name at least one strategy, e.g. random,ralif "
                         "(Random always runs as the reference)")
    for spec in specs:
        make_strategy(spec)
    _check_combinations(args)
    _check_pool_options(args)
    _check_device(args.device)
    return specs


def _check_combinations(args: argparse.Namespace) -> None:
    if args.features is not None:
        if args.model == "resnet18":
            raise ValueError("--model resnet18 trains a network on images and needs --images; with --features "
                             "a linear head is trained on the file's features (leave --model out)")
        given = [_flag(n) for n in _IMAGE_ONLY if n != "model" and getattr(args, n) is not None]
        if given:
            raise ValueError(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to --images only; "
                             f"--features already holds the features")
        return
    pool = [_flag(n) for n, neutral in _POOL_OPTIONS if getattr(args, n) != neutral]
    if pool:
        raise ValueError(f"{', '.join(pool)} derive{'s' if len(pool) == 1 else ''} a pool from --features only; "
                         f"with --images the pool is the train/ folder as it is")
    if (args.model or "clip-linear") == "clip-linear":
        given = [_flag(n) for n in ("resnet_variant", "epochs", "resnet_weights") if getattr(args, n) is not None]
        if given:
            raise ValueError(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to --model resnet18 only")
        return
    given = [_flag(n) for n in ("encoder", "cache") if getattr(args, n) is not None]
    if given:
        raise ValueError(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to --model clip-linear "
                         f"only; --model resnet18 trains on the images themselves")
    if args.resnet_weights is not None and (args.resnet_variant or "cifar") != "imagenet":
        raise ValueError("--resnet-weights applies to --resnet-variant imagenet only; the cifar variant is "
                         "trained from scratch")


def _pool_classes(args: argparse.Namespace) -> tuple[str, ...]:
    return tuple(c.strip() for c in args.pool_classes.split(",") if c.strip())


def _check_pool_options(args: argparse.Namespace) -> None:
    classes = _pool_classes(args)
    twice = sorted({c for c in classes if classes.count(c) > 1})
    if twice:
        raise ValueError(f"--pool-classes lists {', '.join(map(repr, twice))} twice; name each class once")
    if len(classes) == 1:
        raise ValueError(f"--pool-classes keeps one class ({classes[0]!r}); a simulation needs at least 2 classes")
    if args.pool_size < 0:
        raise ValueError("--pool-size must be positive (or 0 for the whole pool)")
    if not args.imbalance >= 1.0:
        raise ValueError(f"--imbalance must be ≥ 1 (most over least frequent class), got {args.imbalance}")


def _check_device(device: str | None) -> None:
    if device is None:
        return
    if not _DEVICE.fullmatch(device):
        raise ValueError(f"unknown device {device!r} (cpu, cuda, cuda:N, mps)")
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"--device {device}: no CUDA device is available; use --device cpu")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise RuntimeError(f"--device {device}: there are only {torch.cuda.device_count()} CUDA devices "
                               f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    if device == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("--device mps: no Apple GPU (MPS) is available; use --device cpu")


def _prepare_out(out: Path) -> list[Path]:
    """Make sure results can be written to ``out`` before any work; returns the folders it created."""
    for folder in (*reversed(out.parents), out):
        if folder.exists() and not folder.is_dir():
            what = "is" if folder == out else f"is inside {folder}, which is"
            raise ValueError(f"--out {out} {what} a file, not a folder; name a folder (it is created if missing)")
    created = [f for f in (out, *out.parents) if not f.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create the --out folder {out}: {exc.strerror or exc}") from None
    try:
        with tempfile.TemporaryFile(dir=out, prefix=".ralif-write-check-"):
            pass
    except OSError as exc:
        _remove_created(created)
        raise ValueError(f"cannot write in the --out folder {out}: {exc.strerror or exc}") from None
    return created


def _remove_created(created: list[Path]) -> None:
    """Remove the folders :func:`_prepare_out` made, deepest first, while they are still empty."""
    for folder in created:
        try:
            folder.rmdir()
        except OSError:
            return


def _check_budget(args: argparse.Namespace, n: int, what: str) -> None:
    need = args.initial + args.budget * args.cycles
    if need > n:
        raise ValueError(f"--initial {args.initial} + {args.cycles} cycles × --budget {args.budget} = {need} "
                         f"labels exceed {what}")


def _data_source(args: argparse.Namespace):
    """(learner or feature splits, oracle labels, config notes) for --features or --images."""
    import numpy as np

    from ralif.features import FeatureSplits, load_feature_splits

    if args.features is not None:
        from ralif.pools import PoolRecipe, build_pool

        data = load_feature_splits(args.features)
        recipe = PoolRecipe(
            classes=_pool_classes(args),
            pool_size=args.pool_size, imbalance=args.imbalance, class_order=args.class_order,
        )
        data = build_pool(data, recipe, source=str(args.features))
        present = np.unique(data.y_train)
        if len(present) < 2:
            names = ", ".join(repr(data.classes[int(c)]) for c in present)
            raise ValueError(f"{args.features} has one class ({names}) in its pool; a simulation needs at least "
                             f"2 classes to compare strategies")
        n = len(data.x_train)
        what = f"the pool of {n} samples"
        if recipe.pool_size and n != recipe.pool_size:
            what += (f" (--pool-size {recipe.pool_size} was asked: each of the {data.num_classes} classes is "
                     f"subsampled in proportion, rounded down, keeping at least one sample, so the pool has "
                     f"{n})")
        elif recipe.imbalance > 1.0:
            what += f" (the long tail of --imbalance {recipe.imbalance:g} keeps {n} of the samples)"
        _check_budget(args, n, what)
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
    train_classes = sorted({int(c) for c in train.labels})
    if len(train_classes) < 2:
        names = ", ".join(repr(classes[c]) for c in train_classes)
        raise ValueError(f"{args.images / 'train'} has images of one class ({names}); a simulation needs at "
                         f"least 2 class folders")
    _check_budget(args, len(train), f"the {len(train)} images in {args.images / 'train'}")
    model = args.model or "clip-linear"
    extra = {"images": args.images.name, "model": model, "pool": len(train), "test": len(test),
             "classes": len(classes)}
    if model == "clip-linear":
        from ralif.encoders import build_encoder
        from ralif.feature_cache import cached_features

        encoder = build_encoder(args.encoder or DEFAULT_ENCODER, device=args.device)
        x_tr = cached_features(encoder, train, args.cache, device=args.device)
        x_te = cached_features(encoder, test, args.cache, device=args.device)
        extra.update(encoder=encoder.id, dim=int(x_tr.shape[1]))
        data = FeatureSplits(x_tr, train.labels, x_te, test.labels, list(classes))
        return data, data.y_train, extra

    from ralif.learners import ResNetLearner, load_uint8_images
    from ralif.models.resnet import TrainConfig
    from ralif.models.resnet_model import required

    variant = args.resnet_variant or "cifar"
    resnet_weights = args.resnet_weights or "auto"
    weights = None if str(resnet_weights).lower() == "none" else resnet_weights
    cfg = TrainConfig(variant=variant, epochs=args.epochs,
                      weights=weights if variant == "imagenet" else None)
    tr_imgs: np.ndarray | list[str]
    te_imgs: np.ndarray | list[str]
    if variant == "cifar":
        # Small images are decoded once and kept in memory; 224-px images stay on disk.
        tr_imgs = load_uint8_images(train.paths, required(cfg.image_size))
        te_imgs = load_uint8_images(test.paths, required(cfg.image_size))
    else:
        tr_imgs, te_imgs = list(train.paths), list(test.paths)
    learner = ResNetLearner(tr_imgs, te_imgs, test.labels, len(classes), cfg, device=args.device)
    extra.update(resnet_variant=variant, epochs=cfg.epochs)
    return learner, np.asarray(train.labels), extra
