import json
import time

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from ralif.encoders import (
    OpenClipEncoder,
    PrecomputedEmbeddings,
    TorchvisionResNet18Encoder,
    build_encoder,
    extract_features,
)
from ralif.images import scan_images

TINY = "ralif-test-tiny-vit"
TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module", autouse=True)
def tiny_clip_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("configs") / f"{TINY}.json"
    path.write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(path)


def _pictures(n, size=(40, 30)):
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))
            for _ in range(n)]


def test_random_open_clip_encodes_normalised_features():
    enc = OpenClipEncoder(TINY, pretrained=None, device="cpu")
    assert enc.id == f"open_clip:{TINY}:random0"
    assert enc.dim == 32
    batch = torch.stack([enc.transform(im) for im in _pictures(4)])
    assert batch.shape == (4, 3, 32, 32)
    feats = enc.encode(batch)
    assert feats.shape == (4, 32) and feats.dtype == torch.float32
    assert torch.allclose(feats.norm(dim=1), torch.ones(4), atol=1e-5)
    # Random weights come from a fixed seed, so two instances agree (their cache id is shared).
    assert torch.equal(OpenClipEncoder(TINY, pretrained="none", device="cpu").encode(batch), feats)
    assert not hasattr(enc.model, "token_embedding")  # the text tower is dropped


def test_open_clip_local_checkpoint(tmp_path):
    torch.manual_seed(123)
    model = open_clip.create_model(TINY)
    ckpt = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), ckpt)
    enc = OpenClipEncoder(TINY, pretrained=str(ckpt), device="cpu")
    assert enc.id.startswith(f"open_clip:{TINY}:sha256-")
    batch = torch.stack([enc.transform(im) for im in _pictures(3)])
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model.visual.eval()(batch), dim=-1)
    assert torch.allclose(enc.encode(batch), expected, atol=1e-5)


@pytest.mark.parametrize("offline", [True, False])
def test_missing_pretrained_weights_fail_fast_with_help(tmp_path, monkeypatch, offline):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        # A closed local port stands in for an unreachable hub (never a real download).
        monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    start = time.perf_counter()
    with pytest.raises(RuntimeError) as info:
        OpenClipEncoder("ViT-B-32", pretrained="openai", device="cpu")
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert "--pretrained" in message and "HF_HOME" in message and "internet" in message
    assert str(tmp_path / "hf") in message


def test_unknown_tag_or_model(monkeypatch):
    with pytest.raises(RuntimeError, match="laion400m_e32"):
        OpenClipEncoder("ViT-B-32", pretrained="no-such-tag", device="cpu")
    with pytest.raises(ValueError, match="unknown open_clip model"):
        OpenClipEncoder("ViT-Nope", pretrained=None, device="cpu")


def test_resnet18_random_at_32px():
    enc = TorchvisionResNet18Encoder(weights=None, image_size=32, device="cpu")
    assert enc.id == "torchvision:resnet18:random0:32px" and enc.dim == 512
    batch = torch.stack([enc.transform(im) for im in _pictures(2)])
    assert batch.shape == (2, 3, 32, 32)
    feats = enc.encode(batch)
    assert feats.shape == (2, 512)
    again = TorchvisionResNet18Encoder(weights="none", image_size=32, device="cpu").encode(batch)
    assert torch.equal(feats, again)


def test_resnet18_weights_from_cache_or_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"resnet18-f37072fd\.pth") as info:
        TorchvisionResNet18Encoder(weights="imagenet", image_size=32, device="cpu")
    assert time.perf_counter() - start < 5
    assert str(tmp_path / "torch") in str(info.value)

    from torchvision.models import resnet18

    torch.manual_seed(7)
    ref = resnet18(weights=None).eval()
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    enc = TorchvisionResNet18Encoder(weights=str(path), image_size=32, device="cpu")
    assert enc.id.startswith("torchvision:resnet18:sha256-") and enc.id.endswith(":32px")
    batch = torch.stack([enc.transform(im) for im in _pictures(2)])
    ref.fc = torch.nn.Identity()
    with torch.no_grad():
        assert torch.allclose(enc.encode(batch), ref(batch), atol=1e-5)

    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(RuntimeError, match="resnet18"):
        TorchvisionResNet18Encoder(weights=str(tmp_path / "wrong.pth"), image_size=32, device="cpu")


