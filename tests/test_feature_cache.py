import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_images
from PIL import Image

from ralif.cli import main
from ralif.encoders import Encoder, extract_features
from ralif.feature_cache import FeatureCache, cached_features, fill_cache, safe_dirname
from ralif.images import load_image_folder, scan_images

ROOT = Path(__file__).resolve().parents[1]


class CountingEncoder(Encoder):
    """A cheap deterministic encoder (4x4 colour means) that counts the images it encodes."""

    def __init__(self, delay: float = 0.0) -> None:
        self.id = "test:counting"
        self.dim = 48
        self.device = torch.device("cpu")
        self.delay = delay
        self.encoded = 0

    def transform(self, im: Image.Image) -> torch.Tensor:
        arr = np.asarray(im.resize((16, 16)), dtype=np.float32) / 255.0
        return torch.from_numpy(arr).permute(2, 0, 1)

    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        self.encoded += len(batch)
        time.sleep(self.delay)
        return torch.nn.functional.avg_pool2d(batch, 4).flatten(1)


@pytest.fixture()
def images(tmp_path):
    make_images(tmp_path / "imgs")
    return scan_images(tmp_path / "imgs")


def test_put_get_many_and_reopen(tmp_path):
    cache = FeatureCache(tmp_path / "cache", "enc:a/b c", shard_size=3)
    hashes = [f"{i:064x}" for i in range(8)]
    feats = np.random.default_rng(0).normal(size=(8, 5)).astype(np.float32)
    assert cache.put_many([*hashes[:7], hashes[0]], np.vstack([feats[:7], feats[:1]])) == 7
    assert len(cache.shards) == 3  # 3 + 3 + 1 rows
    assert cache.put_many(hashes[:2], feats[:2]) == 0  # already cached
    query = [hashes[5], hashes[7], hashes[0], hashes[5]]
    got, missing = cache.get_many(query)
    assert missing.tolist() == [False, True, False, False]
    assert np.array_equal(got[[0, 2, 3]], feats[[5, 0, 5]]) and not got[1].any()

    reopened = FeatureCache(tmp_path / "cache", "enc:a/b c")
    assert reopened.dim == 5 and len(reopened) == 7
    assert np.array_equal(reopened.get_many(query)[0], got)
    assert (tmp_path / "cache" / safe_dirname("enc:a/b c")).is_dir()
    assert "/" not in safe_dirname("enc:a/b c") and safe_dirname("a:b") != safe_dirname("a_b")
    with pytest.raises(ValueError, match="5-d"):
        FeatureCache(tmp_path / "cache", "enc:a/b c", dim=6)


def test_miss_then_hit_computes_nothing(tmp_path, images):
    shutil.copy(images.paths[0], tmp_path / "imgs" / "dog" / "zz_copy.jpg")
    images = scan_images(tmp_path / "imgs")
    assert len(images) == 25 and len(images.duplicates) == 1
    enc = CountingEncoder()
    first = fill_cache(enc, images, tmp_path / "cache", batch_size=5, num_workers=0, shard_size=8)
    assert (first.hits, first.misses, first.computed) == (0, 25, 24)  # the copy is encoded once
    assert enc.encoded == 24
    clean = extract_features(CountingEncoder(), images, batch_size=7, num_workers=1)
    assert np.allclose(first.features, clean, atol=1e-6)

    second = fill_cache(enc, images, tmp_path / "cache", batch_size=5, num_workers=0)
    assert (second.hits, second.misses, second.computed) == (25, 0, 0)
    assert enc.encoded == 24
    assert np.array_equal(second.features, first.features)

    Image.new("RGB", (20, 20), "purple").save(tmp_path / "imgs" / "fox" / "new.png")
    grown = scan_images(tmp_path / "imgs")
    calls = []
    feats = cached_features(enc, grown, tmp_path / "cache", batch_size=5, num_workers=0,
                            progress=lambda d, t: calls.append((d, t)))
    assert enc.encoded == 25 and feats.shape == (26, 48)
    assert calls[0] == (25, 26) and calls[-1] == (26, 26)


class Interrupt(Exception):
    pass


def test_resume_after_interruption(tmp_path, images):
    enc = CountingEncoder()

    def stop_after_ten(done, total):
        if done >= 10:
            raise Interrupt

    with pytest.raises(Interrupt):
        fill_cache(enc, images, tmp_path / "cache", batch_size=2, num_workers=0, shard_size=4,
                   progress=stop_after_ten)
    kept = len(FeatureCache(tmp_path / "cache", enc.id))
    assert kept == 10  # complete shards plus the rows computed before the interruption

    resumed = CountingEncoder()
    result = fill_cache(resumed, images, tmp_path / "cache", batch_size=2, num_workers=0, shard_size=4)
    assert resumed.encoded == len(images) - kept == result.computed
    assert result.hits == kept
    clean = fill_cache(CountingEncoder(), images, tmp_path / "clean", batch_size=3, num_workers=0)
    assert np.array_equal(result.features, clean.features)


KILL_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
sys.path.insert(0, {root!r})
from test_feature_cache import CountingEncoder
from ralif.feature_cache import fill_cache
from ralif.images import scan_images
fill_cache(CountingEncoder(delay=0.2), scan_images({imgs!r}), {cache!r}, batch_size=2, num_workers=0,
           shard_size=4)
