"""End-to-end selection cycles on an image folder, for each model: CLIP linear probe and ResNet18."""

from __future__ import annotations

import json

import numpy as np
import open_clip
import pytest
from PIL import Image

from ralif.cli import main

TINY = "ralif-sim-tiny-vit"
TINY_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """train/ and test/ with three colour classes, small noisy 32×32 images, plus one corrupt file."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    colours = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}
    for split, n in (("train", 14), ("test", 5)):
        for name, rgb in colours.items():
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                px = np.clip(np.array(rgb) + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(px).save(d / f"{i:03d}.png")
    (root / "train" / "red" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return root


@pytest.fixture(scope="module", autouse=True)
def tiny_clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / f"{TINY}.json"
    path.write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(path)


def _run(args, out):
    rc = main(["simulate", *args, "--strategies", "random,ralif,badge", "--initial", "6", "--budget", "4",
               "--cycles", "2", "--seeds", "1", "--out", str(out), "--quiet", "--device", "cpu"])
    assert rc == 0
    return json.loads((out / "results.json").read_text())


def test_clip_linear_cycle_on_images_reuses_the_cache(image_folder, tmp_path, capsys):
    cache = tmp_path / "cache"
    args = ["--images", str(image_folder), "--model", "clip-linear", "--encoder", f"clip:{TINY}:none",
            "--cache", str(cache)]
    res = _run(args, tmp_path / "a")
    assert "broken.jpg" in capsys.readouterr().out  # the bad file is reported, not fatal
    assert res["config"]["pool"] == 42 and res["config"]["encoder"] == f"open_clip:{TINY}:random0"
    for s in res["strategies"].values():
        assert np.asarray(s["accuracy"]).shape == (1, 3)
    shards = sorted(p.name for p in cache.rglob("*.npy"))
    assert shards
    # A second run finds every feature in the cache and computes nothing new.
    res2 = _run(args, tmp_path / "b")
    assert sorted(p.name for p in cache.rglob("*.npy")) == shards
    assert res2["strategies"]["ralif"]["accuracy"] == res["strategies"]["ralif"]["accuracy"]


def test_resnet18_cycle_on_images(image_folder, tmp_path):
    res = _run(["--images", str(image_folder), "--model", "resnet18", "--resnet-variant", "cifar",
                "--epochs", "1"], tmp_path / "r")
    assert res["config"]["model"] == "resnet18" and res["config"]["epochs"] == 1
    for s in res["strategies"].values():
        acc = np.asarray(s["accuracy"])
        assert acc.shape == (1, 3) and ((acc >= 0) & (acc <= 1)).all()


def test_images_without_test_split_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "only" / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "only" / "a" / "x.png")
    rc = main(["simulate", "--images", str(tmp_path / "only"), "--out", str(tmp_path / "o"), "--quiet"])
    assert rc == 1
    assert "train/ and test/" in capsys.readouterr().err