def _image_list(root, n=6):
    root.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(_pictures(n)):
        im.save(root / f"img_{i:02d}.png")
    return scan_images(root)


def test_precomputed_embeddings_alignment(tmp_path):
    images = _image_list(tmp_path / "imgs")
    feats = np.arange(6 * 4, dtype=np.float32).reshape(6, 4)
    # Stored in reverse order, with paths relative to the file's folder.
    rel = np.array([f"imgs/img_{i:02d}.png" for i in range(6)][::-1])
    np.savez(tmp_path / "emb.npz", features=feats[::-1], paths=rel)
    enc = build_encoder(f"precomputed:{tmp_path / 'emb.npz'}")
    assert isinstance(enc, PrecomputedEmbeddings) and enc.dim == 4
    assert np.array_equal(enc.features_for(images), feats)
    assert np.array_equal(enc.features_for(images.subset([4, 1])), feats[[4, 1]])
    assert np.array_equal(extract_features(enc, images), feats)

    np.save(tmp_path / "short.npy", feats[:5])
    with pytest.raises(ValueError, match="5 rows but there are 6 images"):
        PrecomputedEmbeddings(tmp_path / "short.npy").features_for(images)
    np.savez(tmp_path / "other.npz", features=feats, paths=np.array([f"x{i}.png" for i in range(6)]))
    with pytest.raises(ValueError, match="paths do not match"):
        PrecomputedEmbeddings(tmp_path / "other.npz").features_for(images)
    np.savez(tmp_path / "bad.npz", features=feats, paths=np.array(["a.png"]))
    with pytest.raises(ValueError, match="1 paths for 6 feature rows"):
        PrecomputedEmbeddings(tmp_path / "bad.npz")
    np.savez(tmp_path / "nofeat.npz", embeddings=feats)
    with pytest.raises(ValueError, match="no 'features'"):
        PrecomputedEmbeddings(tmp_path / "nofeat.npz")


def test_build_encoder_specs():
    assert build_encoder(f"clip:{TINY}:none", device="cpu").id == f"open_clip:{TINY}:random0"
    enc = build_encoder("resnet18-32:none", device="cpu")
    assert enc.image_size == 32
    for bad in ("vgg:none", "resnet18-x:none", "clip", "precomputed:"):
        with pytest.raises(ValueError):
            build_encoder(bad)


def test_extract_features_matches_encode_and_reports_progress(tmp_path):
    images = _image_list(tmp_path, n=7)
    enc = OpenClipEncoder(TINY, pretrained=None, device="cpu")
    calls = []
    feats = extract_features(enc, images, batch_size=3, num_workers=0,
                             progress=lambda done, total: calls.append((done, total)))
    assert feats.shape == (7, 32) and feats.dtype == np.float32
    assert calls == [(3, 7), (6, 7), (7, 7)]
    from ralif.images import load_rgb

    direct = enc.encode(torch.stack([enc.transform(load_rgb(p)) for p in images.paths])).numpy()
    assert np.allclose(feats, direct, atol=1e-5)


def test_pretrained_tag_found_in_hub_cache_without_network(tmp_path, monkeypatch):
    from open_clip import pretrained as oc_pretrained
    from safetensors.torch import save_file

    torch.manual_seed(5)
    model = open_clip.create_model(TINY)
    snapshot = tmp_path / "hub" / "models--example--tiny" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              snapshot / "open_clip_model.safetensors")
    (tmp_path / "hub" / "models--example--tiny" / "refs").mkdir()
    (tmp_path / "hub" / "models--example--tiny" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setitem(oc_pretrained._PRETRAINED, TINY,
                        {"fake": oc_pretrained._pcfg(hf_hub="example/tiny/", quick_gelu=False)})
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = OpenClipEncoder(TINY, pretrained="fake", device="cpu")
    assert enc.id == f"open_clip:{TINY}:fake"
    batch = torch.stack([enc.transform(im) for im in _pictures(2)])
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model.visual.eval()(batch), dim=-1)
    assert torch.allclose(enc.encode(batch), expected, atol=1e-5)