"""


def test_resume_after_sigkill(tmp_path, images):
    cache_root = tmp_path / "cache"
    script = tmp_path / "extract.py"
    script.write_text(KILL_SCRIPT.format(tests=str(ROOT / "tests"), root=str(ROOT),
                                         imgs=str(tmp_path / "imgs"), cache=str(cache_root)))
    proc = subprocess.Popen([sys.executable, str(script)], stderr=subprocess.PIPE)
    shard_dir = cache_root / safe_dirname("test:counting")
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if shard_dir.is_dir() and len(list(shard_dir.glob("*.keys.npy"))) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    kept = len(FeatureCache(cache_root, "test:counting"))
    assert 8 <= kept < len(images)
    resumed = CountingEncoder()
    result = fill_cache(resumed, images, cache_root, batch_size=2, num_workers=0, shard_size=4)
    assert resumed.encoded == len(images) - kept
    clean = fill_cache(CountingEncoder(), images, tmp_path / "clean", batch_size=5, num_workers=0)
    assert np.array_equal(result.features, clean.features)


def test_partial_and_corrupt_shards_are_never_read(tmp_path, images):
    cache_root = tmp_path / "cache"
    fill_cache(CountingEncoder(), images, cache_root, batch_size=4, num_workers=0, shard_size=8)
    shard_dir = cache_root / safe_dirname("test:counting")
    shards = sorted(p.name[: -len(".keys.npy")] for p in shard_dir.glob("*.keys.npy"))
    assert len(shards) == 3
    # A shard whose features were damaged after commit, one killed before its keys were written,
    # a leftover temporary file and an unreadable keys file.
    damaged = shard_dir / f"{shards[1]}.npy"
    damaged.write_bytes(damaged.read_bytes()[:200])
    np.save(shard_dir / "ffffffffffffffff-00000000.npy", np.full((4, 48), 7, dtype=np.float32))
    (shard_dir / ".ffffffffffffffff-00000001.keys.npy.123.abcd.tmp").write_bytes(b"partial")
    (shard_dir / "eeeeeeeeeeeeeeee-00000000.npy").write_bytes(b"\x93NUMPY garbage")
    (shard_dir / "eeeeeeeeeeeeeeee-00000000.keys.npy").write_bytes(b"garbage")

    cache = FeatureCache(cache_root, "test:counting")
    assert len(cache) == 16
    _, missing = cache.get_many(images.hashes)
    assert missing.sum() == 8
    enc = CountingEncoder()
    result = fill_cache(enc, images, cache_root, batch_size=4, num_workers=0, shard_size=8)
    assert enc.encoded == 8
    clean = extract_features(CountingEncoder(), images, batch_size=6, num_workers=0)
    assert np.allclose(result.features, clean, atol=1e-6)


def test_embed_command(tmp_path, capsys):
    make_images(tmp_path / "imgs", per_class=4)
    (tmp_path / "imgs" / "cat" / "broken.jpg").write_text("not a jpeg")
    shutil.copy(tmp_path / "imgs" / "dog" / "dog_00.jpg", tmp_path / "imgs" / "dup.jpg")
    argv = ["embed", "--images", str(tmp_path / "imgs"), "--encoder", "resnet18-32:none",
            "--cache", str(tmp_path / "cache"), "--batch-size", "8", "--device", "cpu",
            "--num-workers", "0", "--output", str(tmp_path / "feats.npz")]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 13 and summary["misses"] == 13 and summary["computed"] == 12
    assert summary["bad_files"]["count"] == 1 and "broken.jpg" in summary["bad_files"]["first"][0]
    assert summary["duplicates"] == {"groups": 1, "files": 2}
    assert summary["encoder"] == "torchvision:resnet18:random0:32px" and summary["dim"] == 512
    assert summary["images_per_s"] > 0
    saved = np.load(tmp_path / "feats.npz")
    assert saved["features"].shape == (13, 512)

    assert main(argv[:-2]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["hits"] == 13 and again["computed"] == 0

    precomputed = ["embed", "--images", str(tmp_path / "imgs"), "--encoder",
                   f"precomputed:{tmp_path / 'feats.npz'}", "--cache", str(tmp_path / "cache")]
    assert main(precomputed) == 0
    assert json.loads(capsys.readouterr().out)["dim"] == 512

    assert main(["embed", "--images", str(tmp_path / "nowhere"), "--encoder", "resnet18-32:none"]) == 1
    assert "not found" in capsys.readouterr().err


def test_embed_command_weights_override_and_missing_weights(tmp_path, capsys, monkeypatch):
    make_images(tmp_path / "imgs", per_class=1)
    base = ["embed", "--images", str(tmp_path / "imgs"), "--cache", str(tmp_path / "cache"),
            "--device", "cpu", "--num-workers", "0"]
    assert main([*base, "--encoder", "resnet18-32:imagenet", "--pretrained", "none"]) == 0
    assert json.loads(capsys.readouterr().out)["encoder"] == "torchvision:resnet18:random0:32px"

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main([*base, "--encoder", "clip:ViT-B-32:openai"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ralif embed: error:") and "--pretrained" in err


def test_image_folder_splits_share_the_cache(tmp_path):
    make_images(tmp_path / "data" / "train", per_class=3)
    make_images(tmp_path / "data" / "test", per_class=2, seed=1)
    splits = load_image_folder(tmp_path / "data")
    enc = CountingEncoder()
    for split in splits.values():
        cached_features(enc, split, tmp_path / "cache", num_workers=0)
    whole = fill_cache(enc, scan_images(tmp_path / "data"), tmp_path / "cache", num_workers=0)
    assert whole.computed == 0 and enc.encoded == 15
