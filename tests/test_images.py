import os
import shutil
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from ralif.images import (
    ImageDataset,
    ImageDecodeError,
    hash_file,
    load_image_folder,
    load_manifest,
    load_rgb,
    scan_images,
)

CLASSES = ("cat", "dog", "fox")


def make_images(root, per_class=8, classes=CLASSES, seed=0):
    """Random small PNG/JPEG images in one folder per class; returns their paths."""
    rng = np.random.default_rng(seed)
    paths = []
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = rng.integers(12, 40, size=2)
            arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            ext = "png" if i % 2 else "jpg"
            path = root / c / f"{c}_{i:02d}.{ext}"
            Image.fromarray(arr).save(path)
            paths.append(path)
    return paths


def _jpeg_bytes(size=(40, 40), seed=1):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    path_like = __import__("io").BytesIO()
    Image.fromarray(arr).save(path_like, "JPEG")
    return path_like.getvalue()


def test_scan_is_sorted_deterministic_and_hashed(tmp_path):
    make_images(tmp_path)
    (tmp_path / "cat" / "UPPER.JPG").write_bytes(_jpeg_bytes())
    (tmp_path / ".hidden.png").write_bytes((tmp_path / "cat" / "UPPER.JPG").read_bytes())
    (tmp_path / "notes.txt").write_text("not an image and not looked at")
    scan = scan_images(tmp_path)
    assert len(scan) == 25
    rel = [os.path.relpath(p, tmp_path) for p in scan.paths]
    assert rel == sorted(rel, key=lambda r: r.split(os.sep))
    assert (scan.labels == -1).all() and scan.classes == []
    assert scan.hashes[0] == hash_file(scan.paths[0])
    assert scan.problems == []
    again = scan_images(tmp_path)
    assert again.paths == scan.paths and again.hashes == scan.hashes
    with pytest.raises(ValueError, match="no readable images"):
        scan_images(tmp_path, recursive=False)


