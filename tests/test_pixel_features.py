"""benchmarks/make_pixel_features.py: an ImageFolder tar becomes a weak-feature .npz the simulator reads."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from ralif.features import load_feature_splits

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "make_pixel_features.py"


def load_script():
    spec = importlib.util.spec_from_file_location("make_pixel_features", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def stripes(vertical: bool, colour: tuple[int, int, int]) -> np.ndarray:
    img = np.zeros((32, 32, 3), dtype=np.uint8)
    band = (np.arange(32) // 4) % 2 == 0
    if vertical:
        img[:, band] = colour
    else:
        img[band, :] = colour
    return img


def test_orientation_histogram_follows_the_edges():
    mod = load_script()
    feats = mod.image_features(np.stack([stripes(True, (255, 255, 255)), stripes(False, (255, 255, 255))]))
    assert feats.shape == (2, 320) and feats.dtype == np.float32
    hist = feats[:, 192:].reshape(2, 16, mod.BINS).sum(1)
    # Vertical stripes change along x (orientation 0); horizontal ones along y (orientation π/2).
    assert hist[0].argmax() == 0
    assert hist[1].argmax() == mod.BINS // 2
    # The thumbnail is the 4×4 block mean: a white band 4 pixels wide fills whole blocks.
    thumb = feats[0, :192].reshape(8, 8, 3)
    assert np.allclose(thumb[:, ::2], 1.0) and np.allclose(thumb[:, 1::2], 0.0)


def test_tar_to_features_file(tmp_path: Path):
    tar_path = tmp_path / "images.tar"
    with tarfile.open(tar_path, "w") as tar:
        for split, n in (("train", 3), ("test", 2)):
            for name, vertical in (("cat", True), ("ant", False)):
                for i in range(n):
                    buf = io.BytesIO()
                    Image.fromarray(stripes(vertical, (200, 40 * i, 90))).save(buf, format="JPEG")
                    info = tarfile.TarInfo(f"{split}/{name}/{i:04d}.jpg")
                    info.size = len(buf.getvalue())
                    tar.addfile(info, io.BytesIO(buf.getvalue()))
    out = tmp_path / "pixels.npz"
    res = subprocess.run([sys.executable, str(SCRIPT), str(tar_path), str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    splits = load_feature_splits(out)
    assert splits.x_train.shape == (6, 320) and splits.x_test.shape == (4, 320)
    # Classes in sorted order: ant (horizontal stripes) = 0, cat (vertical) = 1.
    assert list(np.load(out)["classes"]) == ["ant", "cat"]
    assert sorted(splits.y_train.tolist()) == [0, 0, 0, 1, 1, 1]
    hist = splits.x_train[:, 192:].reshape(6, 16, 8).sum(1)
    assert (hist.argmax(1) == np.where(splits.y_train == 1, 0, 4)).all()
    usage = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True)
    assert usage.returncode == 2 and "make_pixel_features.py" in usage.stderr


def test_a_tar_without_a_test_split_gets_a_clear_message(tmp_path: Path):
    tar_path = tmp_path / "train-only.tar"
    with tarfile.open(tar_path, "w") as tar:
        buf = io.BytesIO()
        Image.fromarray(stripes(True, (255, 0, 0))).save(buf, format="JPEG")
        info = tarfile.TarInfo("train/cat/0000.jpg")
        info.size = len(buf.getvalue())
        tar.addfile(info, io.BytesIO(buf.getvalue()))
    res = subprocess.run([sys.executable, str(SCRIPT), str(tar_path), str(tmp_path / "x.npz")],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "test/<class>/*.jpg" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "x.npz").exists()
