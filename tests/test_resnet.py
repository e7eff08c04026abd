"""ResNet18 end-to-end training: shapes, determinism, features, persistence, errors.

Everything runs on the CPU at 16 px with a few dozen images so the module stays fast.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import colour_images
from PIL import Image

from ralif.models.resnet import (
    FEATURE_DIM,
    TrainConfig,
    TrainedResNet,
    TrainingCancelled,
    TrainingDiverged,
    build_resnet18,
    imagenet_weights_path,
    load_image,
    train_resnet,
)
from ralif.models.resnet_training import base_lr, check_divergence

K = 3
TINY = {"epochs": 2, "batch_size": 16, "image_size": 16, "seed": 7}


@pytest.fixture(scope="module")
def trained():
    images, labels = colour_images()
    records: list[dict] = []
    model = train_resnet(
        images, labels, K, TrainConfig(**TINY), device="cpu", progress=records.append,
        class_names=["red", "green", "blue"],
    )
    return model, images, labels, records


def test_paper_defaults_per_variant():
    cifar = TrainConfig()
    assert (cifar.lr, cifar.momentum, cifar.weight_decay, cifar.image_size) == (0.1, 0.9, 5e-4, 32)
    assert cifar.batch_size == 128 and cifar.weights is None
    imnet = TrainConfig(variant="imagenet")
    assert (imnet.lr, imnet.image_size, imnet.weights) == (0.01, 224, "imagenet")
    assert TrainConfig(variant="imagenet", weights=None, epochs=3).weights is None
    with pytest.raises(ValueError):
        TrainConfig(variant="vgg")
    with pytest.raises(ValueError):
        TrainConfig.from_dict({"variant": "cifar", "learning_rate": 1.0})


def test_cifar_forward_shapes_at_32px():
    model = build_resnet18("cifar", 10).eval()
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    assert model.fc.in_features == FEATURE_DIM


def test_training_reports_progress_each_epoch(trained):
    model, _, _, records = trained
    assert [r["epoch"] for r in records] == [1, 2]
    for r in records:
        assert r["epochs"] == 2
        assert np.isfinite(r["loss"]) and 0.0 <= r["accuracy"] <= 1.0
        assert r["images_per_s"] > 0 and r["lr"] == pytest.approx(0.1)
    assert model.history == records


def test_per_batch_progress_and_lr_step():
    images, labels = colour_images(n=20)
    seen: list[dict] = []
    train_resnet(images, labels, K, TrainConfig(epochs=1, batch_size=8, image_size=16),
                 device="cpu", progress=seen.append, progress_every=1)
    batches = [r for r in seen if "batch" in r]
    # 20 images at batch 8: 8 + 8 + 4.
    assert [r["batch"] for r in batches] == [1, 2, 3] and batches[0]["batches"] == 3
    assert seen[-1]["epoch"] == 1 and "batch" not in seen[-1]


def test_training_is_deterministic_on_cpu(trained):
    model, images, labels, _ = trained
    again = train_resnet(images, labels, K, TrainConfig(**TINY), device="cpu")
    a, b = model.model.state_dict(), again.model.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_training_leaves_global_rng_alone():
    images, labels = colour_images(n=8)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_resnet(images, labels, K, TrainConfig(epochs=1, batch_size=8, image_size=16), device="cpu")
    assert torch.equal(torch.rand(3), expected)


def test_penultimate_features_match_final_layer(trained):
    model, images, _, _ = trained
    feats = model.penultimate_features(images)
    proba = model.predict_proba(images)
    w, b = model.final_layer()
    assert feats.shape == (len(images), FEATURE_DIM) and feats.dtype == np.float32
    assert w.shape == (K, FEATURE_DIM) and b.shape == (K,)
    logits = feats.astype(np.float64) @ w.T.astype(np.float64) + b
    logits -= logits.max(axis=1, keepdims=True)
    manual = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(manual, proba, atol=1e-5)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)


def test_save_load_round_trip(trained, tmp_path):
    model, images, _, _ = trained
    path = model.save(tmp_path / "ckpt" / "model.safetensors")
    sidecar = path.with_suffix(".json")
    assert path.is_file() and sidecar.is_file()
    meta = json.loads(sidecar.read_text())
    assert meta["variant"] == "cifar" and meta["num_classes"] == K and meta["image_size"] == 16
    assert meta["class_names"] == ["red", "green", "blue"]
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]

    loaded = TrainedResNet.load(path, device="cpu")
    np.testing.assert_array_equal(loaded.predict_proba(images), model.predict_proba(images))
    np.testing.assert_array_equal(loaded.final_layer()[0], model.final_layer()[0])
    assert loaded.class_names == model.class_names and loaded.config == model.config
    # The sidecar path works too, and the weights alone still load (metadata is embedded).
    assert TrainedResNet.load(sidecar).num_classes == K
    sidecar.unlink()
    assert TrainedResNet.load(path).image_size == 16


def test_load_detects_mismatched_sidecar(trained, tmp_path):
    model, _, _, _ = trained
    path = model.save(tmp_path / "m.safetensors")
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["weights_sha256"] = "0" * 64
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="does not match"):
        TrainedResNet.load(path)


def test_image_files_of_any_mode(trained, tmp_path):
    model, images, _, _ = trained
    paths = []
    for i in range(3):
        p = tmp_path / f"rgb{i}.png"
        Image.fromarray(images[i]).save(p)
        paths.append(str(p))
    # Lossless files give exactly the array's predictions.
    np.testing.assert_allclose(model.predict_proba(paths), model.predict_proba(images[:3]), atol=1e-6)

    odd = {
        "gray.png": Image.fromarray(images[0][:, :, 0]),
        "rgba.png": Image.fromarray(np.dstack([images[1], np.full((16, 16), 128, np.uint8)])),
        "palette.gif": Image.fromarray(images[2]).convert("P"),
        "wide16.png": Image.fromarray(images[0][:, :, 1].astype(np.uint16) * 257).convert("I;16"),
        "cmyk.jpg": Image.fromarray(images[1]).convert("CMYK"),
        "big.jpg": Image.fromarray(images[2]).resize((40, 24)),
    }
    for name, im in odd.items():
        im.save(tmp_path / name)
    proba = model.predict_proba([tmp_path / name for name in odd])
    assert proba.shape == (len(odd), K) and np.isfinite(proba).all()
    # 16-bit files keep their contrast instead of saturating to white.
    wide = load_image(tmp_path / "wide16.png")
    np.testing.assert_array_equal(wide[0].numpy(), images[0][:, :, 1])


def test_trains_from_image_files(tmp_path):
    images, labels = colour_images(n=12)
    paths = []
    for i, im in enumerate(images):
        p = tmp_path / f"{i}.png"
        Image.fromarray(im).save(p)
        paths.append(p)
    cfg = TrainConfig(epochs=1, batch_size=8, image_size=16)
    from_files = train_resnet(paths, labels, K, cfg, device="cpu")
    from_array = train_resnet(images, labels, K, cfg, device="cpu")
    for name, t in from_files.model.state_dict().items():
        assert torch.equal(t, from_array.model.state_dict()[name]), name


def test_imagenet_variant_trains_with_random_init():
    images, labels = colour_images(n=12, size=40)
    cfg = TrainConfig(variant="imagenet", weights=None, epochs=1, batch_size=6, image_size=32)
    records: list[dict] = []
    model = train_resnet(images, labels, K, cfg, device="cpu", progress=records.append)
    assert len(records) == 1 and np.isfinite(records[0]["loss"])
    assert model.penultimate_features(images[:4]).shape == (4, FEATURE_DIM)


def test_missing_imagenet_weights_raise_helpful_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    expected = imagenet_weights_path()
    assert str(expected).startswith(str(tmp_path))
    with pytest.raises(RuntimeError) as err:
        build_resnet18("imagenet", K, weights="imagenet")
    message = str(err.value)
    assert str(expected) in message and "weights=None" in message and "never downloaded" in message
    images, labels = colour_images(n=4)
    with pytest.raises(RuntimeError, match="ImageNet weights"):
        train_resnet(images, labels, K, TrainConfig(variant="imagenet", epochs=1), device="cpu")
    with pytest.raises(RuntimeError, match="does not exist"):
        build_resnet18("imagenet", K, weights=str(tmp_path / "nope.pth"))


def test_imagenet_weights_are_read_from_hub_cache_or_a_path(tmp_path, monkeypatch):
    from torchvision.models import resnet18

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    source = resnet18(weights=None)
    target = imagenet_weights_path()
    target.parent.mkdir(parents=True)
    torch.save(source.state_dict(), target)
    from_cache = build_resnet18("imagenet", K, weights="imagenet")
    from_path = build_resnet18("imagenet", K, weights=str(target))
    for model in (from_cache, from_path):
        assert torch.equal(model.conv1.weight, source.conv1.weight)
        assert model.fc.out_features == K


def test_should_stop_cancels_training():
    images, labels = colour_images(n=24)
    calls = {"n": 0}

    def stop_on_third_batch() -> bool:
        calls["n"] += 1
        return calls["n"] >= 3

    with pytest.raises(TrainingCancelled):
        train_resnet(images, labels, K, TrainConfig(epochs=5, batch_size=8, image_size=16),
                     device="cpu", should_stop=stop_on_third_batch)
    assert calls["n"] == 3


def test_rejects_bad_labels():
    images, labels = colour_images(n=8)
    with pytest.raises(ValueError, match="labels"):
        train_resnet(images, labels + 5, K, TrainConfig(epochs=1, image_size=16), device="cpu")
    with pytest.raises(ValueError, match="labels"):
        train_resnet(images, labels[:-1], K, TrainConfig(epochs=1, image_size=16), device="cpu")


def test_trains_from_a_dataset_of_pil_images_and_labels():
    images, labels = colour_images(n=10)

    class Pairs(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(images)

        def __getitem__(self, i: int):
            return Image.fromarray(images[i]), int(labels[i])

    model = train_resnet(Pairs(), None, K, TrainConfig(epochs=1, batch_size=5, image_size=16),
                         device="cpu")
    assert model.predict_proba(Pairs()).shape == (10, K)


def _few_label_losses(scaling: str) -> list[float]:
    """Epoch losses of a from-scratch run on 20 images of 10 classes with the project's round
    settings (batches of 64, SGD lr 0.1): one small batch per epoch."""
    rng = np.random.default_rng(0)
    templates = rng.uniform(40, 215, (10, 4, 4, 3)).repeat(4, 1).repeat(4, 2)
    y = np.arange(20) % 10
    x = np.clip(templates[y] + rng.normal(0, 45, (20, 16, 16, 3)), 0, 255).astype(np.uint8)
    losses: list[float] = []
    cfg = TrainConfig(variant="cifar", epochs=15, batch_size=64, image_size=16, seed=0, lr_scaling=scaling)
    train_resnet(x, y, 10, cfg, device="cpu", progress=lambda r: losses.append(r["loss"]))
    return losses


def test_few_labels_from_scratch_do_not_diverge():
    scaled = _few_label_losses("batch")
    assert max(scaled[1:]) <= 1.05 * scaled[0] and scaled[-1] < 0.5 * scaled[0], scaled
    # The full rate on a batch of 20 images (as before) makes the loss climb: the setting matters.
    unscaled = _few_label_losses("none")
    assert max(unscaled) > 1.5 * unscaled[0], unscaled


def test_a_diverging_run_is_reported():
    images, labels = colour_images(n=16)
    cfg = TrainConfig(epochs=4, batch_size=8, image_size=16, lr=1e4, lr_scaling="none")
    with pytest.raises(TrainingDiverged, match=r"training diverged in epoch \d of 4: the loss .*Lower the ResNet"):
        train_resnet(images, labels, K, cfg, device="cpu")


def test_divergence_rule():
    assert check_divergence([2.3], 10) is None
    assert check_divergence([2.3, 2.9, 1.0], 10) is None
    # One epoch far above the start can be a spike; two in a row are a diverging run.
    assert check_divergence([2.3, 7.5], 10) is None
    assert check_divergence([2.3, 7.5, 2.0], 10) is None
    assert "rose to 7.5 then 8" in check_divergence([2.3, 7.5, 8.0], 10)
    assert "nan" in check_divergence([2.3, float("nan")], 10)
    # A low first loss (a pretrained start) is measured against a uniform guess, ln K.
    assert check_divergence([0.1, 1.5], 2) is None


def test_learning_rate_scales_with_fewer_images_than_a_batch():
    cfg = TrainConfig(batch_size=64, lr=0.1)
    assert base_lr(cfg, 16) == pytest.approx(0.025) and base_lr(cfg, 200) == 0.1
    assert base_lr(TrainConfig(batch_size=64, lr=0.1, lr_scaling="none"), 16) == 0.1
    with pytest.raises(ValueError, match="lr_scaling"):
        TrainConfig(lr_scaling="sqrt")
