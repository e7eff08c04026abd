"""A weak-feature benchmark set: CIFAR-10 images as hand-made features, no learned encoder.

    python benchmarks/make_pixel_features.py CIFAR10_JPG_TAR OUT.npz

Each 32×32 image becomes an 8×8 colour thumbnail (192 values, 4×4 block means) and a histogram of
gradient orientations (8 bins, magnitude-weighted, over a 4×4 grid of 8×8-pixel cells: 128 values),
320 features in all. A linear head on them is far weaker than on the pretrained embeddings, so the
set checks that choices made on strong features carry over to a head that stays poor. Reads the
ImageFolder-layout tar (`train/<class>/*.jpg`, `test/<class>/*.jpg`; classes in sorted order).
"""

from __future__ import annotations

import io
import sys
import tarfile

import numpy as np
from PIL import Image

BINS = 8
CELL = 8


def image_features(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) uint8 → (N, 320) float32: thumbnail means and orientation histograms."""
    x = images.astype(np.float32) / 255.0
    n = len(x)
    thumb = x.reshape(n, 8, 4, 8, 4, 3).mean(axis=(2, 4)).reshape(n, -1)
    gray = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    gy, gx = np.gradient(gray, axis=(1, 2))
    mag = np.hypot(gx, gy)
    # Unsigned orientation in [0, π): an edge and its reverse count alike.
    bins = np.minimum((np.mod(np.arctan2(gy, gx), np.pi) / np.pi * BINS).astype(np.int64), BINS - 1)
    side = 32 // CELL
    cell = (np.arange(32) // CELL)[:, None] * side + (np.arange(32) // CELL)[None, :]
    flat = (np.arange(n)[:, None, None] * side * side + cell[None]) * BINS + bins
    hist = np.bincount(flat.ravel(), weights=mag.ravel(), minlength=n * side * side * BINS)
    hist = hist.reshape(n, side * side, BINS)
    hist /= np.linalg.norm(hist, axis=2, keepdims=True) + 1e-6
    return np.concatenate([thumb, hist.reshape(n, -1)], axis=1).astype(np.float32)


def read_split(tar: tarfile.TarFile, members: list[tarfile.TarInfo], classes: list[str]):
    imgs, labels = [], []
    for m in members:
        data = tar.extractfile(m)
        if data is None:
            continue
        with Image.open(io.BytesIO(data.read())) as im:
            imgs.append(np.asarray(im.convert("RGB").resize((32, 32))))
        labels.append(classes.index(m.name.split("/")[-2]))
    return np.stack(imgs), np.array(labels, dtype=np.int64)


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    src, out = sys.argv[1], sys.argv[2]
    with tarfile.open(src) as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile() and m.name.lower().endswith(".jpg")),
                         key=lambda m: m.name)
        split = {s: [m for m in members if m.name.lstrip("./").startswith(f"{s}/")] for s in ("train", "test")}
        classes = sorted({m.name.split("/")[-2] for m in split["train"]})
        unknown = sorted({m.name.split("/")[-2] for m in split["test"]} - set(classes))
        if not split["train"] or not split["test"] or unknown:
            print(f"{src}: needs train/<class>/*.jpg and test/<class>/*.jpg with the same classes"
                  + (f" (test only: {', '.join(unknown)})" if unknown else ""), file=sys.stderr)
            return 2
        x_tr, y_tr = read_split(tar, split["train"], classes)
        x_te, y_te = read_split(tar, split["test"], classes)
    f_tr, f_te = image_features(x_tr), image_features(x_te)
    np.savez(out, x_train=f_tr, y_train=y_tr, x_test=f_te, y_test=y_te, classes=np.array(classes))
    print(f"{out}: {len(y_tr)} train, {len(y_te)} test, {f_tr.shape[1]} features")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