def test_image_folder_classes_and_splits(tmp_path):
    make_images(tmp_path / "plain")
    splits = load_image_folder(tmp_path / "plain")
    assert list(splits) == ["all"]
    images = splits["all"]
    assert images.classes == list(CLASSES)
    assert np.bincount(images.labels).tolist() == [8, 8, 8]
    for p, y in zip(images.paths, images.labels):
        assert os.path.basename(os.path.dirname(p)) == images.classes[y]

    make_images(tmp_path / "split" / "train", per_class=3)
    make_images(tmp_path / "split" / "test", per_class=2, classes=("dog", "zebra"), seed=1)
    Image.new("RGB", (8, 8), "red").save(tmp_path / "split" / "train" / "loose.png")
    splits = load_image_folder(tmp_path / "split")
    assert sorted(splits) == ["test", "train"]
    assert splits["train"].classes == splits["test"].classes == ["cat", "dog", "fox", "zebra"]
    assert (splits["test"].labels >= 1).all()
    assert (splits["train"].labels == -1).sum() == 1


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_bad_files_are_reported_and_skipped(tmp_path, monkeypatch):
    make_images(tmp_path, per_class=2)
    bad = tmp_path / "bad"
    bad.mkdir()
    good_png = (tmp_path / "cat" / "cat_01.png").read_bytes()
    flipped = bytearray(good_png)
    mid = len(flipped) // 2
    flipped[mid:mid + 16] = bytes(b ^ 0xFF for b in flipped[mid:mid + 16])  # inside the pixel data
    (bad / "corrupt.png").write_bytes(bytes(flipped))
    jpeg = _jpeg_bytes()
    (bad / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (bad / "empty.png").write_bytes(b"")
    (bad / "text.jpg").write_text("hello, I am not a picture")
    Image.new("L", (70, 70)).save(bad / "bomb_error.png")  # > 2x the limit below: PIL raises
    Image.new("L", (55, 55)).save(bad / "bomb_warning.png")  # between 1x and 2x: PIL warns
    os.symlink(bad / "does-not-exist.png", bad / "dangling.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)

    scan = scan_images(tmp_path)
    reasons = {os.path.basename(p): r for p, r in scan.problems}
    assert set(reasons) == {"corrupt.png", "truncated.jpg", "empty.png", "text.jpg",
                            "bomb_error.png", "bomb_warning.png", "dangling.png"}
    assert "truncated" in reasons["truncated.jpg"]
    assert "empty" in reasons["empty.png"]
    assert "not an image" in reasons["text.jpg"]
    assert "decompression bomb" in reasons["bomb_error.png"]
    assert "decompression bomb" in reasons["bomb_warning.png"]
    assert "symbolic link" in reasons["dangling.png"]
    assert "corrupt" in reasons["corrupt.png"]
    assert len(scan) == 6
    assert not any(os.path.relpath(p, tmp_path).startswith("bad") for p in scan.paths)

    with pytest.raises(ImageDecodeError, match=r"bomb_warning\.png"):
        load_rgb(bad / "bomb_warning.png")


def test_every_mode_becomes_rgb(tmp_path):
    Image.new("L", (10, 10), 128).save(tmp_path / "gray.png")
    Image.new("CMYK", (10, 10), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))
    rgba.save(tmp_path / "rgba.png")
    Image.fromarray(np.full((10, 10), 65535, dtype=np.uint16)).save(tmp_path / "deep.png")
    pal = Image.new("P", (10, 10), 1)
    pal.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.save(tmp_path / "pal.png", transparency=0)
    frames = [Image.new("RGB", (10, 10), c) for c in ("red", "blue")]
    frames[0].save(tmp_path / "anim.png", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "anim.webp", save_all=True, append_images=frames[1:], lossless=True)
    Image.new("1", (10, 10), 1).save(tmp_path / "bits.bmp")
    Image.new("RGB", (10, 10), "green").save(tmp_path / "tif.tiff")
    Image.new("RGB", (10, 10), "green").save(tmp_path / "w.webp", lossless=True)
    Image.new("LA", (10, 10), (0, 0)).save(tmp_path / "la.png")

    scan = scan_images(tmp_path)
    assert len(scan) == 11 and scan.problems == []
    px = {}
    for p in scan.paths:
        im = load_rgb(p)
        assert im.mode == "RGB" and im.size == (10, 10)
        px[os.path.basename(p)] = np.asarray(im)
    assert px["gray.png"][5, 5].tolist() == [128, 128, 128]
    assert px["cmyk.jpg"][5, 5, 0] > 200 and px["cmyk.jpg"][5, 5, 1] < 60
    assert px["rgba.png"][0, 0].tolist() == [255, 255, 255]  # transparent over white
    assert px["rgba.png"][5, 5].tolist() == [255, 0, 0]
    assert px["deep.png"][5, 5].tolist() == [255, 255, 255]  # 16-bit white stays white
    assert px["pal.png"][0, 0].tolist() == [255, 255, 255]
    assert px["pal.png"][5, 5].tolist() == [0, 0, 255]
    assert px["anim.png"][5, 5].tolist() == px["anim.webp"][5, 5].tolist() == [255, 0, 0]  # first frame
    assert px["bits.bmp"][5, 5].tolist() == [255, 255, 255]
    assert px["w.webp"][5, 5].tolist() == [0, 128, 0]
    assert px["la.png"][5, 5].tolist() == [255, 255, 255]

    Image.new("RGB", (80, 40), "red").save(tmp_path / "big.jpg")
    assert max(load_rgb(tmp_path / "big.jpg", size=20).size) == 20


def test_duplicates_are_detected(tmp_path):
    paths = make_images(tmp_path, per_class=3)
    shutil.copy(paths[0], tmp_path / "fox" / "copy_of_first.jpg")
    shutil.copy(paths[0], tmp_path / "dog" / "another_copy.jpg")
    scan = scan_images(tmp_path)
    assert len(scan) == 11
    assert len(scan.duplicates) == 1
    assert sorted(os.path.basename(p) for p in scan.duplicates[0]) == [
        "another_copy.jpg", "cat_00.jpg", "copy_of_first.jpg"]


def test_manifest_relative_unknown_and_missing(tmp_path):
    paths = make_images(tmp_path / "imgs", per_class=2)
    sub = tmp_path / "lists"
    sub.mkdir()
    lines = ["path,label",
             "../imgs/cat/cat_00.jpg,cat",
             f"{paths[3]},dog",
             "../imgs/fox/fox_00.jpg,",
             "../imgs/nope.jpg,cat",
             "../imgs/cat/cat_00.jpg,cat"]
    (sub / "manifest.csv").write_text("\n".join(lines) + "\n")
    images = load_manifest(sub / "manifest.csv")
    assert [os.path.basename(p) for p in images.paths] == ["cat_00.jpg", "dog_01.png", "fox_00.jpg"]
    assert images.classes == ["cat", "dog"]
    assert images.labels.tolist() == [0, 1, -1]
    # The repeated row agrees with the first: the file is read once and is no problem.
    assert [r for _, r in images.problems] == ["file not found"] and images.repeated_rows == 1

    (sub / "nolabel.csv").write_text("path\n../imgs/cat/cat_01.png\n")
    only = load_manifest(sub / "nolabel.csv")
    assert only.labels.tolist() == [-1] and only.classes == []

    (sub / "wrong.csv").write_text("file,label\na.jpg,cat\n")
    with pytest.raises(ValueError, match="'path' column"):
        load_manifest(sub / "wrong.csv")


def test_empty_or_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no readable images"):
        scan_images(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"")
    with pytest.raises(ValueError, match="1 file"):
        scan_images(tmp_path)
    with pytest.raises(FileNotFoundError):
        scan_images(tmp_path / "absent")


def test_symlink_loop_does_not_hang(tmp_path):
    make_images(tmp_path, per_class=1)
    os.symlink(tmp_path, tmp_path / "cat" / "loop")
    os.symlink(tmp_path / "dog", tmp_path / "fox" / "to_dog")
    os.symlink(tmp_path / "self_a.png", tmp_path / "self_b.png")
    os.symlink(tmp_path / "self_b.png", tmp_path / "self_a.png")
    result = {}
    worker = threading.Thread(target=lambda: result.update(scan=scan_images(tmp_path)), daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), "scan did not finish"
    scan = result["scan"]
    assert len(scan) == 3
    assert {os.path.basename(p) for p, _ in scan.problems} == {"self_a.png", "self_b.png"}


def test_dataset_returns_tensor_and_index_and_names_bad_files(tmp_path):
    make_images(tmp_path, per_class=2)
    scan = scan_images(tmp_path)
    ds = ImageDataset(scan, transform=lambda im: torch.zeros(3, 4, 4) + im.size[0])
    x, i = ds[3]
    assert i == 3 and x.shape == (3, 4, 4)
    plain = ImageDataset(scan)[0][0]
    assert plain.dtype == torch.float32 and plain.shape[0] == 3 and float(plain.max()) <= 1.0
    with open(scan.paths[2], "r+b") as f:
        f.truncate(30)
    with pytest.raises(ImageDecodeError, match=os.path.basename(scan.paths[2])):
        ds[2]
