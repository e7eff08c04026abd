"""The encoder choices: weights present or not (looked up locally only), sizes, advice, create arguments."""

from __future__ import annotations

import json

import numpy as np
import open_clip
import pytest
from test_project import _colors_folder

from ralif.cli import main as cli_main
from ralif.encoder_catalog import (
    SCRATCH_MIN_LABELS,
    checkpoint_choice,
    clip_choice,
    clip_tags,
    encoder_choices,
    estimate_clip_bytes,
    precomputed_choice,
    recommended,
    resnet18_scratch_choice,
)
from ralif.project import Project

TINY = "ralif-test-tiny-vit-cat"
TINY_CFG = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 48, "patch_size": 8, "head_width": 24},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 3},
}


@pytest.fixture()
def empty_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path


def test_size_estimate_matches_a_built_model(tmp_path):
    path = tmp_path / f"{TINY}.json"
    path.write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(path)
    model = open_clip.create_model(TINY)
    assert estimate_clip_bytes(TINY) == 4 * sum(p.numel() for p in model.parameters())
    assert estimate_clip_bytes("RN50") is None          # not a ViT: size unknown, said so
    assert estimate_clip_bytes("no-such-model") is None


def test_nothing_present_says_what_to_download(empty_caches):
    choices = {c.key: c for c in encoder_choices(labels=150, has_gpu=False)}
    assert list(choices) == ["clip", "resnet18-imagenet-frozen", "resnet18-imagenet-finetune", "resnet18-scratch",
                             "precomputed", "checkpoint"]
    clip = choices["clip"]
    assert clip.weights_present is False and clip.needs_download and not clip.ready
    assert clip.size_text() == "about 598 MB" and "download about 598 MB" in clip.status_text()
    frozen = choices["resnet18-imagenet-frozen"]
    assert frozen.download_bytes == 44_661_000 and frozen.size_text() == "45 MB" and frozen.needs_download
    assert frozen.weights.dest == str(empty_caches / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    scratch = choices["resnet18-scratch"]
    assert scratch.weights is None and scratch.ready and scratch.status_text() == "no download needed"
    assert f"{SCRATCH_MIN_LABELS:,}" in scratch.what_happens and "GPU" in scratch.what_happens
    assert "150 labels is far below" in scratch.warning and "no GPU" in scratch.warning
    assert "pretrained" in scratch.what_happens
    assert choices["resnet18-imagenet-finetune"].warning.startswith("No GPU found")
    assert choices["precomputed"].needs_file and choices["precomputed"].spec is None
    with pytest.raises(ValueError, match="choose a file first"):
        choices["checkpoint"].create_kwargs()
    # Nothing ready: CLIP, to download, is the one to preselect.
    assert recommended(list(choices.values()), labels=150, has_gpu=False).key == "clip"


def test_weights_in_the_caches_are_found(empty_caches):
    repo = empty_caches / "hub" / "models--timm--vit_base_patch16_clip_224.openai"
    (repo / "snapshots" / ("a" * 40)).mkdir(parents=True)
    (repo / "snapshots" / ("a" * 40) / "open_clip_model.safetensors").write_bytes(b"weights")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    clip = clip_choice("ViT-B-16", "openai")
    assert clip.weights_present and clip.ready and clip.weights_path.endswith("open_clip_model.safetensors")
    assert "weights on this machine" in clip.status_text()
    ckpt = empty_caches / "torch" / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    (ckpt / "resnet18-f37072fd.pth").write_bytes(b"x")
    (ckpt / "resnet18-f37072fd.pth.partial").write_bytes(b"x")
    choices = encoder_choices(has_gpu=False)
    assert all(c.weights_present for c in choices if c.weights is not None)
    # An interrupted download is shown as resumable.
    (ckpt / "resnet18-f37072fd.pth").unlink()
    (ckpt / "resnet18-f37072fd.pth.partial").write_bytes(b"x" * 3_000_000)
    frozen = next(c for c in encoder_choices(has_gpu=False) if c.key == "resnet18-imagenet-frozen")
    assert frozen.resumable_bytes == 3_000_000 and "3 MB already downloaded" in frozen.status_text()


def test_scratch_advice_follows_labels_and_hardware():
    assert resnet18_scratch_choice(5000, has_gpu=True).warning is None
    assert resnet18_scratch_choice(5000, has_gpu=False).warning == "no GPU found: rounds will take hours."
    assert "999 labels" in resnet18_scratch_choice(999, has_gpu=True).warning


def test_create_arguments_make_a_project(empty_caches, tmp_path):
    src = _colors_folder(tmp_path / "src", per_class=3)
    paths = sorted(str(p) for p in src.rglob("*.png"))
    emb = tmp_path / "emb.npz"
    np.savez(emb, features=np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32),
             paths=np.array(paths))
    pre = precomputed_choice(emb)
    assert pre.ready and pre.create_kwargs() == {"model": "clip-linear", "encoder": f"precomputed:{emb}"}
    project = Project.create(tmp_path / "p", src, **pre.create_kwargs())
    assert project.run_round()["model"] is not None
    by_key = {c.key: c for c in encoder_choices(has_gpu=False)}
    assert by_key["resnet18-scratch"].create_kwargs() == {"model": "resnet18", "encoder": "pixels:8",
                                                          "resnet": {"variant": "cifar"}}
    assert by_key["resnet18-imagenet-finetune"].create_kwargs()["resnet"] == {"variant": "imagenet"}
    for key in ("resnet18-scratch", "resnet18-imagenet-finetune", "resnet18-imagenet-frozen", "clip"):
        Project.create(tmp_path / key, src, **by_key[key].create_kwargs())   # accepted as settings
    missing = checkpoint_choice(tmp_path / "nope.pt", arch="resnet18")
    assert missing.spec == f"resnet18:{tmp_path / 'nope.pt'}" and "file not found" in missing.warning
    assert checkpoint_choice(emb, arch="clip", model_name="ViT-B-32").spec == f"clip:ViT-B-32:{emb}"
    with pytest.raises(ValueError, match="arch must be"):
        checkpoint_choice(emb, arch="vgg")
    assert "openai" in clip_tags("ViT-B-16")
    with_file = encoder_choices(has_gpu=False, embeddings=str(emb))
    assert recommended(with_file, has_gpu=False).spec == f"precomputed:{emb}"


def test_weights_list_command(empty_caches, capsys):
    assert cli_main(["weights", "list", "--json", "--labels", "40", "--clip", "ViT-B-32:openai"]) == 0
    rows = {r["key"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["clip"]["spec"] == "clip:ViT-B-32:openai" and rows["clip"]["weights_present"] is False
    assert rows["clip"]["recommended"] and "40 labels" in rows["resnet18-scratch"]["warning"]


def test_a_choice_waiting_for_its_file_or_spec_says_so() -> None:
    from ralif.encoder_catalog import precomputed_choice, spec_choice

    assert spec_choice("").status_text() == "type an encoder spec first"
    assert precomputed_choice(None).status_text() == "give the file's path first"
    assert spec_choice("pixels:8").status_text() == "no download needed"
